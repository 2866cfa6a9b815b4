//! The prediction log: every prediction is committed to Postgres before its result goes out.
//!
//! Handlers hand their request's predictions to one writer task and wait for the commit. The
//! writer takes whatever has queued up while the previous statement ran and writes it with one
//! binary `COPY` and one commit, one row per request, so under load durability costs a fraction
//! of a round trip per request and a few microseconds per row whatever the request's size.
//! Ids come from blocks of [`ID_BLOCK`] the writer reserves ahead; a request's ids are
//! consecutive and never straddle two blocks.
//!
//! Rows nobody waits for (what shadow versions answered: never shown, never returned) take a
//! second, slower lane: [`PredictionLog::record_later`] hands them over without waiting, and a
//! writer of their own gathers them for a fifth of a second and writes them with one statement,
//! when no live request is waiting for a commit (or after a second of waiting, at most
//! [`LATER_BATCH_ROWS`] at a time). They never make the live batches larger, and under full
//! load they get what the live lane leaves: the lane's queue fills, and what does not fit is
//! refused (the caller counts it).

pub mod maintenance;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::monitoring::metrics::Metrics;
use plinth_store::predictions::{self, NewPredictions, ID_BLOCK};

/// Most predictions written by one statement.
const MAX_BATCH_ROWS: usize = 8192;

/// How long the second lane's writer lets rows gather before it writes them.
const GATHER: std::time::Duration = std::time::Duration::from_millis(200);

/// Requests the second lane holds before a new one is refused (and counted by the caller).
const LATER_QUEUE: usize = 4096;

/// Most rows of the second lane written by one statement.
const LATER_BATCH_ROWS: usize = 128;

/// How long the second lane waits for the live lane to be idle before writing anyway.
const LATER_YIELD: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("The prediction could not be stored, so it was not shown. The database is unavailable; try again shortly.")]
    Unavailable,
}

struct Pending {
    rows: NewPredictions,
    reply: oneshot::Sender<Result<i64, LogError>>,
}

/// A handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct PredictionLog {
    /// `None` when logging is switched off (`PLINTH_PREDICTION_LOG=off`, benchmarks only).
    tx: Option<mpsc::Sender<Pending>>,
    /// The second lane: rows nobody waits for.
    later: Option<mpsc::Sender<NewPredictions>>,
    /// Live rows handed over and not yet committed (the second lane writes when there are none).
    live_pending: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl PredictionLog {
    /// Starts the writer on the current Tokio runtime. It stops, after writing what is queued,
    /// when every handle has been dropped.
    pub fn start(
        pool: PgPool,
        metrics: Arc<Metrics>,
    ) -> (PredictionLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8192);
        let (later, later_rx) = mpsc::channel(LATER_QUEUE);
        let live_pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let live = writer(pool.clone(), rx, metrics.clone(), live_pending.clone());
        let background = later_writer(pool, later_rx, metrics.clone(), live_pending.clone());
        let handle = tokio::spawn(async move {
            tokio::join!(live, background);
        });
        let log = PredictionLog {
            tx: Some(tx),
            later: Some(later),
            live_pending,
            metrics,
        };
        (log, handle)
    }

    /// A log that stores nothing and answers id 0: for measuring what storing costs.
    pub fn disabled(metrics: Arc<Metrics>) -> PredictionLog {
        PredictionLog {
            tx: None,
            later: None,
            live_pending: Default::default(),
            metrics,
        }
    }

    /// Whether the second lane has room for another request's rows now (a caller about to
    /// compute some can drop them first, rather than compute and be refused).
    pub fn later_has_room(&self) -> bool {
        self.later.as_ref().is_none_or(|later| later.capacity() > 0)
    }

    /// Hands rows nobody waits for to the second lane and returns at once: false when its
    /// queue is full and the rows were dropped (true, and nothing stored, when logging is off).
    /// A failed write is logged, not reported: no caller is waiting for it.
    pub fn record_later(&self, rows: NewPredictions) -> bool {
        let Some(later) = &self.later else {
            return true;
        };
        if rows.n == 0 {
            return true;
        }
        let n = rows.n;
        let parts = if n as i64 > ID_BLOCK {
            split(rows, ID_BLOCK as usize)
        } else {
            vec![rows]
        };
        for part in parts {
            let size = part.n;
            if later.try_send(part).is_err() {
                return false;
            }
            self.metrics.log_enqueued(size);
        }
        true
    }

    /// Stores a request's predictions and returns their ids once committed.
    pub async fn record(&self, rows: NewPredictions) -> Result<Vec<i64>, LogError> {
        let n = rows.n;
        let Some(tx) = &self.tx else {
            return Ok(vec![0; n]);
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        // A request larger than an id block is stored as several rows.
        let mut parts = Vec::new();
        if n as i64 > ID_BLOCK {
            for chunk in split(rows, ID_BLOCK as usize) {
                parts.push(self.send(tx, chunk).await?);
            }
        } else {
            parts.push(self.send(tx, rows).await?);
        }
        let mut ids = Vec::with_capacity(n);
        for (answer, size) in parts {
            let first = answer.await.map_err(|_| LogError::Unavailable)??;
            ids.extend(first..first + size as i64);
        }
        Ok(ids)
    }

    async fn send(
        &self,
        tx: &mpsc::Sender<Pending>,
        rows: NewPredictions,
    ) -> Result<(oneshot::Receiver<Result<i64, LogError>>, usize), LogError> {
        let (reply, answer) = oneshot::channel();
        let n = rows.n;
        self.metrics.log_enqueued(n);
        self.live_pending
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if tx.send(Pending { rows, reply }).await.is_err() {
            self.live_pending
                .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            return Err(LogError::Unavailable);
        }
        Ok((answer, n))
    }
}

