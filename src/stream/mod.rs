//! Kafka streams: a model scores the JSON records of a topic and produces one result per record
//! to an output topic, storing every prediction (source `stream`).
//!
//! Streams are defined on a model's admin page and run by every instance with
//! `PLINTH_KAFKA_BROKERS` set: each joins the stream's consumer group, so Kafka shares the
//! topic's partitions between instances and moves them when one dies. A batch of records is
//! scored, its results and dead letters produced (and acknowledged by the broker), then its
//! predictions and each partition's next offset committed to Postgres in one transaction, and
//! only then the group's offsets committed to Kafka. A record seen again after a crash is below
//! its partition's stored offset: it is recognised and not stored twice (its result may be
//! produced twice: the output topic is at least once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Data;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::db::predictions::{self, NewPredictions, ID_BLOCK};
use crate::db::streams::{self as db, StreamRow};
use crate::registry::decode::decode;
use crate::registry::{Selector, Served};
use crate::serving;
use crate::state::AppState;

/// Most records scored together.
const MAX_BATCH: usize = 2000;
/// How long a batch waits for more records once it has one.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// The header a dead letter's reason travels in.
pub const ERROR_HEADER: &str = "plinth-error";

/// Runs the streams while the instance runs: starts a consumer for every running stream,
/// stops those paused or removed, and restarts one that failed (a broker away) after a pause.
pub async fn supervise(state: Data<AppState>) {
    let Some(brokers) = state.settings.kafka_brokers.clone() else {
        return;
    };
    let mut running: HashMap<i64, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    // Streams that failed and have not run a minute since: a broker away alerts once, not at
    // every restart.
    let failing: Arc<Mutex<HashSet<i64>>> = Arc::default();
    loop {
        if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        match db::all(&state.pool).await {
            Ok(streams) => {
                let wanted: HashMap<i64, StreamRow> = streams
                    .into_iter()
                    .filter(|s| s.state == "running")
                    .map(|s| (s.id, s))
                    .collect();
                running.retain(|id, (stop, task)| {
                    let keep = wanted.contains_key(id) && !task.is_finished();
                    if !keep {
                        let _ = stop.send(true);
                    }
                    keep
                });
                for (id, stream) in wanted {
                    if running.contains_key(&id) {
                        continue;
                    }
                    let (stop, stopped) = watch::channel(false);
                    let (state, brokers) = (state.clone(), brokers.clone());
                    let failing = failing.clone();
                    let task = tokio::spawn(async move {
                        let name = stream.input_topic.clone();
                        let (id, model_id, model) =
                            (stream.id, stream.model_id, stream.model.clone());
                        let started = Instant::now();
                        let outcome = run(&state, &brokers, stream, stopped).await;
                        let first_failure = {
                            let mut failing = failing.lock().unwrap_or_else(|p| p.into_inner());
                            if outcome.is_ok() || started.elapsed() > Duration::from_secs(60) {
                                failing.remove(&id);
                            }
                            outcome.is_err() && failing.insert(id)
                        };
                        match outcome {
                            Ok(()) => tracing::info!(topic = %name, "stream stopped"),
                            Err(e) => {
                                tracing::warn!(topic = %name, error = %e, "stream failed; it restarts shortly");
                                if first_failure {
                                    crate::automation::webhooks::alert(
                                        &state.pool,
                                        "stream.failed",
                                        Some((model_id, &model)),
                                        format!("{model}: the stream from {name} failed ({e}); it restarts and keeps trying."),
                                        json!({"stream": id, "input_topic": name, "error": e.to_string()}),
                                    )
                                    .await;
                                }
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        }
                    });
                    running.insert(id, (stop, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the streams"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (_, (stop, task)) in running {
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// Where each partition's next record to store is, as Postgres last said (shared between the
/// stream's loop, which refreshes it, and the consumer's rebalance callback, which reads it).
type Stored = Arc<Mutex<HashMap<i32, i64>>>;

/// The consumer's context: a partition assigned to this instance starts at the offset stored
/// in Postgres with the predictions, not at the group's offset in Kafka. Postgres is the
/// record of what was stored (the Kafka commit after it is for lag and tools); a broker whose
/// group offsets are behind, ahead or lost cannot make a record be skipped or stored twice.
struct StreamContext {
    topic: String,
    stored: Stored,
}

impl ClientContext for StreamContext {}

impl ConsumerContext for StreamContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let partitions: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            if let Ok(stored) = self.stored.lock() {
                for p in partitions {
                    if let Some(&next) = stored.get(&p) {
                        let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(next));
                    }
                }
            }
            tracing::debug!(topic = %self.topic, assigned = ?tpl.to_topic_map(), "partitions assigned");
            if let Err(e) = consumer.assign(tpl) {
                tracing::warn!(topic = %self.topic, error = %e, "could not take the partitions assigned");
            }
        } else if let Err(e) = consumer.unassign() {
            tracing::warn!(topic = %self.topic, error = %e, "could not give the partitions back");
        }
    }
}

type Reader = StreamConsumer<StreamContext>;

/// The clients of one stream.
fn clients(
    brokers: &str,
    extra: &[(String, String)],
    stream: &StreamRow,
    stored: Stored,
) -> Result<(Reader, FutureProducer), String> {
    let base = || {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (k, v) in extra {
            config.set(k, v);
        }
        config
    };
    let consumer: Reader = base()
        .set("group.id", &stream.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("isolation.level", "read_uncommitted")
        .create_with_context(StreamContext {
            topic: stream.input_topic.clone(),
            stored,
        })
        .map_err(|e| format!("the Kafka consumer could not be created: {e}"))?;
    consumer
        .subscribe(&[&stream.input_topic])
        .map_err(|e| format!("could not subscribe to {}: {e}", stream.input_topic))?;
    let producer: FutureProducer = base()
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("the Kafka producer could not be created: {e}"))?;
    Ok((consumer, producer))
}

async fn run(
    state: &Data<AppState>,
    brokers: &str,
    stream: StreamRow,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let stored: Stored = Arc::new(Mutex::new(
        db::watermarks(&state.pool, stream.id)
            .await
            .map_err(|e| e.to_string())?,
    ));
    let (consumer, producer) = clients(
        brokers,
        &state.settings.kafka_config,
        &stream,
        stored.clone(),
    )?;
    let consumer = Arc::new(consumer);
    tracing::info!(topic = %stream.input_topic, model = %stream.model, config = ?state.settings.kafka_config, "stream started");
    let mut last_lag = Instant::now();
    let mut positions = Positions::default();
    // Since when this consumer has held no partition, and the stream's stored offsets then.
    let mut idle: Option<(Instant, i64)> = None;
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return Ok(()),
            m = consumer.recv() => m.map_err(|e| format!("reading {}: {e}", stream.input_topic))?.detach(),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                check_stuck(state, &consumer, &stream, &mut idle).await?;
                continue;
            }
        };
        idle = None;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => return Err(format!("reading {}: {e}", stream.input_topic)),
                Err(_) => break,
            }
        }
        let expected: HashMap<i32, i64> = match stored.lock() {
            Ok(s) => s.clone(),
            Err(_) => HashMap::new(),
        };
        let reread = positions.follow(&batch, &expected, &stream.input_topic);
        if !reread.is_empty() {
            batch.retain(|m| !reread.contains_key(&m.partition()));
            for (&p, &at) in &reread {
                let (consumer, topic) = (consumer.clone(), stream.input_topic.clone());
                tokio::task::spawn_blocking(move || {
                    consumer.seek(&topic, p, Offset::Offset(at), Duration::from_secs(5))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("could not read partition {p} again: {e}"))?;
            }
            if batch.is_empty() {
                continue;
            }
        }
        process(state, &consumer, &producer, &stream, batch, &stored).await?;
        if last_lag.elapsed() > Duration::from_secs(2) {
            last_lag = Instant::now();
            measure_lag(state, &consumer, &stream).await;
        }
    }
}

