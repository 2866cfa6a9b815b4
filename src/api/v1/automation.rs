//! Staff: a model's promotion and rollback rules, and the webhooks alerts go to.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::model_or_404;
use super::{rfc3339, ErrorBody};
use crate::api::json_body;
use crate::auth::ApiStaff;
use crate::automation::webhooks;
use crate::db::automation::{RuleRow, RuleSpec};
use crate::error::AppError;
use crate::state::AppState;

/// A rule as it is set and as it last found things.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    /// `promote` or `rollback`.
    pub kind: String,
    /// `act` moves the alias; `notify` only records and alerts.
    pub mode: String,
    /// The rule in words.
    pub description: String,
    pub min_predictions: i32,
    pub min_agreement: Option<f64>,
    pub max_mean_abs_difference: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_quality_drop: Option<f64>,
    pub window_minutes: Option<i32>,
    pub drift_checks: Option<i32>,
    /// RFC 3339; null until the first evaluation.
    pub last_evaluated_at: Option<String>,
    pub last_outcome: Option<String>,
    /// The figures the last evaluation judged.
    #[schema(value_type = Option<Object>)]
    pub last_figures: Option<serde_json::Value>,
}

impl From<&RuleRow> for RuleView {
    fn from(r: &RuleRow) -> Self {
        RuleView {
            kind: r.kind.clone(),
            mode: r.mode.clone(),
            description: crate::automation::describe(r),
            min_predictions: r.min_predictions,
            min_agreement: r.min_agreement,
            max_mean_abs_difference: r.max_mean_abs_difference,
            max_error_rate: r.max_error_rate,
            max_quality_drop: r.max_quality_drop,
            window_minutes: r.window_minutes,
            drift_checks: r.drift_checks,
            last_evaluated_at: r.last_evaluated_at.map(rfc3339),
            last_outcome: r.last_outcome.clone(),
            last_figures: r.last_figures.as_ref().map(|j| j.0.clone()),
        }
    }
}