/// Splits a request's predictions into parts of at most `size` (each one row of the log).
pub fn split(rows: NewPredictions, size: usize) -> Vec<NewPredictions> {
    use plinth_store::predictions::{StoredInputs, StoredOutputs};
    let n = rows.n;
    // The `len` rows from row `i` of an array holding `n` rows.
    let part = |v: &[f64], i: usize, len: usize| {
        let w = v.len() / n.max(1);
        v[i * w..(i + len) * w].to_vec()
    };
    (0..n)
        .step_by(size)
        .map(|i| {
            let len = size.min(n - i);
            let inputs = match &rows.inputs {
                StoredInputs::Numbers(x) => StoredInputs::Numbers(part(x, i, len)),
                StoredInputs::Json(v) => StoredInputs::Json(v[i..i + len].to_vec()),
            };
            let o = &rows.outputs;
            NewPredictions {
                n: len,
                inputs,
                outputs: StoredOutputs {
                    label: o.label.as_ref().map(|v| v[i..i + len].to_vec()),
                    value: o.value.as_ref().map(|v| part(v, i, len)),
                    proba: o.proba.as_ref().map(|v| part(v, i, len)),
                    json: o.json.as_ref().map(|v| v[i..i + len].to_vec()),
                },
                ..rows.clone()
            }
        })
        .collect()
}

/// The ids the writer has reserved and not handed out yet.
#[derive(Default)]
struct Ids {
    blocks: VecDeque<(i64, i64)>,
}

impl Ids {
    /// `n` consecutive ids from one block, if a reserved block has room.
    fn take(&mut self, n: usize) -> Option<i64> {
        let n = n as i64;
        while let Some((next, end)) = self.blocks.front_mut() {
            if *end - *next >= n {
                let first = *next;
                *next += n;
                return Some(first);
            }
            self.blocks.pop_front();
        }
        None
    }

    /// Assigns each request its first id, reserving more blocks as needed.
    async fn assign(&mut self, pool: &PgPool, sizes: &[usize]) -> sqlx::Result<Vec<i64>> {
        let mut firsts = Vec::with_capacity(sizes.len());
        for &n in sizes {
            let first = match self.take(n) {
                Some(id) => id,
                None => {
                    // Enough blocks for the rest of this batch, at least one.
                    let rest: usize = sizes[firsts.len()..].iter().sum();
                    let blocks = (rest as i64 / ID_BLOCK + 1).min(64);
                    for start in predictions::reserve_id_blocks(pool, blocks).await? {
                        self.blocks.push_back((start, start + ID_BLOCK));
                    }
                    self.take(n).ok_or_else(|| {
                        sqlx::Error::Protocol("an id block is smaller than a request".into())
                    })?
                }
            };
            firsts.push(first);
        }
        Ok(firsts)
    }
}

