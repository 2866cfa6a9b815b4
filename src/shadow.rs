//! Shadow traffic: candidate versions answer a copy of a model's live requests, off the request
//! path, and their answers are stored (source `shadow`, linked to the live rows) and never
//! returned.
//!
//! A live request hands its inputs to a bounded queue and goes on; when the queue is full the
//! copy is dropped and counted (`plinth_shadow_dropped_total`), so a slow or broken shadow never
//! holds up the answer. One worker per instance answers up to eight copies at once (every shadow
//! version on each), so their rows share the prediction log's commits.

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
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Queue {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
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

    /// Copies dropped on this instance since it started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<LiveCopy>> {
        self.rx.lock().ok().and_then(|mut rx| rx.take())
    }
}

/// Copies answered at once: their rows share the prediction log's commits.
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
    let started = std::time::Instant::now();
    let outputs = match inference::run_async(served.loaded.clone(), copy.tensors.clone()).await {
        Ok((outputs, _)) => outputs,
        Err(e) => {
            let reason = match e {
                inference::RunError::BadInput(_) => "invalid_input",
                inference::RunError::Failed(_) => "model_error",
            };
            crate::serving::failed(state, &served, "shadow", reason);
            anyhow::bail!("{e:?}");
        }
    };
    let outcomes = decode(&served.card, &served.loaded.signature, &outputs, copy.n);
    let latency_us =
        (started.elapsed().as_micros() / copy.n.max(1) as u128).min(i32::MAX as u128) as i32;
    state
        .log
        .record(NewPredictions {
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
            outputs: stored_outputs(&served.card, &outcomes),
            shadow_of: Some(copy.live_first_id),
        })
        .await?;
    state
        .metrics
        .version(served.version.id, &served.model.name, number)
        .success(copy.n);
    Ok(())
}
