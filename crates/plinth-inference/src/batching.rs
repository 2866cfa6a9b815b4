//! Dynamic batching, as Triton's `dynamic_batching`: concurrent requests for the same loaded
//! model wait up to `max_wait` for each other and run as one batch, for models whose cost per
//! row falls with the batch size (tree ensembles, MLPs). Switched on per model by its card's
//! `[batching]` table.
//!
//! Each batched model has two threads (so one gathers the next batch while the other runs the
//! last) fed by one queue. A thread takes the first request waiting, then every request that
//! arrives within `max_wait` until the batch holds `max_rows`, joins their tensors along the
//! first axis, runs them once and hands each request its rows of the outputs. Requests whose
//! tensors cannot be joined (other shapes or types), a batch whose outputs do not have one row
//! per input row, and a batch the model refuses run one by one instead, so each request gets
//! exactly the answer or the error it would have had alone.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{LoadedModel, NamedTensor, RunError, RunTimes, TensorData};

/// A batched model's settings, from its card.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub max_wait: Duration,
    pub max_rows: usize,
}

type Answer = Result<(Vec<NamedTensor>, RunTimes), RunError>;

struct Job {
    inputs: Vec<NamedTensor>,
    rows: usize,
    queued: Instant,
    reply: tokio::sync::oneshot::Sender<Answer>,
}

/// The queue in front of a batched model.
pub struct Batcher {
    tx: Mutex<mpsc::Sender<Job>>,
    pub settings: Settings,
    stats: Arc<Stats>,
}

/// What the batcher has done: runs, and requests answered by them.
#[derive(Debug, Default)]
pub struct Stats {
    pub runs: std::sync::atomic::AtomicU64,
    pub requests: std::sync::atomic::AtomicU64,
    /// Requests answered by a run of several requests.
    pub joined: std::sync::atomic::AtomicU64,
}

impl Batcher {
    /// Starts the threads. They hold the model weakly and stop when the batcher is dropped.
    pub fn start(model: Weak<LoadedModel>, settings: Settings) -> Batcher {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Stats::default());
        for i in 0..2 {
            let (rx, model, stats) = (rx.clone(), model.clone(), stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("plinth-batch-{i}"))
                .spawn(move || gather_and_run(&rx, &model, settings, &stats));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a batching thread");
            }
        }
        Batcher {
            tx: Mutex::new(tx),
            settings,
            stats,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a request and waits for its rows of the batch's outputs.
    pub async fn run(&self, inputs: Vec<NamedTensor>) -> Answer {
        let rows = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(1);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            inputs,
            rows,
            queued: Instant::now(),
            reply,
        };
        let sent = match self.tx.lock() {
            Ok(tx) => tx.send(job).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(RunError::Failed(
                "the model's batching queue has stopped".into(),
            ));
        }
        answer
            .await
            .map_err(|_| RunError::Failed("the model's batching thread stopped".into()))?
    }
}

fn gather_and_run(
    rx: &Mutex<mpsc::Receiver<Job>>,
    model: &Weak<LoadedModel>,
    s: Settings,
    stats: &Stats,
) {
    loop {
        let jobs = {
            let Ok(rx) = rx.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            let deadline = Instant::now() + s.max_wait;
            let mut rows = first.rows;
            let mut jobs = vec![first];
            while rows < s.max_rows {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        rows += job.rows;
                        jobs.push(job);
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            jobs
        };
        let Some(model) = model.upgrade() else {
            for job in jobs {
                let _ = job
                    .reply
                    .send(Err(RunError::Failed("the model was unloaded".into())));
            }
            return;
        };
        run_jobs(&model, jobs, stats);
    }
}

fn run_jobs(model: &LoadedModel, jobs: Vec<Job>, stats: &Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.requests.fetch_add(jobs.len() as u64, Relaxed);
    if jobs.len() > 1 {
        if let Some(inputs) = join(&jobs) {
            let started = Instant::now();
            if let Ok(outputs) = model.run(inputs) {
                let compute = started.elapsed();
                let total: usize = jobs.iter().map(|j| j.rows).sum();
                if outputs.iter().all(|o| o.shape.first() == Some(&total)) {
                    stats.runs.fetch_add(1, Relaxed);
                    stats.joined.fetch_add(jobs.len() as u64, Relaxed);
                    let mut at = 0;
                    for job in jobs {
                        let mine = outputs
                            .iter()
                            .map(|o| slice_rows(o, at, job.rows))
                            .collect();
                        at += job.rows;
                        let times = RunTimes {
                            queue: started.saturating_duration_since(job.queued),
                            compute,
                        };
                        let _ = job.reply.send(Ok((mine, times)));
                    }
                    return;
                }
            }
        }
    }
    for job in jobs {
        stats.runs.fetch_add(1, Relaxed);
        let started = Instant::now();
        let answer = model.run(job.inputs).map(|outputs| {
            let times = RunTimes {
                queue: started.saturating_duration_since(job.queued),
                compute: started.elapsed(),
            };
            (outputs, times)
        });
        let _ = job.reply.send(answer);
    }
}

/// The jobs' inputs joined along the first axis, when they have the same names, types and
/// shapes past it.
fn join(jobs: &[Job]) -> Option<Vec<NamedTensor>> {
    let first = &jobs[0].inputs;
    let compatible = jobs.iter().all(|j| {
        j.inputs.len() == first.len()
            && j.inputs.iter().zip(first).all(|(a, b)| {
                a.name == b.name
                    && a.data.dtype() == b.data.dtype()
                    && a.shape.len() == b.shape.len()
                    && !a.shape.is_empty()
                    && a.shape[1..] == b.shape[1..]
                    && a.shape[0] == j.rows
            })
    });
    if !compatible {
        return None;
    }
    let total: usize = jobs.iter().map(|j| j.rows).sum();
    Some(
        first
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut data = t.data.clone();
                for j in &jobs[1..] {
                    append(&mut data, &j.inputs[i].data);
                }
                let mut shape = t.shape.clone();
                shape[0] = total;
                NamedTensor {
                    name: t.name.clone(),
                    shape,
                    data,
                }
            })
            .collect(),
    )
}