/// Where this consumer is in each partition: the last offset read, and how many times in a row
/// the partition was read again after records were left out.
#[derive(Default)]
struct Positions {
    delivered: HashMap<i32, i64>,
    retries: HashMap<i32, u32>,
}

impl Positions {
    /// Follows a batch: each partition's records must carry on from the last one read (or from
    /// the offset stored in Postgres, `expected`). A forward jump is legal in Kafka (compaction,
    /// transaction markers), but a broker can also leave records out of a fetch (tansu 0.6 on
    /// S3 after a restart leaves out those of a fetch that starts inside one of its stored
    /// batches, and serves them to a fetch that starts before it). Such a partition is read
    /// again, from further back on each of three tries (what is read twice is below the stored
    /// offset and skipped as seen), before the jump is taken as the log's own. Returns the
    /// partitions to read again and from where; their records in this batch are to be dropped.
    fn follow(
        &mut self,
        batch: &[OwnedMessage],
        expected: &HashMap<i32, i64>,
        topic: &str,
    ) -> HashMap<i32, i64> {
        let before = self.delivered.clone();
        let mut reread: HashMap<i32, i64> = HashMap::new();
        for m in batch {
            let p = m.partition();
            if reread.contains_key(&p) {
                continue;
            }
            let want = self
                .delivered
                .get(&p)
                .map(|l| l + 1)
                .or(expected.get(&p).copied());
            if let Some(want) = want.filter(|w| m.offset() > *w) {
                let tries = self.retries.entry(p).or_insert(0);
                if *tries < 3 {
                    *tries += 1;
                    tracing::info!(
                        topic,
                        partition = p,
                        want,
                        got = m.offset(),
                        "records left out of a fetch; reading the partition again"
                    );
                    // From where this batch's records of the partition start: all are dropped.
                    let first = batch
                        .iter()
                        .find(|r| r.partition() == p)
                        .map(|r| r.offset());
                    let start = before
                        .get(&p)
                        .map(|l| l + 1)
                        .or(expected.get(&p).copied())
                        .or(first)
                        .unwrap_or(want);
                    let back = 1_000 * 10i64.pow(*tries - 1);
                    reread.insert(p, (start.min(want) - back).max(0));
                    match before.get(&p) {
                        Some(&l) => self.delivered.insert(p, l),
                        None => self.delivered.remove(&p),
                    };
                    continue;
                }
                tracing::warn!(
                    topic,
                    partition = p,
                    from = want,
                    to = m.offset(),
                    "the partition's offsets jump; taken as the log's own gap"
                );
            }
            self.retries.remove(&p);
            self.delivered.insert(p, m.offset());
        }
        reread
    }
}

