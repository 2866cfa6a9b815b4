//! `GET /api/v1/models` and `GET /api/v1/models/{name}`: the catalogue and one model's card.

use super::{rfc3339, ErrorBody};
use crate::auth::InferenceCaller;
use crate::error::AppError;
use crate::registry::card::Card;
use crate::state::AppState;
use actix_web::{web, HttpResponse};
use plinth_store as db;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub title: String,
    /// `classification` or `regression`.
    pub task: String,
    /// The version `production` points at.
    pub production_version: Option<i32>,
    pub versions: i64,
}

/// All models with their serving version.
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "v1",
    responses(
        (status = 200, description = "Every model", body = [ModelSummary]),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_models(
    _caller: InferenceCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let models: Vec<ModelSummary> = db::models::catalogue(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let card: Card = Card::from_stored(row.card.as_ref().map(|c| &c.0));
            ModelSummary {
                title: card.display_title(&row.name).to_string(),
                task: card.task.as_str().to_string(),
                name: row.name,
                production_version: row.version,
                versions: row.versions,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(models))
}

#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: i32,
    pub sha256: String,
    pub size_bytes: i64,
    /// RFC 3339.
    pub created_at: String,
    pub source: String,
    pub aliases: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelDetail {
    pub name: String,
    pub title: String,
    pub description: String,
    pub task: String,
    /// The card of the production version (features, labels, bounds, training lineage).
    #[schema(value_type = Object)]
    pub card: Value,
    /// The ONNX signature: inputs and outputs with element types and shapes.
    #[schema(value_type = Object)]
    pub signature: Value,
    pub versions: Vec<VersionInfo>,
    /// Alias name → version number.
    pub aliases: BTreeMap<String, i32>,
}

pub(super) async fn model_or_404(
    state: &AppState,
    name: &str,
) -> Result<db::models::ModelRow, AppError> {
    db::models::find_model(&state.pool, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no model called {name}.")))
}

/// One model: card, signature, versions and aliases.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}",
    tag = "v1",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "The model", body = ModelDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_model(
    _caller: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = model_or_404(&state, &name).await?;
    let versions = db::models::versions(&state.pool, model.id).await?;
    let aliases: BTreeMap<String, i32> = db::models::aliases(&state.pool, model.id)
        .await?
        .into_iter()
        .collect();
    let serving = aliases
        .get(crate::registry::PRODUCTION)
        .and_then(|n| versions.iter().find(|v| v.version == *n))
        .or_else(|| versions.first());
    let card: Card = serving.map(crate::registry::card_of).unwrap_or_default();
    let detail = ModelDetail {
        title: card.display_title(&model.name).to_string(),
        description: card.description.clone(),
        task: card.task.as_str().to_string(),
        card: serving.map_or(Value::Null, |v| v.card.0.clone()),
        signature: serving.map_or(Value::Null, |v| v.signature.0.clone()),
        versions: versions
            .iter()
            .map(|v| VersionInfo {
                version: v.version,
                sha256: v.sha256.clone(),
                size_bytes: v.size_bytes,
                created_at: rfc3339(v.created_at),
                source: v.source.clone(),
                aliases: aliases
                    .iter()
                    .filter(|(_, n)| **n == v.version)
                    .map(|(a, _)| a.clone())
                    .collect(),
            })
            .collect(),
        aliases,
        name: model.name,
    };
    Ok(HttpResponse::Ok().json(detail))
}
