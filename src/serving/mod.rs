//! One prediction path for every door in: validated rows in, outputs decoded, rows committed to
//! the prediction log, then the answer. Forms, JSON v1, the Open Inference Protocol and KServe
//! all come through here.

use std::time::Instant;
use tracing::Instrument;

use crate::error::AppError;
use crate::monitoring::metrics::Stage;
use crate::registry::card::Card;
use crate::registry::decode::{decode, Outcome};
use crate::registry::encode::{input_tensors, stored_inputs, stored_outputs, Texts};
use crate::registry::{Selector, Served};
use crate::state::AppState;
use plinth_inference::{self as inference, NamedTensor, RunError, TensorData, TensorSpec};
use plinth_store::predictions::{NewPredictions, StoredInputs};

pub mod explain;

/// The header that says which version answered, where the protocol's body cannot (KServe V1,
/// the cloud contracts).
pub const VERSION_HEADER: &str = "plinth-model-version";

/// Who is asking: a signed-in user, a token, or nobody (public inference).
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
}

impl Caller {
    pub fn user(id: i64) -> Caller {
        Caller {
            user_id: Some(id),
            token_id: None,
        }
    }
}

/// A batch, answered and stored.
pub struct Answer {
    pub outcomes: Vec<Outcome>,
    /// The model's raw outputs, for the tensor protocols.
    pub outputs: Vec<NamedTensor>,
    /// The stored predictions' ids, in row order.
    pub ids: Vec<i64>,
}

/// A batch ready to run: the model's input tensors and the inputs as stored.
pub struct Batch {
    pub tensors: Vec<NamedTensor>,
    /// The rows of the card's features, or per row feature name → value (a number, or the
    /// text a text input received).
    pub stored: StoredInputs,
    n: usize,
}

impl Batch {
    /// From rows of the card's features (forms, JSON v1, KServe v1), already checked, and
    /// each row's free texts (see [`Texts`]).
    pub fn from_rows(card: &Card, specs: &[TensorSpec], rows: &[Vec<f64>], texts: &Texts) -> Batch {
        Batch {
            tensors: input_tensors(card, specs, rows, texts),
            stored: stored_inputs(card, specs, rows, texts),
            n: rows.len(),
        }
    }

