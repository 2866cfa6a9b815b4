//! A model version's lineage: the data set versions it was trained, validated or tested on.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::ErrorBody;
use crate::api::json_body;
use crate::auth::ApiStaff;
use crate::error::AppError;
use crate::state::AppState;
use plinth_store::datasets::LinkRow;

/// A model version that used a data set version, or a data set a model version used.
#[derive(Serialize, ToSchema)]
pub struct LinkOut {
    pub model: String,
    pub model_version: i32,
    pub dataset: String,
    pub dataset_version: i32,
    /// `training` or `evaluation`.
    pub role: String,
    pub sha256: String,
    pub rows: i64,
}

impl From<&LinkRow> for LinkOut {
    fn from(l: &LinkRow) -> Self {
        LinkOut {
            model: l.model.clone(),
            model_version: l.model_version,
            dataset: l.dataset.clone(),
            dataset_version: l.dataset_version,
            role: l.role.clone(),
            sha256: l.sha256.clone(),
            rows: l.row_count,
        }
    }
}

/// A link to make.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dataset": "iris-train", "version": 1, "role": "training"}))]
pub struct LinkRequest {
    pub dataset: String,
    /// Default: the data set's latest version.
    pub version: Option<i32>,
    /// `training` (the default) or `evaluation`.
    pub role: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LinksOut {
    pub links: Vec<LinkOut>,
}

/// Staff: records that a model version was trained or evaluated on a data set version.
/// Linking twice is linking once.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/versions/{version}/datasets",
    tag = "v1 data",
    params(("name" = String, Path, description = "Model name", example = "iris"),
           ("version" = i32, Path, description = "Model version", example = 1)),
    request_body = LinkRequest,
    responses(
        (status = 200, description = "The version's data sets", body = LinksOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model, version or data set", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "An unknown role", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn link_dataset(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let (name, number) = path.into_inner();
    let r: LinkRequest = json_body(&req, &body)?;
    let role = r.role.as_deref().unwrap_or("training");
    plinth_store::datasets::check_role(role).map_err(AppError::Unprocessable)?;
    let (_, v) = plinth_store::models::by_number(&state.pool, &name, number)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "There is no version {number} of a model called {name}."
            ))
        })?;
    let dv = plinth_store::datasets::version(&state.pool, &r.dataset, r.version)
        .await?
        .ok_or_else(|| {
            AppError::NotFound(match r.version {
                Some(n) => format!(
                    "There is no version {n} of a data set called {}.",
                    r.dataset
                ),
                None => format!("There is no data set called {}.", r.dataset),
            })
        })?;
    plinth_store::datasets::link(&state.pool, v.id, dv.id, role).await?;
    crate::audit::dataset_linked(
        &state.pool,
        &req,
        &staff,
        (&name, number),
        (&dv.dataset, dv.version),
        role,
    )
    .await?;
    let links = plinth_store::datasets::links_of_model(&state.pool, v.model_id)
        .await?
        .iter()
        .filter(|l| l.model_version == number)
        .map(LinkOut::from)
        .collect();
    Ok(HttpResponse::Ok().json(LinksOut { links }))
}
