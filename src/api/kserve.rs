//! KServe's V1 protocol: `{"instances": […]}` in, `{"predictions": […]}` out.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::v1::{row_from_json, ErrorBody};
use super::{check_rows, json_body};
use crate::auth::InferenceCaller;
use crate::error::AppError;
use crate::registry::Selector;
use crate::serving;
use crate::state::AppState;

/// The model is known and loaded.
#[utoipa::path(
    get,
    path = "/v1/models/{name}",
    tag = "kserve v1",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses((status = 200, description = "Ready"), (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such model", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn model_status(
    _c: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let served = crate::serving::served(&state, &name, &Selector::default()).await?;
    Ok(HttpResponse::Ok().json(json!({ "name": served.model.name, "ready": true })))
}

/// Rows as arrays in the card's feature order, or as objects of named features.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))]
pub struct KServeRequest {
    #[schema(value_type = Vec<serde_json::Value>)]
    pub instances: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct KServeResponse {
    /// The label (classifiers) or the value (regressors), one per instance.
    #[schema(value_type = Vec<serde_json::Value>)]
    pub predictions: Vec<Value>,
}

/// Predicts a batch of instances.
#[utoipa::path(
    post,
    path = "/v1/models/{name}:predict",
    tag = "kserve v1",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body = KServeRequest,
    responses(
        (status = 200, description = "One prediction per instance", body = KServeResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "An instance does not fit the model", body = ErrorBody),
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
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    let request: KServeRequest = json_body(&req, &body)?;
    let served = crate::serving::routed(&state, &name, &Selector::default(), caller).await?;
    check_rows(&state, request.instances.len())?;
    let card = &served.card;
    let rows = request
        .instances
        .iter()
        .enumerate()
        .map(|(i, instance)| match instance {
            Value::Array(values) => {
                if values.len() != card.features.len() {
                    return Err(format!(
                        "instance {i}: {} values for {} features",
                        values.len(),
                        card.features.len()
                    ));
                }
                values
                    .iter()
                    .zip(&card.features)
                    .map(|(v, f)| {
                        if v.is_null() && f.allows_missing() {
                            return Ok(f64::NAN);
                        }
                        let x = v.as_f64().ok_or_else(|| {
                            format!("instance {i}: {}: expected a number, got {v}", f.name)
                        })?;
                        f.check(x)
                            .map_err(|e| format!("instance {i}: {}: {e}", f.name))
                    })
                    .collect()
            }
            object => row_from_json(card, object, Some(i)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            serving::rejected(&state, &served, "v1");
            AppError::Unprocessable(e)
        })?;
    let answer = serving::predict_rows(&state, &served, &rows, &[], caller, "v1").await?;
    let predictions = answer
        .outcomes
        .iter()
        .map(|o| match (&o.label, o.value) {
            (Some(label), _) => Value::from(label.clone()),
            (None, Some(v)) => json!(v),
            _ => Value::Null,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((serving::VERSION_HEADER, served.version.version.to_string()))
        .json(KServeResponse { predictions }))
}
