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

use plinth_inference::NamedTensor;
use plinth_store::predictions::StoredInputs;

pub mod worker;

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