async fn writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Pending>,
    metrics: Arc<Metrics>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    // One statement at a time: while it runs, requests queue up and the next statement carries
    // all of them. (Measured with scripts/bench, iris, one row a request: two or three writers
    // in flight gave 17,700 and 15,500 predictions/s against 24,700 for one. The commits' WAL
    // flushes do not overlap, so more writers only split the queue into smaller batches.)
    let mut ids = Ids::default();
    while let Some(first) = rx.recv().await {
        let mut rows = first.rows.n;
        let mut batch = vec![first];
        while rows < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(next) => {
                    rows += next.rows.n;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        write(&pool, &mut ids, batch, rows, &metrics).await;
        pending.fetch_sub(rows, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The second lane's writer: waits for a first row, lets more gather for [`GATHER`] (or until a
/// statement's worth), writes them with one `COPY`, and starts over. Writes what is queued and
/// stops when every handle has been dropped.
async fn later_writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<NewPredictions>,
    metrics: Arc<Metrics>,
    live_pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut ids = Ids::default();
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut rows = first.n;
        let mut batch = vec![first];
        while rows < LATER_BATCH_ROWS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => {
                    rows += next.n;
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        // Yield to the live lane: write while no live request waits for a commit.
        let waiting = Instant::now();
        while live_pending.load(std::sync::atomic::Ordering::Relaxed) > 0
            && waiting.elapsed() < LATER_YIELD
        {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let written = store(&pool, &mut ids, batch.iter()).await;
        metrics.log_flushed(rows, started.elapsed());
        if let Err(e) = written {
            tracing::error!(error = %e, rows, "rows nobody waited for (shadow answers) could not be stored");
        }
    }
}

/// Stores requests' rows with one `COPY`; each request's first id, in order.
async fn store<'a>(
    pool: &PgPool,
    ids: &mut Ids,
    batch: impl Iterator<Item = &'a NewPredictions> + Clone,
) -> sqlx::Result<Vec<i64>> {
    let sizes: Vec<usize> = batch.clone().map(|rows| rows.n).collect();
    let firsts = ids.assign(pool, &sizes).await?;
    let rows: Vec<(i64, &NewPredictions)> = firsts.iter().copied().zip(batch).collect();
    predictions::copy_in(pool, &rows).await?;
    Ok(firsts)
}

/// Writes one batch with one `COPY` and answers each request with its first id.
async fn write(pool: &PgPool, ids: &mut Ids, batch: Vec<Pending>, n: usize, metrics: &Metrics) {
    let started = Instant::now();
    let written = store(pool, ids, batch.iter().map(|p| &p.rows)).await;
    metrics.log_flushed(n, started.elapsed());
    match written {
        Ok(firsts) => {
            for (pending, first) in batch.into_iter().zip(firsts) {
                let _ = pending.reply.send(Ok(first));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = n, "prediction log write failed");
            for pending in batch {
                let _ = pending.reply.send(Err(LogError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_store::predictions::{StoredInputs, StoredOutputs};

    fn rows(model_id: i64, version_id: i64, values: &[f64]) -> NewPredictions {
        NewPredictions {
            model_id,
            version_id,
            user_id: None,
            token_id: None,
            source: "form",
            latency_us: 10,
            n: values.len(),
            inputs: StoredInputs::Numbers(values.iter().flat_map(|v| [*v, -v]).collect()),
            outputs: StoredOutputs {
                value: Some(values.to_vec()),
                ..StoredOutputs::default()
            },
            shadow_of: None,
        }
    }

    async fn a_version(pool: &PgPool) -> (i64, i64) {
        let model: i64 = sqlx::query_scalar("insert into model (name) values ('m') returning id")
            .fetch_one(pool)
            .await
            .unwrap();
        let version: i64 = sqlx::query_scalar(
            "insert into model_version (model_id, version, sha256, size_bytes, card, signature, source)
             values ($1, 1, 'x', 1, '{\"features\": [{\"name\": \"a\"}, {\"name\": \"b\"}]}', '{}', 'test')
             returning id",
        )
        .bind(model)
        .fetch_one(pool)
        .await
        .unwrap();
        (model, version)
    }

    #[sqlx::test]
    async fn concurrent_records_get_their_own_ids_back(pool: PgPool) {
        let (model, version) = a_version(&pool).await;
        let (log, _) = PredictionLog::start(pool.clone(), Default::default());
        let mut tasks = Vec::new();
        for n in 0..50 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let values = [n as f64, n as f64 + 1000.0];
                (n, log.record(rows(model, version, &values)).await.unwrap())
            }));
        }
        for task in tasks {
            let (n, ids) = task.await.unwrap();
            assert_eq!(ids.len(), 2);
            for (id, expected) in ids.iter().zip([n as f64, n as f64 + 1000.0]) {
                let stored = predictions::find(&pool, *id).await.unwrap().unwrap();
                assert_eq!(stored.id, *id);
                assert_eq!(
                    stored.inputs.0,
                    serde_json::json!({"a": expected, "b": -expected})
                );
                assert_eq!(stored.outputs.0, serde_json::json!({"value": expected}));
            }
        }
        let rows: i64 = sqlx::query_scalar("select count(*) from prediction")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 50, "one row per request");
    }

    #[sqlx::test]
    async fn a_request_larger_than_an_id_block_is_stored_whole(pool: PgPool) {
        let (model, version) = a_version(&pool).await;
        let (log, _) = PredictionLog::start(pool.clone(), Default::default());
        let values: Vec<f64> = (0..2500).map(f64::from).collect();
        let ids = log.record(rows(model, version, &values)).await.unwrap();
        assert_eq!(ids.len(), 2500);
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 2500, "every prediction has its own id");
        for i in [0, 1023, 1024, 2047, 2048, 2499] {
            let stored = predictions::find(&pool, ids[i]).await.unwrap().unwrap();
            assert_eq!(
                stored.outputs.0["value"],
                serde_json::json!(i as f64),
                "row {i}"
            );
        }
        let counted: i64 = sqlx::query_scalar("select sum(n)::bigint from prediction_rollup")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(counted, 2500, "the rollups count predictions, not rows");
    }

    #[sqlx::test]
    async fn rows_nobody_waits_for_are_stored_a_moment_later(pool: PgPool) {
        let (model, version) = a_version(&pool).await;
        let (log, writer) = PredictionLog::start(pool.clone(), Default::default());
        for n in 0..50 {
            assert!(log.record_later(rows(model, version, &[n as f64, n as f64 + 0.5])));
        }
        let big: Vec<f64> = (0..1500).map(f64::from).collect();
        assert!(log.record_later(rows(model, version, &big)));
        // Dropping the last handle writes what is queued, then stops the writers.
        drop(log);
        writer.await.unwrap();
        let (rows_stored, predictions): (i64, i64) =
            sqlx::query_as("select count(*), sum(n)::bigint from prediction")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(rows_stored, 52, "one row per request, the large one in two");
        assert_eq!(predictions, 1600);
        let mut values: Vec<f64> =
            sqlx::query_scalar("select v from prediction, unnest(value) v where n = 2 order by v")
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut expected: Vec<f64> = (0..50).flat_map(|n| [n as f64, n as f64 + 0.5]).collect();
        expected.sort_by(f64::total_cmp);
        values.sort_by(f64::total_cmp);
        assert_eq!(values, expected, "every row as it was handed over");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_reported_not_hidden() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_millis(300))
            .connect_lazy("postgres://postgres@127.0.0.1:1/none")
            .unwrap();
        let (log, _) = PredictionLog::start(pool, Default::default());
        let err = log.record(rows(1, 1, &[1.0])).await.unwrap_err();
        assert!(err.to_string().contains("could not be stored"));
    }
}
