//! `POST /api/v1/models/{name}/predict`: rows by feature name in, labels or values out, stored.

use super::{row_from_json, ErrorBody, VersionQuery};
use crate::api::{check_rows, json_body};
use crate::auth::InferenceCaller;
use crate::error::AppError;
use crate::registry::decode::Outcome;
use crate::serving;
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
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
}

impl PredictionOut {
    fn new(id: i64, o: &Outcome) -> Self {
        PredictionOut {
            id,
            label: o.label.clone(),
            value: o.value,
            probabilities: (!o.probabilities.is_empty())
                .then(|| o.probabilities.iter().cloned().collect()),
        }
    }
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
    params(("name" = String, Path, description = "Model name", example = "iris"), VersionQuery),
    request_body = PredictRequest,
    responses(
        (status = 200, description = "One prediction per row, stored", body = PredictResponse),
        (status = 400, description = "Invalid JSON or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A feature is missing, unknown, or not valid", body = ErrorBody),
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
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    let request: PredictRequest = json_body(&req, &body)?;
    let served = crate::serving::routed(&state, &name, &query.selector()?, caller).await?;
    let rows: Vec<Vec<f64>> = match &request.inputs {
        Value::Array(items) => {
            check_rows(&state, items.len())?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| row_from_json(&served.card, item, Some(i)))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    serving::rejected(&state, &served, "api");
                    AppError::Unprocessable(e)
                })?
        }
        one => vec![row_from_json(&served.card, one, None).map_err(|e| {
            serving::rejected(&state, &served, "api");
            AppError::Unprocessable(e)
        })?],
    };
    let answer = serving::predict_rows(&state, &served, &rows, caller, "api").await?;
    let response = PredictResponse {
        model: served.model.name.clone(),
        version: served.version.version,
        predictions: answer
            .ids
            .iter()
            .zip(&answer.outcomes)
            .map(|(id, o)| PredictionOut::new(*id, o))
            .collect(),
    };
    Ok(HttpResponse::Ok().json(response))
}