/// A consumer that holds no partition while no instance stores anything for the stream: the
/// group may be stuck (a coordinator still waiting on a member that died while leading it) or
/// the topic idle. Rejoining the group after `REJOIN_AFTER` gets the partitions handed out
/// again; on an idle topic it costs one rebalance.
const REJOIN_AFTER: Duration = Duration::from_secs(20);

async fn check_stuck(
    state: &Data<AppState>,
    consumer: &Reader,
    stream: &StreamRow,
    idle: &mut Option<(Instant, i64)>,
) -> Result<(), String> {
    let holds = consumer
        .assignment()
        .map(|a| a.count() > 0)
        .unwrap_or(false);
    if holds {
        *idle = None;
        return Ok(());
    }
    let stored: i64 = db::watermarks(&state.pool, stream.id)
        .await
        .map_err(|e| e.to_string())?
        .values()
        .sum();
    match idle {
        Some((since, then)) if *then == stored => {
            if since.elapsed() >= REJOIN_AFTER {
                return Err(format!(
                    "no partition of {} assigned for {} s while nothing was stored; rejoining the consumer group",
                    stream.input_topic,
                    since.elapsed().as_secs()
                ));
            }
        }
        _ => *idle = Some((Instant::now(), stored)),
    }
    Ok(())
}

/// A record to produce: topic, value, key, headers.
type Outgoing<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>, Option<OwnedHeaders>);

/// What one record became.
enum Fate {
    /// Already stored (seen before a crash or a rebalance).
    Seen,
    /// Its rows, at these positions of the batch's rows.
    Rows {
        first: usize,
        n: usize,
        many: bool,
    },
    Dead(String),
}

/// A record's rows: one JSON object of the card's features, or a list of them.
fn rows_of(
    served: &Served,
    payload: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<Vec<f64>>, bool), String> {
    let payload = payload.ok_or("The record has no value.")?;
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("The record is not valid JSON: {e}."))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > limit {
                return Err(format!(
                    "A record holds 1 to {limit} rows; this one holds {}.",
                    items.len()
                ));
            }
            let rows = items
                .iter()
                .enumerate()
                .map(|(i, item)| crate::api::v1::row_from_json(&served.card, item, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok((rows, true))
        }
        one => Ok((
            vec![crate::api::v1::row_from_json(&served.card, one, None)?],
            false,
        )),
    }
}

