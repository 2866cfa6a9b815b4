//! One prediction path for every door in: validated rows in, outputs decoded, rows committed to
//! the prediction log, then the answer. Forms, JSON v1, the Open Inference Protocol and KServe
//! all come through here.

use std::time::Instant;

use crate::db::predictions::{NewPredictions, StoredInputs, StoredOutputs};
use crate::error::AppError;
use crate::inference::explain::Explainer;
use crate::inference::{self, DType, NamedTensor, RunError, TensorData, TensorSpec};
use crate::monitoring::metrics::Stage;
use crate::registry::card::{Card, FeatureKind};
use crate::registry::decode::{decode, Outcome};
use crate::registry::{Selector, Served};
use crate::state::AppState;

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

/// The free texts of rows ([`FeatureKind::Text`] features): row → the row's texts, in the
/// card's order of those features. A row's own place for a text holds nothing. Empty for a
/// card with no free text.
pub type Texts = [Vec<String>];

/// The text of free-text feature `c` (a position among the card's features) in row `r`.
fn text_of<'a>(card: &Card, texts: &'a Texts, r: usize, c: usize) -> Option<&'a str> {
    let slot = card.features[..c.min(card.features.len())]
        .iter()
        .filter(|f| f.kind == FeatureKind::Text)
        .count();
    texts.get(r)?.get(slot).map(String::as_str)
}

/// Rows of the card's features as the prediction log stores them: numbers when they all are,
/// otherwise per row feature name → value (a number, or the text a text input received).
pub fn stored_inputs(
    card: &Card,
    specs: &[TensorSpec],
    rows: &[Vec<f64>],
    texts: &Texts,
) -> StoredInputs {
    let text = text_columns(specs);
    let width = card.features.len();
    if text.is_empty() && rows.iter().all(|r| r.len() == width) {
        StoredInputs::Numbers(rows.iter().flatten().copied().collect())
    } else {
        StoredInputs::Json(
            rows.iter()
                .enumerate()
                .map(|(r, row)| {
                    card.features
                        .iter()
                        .zip(row)
                        .enumerate()
                        .map(|(c, (f, v))| {
                            let value = if f.kind == FeatureKind::Text {
                                text_of(card, texts, r, c)
                                    .map_or(serde_json::Value::Null, |t| t.to_string().into())
                            } else if text.contains(&c) {
                                f.choice_text(*v)
                                    .map_or(serde_json::Value::Null, |t| t.to_string().into())
                            } else {
                                serde_json::json!(v)
                            };
                            (f.name.clone(), value)
                        })
                        .collect::<serde_json::Map<_, _>>()
                        .into()
                })
                .collect(),
        )
    }
}

/// The feature positions that feed text inputs.
fn text_columns(specs: &[TensorSpec]) -> Vec<usize> {
    let mut offset = 0;
    let mut text = Vec::new();
    for spec in specs {
        let width = spec.row_width();
        if spec.dtype == DType::String {
            text.extend(offset..offset + width);
        }
        offset += width;
    }
    text
}

