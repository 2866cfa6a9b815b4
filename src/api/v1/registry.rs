//! The registry for staff tokens: publish a version, move an alias.

use super::models::model_or_404;
use super::ErrorBody;
use crate::api::json_body;
use crate::auth::ApiStaff;
use crate::error::AppError;
use crate::registry::{Imported, Upload, PRODUCTION};
use crate::state::AppState;
use crate::web::forms::read_unchecked;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct PublishResponse {
    pub model: String,
    pub version: i32,
    /// False when the same file was already this model's version.
    pub created: bool,
}

/// Staff: publishes a new version (multipart: `model`, optional `card` and `reference`).
/// Creates the model when it does not exist; its first version goes to production.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/versions",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body(content_type = "multipart/form-data", description = "Fields: model (ONNX file), card (card.toml), reference (reference.csv)"),
    responses(
        (status = 201, description = "Stored as a new version", body = PublishResponse),
        (status = 200, description = "The same file was already a version", body = PublishResponse),
        (status = 400, description = "The upload cannot be read", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 413, description = "Over the upload limit", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "Not a model Plinth can serve, or a card that does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn publish_version(
    req: HttpRequest,
    payload: web::Payload,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    if req.content_type() != "multipart/form-data" {
        return Err(AppError::UnsupportedMediaType(
            "Send the files as multipart/form-data: model, and optionally card and reference."
                .into(),
        ));
    }
    let form = read_unchecked(&req, payload, state.settings.max_upload_bytes).await?;
    let onnx = form
        .file("model")
        .ok_or_else(|| {
            AppError::Unprocessable("The multipart field model (the ONNX file) is missing.".into())
        })?
        .to_vec();
    let card = match form.file("card") {
        Some(b) => Some(
            String::from_utf8(b.to_vec())
                .map_err(|_| AppError::Unprocessable("card is not UTF-8 text.".into()))?,
        ),
        None => None,
    };
    let upload = Upload {
        model: name.into_inner(),
        onnx,
        card,
        reference_csv: form.file("reference").map(<[u8]>::to_vec),
        source: "api",
        actor: caller.user_id,
    };
    let result = state.registry.import(upload).await;
    if let Ok(Imported::New { model, version }) = &result {
        crate::audit::record(
            &state.pool,
            Some(&req),
            Some(&staff),
            "model.version_uploaded",
            format!("{model} v{version}"),
            serde_json::json!({"via": "api"}),
        )
        .await?;
    }
    match result {
        Ok(Imported::New { model, version }) => Ok(HttpResponse::Created().json(PublishResponse {
            model,
            version,
            created: true,
        })),
        Ok(Imported::AlreadyThere { model, version }) => {
            Ok(HttpResponse::Ok().json(PublishResponse {
                model,
                version,
                created: false,
            }))
        }
        Err(e) => Err(AppError::from(e)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    /// The version the alias should point at.
    pub version: i32,
}

#[derive(Serialize, ToSchema)]
pub struct AliasResponse {
    pub model: String,
    pub alias: String,
    pub version: i32,
}

/// Staff: points an alias (such as `production`) at a version; it serves at once.
#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/aliases/{alias}",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("alias" = String, Path, description = "Alias name")),
    request_body = AliasRequest,
    responses(
        (status = 200, description = "Moved", body = AliasResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "No such version, or a bad alias name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_alias(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let (name, alias) = path.into_inner();
    let request: AliasRequest = json_body(&req, &body)?;
    let model = model_or_404(&state, &name).await?;
    match state
        .registry
        .move_alias(&model, &alias, request.version, caller.user_id)
        .await
    {
        Ok(previous) => {
            crate::audit::alias_moved(
                &state.pool,
                &req,
                &staff,
                &model.name,
                &alias,
                previous,
                request.version,
            )
            .await?;
            Ok(HttpResponse::Ok().json(AliasResponse {
                model: model.name,
                alias,
                version: request.version,
            }))
        }
        Err(e) => Err(AppError::from(e)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// The candidate version.
    pub candidate: i32,
    /// The candidate's share of the callers of `production`, above 0 and below 1 (0.1: 10%).
    pub share: f64,
}

#[derive(Serialize, ToSchema)]
pub struct TrafficResponse {
    pub model: String,
    /// The version `production` points at.
    pub production: Option<i32>,
    /// The canary and its arms' figures since it started; null without one.
    pub canary: Option<crate::registry::traffic::Report>,
}

async fn traffic_response(
    state: &AppState,
    model: &plinth_store::models::ModelRow,
) -> Result<TrafficResponse, AppError> {
    let production = plinth_store::models::by_alias(&state.pool, &model.name, PRODUCTION)
        .await?
        .map(|(_, v)| (v.id, v.version));
    let canary = match plinth_store::traffic::policy(&state.pool, &model.name).await? {
        Some(policy) => {
            Some(crate::registry::traffic::report(&state.pool, &policy, production).await?)
        }
        None => None,
    };
    Ok(TrafficResponse {
        model: model.name.clone(),
        production: production.map(|(_, v)| v),
        canary,
    })
}

/// Staff: the model's canary, if any, with each arm's requests, failures, latency and live
/// accuracy since it started, and the differences with 95% intervals.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/traffic",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "The traffic policy and its figures", body = TrafficResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn traffic(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = model_or_404(&state, &name).await?;
    Ok(HttpResponse::Ok().json(traffic_response(&state, &model).await?))
}

/// Staff: starts or changes a canary: the candidate answers its share of the callers of
/// `production` (the same callers each time: a hash of the user or token; anonymous callers at
/// random). Recorded in the audit log.
#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/traffic",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body = CanaryRequest,
    responses(
        (status = 200, description = "The canary is on", body = TrafficResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "No such version, the production version, or a share outside (0, 1)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_canary(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let request: CanaryRequest = json_body(&req, &body)?;
    let model = model_or_404(&state, &name).await?;
    state
        .registry
        .set_canary(&model, request.candidate, request.share, caller.user_id)
        .await
        .map_err(AppError::from)?;
    crate::audit::canary_set(
        &state.pool,
        &req,
        &staff,
        &model.name,
        request.candidate,
        request.share,
    )
    .await?;
    Ok(HttpResponse::Ok().json(traffic_response(&state, &model).await?))
}

/// Staff: ends the canary; every caller gets `production` again. Recorded in the audit log.
#[utoipa::path(
    delete,
    path = "/api/v1/models/{name}/traffic",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "Ended (or there was none)", body = TrafficResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn end_canary(
    req: HttpRequest,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let model = model_or_404(&state, &name).await?;
    if let Some(candidate) = state.registry.end_canary(&model).await? {
        crate::audit::canary_ended(&state.pool, &req, &staff, &model.name, candidate).await?;
    }
    Ok(HttpResponse::Ok().json(traffic_response(&state, &model).await?))
}

#[derive(Serialize, ToSchema)]
pub struct ShadowsResponse {
    pub model: String,
    pub production: Option<i32>,
    /// Each shadow version and how its answers compare with the live ones since it started.
    pub shadows: Vec<crate::registry::traffic::ShadowReport>,
    /// Live requests this instance could not copy because the shadow queue was full.
    pub dropped_here: u64,
}

async fn shadows_response(
    state: &AppState,
    model: &plinth_store::models::ModelRow,
) -> Result<ShadowsResponse, AppError> {
    let production = plinth_store::models::by_alias(&state.pool, &model.name, PRODUCTION).await?;
    let features: Vec<String> = production
        .as_ref()
        .map(|(_, v)| crate::registry::card_of(v))
        .map(|card| card.features.iter().map(|f| f.name.clone()).collect())
        .unwrap_or_default();
    Ok(ShadowsResponse {
        model: model.name.clone(),
        production: production.map(|(_, v)| v.version),
        shadows: crate::registry::traffic::shadow_reports(&state.pool, model.id, &features).await?,
        dropped_here: state.shadow.dropped(),
    })
}

/// Staff: the model's shadow versions with their agreement with the live answers (same label,
/// for classifiers; the distribution of differences, for regressors) and the inputs where they
/// disagree most. SQL over the stored pairs.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/shadows",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "The shadows and their figures", body = ShadowsResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn shadows(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = model_or_404(&state, &name).await?;
    Ok(HttpResponse::Ok().json(shadows_response(&state, &model).await?))
}

/// Staff: version N receives a copy of the model's live requests from now on; its answers are
/// stored (source `shadow`) and never returned. Recorded in the audit log.
#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/shadows/{version}",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("version" = i32, Path, description = "Version number")),
    responses(
        (status = 200, description = "Shadowing (or was already)", body = ShadowsResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 422, description = "No such version, or the production version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start_shadow(
    req: HttpRequest,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let (name, version) = path.into_inner();
    let model = model_or_404(&state, &name).await?;
    let started = state
        .registry
        .start_shadow(&model, version, caller.user_id)
        .await
        .map_err(AppError::from)?;
    if started {
        crate::audit::shadow_changed(&state.pool, &req, &staff, &model.name, version, true).await?;
    }
    Ok(HttpResponse::Ok().json(shadows_response(&state, &model).await?))
}

/// Staff: version N stops receiving copies; what it answered stays stored. Audited.
#[utoipa::path(
    delete,
    path = "/api/v1/models/{name}/shadows/{version}",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("version" = i32, Path, description = "Version number")),
    responses(
        (status = 200, description = "Stopped (or was not a shadow)", body = ShadowsResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 422, description = "No such version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn stop_shadow(
    req: HttpRequest,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let (name, version) = path.into_inner();
    let model = model_or_404(&state, &name).await?;
    let stopped = state
        .registry
        .stop_shadow(&model, version)
        .await
        .map_err(AppError::from)?;
    if stopped {
        crate::audit::shadow_changed(&state.pool, &req, &staff, &model.name, version, false)
            .await?;
    }
    Ok(HttpResponse::Ok().json(shadows_response(&state, &model).await?))
}
