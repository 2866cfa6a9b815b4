//! Staff: a model's promotion and rollback rules, and the webhooks alerts go to.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::model_or_404;
use super::{rfc3339, ErrorBody};
use crate::api::json_body;
use crate::audit::{rule_changed, webhook_changed};
use crate::auth::ApiStaff;
use crate::automation::views::{delivery_views, DeliveryView, RuleView};
use crate::automation::{check_webhook, default_min_predictions, webhooks};
use crate::error::AppError;
use crate::state::AppState;
use plinth_store::automation::RuleSpec;

#[derive(Serialize, ToSchema)]
pub struct RulesResponse {
    pub model: String,
    pub rules: Vec<RuleView>,
    /// How often the rules are evaluated.
    pub interval_seconds: u64,
}

async fn rules_response(
    state: &AppState,
    model: &plinth_store::models::ModelRow,
) -> Result<RulesResponse, AppError> {
    let rules = plinth_store::automation::of_model(&state.pool, model.id).await?;
    Ok(RulesResponse {
        model: model.name.clone(),
        rules: rules.iter().map(RuleView::from).collect(),
        interval_seconds: state.settings.automation_interval.as_secs(),
    })
}

/// A rule to set. Shares (agreement, error rate) are from 0 to 1; the quality drop is in
/// accuracy (a share) for classifiers and in the target's units (MAE) for regressors.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"min_predictions": 1000, "min_agreement": 0.97, "max_error_rate": 0.01}))]
pub struct RuleRequest {
    /// `act` (the default) or `notify`.
    pub mode: Option<String>,
    /// Promote: the candidate's shadow or canary predictions; rollback: production's requests
    /// in the window. Default 100 (promote) or 20 (rollback).
    pub min_predictions: Option<i32>,
    pub min_agreement: Option<f64>,
    pub max_mean_abs_difference: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_quality_drop: Option<f64>,
    /// Rollback: the error rate's window (default 10 minutes).
    pub window_minutes: Option<i32>,
    /// Rollback: drift flagged on this many checks in a row.
    pub drift_checks: Option<i32>,
}

fn kind_or_404(kind: &str) -> Result<&'static str, AppError> {
    match kind {
        "promote" => Ok("promote"),
        "rollback" => Ok("rollback"),
        other => Err(AppError::NotFound(format!(
            "There is no {other:?} rule; rules are promote and rollback."
        ))),
    }
}

/// Staff: the model's promotion and rollback rules, with what each last found.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/rules",
    tag = "v1 automation",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "The rules", body = RulesResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn rules(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = model_or_404(&state, &name).await?;
    Ok(HttpResponse::Ok().json(rules_response(&state, &model).await?))
}