    /// From the model's tensors as a tensor protocol sent them (in signature order, checked by
    /// the model before it runs): text goes to the model as it came.
    pub fn from_tensors(card: &Card, tensors: Vec<NamedTensor>) -> Batch {
        let n = tensors
            .first()
            .and_then(|t| t.shape.first())
            .copied()
            .unwrap_or(0);
        let widths: Vec<usize> = tensors
            .iter()
            .map(|t| t.shape.iter().skip(1).product())
            .collect();
        let floats = tensors
            .iter()
            .all(|t| matches!(t.data, TensorData::F32(_) | TensorData::F64(_)));
        let stored = if floats && widths.iter().sum::<usize>() == card.features.len() {
            let mut x = Vec::with_capacity(n * card.features.len());
            for r in 0..n {
                for (t, w) in tensors.iter().zip(&widths) {
                    x.extend((0..*w).map(|c| t.data.get_f64(r * w + c).unwrap_or(f64::NAN)));
                }
            }
            StoredInputs::Numbers(x)
        } else {
            StoredInputs::Json(
                (0..n)
                    .map(|r| {
                        let mut row = serde_json::Map::new();
                        let mut features = card.features.iter();
                        for (t, width) in tensors.iter().zip(&widths) {
                            for c in 0..*width {
                                if let Some(f) = features.next() {
                                    row.insert(f.name.clone(), t.data.get_json(r * width + c));
                                }
                            }
                        }
                        row.into()
                    })
                    .collect(),
            )
        };
        Batch { tensors, stored, n }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Runs a batch and commits one prediction row for each of its rows.
pub async fn predict(
    state: &AppState,
    served: &Served,
    batch: Batch,
    caller: Caller,
    source: &'static str,
) -> Result<Answer, AppError> {
    let n = batch.len();
    let Batch {
        tensors, stored, ..
    } = batch;
    let started = Instant::now();
    let (model, version) = (served.model.name.as_str(), served.version.version);
    // On a request's span, what answered it (other doors' spans have no such fields).
    let current = tracing::Span::current();
    current.record("model", model);
    current.record("version", version);
    let metrics = &state.metrics;
    // Shadow versions get a copy of the live traffic (what production or a canary's candidate
    // answers, not a request for another version by number or alias), after it is stored.
    let shadows = match live_shadows(state, served).await {
        Ok(list) => list,
        Err(e) => {
            tracing::debug!(error = %e, "could not read the shadow versions");
            None
        }
    };
    // Under full load the shadows' lane fills: the copy is dropped (and counted) here, before
    // anything is cloned for it.
    let shadows = shadows.filter(|_| {
        let room = state.shadow.has_room(&state.log);
        if !room {
            state.shadow.drop_one(model, metrics);
        }
        room
    });
    let copy = shadows.as_ref().map(|_| (tensors.clone(), stored.clone()));
    let inference_span = tracing::info_span!("inference", model, version, rows = n);
    let run = match served.card.batching {
        Some(b) => {
            served
                .loaded
                .run_batched(b.settings(), tensors)
                .instrument(inference_span)
                .await
        }
        None => {
            inference::run_async(served.loaded.clone(), tensors)
                .instrument(inference_span)
                .await
        }
    };
    let (outputs, times) = run.map_err(|e| match e {
        RunError::BadInput(msg) => {
            failed(state, served, source, "invalid_input");
            AppError::Unprocessable(msg)
        }
        RunError::Failed(msg) => {
            failed(state, served, source, "model_error");
            AppError::internal(anyhow::anyhow!(msg))
        }
    })?;
    let series = metrics.version(served.version.id, model, version);
    series.latency(Stage::Queue, times.queue);
    series.latency(Stage::Compute, times.compute);
    let latency_us =
        (started.elapsed().as_micros() / n.max(1) as u128).min(i32::MAX as u128) as i32;
    let outcomes = decode(&served.card, &served.loaded.signature, &outputs, n);
    let records = NewPredictions {
        model_id: served.model.id,
        version_id: served.version.id,
        user_id: caller.user_id,
        token_id: caller.token_id,
        source,
        latency_us,
        n,
        inputs: stored,
        outputs: stored_outputs(&served.card, &outcomes),
        shadow_of: None,
    };
    let ids = state
        .log
        .record(records)
        .instrument(tracing::info_span!("prediction_log.commit", rows = n))
        .await
        .map_err(|e| {
            failed(state, served, source, "storage_unavailable");
            AppError::Unavailable(e.to_string())
        })?;
    series.latency(Stage::Total, started.elapsed());
    series.success(n);
    if let (Some(shadows), Some((tensors, stored)), Some(first)) = (shadows, copy, ids.first()) {
        let copy = crate::shadow::LiveCopy {
            model: model.to_string(),
            live_version_id: served.version.id,
            shadows,
            tensors,
            stored,
            n,
            live_first_id: *first,
        };
        state.shadow.offer(copy, metrics);
    }
    Ok(Answer {
        outcomes,
        outputs,
        ids,
    })
}

/// The shadow versions that get a copy of a request `served` answers: none unless the model has
/// shadows and `served` is the live answer (production, or the canary's candidate).
async fn live_shadows(
    state: &AppState,
    served: &Served,
) -> Result<Option<std::sync::Arc<Vec<i32>>>, AppError> {
    let name = served.model.name.as_str();
    let version = served.version.version;
    let Some(list) = state.registry.shadows(name).await? else {
        return Ok(None);
    };
    if !list.iter().any(|v| *v != version) {
        return Ok(None);
    }
    let candidate = state.registry.policy(name).await?.map(|p| p.candidate);
    let live = candidate == Some(version)
        || self::served(state, name, &Selector::default())
            .await
            .is_ok_and(|p| p.version.id == served.version.id);
    Ok(live.then_some(list))
}

/// [`predict`] for rows of the card's features, already checked, with their free texts.
pub async fn predict_rows(
    state: &AppState,
    served: &Served,
    rows: &[Vec<f64>],
    texts: &Texts,
    caller: Caller,
    source: &'static str,
) -> Result<Answer, AppError> {
    let batch = Batch::from_rows(&served.card, &served.loaded.signature.inputs, rows, texts);
    predict(state, served, batch, caller, source).await
}

/// Counts a request the model never saw because its input did not fit.
pub fn rejected(state: &AppState, served: &Served, source: &'static str) {
    failed(state, served, source, "invalid_input");
}

/// Counts a failed prediction in the metrics and, for the dashboard's error rate, in the
/// database (without holding up the response).
pub fn failed(state: &AppState, served: &Served, source: &'static str, reason: &'static str) {
    state
        .metrics
        .failure(&served.model.name, served.version.version, reason);
    let pool = state.pool.clone();
    let (model_id, version_id) = (served.model.id, served.version.id);
    tokio::spawn(async move {
        if let Err(e) =
            plinth_store::dashboard::record_failure(&pool, model_id, version_id, source, reason)
                .await
        {
            tracing::warn!(error = %e, "could not record a failed prediction");
        }
    });
}

/// The version that answers `caller` when it asks for `selector`: what [`served`] finds, except
/// that a request for the `production` alias of a model with a canary goes to the candidate when
/// the caller falls in its share (see [`crate::registry::traffic`]). A candidate that cannot be
/// served just now leaves the request with production, and says so in the log.
pub async fn routed(
    state: &AppState,
    name: &str,
    selector: &Selector,
    caller: Caller,
) -> Result<Served, AppError> {
    use crate::registry::traffic::{candidate_arm, Sticky};
    if *selector == Selector::default() {
        if let Some(policy) = state.registry.policy(name).await? {
            let sticky = match (caller.user_id, caller.token_id) {
                (Some(user), _) => Sticky::User(user),
                (None, Some(token)) => Sticky::Token(token),
                (None, None) => Sticky::Anonymous,
            };
            if candidate_arm(name, sticky, policy.share) {
                match served(state, name, &Selector::Number(policy.candidate)).await {
                    Ok(candidate) => return Ok(candidate),
                    Err(e) => tracing::warn!(
                        model = name,
                        candidate = policy.candidate,
                        error = %e,
                        "the canary's candidate cannot answer; production answers instead"
                    ),
                }
            }
        }
    }
    served(state, name, selector).await
}

/// The version a request asks for, loaded; 404 naming what is missing.
pub async fn served(state: &AppState, name: &str, selector: &Selector) -> Result<Served, AppError> {
    state
        .registry
        .resolve(name, selector)
        .await
        .map_err(|e| match e {
            crate::registry::ServeError::Unavailable(reason) => AppError::Unavailable(reason),
            crate::registry::ServeError::Database(e) => AppError::Database(e),
        })?
        .ok_or_else(|| match selector {
            Selector::Number(n) => {
                AppError::NotFound(format!("The model {name} has no version {n}."))
            }
            Selector::Alias(a) => AppError::NotFound(format!(
                "There is no model called {name}, or it has no {a} version yet."
            )),
        })
}
