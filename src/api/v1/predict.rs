//! `POST /api/v1/models/{name}/predict`: rows by feature name in, labels or values out, stored.

use super::{row_and_texts_from_json, ErrorBody, VersionQuery};
use crate::api::{check_rows, json_body};
use crate::auth::InferenceCaller;
use crate::error::AppError;
use crate::registry::decode::Outcome;
use crate::serving;
use crate::serving::explain::ExplanationOut;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::IntoParams;
use utoipa::ToSchema;

/// Named features: one object, or a list of them (a batch).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// `{"sepal_length": 5.1, …}` or `[{…}, {…}]`. `null` is a missing value, for the
    /// features whose card allows one (`missing = "allowed"`).
    #[schema(value_type = Object, example = json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}))]
    pub inputs: Value,
}

#[derive(Serialize, ToSchema)]
pub struct PredictionOut {
    /// The stored prediction, for `/api/v1/predictions/{id}` and feedback.
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Class probability by label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<BTreeMap<String, f64>>,
    /// With `?explain=true`: why the model answered this (each feature's contribution).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationOut>,
}

impl PredictionOut {
    fn new(id: i64, o: &Outcome, explanation: Option<ExplanationOut>) -> Self {
        PredictionOut {
            id,
            label: o.label.clone(),
            value: o.value,
            probabilities: (!o.probabilities.is_empty())
                .then(|| o.probabilities.iter().cloned().collect()),
            explanation,
        }
    }
}

/// Which version answers (`?version=N` or `?alias=NAME`, `production` by default), and whether
/// each prediction comes with its explanation (`?explain=true`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PredictQuery {
    /// A version number.
    pub version: Option<i32>,
    /// An alias such as `staging`.
    pub alias: Option<String>,
    /// Explain each prediction: every feature's contribution to it (tree ensembles; a model
    /// Plinth cannot explain exactly gets a 422 saying so).
    pub explain: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct PredictResponse {
    pub model: String,
    pub version: i32,
    /// One per input row, in order.
    pub predictions: Vec<PredictionOut>,
}

/// Predicts from named features.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/predict",
    tag = "v1",
    params(("name" = String, Path, description = "Model name", example = "iris"), PredictQuery),
    request_body = PredictRequest,
    responses(
        (status = 200, description = "One prediction per row, stored", body = PredictResponse),
        (status = 400, description = "Invalid JSON or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A feature is missing, unknown, or not valid; or an explanation was asked of a model that has none", body = ErrorBody),
        (status = 503, description = "The prediction could not be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn predict(
    req: HttpRequest,
    body: web::Bytes,
    inference_caller: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PredictQuery>,
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    let request: PredictRequest = json_body(&req, &body)?;
    let selector = VersionQuery {
        version: query.version,
        alias: query.alias.clone(),
    }
    .selector()?;
    let served = crate::serving::routed(&state, &name, &selector, caller).await?;
    let explain = query.explain.unwrap_or(false);
    // Refused before anything is predicted or stored: a model with no explanation says so.
    if explain {
        let ready = state
            .registry
            .explanation_base(&served)
            .await
            .as_ref()
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone);
        if let Err(why) = ready {
            return Err(AppError::Unprocessable(format!(
                "Version {} of {} cannot explain its predictions: {why}",
                served.version.version, served.model.name
            )));
        }
    }
    let rows: Vec<(Vec<f64>, Vec<String>)> = match &request.inputs {
        Value::Array(items) => {
            check_rows(&state, items.len())?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| row_and_texts_from_json(&served.card, item, Some(i)))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    serving::rejected(&state, &served, "api");
                    AppError::Unprocessable(e)
                })?
        }
        one => vec![
            row_and_texts_from_json(&served.card, one, None).map_err(|e| {
                serving::rejected(&state, &served, "api");
                AppError::Unprocessable(e)
            })?,
        ],
    };
    let (rows, texts): (Vec<Vec<f64>>, Vec<Vec<String>>) = rows.into_iter().unzip();
    let answer = serving::predict_rows(&state, &served, &rows, &texts, caller, "api").await?;
    let mut explanations = if explain {
        serving::explain::explain_rows(&state, &served, &rows, &answer.outcomes)
            .await
            .map_err(|why| {
                AppError::Unprocessable(format!(
                    "The predictions were made and stored (ids {}), but cannot be explained: {why}",
                    ids_text(&answer.ids)
                ))
            })?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        Vec::new()
    };
    explanations.resize(answer.ids.len(), None);
    let response = PredictResponse {
        model: served.model.name.clone(),
        version: served.version.version,
        predictions: answer
            .ids
            .iter()
            .zip(&answer.outcomes)
            .zip(explanations)
            .map(|((id, o), e)| PredictionOut::new(*id, o, e))
            .collect(),
    };
    Ok(HttpResponse::Ok().json(response))
}

/// Ids as `1, 2, 3` (or the first and last of many).
fn ids_text(ids: &[i64]) -> String {
    match ids {
        [] => String::new(),
        [a] => a.to_string(),
        [a, b] => format!("{a}, {b}"),
        [first, .., last] => format!("{first} to {last}"),
    }
}
