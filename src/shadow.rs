//! Shadow traffic: candidate versions answer a copy of a model's live requests, off the request
//! path, and their answers are stored (source `shadow`, linked to the live rows) and never
//! returned.
//!
//! A live request hands its inputs to a bounded queue and goes on; when the queue, or the
//! prediction log's lane for shadow answers, is full, the copy is dropped and counted
//! (`plinth_shadow_dropped_total`) before anything is cloned for it, so a slow or broken shadow
//! never holds up the answer. One worker per instance answers up to eight copies at once (every
//! shadow version on each) and hands the answers to the log's second lane, which writes them in
//! small statements while no live request waits for a commit. The shadows' models (and the
//! decoding of their answers) run on a thread of their own at the lowest CPU priority (nice 19),
//! so a live request that wants a core mostly gets it. Under full load the shadows answer what
//! the spare capacity allows, and the rest of the copies are dropped, counted, rather than
//! slowing live answers. (Linux's `SCHED_IDLE` was tried and left: a thread that may wait
//! indefinitely for a core can hold an allocator lock a live thread then waits for.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::db::predictions::{NewPredictions, StoredInputs};
use crate::inference::{self, NamedTensor};
use crate::registry::decode::decode;
use crate::registry::Selector;
use crate::serving::stored_outputs;
use crate::state::AppState;

/// One live request's copy: what the model received and where its answers were stored.
pub struct LiveCopy {
    pub model: String,
    /// The live version (a shadow that is also the live answerer is skipped).
    pub live_version_id: i64,
    pub shadows: std::sync::Arc<Vec<i32>>,
    pub tensors: Vec<NamedTensor>,
    pub stored: StoredInputs,
    pub n: usize,
    /// The live row's first prediction id.
    pub live_first_id: i64,
}

/// The queue between live requests and the shadow worker.
pub struct Queue {
    tx: mpsc::Sender<LiveCopy>,
    rx: Mutex<Option<mpsc::Receiver<LiveCopy>>>,
    dropped: AtomicU64,
    idle: IdleThread,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            idle: IdleThread::start(),
        }
    }

    /// Hands a copy to the worker, or drops it (and counts it) when the queue is full.
    pub fn offer(&self, copy: LiveCopy, metrics: &crate::monitoring::metrics::Metrics) {
        let model = copy.model.clone();
        if self.tx.try_send(copy).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.shadow_dropped(&model);
        }
    }

    /// Whether a copy offered now would be taken: room in the queue, and in the prediction
    /// log's lane for the answers. When not, [`Queue::drop_one`] counts the copy not made.
    pub fn has_room(&self, log: &crate::prediction_log::PredictionLog) -> bool {
        self.tx.capacity() > 0 && log.later_has_room()
    }

    /// Counts a copy that was not made because there was no room for it.
    pub fn drop_one(&self, model: &str, metrics: &crate::monitoring::metrics::Metrics) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics.shadow_dropped(model);
    }

    /// Copies dropped on this instance since it started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<LiveCopy>> {
        self.rx.lock().ok().and_then(|mut rx| rx.take())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs jobs at the lowest CPU priority (nice 19). It ends when the queue that owns
/// it is dropped.
struct IdleThread {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
}

impl IdleThread {
    fn start() -> IdleThread {
        let (jobs, waiting) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("plinth-shadow".into())
            .spawn(move || {
                lowest_priority();
                while let Ok(job) = waiting.recv() {
                    job();
                }
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "no thread for the shadows; copies will be dropped");
        }
        IdleThread {
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs `work` on the idle thread; None when the thread is gone.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        result.await.ok()
    }
}

/// Lowers the calling thread to nice 19.
fn lowest_priority() {
    #[cfg(unix)]
    {
        // SAFETY: plain system calls on the calling thread's own priority.
        #[cfg(target_os = "linux")]
        let who = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        #[cfg(not(target_os = "linux"))]
        let who = 0;
        unsafe { libc::setpriority(libc::PRIO_PROCESS, who, 19) };
    }
}

/// Copies being answered at once (they queue for the idle thread).
const IN_FLIGHT: usize = 8;

/// Runs the shadow worker until the queue closes (the state is dropped) or the task is aborted.
pub async fn work(state: actix_web::web::Data<AppState>) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let Some(mut rx) = state.shadow.take_receiver() else {
        return;
    };
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            copy = rx.recv(), if running.len() < IN_FLIGHT => {
                let Some(copy) = copy else { break };
                let state = state.clone();
                running.push(async move {
                    for &number in copy.shadows.iter() {
                        if let Err(e) = answer(&state, &copy, number).await {
                            tracing::debug!(model = %copy.model, version = number, error = %e, "a shadow did not answer");
                        }
                    }
                });
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// One shadow version's answer to one copy, stored.
async fn answer(state: &AppState, copy: &LiveCopy, number: i32) -> anyhow::Result<()> {
    let served = crate::serving::served(state, &copy.model, &Selector::Number(number))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if served.version.id == copy.live_version_id {
        return Ok(());
    }
    // No room to store an answer: drop the copy before computing it.
    if !state.log.later_has_room() {
        state.shadow.dropped.fetch_add(1, Ordering::Relaxed);
        state.metrics.shadow_dropped(&copy.model);
        anyhow::bail!("the prediction log's queue for shadow answers is full");
    }
    let started = std::time::Instant::now();
    // Everything a shadow computes, its answer and its stored form, runs on the idle thread.
    let (model, card, tensors, n) = (
        served.loaded.clone(),
        served.card.clone(),
        copy.tensors.clone(),
        copy.n,
    );
    let work = move || {
        model.run(tensors).map(|outputs| {
            let outcomes = decode(&card, &model.signature, &outputs, n);
            stored_outputs(&card, &outcomes)
        })
    };
    let Some(ran) = state.shadow.idle.run(work).await else {
        anyhow::bail!("the shadows' thread is gone");
    };
    let outputs = match ran {
        Ok(outputs) => outputs,
        Err(e) => {
            let reason = match e {
                inference::RunError::BadInput(_) => "invalid_input",
                inference::RunError::Failed(_) => "model_error",
            };
            crate::serving::failed(state, &served, "shadow", reason);
            anyhow::bail!("{e:?}");
        }
    };
    let latency_us =
        (started.elapsed().as_micros() / copy.n.max(1) as u128).min(i32::MAX as u128) as i32;
    // Handed to the prediction log's second lane: nobody waits for a shadow's answer, so its rows
    // are gathered and written a few times a second, apart from the live requests' commits.
    let handed = state.log.record_later(NewPredictions {
        model_id: served.model.id,
        version_id: served.version.id,
        // Nobody's: a caller's history and API list never show what a shadow answered (the
        // live row, through `shadow_of`, says whose request it was).
        user_id: None,
        token_id: None,
        source: "shadow",
        latency_us,
        n: copy.n,
        inputs: copy.stored.clone(),
        outputs,
        shadow_of: Some(copy.live_first_id),
    });
    if !handed {
        state.shadow.dropped.fetch_add(1, Ordering::Relaxed);
        state.metrics.shadow_dropped(&copy.model);
        anyhow::bail!("the prediction log's queue for shadow answers is full");
    }
    state
        .metrics
        .version(served.version.id, &served.model.name, number)
        .success(copy.n);
    Ok(())
}