/// For the admin page: the rule as a sentence, when it last looked, and its figures as the form
/// fields show them (percentages for shares).
impl RuleView {
    pub fn sentence(&self) -> String {
        let mut chars = self.description.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// "2026-12-04 03:25:56 UTC".
    pub fn evaluated_text(&self) -> String {
        match self.last_evaluated_at.as_deref().and_then(|t| t.get(..19)) {
            Some(t) => format!("{} UTC", t.replace('T', " ")),
            None => "not yet".into(),
        }
    }

    pub fn is_notify(&self) -> bool {
        self.mode == "notify"
    }

    fn shown(v: Option<f64>, scale: f64) -> String {
        v.map(|x| {
            let t = format!("{:.6}", x * scale);
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        })
        .unwrap_or_default()
    }

    pub fn agreement_field(&self) -> String {
        Self::shown(self.min_agreement, 100.0)
    }
    pub fn error_rate_field(&self) -> String {
        Self::shown(self.max_error_rate, 100.0)
    }
    pub fn difference_field(&self) -> String {
        Self::shown(self.max_mean_abs_difference, 1.0)
    }
    /// Points of accuracy for classifiers, the target's units for regressors.
    pub fn quality_field(&self, classifier: &bool) -> String {
        Self::shown(self.max_quality_drop, if *classifier { 100.0 } else { 1.0 })
    }
    pub fn window_field(&self) -> String {
        self.window_minutes
            .unwrap_or(crate::automation::DEFAULT_WINDOW_MINUTES)
            .to_string()
    }
    pub fn drift_field(&self) -> String {
        self.drift_checks.map(|k| k.to_string()).unwrap_or_default()
    }
}

#[derive(Serialize, ToSchema)]
pub struct RulesResponse {
    pub model: String,
    pub rules: Vec<RuleView>,
    /// How often the rules are evaluated.
    pub interval_seconds: u64,
}

async fn rules_response(
    state: &AppState,
    model: &crate::db::models::ModelRow,
) -> Result<RulesResponse, AppError> {
    let rules = crate::db::automation::of_model(&state.pool, model.id).await?;
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

/// The default of `min_predictions` per kind of rule.
pub fn default_min_predictions(kind: &str) -> i32 {
    if kind == "rollback" {
        20
    } else {
        100
    }
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

/// Records a rule's change in the audit log.
pub async fn audit_rule(
    state: &AppState,
    req: &HttpRequest,
    user: &crate::db::users::User,
    model: &str,
    kind: &str,
    set: Option<&RuleSpec>,
) -> Result<(), AppError> {
    let detail = match set {
        Some(spec) => serde_json::json!({
            "model": model, "kind": kind, "mode": spec.mode,
            "min_predictions": spec.min_predictions, "min_agreement": spec.min_agreement,
            "max_mean_abs_difference": spec.max_mean_abs_difference,
            "max_error_rate": spec.max_error_rate, "max_quality_drop": spec.max_quality_drop,
            "window_minutes": spec.window_minutes, "drift_checks": spec.drift_checks,
        }),
        None => serde_json::json!({"model": model, "kind": kind}),
    };
    let action = if set.is_some() {
        "automation.rule_set"
    } else {
        "automation.rule_removed"
    };
    crate::audit::record(
        &state.pool,
        Some(req),
        Some(user),
        action,
        format!("{model} {kind}"),
        detail,
    )
    .await
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
    crate::db::automation::set(&state.pool, model.id, kind, &spec, caller.user_id).await?;
    audit_rule(&state, &req, &staff, &model.name, kind, Some(&spec)).await?;
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
    if crate::db::automation::remove(&state.pool, model.id, kind).await? {
        audit_rule(&state, &req, &staff, &model.name, kind, None).await?;
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

impl From<crate::db::webhooks::WebhookRow> for WebhookView {
    fn from(w: crate::db::webhooks::WebhookRow) -> Self {
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
        webhooks: crate::db::webhooks::list(&state.pool)
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

/// Checks a new webhook's fields; the model's id when it names one.
pub async fn check_webhook(
    state: &AppState,
    url: &str,
    model: Option<&str>,
    events: &[String],
) -> Result<Option<i64>, String> {
    webhooks::check_url(url)?;
    if let Some(e) = events.iter().find(|e| !webhooks::is_event(e)) {
        let known: Vec<&str> = webhooks::EVENTS.iter().map(|(e, _)| *e).collect();
        return Err(format!(
            "There is no event {e:?}; the events are {}.",
            known.join(", ")
        ));
    }
    match model {
        None => Ok(None),
        Some(name) => match crate::db::models::find_model(&state.pool, name).await {
            Ok(Some(m)) => Ok(Some(m.id)),
            Ok(None) => Err(format!("There is no model called {name}.")),
            Err(e) => Err(format!("The model could not be looked up: {e}")),
        },
    }
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
    let model_id = check_webhook(&state, &url, r.model.as_deref(), &events)
        .await
        .map_err(AppError::Unprocessable)?;
    let id =
        crate::db::webhooks::create(&state.pool, model_id, &url, &events, caller.user_id).await?;
    audit_webhook(&state, &req, &staff, id, &url, true).await?;
    let created = crate::db::webhooks::list(&state.pool)
        .await?
        .into_iter()
        .find(|w| w.id == id)
        .map(WebhookView::from)
        .ok_or_else(|| AppError::NotFound(format!("Webhook {id} was removed meanwhile.")))?;
    Ok(HttpResponse::Created().json(created))
}

/// Records that a webhook was added or removed.
pub async fn audit_webhook(
    state: &AppState,
    req: &HttpRequest,
    user: &crate::db::users::User,
    id: i64,
    url: &str,
    added: bool,
) -> Result<(), AppError> {
    crate::audit::record(
        &state.pool,
        Some(req),
        Some(user),
        if added {
            "webhook.added"
        } else {
            "webhook.removed"
        },
        format!("webhook {id}"),
        serde_json::json!({"id": id, "url": url}),
    )
    .await
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
    let url = crate::db::webhooks::delete(&state.pool, *id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no webhook {id}.")))?;
    audit_webhook(&state, &req, &staff, *id, &url, false).await?;
    Ok(HttpResponse::Ok().json(webhooks_response(&state).await?))
}

/// One delivery with every attempt at it.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub tries: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    /// The HTTP status received, if any.
    pub status: Option<i32>,
    /// The start of the body received.
    pub response: Option<String>,
    /// Why no answer came (refused, timed out).
    pub error: Option<String>,
    pub duration_ms: i32,
    pub at: String,
}

impl DeliveryView {
    /// "2026-12-04 03:25:56", for the page (UTC).
    pub fn created_text(&self) -> String {
        self.created_at
            .get(..19)
            .map_or_else(|| self.created_at.clone(), |t| t.replace('T', " "))
    }
}

impl AttemptView {
    /// The outcome in a few words, for the page.
    pub fn outcome(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "—".into(),
        }
    }
}

/// The latest deliveries (of one webhook, or of all) with their attempts.
pub async fn delivery_views(
    state: &AppState,
    webhook: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryView>, AppError> {
    let rows = crate::db::webhooks::deliveries(&state.pool, webhook, limit).await?;
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let attempts = crate::db::webhooks::attempts(&state.pool, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|d| DeliveryView {
            tries: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    status: a.status,
                    response: a.response.clone(),
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                    at: rfc3339(a.created_at),
                })
                .collect(),
            id: d.id,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            body: d.body.0,
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        })
        .collect())
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
    let known = crate::db::webhooks::list(&state.pool)
        .await?
        .iter()
        .any(|w| w.id == *id);
    if !known {
        return Err(AppError::NotFound(format!("There is no webhook {id}.")));
    }
    Ok(HttpResponse::Ok().json(delivery_views(&state, Some(*id), 100).await?))
}