/// Staff: sets (or replaces) the model's `promote` or `rollback` rule. Evaluated on a schedule
/// by one instance; every move it makes is in the alias history and the audit log.
#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/rules/{kind}",
    tag = "v1 automation",
    params(("name" = String, Path, description = "Model name", example = "iris"),
           ("kind" = String, Path, description = "promote or rollback", example = "promote")),
    request_body = RuleRequest,
    responses(
        (status = 200, description = "Set", body = RulesResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model or kind of rule", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A rule that cannot work (the message says why)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_rule(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let (name, kind) = path.into_inner();
    let model = model_or_404(&state, &name).await?;
    let kind = kind_or_404(&kind)?;
    let r: RuleRequest = json_body(&req, &body)?;
    let spec = RuleSpec {
        mode: r.mode.unwrap_or_else(|| "act".into()),
        min_predictions: r
            .min_predictions
            .unwrap_or_else(|| default_min_predictions(kind)),
        min_agreement: r.min_agreement,
        max_mean_abs_difference: r.max_mean_abs_difference,
        max_error_rate: r.max_error_rate,
        max_quality_drop: r.max_quality_drop,
        window_minutes: r.window_minutes,
        drift_checks: r.drift_checks,
    };
    crate::automation::check_rule(kind, &spec).map_err(AppError::Unprocessable)?;
    plinth_store::automation::set(&state.pool, model.id, kind, &spec, caller.user_id).await?;
    rule_changed(&state.pool, &req, &staff, &model.name, kind, Some(&spec)).await?;
    Ok(HttpResponse::Ok().json(rules_response(&state, &model).await?))
}

/// Staff: removes the model's `promote` or `rollback` rule.
#[utoipa::path(
    delete,
    path = "/api/v1/models/{name}/rules/{kind}",
    tag = "v1 automation",
    params(("name" = String, Path, description = "Model name", example = "iris"),
           ("kind" = String, Path, description = "promote or rollback", example = "promote")),
    responses(
        (status = 200, description = "Removed (or there was none)", body = RulesResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model or kind of rule", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove_rule(
    req: HttpRequest,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let (name, kind) = path.into_inner();
    let model = model_or_404(&state, &name).await?;
    let kind = kind_or_404(&kind)?;
    if plinth_store::automation::remove(&state.pool, model.id, kind).await? {
        rule_changed(&state.pool, &req, &staff, &model.name, kind, None).await?;
    }
    Ok(HttpResponse::Ok().json(rules_response(&state, &model).await?))
}

/// A webhook and its deliveries' counts.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: i64,
    /// Null for a global webhook (every model's events).
    pub model: Option<String>,
    pub url: String,
    /// The events it receives; empty for every event.
    pub events: Vec<String>,
    pub delivered: i64,
    pub failed: i64,
    pub pending: i64,
    pub created_at: String,
}

impl From<plinth_store::webhooks::WebhookRow> for WebhookView {
    fn from(w: plinth_store::webhooks::WebhookRow) -> Self {
        WebhookView {
            id: w.id,
            model: w.model,
            url: w.url,
            events: w.events,
            delivered: w.delivered,
            failed: w.failed,
            pending: w.pending,
            created_at: rfc3339(w.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhooksResponse {
    pub webhooks: Vec<WebhookView>,
    /// The events a webhook can ask for.
    pub events: Vec<String>,
}

async fn webhooks_response(state: &AppState) -> Result<WebhooksResponse, AppError> {
    Ok(WebhooksResponse {
        webhooks: plinth_store::webhooks::list(&state.pool)
            .await?
            .into_iter()
            .map(WebhookView::from)
            .collect(),
        events: webhooks::EVENTS
            .iter()
            .map(|(e, _)| e.to_string())
            .collect(),
    })
}

/// Staff: the webhooks alerts are sent to.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "v1 automation",
    responses(
        (status = 200, description = "The webhooks", body = WebhooksResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    _staff: ApiStaff,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(webhooks_response(&state).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/plinth", "model": "iris", "events": ["rollback", "drift.flagged"]}))]
pub struct WebhookRequest {
    /// Where to POST: http or https.
    pub url: String,
    /// Only this model's events; every model's when absent.
    pub model: Option<String>,
    /// The events to send; every event when absent or empty.
    pub events: Option<Vec<String>>,
}

/// Staff: adds a webhook; recorded in the audit log.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "v1 automation",
    request_body = WebhookRequest,
    responses(
        (status = 201, description = "Added", body = WebhookView),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not an http(s) URL, an unknown event or model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let r: WebhookRequest = json_body(&req, &body)?;
    let url = r.url.trim().to_string();
    let events = r.events.unwrap_or_default();
    let model_id = check_webhook(&state.pool, &url, r.model.as_deref(), &events)
        .await
        .map_err(AppError::Unprocessable)?;
    let id = plinth_store::webhooks::create(&state.pool, model_id, &url, &events, caller.user_id)
        .await?;
    webhook_changed(&state.pool, &req, &staff, id, &url, true).await?;
    let created = plinth_store::webhooks::get(&state.pool, id)
        .await?
        .map(WebhookView::from)
        .ok_or_else(|| AppError::NotFound(format!("Webhook {id} was removed meanwhile.")))?;
    Ok(HttpResponse::Created().json(created))
}

/// Staff: removes a webhook and its deliveries.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "v1 automation",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "Removed; the webhooks left", body = WebhooksResponse),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    req: HttpRequest,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let url = plinth_store::webhooks::delete(&state.pool, *id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no webhook {id}.")))?;
    webhook_changed(&state.pool, &req, &staff, *id, &url, false).await?;
    Ok(HttpResponse::Ok().json(webhooks_response(&state).await?))
}

/// Staff: a webhook's latest 100 deliveries with every attempt and the response received.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "v1 automation",
    params(("id" = i64, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The deliveries, newest first", body = Vec<DeliveryView>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    if plinth_store::webhooks::get(&state.pool, *id)
        .await?
        .is_none()
    {
        return Err(AppError::NotFound(format!("There is no webhook {id}.")));
    }
    Ok(HttpResponse::Ok().json(delivery_views(&state.pool, Some(*id), 100).await?))
}