async fn process(
    state: &Data<AppState>,
    consumer: &Arc<Reader>,
    producer: &FutureProducer,
    stream: &StreamRow,
    batch: Vec<OwnedMessage>,
    stored: &Stored,
) -> Result<(), String> {
    let pool = &state.pool;
    let served = serving::served(state, &stream.model, &Selector::Alias(stream.alias.clone()))
        .await
        .map_err(|e| format!("the model cannot serve: {e}"))?;
    let seen = db::watermarks(pool, stream.id)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(mut s) = stored.lock() {
        s.clone_from(&seen);
    }
    // Each record's rows, or why it cannot be scored.
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut fates = Vec::with_capacity(batch.len());
    // A record delivered twice within one batch (re-fetched after a rebalance) counts once.
    let mut in_batch: HashSet<(i32, i64)> = HashSet::new();
    for m in &batch {
        let again = !in_batch.insert((m.partition(), m.offset()));
        if again
            || seen
                .get(&m.partition())
                .is_some_and(|next| m.offset() < *next)
        {
            fates.push(Fate::Seen);
            continue;
        }
        match rows_of(&served, m.payload(), state.settings.max_batch_rows) {
            Ok((mut r, many)) => {
                fates.push(Fate::Rows {
                    first: rows.len(),
                    n: r.len(),
                    many,
                });
                rows.append(&mut r);
            }
            Err(reason) => fates.push(Fate::Dead(reason)),
        }
    }
    // Scored together; a run that fails is retried a record at a time, and the records the
    // model cannot score become dead letters.
    let started = Instant::now();
    let outcomes = match score(&served, &rows).await {
        Ok(o) => o.into_iter().map(Some).collect::<Vec<_>>(),
        Err(_) => {
            let mut all = vec![None; rows.len()];
            for fate in &mut fates {
                if let Fate::Rows { first, n, .. } = *fate {
                    match score(&served, &rows[first..first + n]).await {
                        Ok(o) => {
                            for (k, o) in o.into_iter().enumerate() {
                                all[first + k] = Some(o);
                            }
                        }
                        Err(e) => {
                            *fate =
                                Fate::Dead(format!("The model could not score this record: {e}"))
                        }
                    }
                }
            }
            all
        }
    };
    let latency_us =
        (started.elapsed().as_micros() / rows.len().max(1) as u128).min(i32::MAX as u128) as i32;
    // Ids for the rows stored, consecutive per log row.
    let kept: Vec<usize> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Rows { first, n, .. } => Some(*first..*first + *n),
            _ => None,
        })
        .flatten()
        .collect();
    let blocks = if kept.is_empty() {
        Vec::new()
    } else {
        predictions::reserve_id_blocks(pool, (kept.len() as i64 + ID_BLOCK - 1) / ID_BLOCK)
            .await
            .map_err(|e| e.to_string())?
    };
    let mut ids = vec![0i64; rows.len()];
    for (k, &row) in kept.iter().enumerate() {
        ids[row] = blocks[k / ID_BLOCK as usize] + (k as i64 % ID_BLOCK);
    }
    // Results and dead letters, acknowledged by the broker before anything is committed.
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut dead = 0i64;
    let mut scored = 0i64;
    for (m, fate) in batch.iter().zip(&fates) {
        let (topic, payload, headers) = match fate {
            Fate::Seen => continue,
            Fate::Dead(reason) => {
                dead += 1;
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: ERROR_HEADER,
                    value: Some(reason.as_str()),
                });
                // The original record's headers travel with it.
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let header = h.get(i);
                        headers = headers.insert(Header {
                            key: header.key,
                            value: header.value,
                        });
                    }
                }
                (
                    &stream.dead_letter_topic,
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    Some(headers),
                )
            }
            Fate::Rows { first, n, many } => {
                scored += *n as i64;
                let answers: Vec<Value> = (*first..first + n)
                    .map(|r| {
                        let o = outcomes[r].as_ref();
                        let mut v = o.map_or(Value::Null, |o| o.to_json());
                        if let Value::Object(map) = &mut v {
                            map.insert("prediction_id".into(), ids[r].into());
                        }
                        v
                    })
                    .collect();
                let mut body = json!({
                    "model": served.model.name,
                    "version": served.version.version,
                    "source": {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()},
                });
                if *many {
                    body["predictions"] = Value::Array(answers);
                } else if let Some(Value::Object(one)) = answers.into_iter().next() {
                    for (k, v) in one {
                        body[k] = v;
                    }
                }
                (&stream.output_topic, body.to_string().into_bytes(), None)
            }
        };
        outgoing.push((topic.as_str(), payload, m.key(), headers));
    }
    let mut deliveries = Vec::with_capacity(outgoing.len());
    for (topic, payload, key, headers) in &outgoing {
        let mut record = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    for delivery in futures_util::future::join_all(deliveries).await {
        delivery.map_err(|(e, _)| format!("a result could not be produced: {e}"))?;
    }
    // The predictions and the partitions' offsets, in one transaction.
    let mut partitions: BTreeMap<i32, (Option<i64>, i64)> = BTreeMap::new();
    for m in &batch {
        let p = m.partition();
        let stored = seen.get(&p).copied();
        let entry = partitions.entry(p).or_insert((stored, 0));
        entry.1 = entry.1.max(m.offset() + 1);
    }
    let partitions: Vec<(i32, Option<i64>, i64)> = partitions
        .into_iter()
        .filter(|(_, (seen, next))| seen.is_none_or(|s| *next > s))
        .map(|(p, (seen, next))| (p, seen, next))
        .collect();
    let parts = if kept.is_empty() {
        Vec::new()
    } else {
        let kept_rows: Vec<Vec<f64>> = kept.iter().map(|&r| rows[r].clone()).collect();
        let outcomes: Vec<_> = kept.iter().filter_map(|&r| outcomes[r].clone()).collect();
        crate::prediction_log::split(
            NewPredictions {
                model_id: served.model.id,
                version_id: served.version.id,
                user_id: None,
                token_id: None,
                source: "stream",
                latency_us,
                n: kept.len(),
                inputs: serving::stored_inputs(
                    &served.card,
                    &served.loaded.signature.inputs,
                    &kept_rows,
                    &[],
                ),
                outputs: serving::stored_outputs(&served.card, &outcomes),
                shadow_of: None,
            },
            ID_BLOCK as usize,
        )
    };
    let firsts: Vec<i64> = (0..parts.len()).map(|i| blocks[i]).collect();
    let predictions: Vec<(i64, &NewPredictions)> = firsts.iter().copied().zip(&parts).collect();
    if !partitions.is_empty() {
        let stored = db::commit(
            pool,
            &db::Batch {
                stream_id: stream.id,
                partitions: &partitions,
                predictions: &predictions,
                records: scored,
                dead_letters: dead,
            },
        )
        .await
        .map_err(|e| format!("the predictions could not be stored: {e}"))?;
        if !stored {
            return Err("another consumer stored these records first (a rebalance); starting again from the committed offsets".into());
        }
    }
    // Only now the consumer group's offsets.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for m in &batch {
        let at = next.entry(m.partition()).or_insert(0);
        *at = (*at).max(m.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, at) in next {
        offsets
            .add_partition_offset(&stream.input_topic, partition, Offset::Offset(at))
            .map_err(|e| e.to_string())?;
    }
    // Asynchronously: the offsets stored in Postgres already keep a record from being stored
    // twice, so a commit lost in a crash only means reading a few records again.
    consumer
        .commit(&offsets, CommitMode::Async)
        .map_err(|e| format!("the offsets could not be committed: {e}"))?;
    let series = state.metrics.version(
        served.version.id,
        &served.model.name,
        served.version.version,
    );
    series.success(scored as usize);
    state.metrics.stream_records(
        &stream.model,
        &stream.input_topic,
        scored as u64,
        dead as u64,
    );
    Ok(())
}