/// The model's input tensors for rows of the card's features: the features are the inputs'
/// columns in signature order; a text input receives the text of the chosen category, or the
/// row's free text.
pub fn input_tensors(
    card: &Card,
    specs: &[TensorSpec],
    rows: &[Vec<f64>],
    texts: &Texts,
) -> Vec<NamedTensor> {
    let n = rows.len();
    let mut offset = 0;
    specs
        .iter()
        .map(|spec| {
            let width = spec.row_width();
            let columns = offset..offset + width;
            offset += width;
            // Rows have one value per feature (checked against the card); a short one would
            // make a tensor of the wrong size, which the model refuses.
            let values = || {
                rows.iter()
                    .flat_map(|r| r.get(columns.clone()).into_iter().flatten().copied())
            };
            let data = match spec.dtype {
                DType::F64 => TensorData::F64(values().collect()),
                DType::F32 => TensorData::F32(values().map(|v| v as f32).collect()),
                DType::I64 => TensorData::I64(values().map(|v| v as i64).collect()),
                DType::I32 => TensorData::I32(values().map(|v| v as i32).collect()),
                DType::Bool => TensorData::Bool(values().map(|v| v != 0.0).collect()),
                DType::String => TensorData::String(
                    rows.iter()
                        .enumerate()
                        .flat_map(|(i, r)| {
                            columns.clone().map(move |c| match card.features.get(c) {
                                Some(f) if f.kind == FeatureKind::Text => {
                                    text_of(card, texts, i, c).unwrap_or_default().to_string()
                                }
                                f => f
                                    .zip(r.get(c))
                                    .and_then(|(f, v)| f.choice_text(*v))
                                    .unwrap_or_default()
                                    .to_string(),
                            })
                        })
                        .collect(),
                ),
            };
            let mut shape = vec![n];
            shape.extend(spec.shape.iter().skip(1).map(|d| d.unwrap_or(1)));
            NamedTensor {
                name: spec.name.clone(),
                shape,
                data,
            }
        })
        .collect()
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
    let run = match served.card.batching {
        Some(b) => served.loaded.run_batched(b.settings(), tensors).await,
        None => inference::run_async(served.loaded.clone(), tensors).await,
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
    let ids = state.log.record(records).await.map_err(|e| {
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

/// Outcomes as stored: typed arrays when every row has the same shape (probabilities named by
/// the card's labels, in order), otherwise one JSON object per row.
pub fn stored_outputs(card: &Card, outcomes: &[Outcome]) -> StoredOutputs {
    fn all_or_none<T>(items: impl Iterator<Item = Option<T>>) -> Result<Option<Vec<T>>, ()> {
        let mut out = Vec::new();
        let mut missing = 0;
        for item in items {
            match item {
                Some(v) => out.push(v),
                None => missing += 1,
            }
        }
        match (out.is_empty(), missing) {
            (_, 0) if !out.is_empty() => Ok(Some(out)),
            (true, _) => Ok(None),
            _ => Err(()),
        }
    }
    let classes = outcomes.first().map_or(0, |o| o.probabilities.len());
    let proba_named = outcomes.iter().all(|o| {
        o.probabilities.len() == classes
            && o.probabilities
                .iter()
                .enumerate()
                .all(|(i, (name, _))| *name == card.label_name(i))
    });
    let label = all_or_none(outcomes.iter().map(|o| o.label.clone()));
    let value = all_or_none(outcomes.iter().map(|o| o.value));
    match (label, value, proba_named) {
        (Ok(label), Ok(value), true) => StoredOutputs {
            label,
            value,
            proba: (classes > 0).then(|| {
                outcomes
                    .iter()
                    .flat_map(|o| o.probabilities.iter().map(|(_, p)| *p))
                    .collect()
            }),
            json: None,
        },
        _ => StoredOutputs {
            json: Some(outcomes.iter().map(Outcome::to_json).collect()),
            ..StoredOutputs::default()
        },
    }
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
            crate::db::dashboard::record_failure(&pool, model_id, version_id, source, reason).await
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

/// One prediction's explanation, as the APIs and the result page give it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExplanationOut {
    /// The class whose score is explained (a classifier's predicted class, or the class its
    /// single margin scores); absent for a regressor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What `base`, the contributions and `output` are measured in.
    pub scale: String,
    /// How they were computed.
    pub method: String,
    /// What the model gives on average over its reference data.
    pub base: f64,
    /// The explained score of this row: `base` plus every contribution.
    pub output: f64,
    /// Every feature's contribution, the largest (in size) first.
    pub contributions: Vec<Contribution>,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Contribution {
    pub feature: String,
    /// The row's value (a category's text; null when missing).
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    pub contribution: f64,
}

/// The explained input's values for rows of card features, as `f32` rows, and its width.
pub fn explained_input(
    card: &Card,
    loaded: &inference::LoadedModel,
    explainer: &Explainer,
    rows: &[Vec<f64>],
) -> Result<(Vec<f32>, usize), String> {
    let specs = &loaded.signature.inputs;
    let spec = specs
        .iter()
        .find(|s| s.name == explainer.input())
        .ok_or("the explained input is not one of the model's inputs")?;
    // Explained models take numbers only.
    let tensors = input_tensors(card, specs, rows, &[]);
    let tensor = tensors
        .into_iter()
        .find(|t| t.name == spec.name)
        .ok_or("the explained input could not be made")?;
    let x = (0..tensor.data.len())
        .map(|i| tensor.data.get_f64(i).map(|v| v as f32))
        .collect::<Option<Vec<f32>>>()
        .ok_or("the explained input is not numeric")?;
    Ok((x, spec.row_width()))
}

/// Explanations of `rows` (card features) that `served` answered with `outcomes`; or why there
/// are none (no explainable part, no reference data).
pub async fn explain_rows(
    state: &AppState,
    served: &Served,
    rows: &[Vec<f64>],
    outcomes: &[Outcome],
) -> Result<Vec<ExplanationOut>, String> {
    let base = state.registry.explanation_base(served).await;
    if let Err(why) = base.as_ref() {
        return Err(why.clone());
    }
    let (card, loaded) = (served.card.clone(), served.loaded.clone());
    let (rows, labels): (Vec<Vec<f64>>, Vec<Option<String>>) = (
        rows.to_vec(),
        outcomes.iter().map(|o| o.label.clone()).collect(),
    );
    let (reference_rows, version) = (
        served.version.reference_rows.unwrap_or(0),
        served.version.version,
    );
    // TreeSHAP can take milliseconds a row: off the async workers.
    tokio::task::spawn_blocking(move || {
        let (explainer, covers) = base.as_ref().as_ref().map_err(Clone::clone)?;
        explain_blocking(
            &card,
            &loaded,
            explainer,
            covers,
            &rows,
            &labels,
            reference_rows,
            version,
        )
    })
    .await
    .map_err(|e| format!("the explanation failed: {e}"))?
}

/// Where the explained input's columns sit among the card's features: the first, and how many.
fn explained_span(loaded: &inference::LoadedModel, explainer: &Explainer) -> (usize, usize) {
    let mut offset = 0;
    for spec in &loaded.signature.inputs {
        if spec.name == explainer.input() {
            return (offset, spec.row_width());
        }
        offset += spec.row_width();
    }
    (offset, 0)
}

/// The names of the features an explanation gives contributions for, in its columns' order.
pub fn explained_features(
    card: &Card,
    loaded: &inference::LoadedModel,
    explainer: &Explainer,
) -> Vec<String> {
    let (offset, width) = explained_span(loaded, explainer);
    (0..width)
        .map(|c| {
            card.features
                .get(offset + c)
                .map_or_else(|| format!("column {c}"), |f| f.name.clone())
        })
        .collect()
}

/// One row's explanation, its contributions in the explained input's column order.
pub struct RowExplained {
    /// The explained class's name (a classifier's).
    pub target: Option<String>,
    pub base: f64,
    pub output: f64,
    pub contributions: Vec<f64>,
}

/// Explains each of `rows` (card features) for the class its `labels` entry names (a
/// classifier's answer; the explainer's own choice otherwise).
#[allow(clippy::too_many_arguments)]
pub fn explain_columns(
    card: &Card,
    loaded: &inference::LoadedModel,
    explainer: &Explainer,
    covers: &[f64],
    rows: &[Vec<f64>],
    labels: &[Option<String>],
) -> Result<Vec<RowExplained>, String> {
    let (x, width) = explained_input(card, loaded, explainer, rows)?;
    // A classifier's labels as answers give them: the card's, when it names as many.
    let names: Vec<String> = match (explainer.class_labels(), &card.labels) {
        (Some(model), Some(card)) if card.len() == model.len() => card.clone(),
        (Some(model), _) => model,
        (None, _) => Vec::new(),
    };
    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in x.chunks_exact(width.max(1)).enumerate() {
        let e = explainer.explain(covers, row)?;
        let label = labels.get(r).and_then(|l| l.as_deref());
        let k = explainer.target_for(&e, label, &names);
        let t = e.n_targets;
        out.push(RowExplained {
            target: explainer
                .class_of(k, &e)
                .and_then(|c| names.get(c).cloned()),
            base: e.expected[k],
            output: e.score[k],
            contributions: (0..width).map(|c| e.contributions[c * t + k]).collect(),
        });
    }
    Ok(out)
}

/// [`explain_rows`]' work, on a blocking thread.
#[allow(clippy::too_many_arguments)]
fn explain_blocking(
    card: &Card,
    loaded: &inference::LoadedModel,
    explainer: &Explainer,
    covers: &[f64],
    rows: &[Vec<f64>],
    labels: &[Option<String>],
    reference_rows: i32,
    version: i32,
) -> Result<Vec<ExplanationOut>, String> {
    let explained = explain_columns(card, loaded, explainer, covers, rows, labels)?;
    let (offset, _) = explained_span(loaded, explainer);
    let names = explained_features(card, loaded, explainer);
    let method = explainer.method(reference_rows, version);
    let scale = explainer.scale();
    Ok(explained
        .into_iter()
        .zip(rows)
        .map(|(e, row)| {
            let mut contributions: Vec<Contribution> = e
                .contributions
                .iter()
                .enumerate()
                .map(|(c, &contribution)| {
                    let feature = card.features.get(offset + c);
                    let v = row.get(offset + c).copied().unwrap_or(f64::NAN);
                    Contribution {
                        feature: names.get(c).cloned().unwrap_or_default(),
                        value: match feature.and_then(|f| f.choice_text(v)) {
                            Some(text) => text.to_string().into(),
                            None if v.is_nan() => serde_json::Value::Null,
                            None => serde_json::json!(v),
                        },
                        contribution,
                    }
                })
                .collect();
            contributions.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
            ExplanationOut {
                target: e.target,
                scale: scale.clone(),
                method: method.clone(),
                base: e.base,
                output: e.output,
                contributions,
            }
        })
        .collect())
}