fn append(to: &mut TensorData, from: &TensorData) {
    match (to, from) {
        (TensorData::F32(a), TensorData::F32(b)) => a.extend_from_slice(b),
        (TensorData::F64(a), TensorData::F64(b)) => a.extend_from_slice(b),
        (TensorData::I64(a), TensorData::I64(b)) => a.extend_from_slice(b),
        (TensorData::I32(a), TensorData::I32(b)) => a.extend_from_slice(b),
        (TensorData::Bool(a), TensorData::Bool(b)) => a.extend_from_slice(b),
        (TensorData::String(a), TensorData::String(b)) => a.extend_from_slice(b),
        // `join` checked the types.
        _ => {}
    }
}

/// Rows `from..from + rows` of a tensor whose first axis is the batch.
fn slice_rows(t: &NamedTensor, from: usize, rows: usize) -> NamedTensor {
    let width: usize = t.shape.iter().skip(1).product();
    let range = from * width..(from + rows) * width;
    // (The caller checked the first axis; a tensor shorter than its shape says gives nothing.)
    fn cut<T: Clone>(v: &[T], range: std::ops::Range<usize>) -> Vec<T> {
        v.get(range).map(<[T]>::to_vec).unwrap_or_default()
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(cut(v, range)),
        TensorData::F64(v) => TensorData::F64(cut(v, range)),
        TensorData::I64(v) => TensorData::I64(cut(v, range)),
        TensorData::I32(v) => TensorData::I32(cut(v, range)),
        TensorData::Bool(v) => TensorData::Bool(cut(v, range)),
        TensorData::String(v) => TensorData::String(cut(v, range)),
    };
    let mut shape = t.shape.clone();
    shape[0] = rows;
    NamedTensor {
        name: t.name.clone(),
        shape,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn forest() -> Arc<LoadedModel> {
        let bytes = std::fs::read("tests/fixtures/zoo/random_forest_classifier.onnx").unwrap();
        Arc::new(crate::load(&bytes).unwrap())
    }

    fn row(i: usize) -> Vec<NamedTensor> {
        vec![NamedTensor {
            name: "X".into(),
            shape: vec![1, 64],
            data: TensorData::F32((0..64).map(|c| ((i * 7 + c) % 17) as f32).collect()),
        }]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_run_together_and_get_their_own_rows() {
        let model = forest();
        let settings = Settings {
            max_wait: Duration::from_millis(20),
            max_rows: 64,
        };
        let alone: Vec<_> = (0..24).map(|i| model.run(row(i)).unwrap()).collect();
        let together =
            futures_util::future::join_all((0..24).map(|i| model.run_batched(settings, row(i))))
                .await;
        for (i, (got, want)) in together.into_iter().zip(alone).enumerate() {
            assert_eq!(got.unwrap().0, want, "request {i}");
        }
        let stats = model.batcher.get().unwrap().stats();
        assert_eq!(stats.requests.load(Relaxed), 24);
        assert!(stats.runs.load(Relaxed) < 24, "{stats:?}");
        assert!(stats.joined.load(Relaxed) > 1, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_cannot_join_gets_its_own_error() {
        let model = forest();
        let settings = Settings {
            max_wait: Duration::from_millis(20),
            max_rows: 64,
        };
        let mut bad = row(0);
        bad[0].shape = vec![1, 10];
        bad[0].data = TensorData::F32(vec![0.0; 10]);
        let (good, bad) = tokio::join!(
            model.run_batched(settings, row(1)),
            model.run_batched(settings, bad)
        );
        assert_eq!(good.unwrap().0, model.run(row(1)).unwrap());
        assert!(matches!(bad, Err(RunError::BadInput(_))), "{bad:?}");
    }
}