/// Runs the model on rows (off the async workers).
async fn score(
    served: &Served,
    rows: &[Vec<f64>],
) -> Result<Vec<crate::registry::decode::Outcome>, String> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let tensors = serving::input_tensors(&served.card, &served.loaded.signature.inputs, rows, &[]);
    let (outputs, _) = crate::inference::run_async(served.loaded.clone(), tensors)
        .await
        .map_err(|e| e.to_string())?;
    Ok(decode(
        &served.card,
        &served.loaded.signature,
        &outputs,
        rows.len(),
    ))
}

/// Records behind on the partitions this instance holds: to `/metrics` and the stream's row.
async fn measure_lag(state: &Data<AppState>, consumer: &Arc<Reader>, stream: &StreamRow) {
    let consumer = consumer.clone();
    let topic = stream.input_topic.clone();
    let lag = tokio::task::spawn_blocking(move || -> Option<i64> {
        let assigned = consumer.assignment().ok()?;
        let committed = consumer
            .committed_offsets(assigned.clone(), Duration::from_secs(2))
            .ok()?;
        let mut lag = 0;
        for e in assigned.elements_for_topic(&topic) {
            let (_, high) = consumer
                .fetch_watermarks(&topic, e.partition(), Duration::from_secs(2))
                .ok()?;
            let at = committed
                .find_partition(&topic, e.partition())
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            lag += (high - at).max(0);
        }
        Some(lag)
    })
    .await
    .ok()
    .flatten();
    if let Some(lag) = lag {
        state
            .metrics
            .stream_lag(&stream.model, &stream.input_topic, lag);
        if let Err(e) = db::set_lag(&state.pool, stream.id, lag).await {
            tracing::warn!(error = %e, "could not record a stream's lag");
        }
    }
}
