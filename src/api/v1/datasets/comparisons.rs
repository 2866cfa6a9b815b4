//! Two model versions compared over their reference rows, as a job: start one, read its result.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::models::model_or_404;
use super::super::{rfc3339, ErrorBody};
use crate::api::json_body;
use crate::auth::ApiStaff;
use crate::error::AppError;
use crate::state::AppState;
use plinth_store::comparisons::ComparisonRow;

/// Two model versions to compare.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"a": 1, "b": 2}))]
pub struct CompareRequest {
    pub a: i32,
    pub b: i32,
}

/// A comparison of two model versions over their reference rows.
#[derive(Serialize, ToSchema)]
pub struct ComparisonOut {
    pub id: i64,
    pub model: String,
    pub a: i32,
    pub b: i32,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub total_rows: i64,
    pub rows_done: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When done: rows compared and refused, agreement (and the confusion between the two
    /// versions' labels) or the distribution of b − a, per source, and the rows where they
    /// disagree most.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub page: String,
}

impl From<&ComparisonRow> for ComparisonOut {
    fn from(c: &ComparisonRow) -> Self {
        ComparisonOut {
            id: c.id,
            model: c.model.clone(),
            a: c.a_version,
            b: c.b_version,
            state: c.state.clone(),
            total_rows: c.total_rows,
            rows_done: c.rows_done,
            message: c.message.clone(),
            result: c.result.as_ref().map(|r| r.0.clone()),
            created_at: rfc3339(c.created_at),
            finished_at: c.finished_at.map(rfc3339),
            page: format!(
                "/admin/models/{}/compare?a={}&b={}",
                c.model, c.a_version, c.b_version
            ),
        }
    }
}

/// Staff: queues both versions' run over both versions' reference rows (on the batch workers).
/// A comparison of the same pair that is queued or running already is returned instead.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/comparisons",
    tag = "v1 data",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body = CompareRequest,
    responses(
        (status = 202, description = "Queued (or already queued)", body = ComparisonOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "The same version twice, or no reference data", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn compare_versions(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let r: CompareRequest = json_body(&req, &body)?;
    let model = model_or_404(&state, &name).await?;
    let (id, created) =
        crate::datasets::compare::request(&state, &model, r.a, r.b, Some(staff.id)).await?;
    if created {
        crate::audit::record(
            &state.pool,
            Some(&req),
            Some(&staff),
            "model.compared",
            format!("{} v{} and v{}", model.name, r.a, r.b),
            serde_json::json!({"model": model.name, "a": r.a, "b": r.b, "comparison": id}),
        )
        .await?;
    }
    let row = plinth_store::comparisons::get(&state.pool, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("the comparison just queued is gone")))?;
    Ok(HttpResponse::Accepted().json(ComparisonOut::from(&row)))
}

/// Staff: a comparison, with its figures once done.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/comparisons/{id}",
    tag = "v1 data",
    params(("name" = String, Path, description = "Model name", example = "iris"),
           ("id" = i64, Path, description = "Comparison id", example = 1)),
    responses(
        (status = 200, description = "The comparison", body = ComparisonOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model or comparison", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_comparison(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, AppError> {
    let (name, id) = path.into_inner();
    let row = plinth_store::comparisons::get(&state.pool, id)
        .await?
        .filter(|c| c.model == name)
        .ok_or_else(|| AppError::NotFound(format!("{name} has no comparison {id}.")))?;
    Ok(HttpResponse::Ok().json(ComparisonOut::from(&row)))
}
