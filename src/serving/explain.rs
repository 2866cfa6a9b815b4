//! Explanations of answered rows for the result page and the APIs: counted off the async
//! workers on the version's explainer and reference covers, each feature's contribution named
//! and sorted, the largest first.

use crate::registry::decode::Outcome;
use crate::registry::explained::{explain_columns, explained_features, explained_span, Answered};
use crate::registry::Served;
use crate::state::AppState;

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
        let answered = Answered {
            card: &card,
            loaded: &loaded,
            explainer,
            covers,
            rows: &rows,
            labels: &labels,
        };
        explain_blocking(&answered, reference_rows, version)
    })
    .await
    .map_err(|e| format!("the explanation failed: {e}"))?
}

/// [`explain_rows`]' work, on a blocking thread.
fn explain_blocking(
    answered: &Answered,
    reference_rows: i32,
    version: i32,
) -> Result<Vec<ExplanationOut>, String> {
    let Answered {
        card,
        loaded,
        explainer,
        rows,
        ..
    } = *answered;
    let explained = explain_columns(answered)?;
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
