//! Staff pages of automation: a model's promotion and rollback rules (on its admin page) and
//! the webhooks alerts go to, with every delivery and what came back.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::models::{find_model, form_done, model_admin_page};
use crate::audit::{rule_changed, webhook_changed};
use crate::auth::context::flash;
use crate::auth::{PageCtx, StaffOnly};
use crate::automation::views::{delivery_views, DeliveryView};
use crate::automation::webhooks::EVENTS;
use crate::automation::{check_webhook, default_min_predictions};
use crate::error::AppError;
use crate::registry::ImportError;
use crate::state::AppState;
use crate::web::forms::{read_form, Submitted};
use crate::web::{render, see_other};
use plinth_store::automation::RuleSpec;

/// An optional number field: None when blank, the field named when it is not a number.
fn number<T: std::str::FromStr>(
    form: &Submitted,
    name: &str,
    label: &str,
) -> Result<Option<T>, String> {
    match form.field(name).trim().trim_end_matches('%') {
        "" => Ok(None),
        text => text
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{label} must be a number, not {text:?}.")),
    }
}

/// A share entered as a percentage.
fn percent(form: &Submitted, name: &str, label: &str) -> Result<Option<f64>, String> {
    Ok(number::<f64>(form, name, label)?.map(|p| p / 100.0))
}

/// The rule a form describes: percentages for shares, points of accuracy (classifiers) or the
/// target's units (regressors) for the quality drop.
fn spec_from(form: &Submitted, kind: &str, classifier: bool) -> Result<RuleSpec, String> {
    let drop = number::<f64>(form, "max_quality_drop", "The quality drop")?;
    Ok(RuleSpec {
        mode: match form.field("mode") {
            "" => "act".into(),
            m => m.to_string(),
        },
        min_predictions: number(form, "min_predictions", "The number of predictions")?
            .unwrap_or_else(|| default_min_predictions(kind)),
        min_agreement: percent(form, "min_agreement", "The agreement")?,
        max_mean_abs_difference: number(form, "max_mean_abs_difference", "The mean difference")?,
        max_error_rate: percent(form, "max_error_rate", "The error rate")?,
        max_quality_drop: if classifier {
            drop.map(|p| p / 100.0)
        } else {
            drop
        },
        window_minutes: number(form, "window_minutes", "The window")?,
        drift_checks: number(form, "drift_checks", "The number of drift checks")?,
    })
}

/// Sets the model's promotion or rollback rule from its admin page.
pub async fn set_rule(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let (name, kind) = path.into_inner();
    let model = find_model(&state, &name).await?;
    let classifier = super::models::is_classifier(&state, &model).await?;
    let spec = spec_from(&form, &kind, classifier)
        .and_then(|spec| crate::automation::check_rule(&kind, &spec).map(|()| spec));
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => return model_admin_page(ctx, &state, &model, Some(e)).await,
    };
    plinth_store::automation::set(&state.pool, model.id, &kind, &spec, Some(user.id)).await?;
    rule_changed(&state.pool, &req, &user, &model.name, &kind, Some(&spec)).await?;
    let message = match kind.as_str() {
        "promote" => "The promotion rule is set; it is evaluated on the next round.",
        _ => "The rollback rule is set; it is evaluated on the next round.",
    };
    form_done(
        ctx,
        &state,
        &model,
        Ok::<_, ImportError>(message.into()),
        "#automation",
    )
    .await
}

/// Removes the model's promotion or rollback rule.
pub async fn remove_rule(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    let (name, kind) = path.into_inner();
    let model = find_model(&state, &name).await?;
    if plinth_store::automation::remove(&state.pool, model.id, &kind).await? {
        rule_changed(&state.pool, &req, &user, &model.name, &kind, None).await?;
        if let Some(session) = ctx.session() {
            flash(session, "success", format!("The {kind} rule is removed."));
        }
    }
    Ok(see_other(&format!(
        "/admin/models/{}#automation",
        model.name
    )))
}

/// A webhook as the page lists it.
pub struct WebhookLine {
    pub id: i64,
    pub scope: String,
    pub url: String,
    pub events: String,
    pub delivered: i64,
    pub failed: i64,
    pub pending: i64,
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
struct WebhooksPage {
    ctx: PageCtx,
    webhooks: Vec<WebhookLine>,
    deliveries: Vec<DeliveryView>,
    models: Vec<String>,
    events: Vec<(&'static str, &'static str)>,
    error: Option<String>,
    url: String,
}

async fn webhooks_page_with(
    ctx: PageCtx,
    state: &AppState,
    error: Option<String>,
    url: String,
) -> Result<HttpResponse, AppError> {
    let webhooks = plinth_store::webhooks::list(&state.pool)
        .await?
        .into_iter()
        .map(|w| WebhookLine {
            id: w.id,
            scope: w.model.unwrap_or_else(|| "every model".into()),
            url: w.url,
            events: if w.events.is_empty() {
                "every event".into()
            } else {
                w.events.join(", ")
            },
            delivered: w.delivered,
            failed: w.failed,
            pending: w.pending,
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        &WebhooksPage {
            ctx,
            webhooks,
            deliveries: delivery_views(&state.pool, None, 50).await?,
            models: plinth_store::models::model_names(&state.pool, 1000).await?,
            events: EVENTS.to_vec(),
            error,
            url,
        },
        status,
    )
}

pub async fn webhooks_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    webhooks_page_with(ctx, &state, None, String::new()).await
}

pub async fn create_webhook(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let url = form.field("url").trim().to_string();
    let model = Some(form.field("model").trim()).filter(|m| !m.is_empty());
    let events: Vec<String> = EVENTS
        .iter()
        .filter(|(e, _)| !form.field(&format!("event:{e}")).is_empty())
        .map(|(e, _)| e.to_string())
        .collect();
    let model_id = match check_webhook(&state.pool, &url, model, &events).await {
        Ok(id) => id,
        Err(e) => return webhooks_page_with(ctx, &state, Some(e), url).await,
    };
    let id =
        plinth_store::webhooks::create(&state.pool, model_id, &url, &events, Some(user.id)).await?;
    webhook_changed(&state.pool, &req, &user, id, &url, true).await?;
    if let Some(session) = ctx.session() {
        flash(session, "success", format!("Alerts now go to {url}."));
    }
    Ok(see_other("/admin/webhooks"))
}

pub async fn remove_webhook(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    if let Some(url) = plinth_store::webhooks::delete(&state.pool, *id).await? {
        webhook_changed(&state.pool, &req, &user, *id, &url, false).await?;
        if let Some(session) = ctx.session() {
            flash(session, "success", format!("Alerts no longer go to {url}."));
        }
    }
    Ok(see_other("/admin/webhooks"))
}

/// Queues a test event for one webhook, to see it arrive (and what the receiver answers).
pub async fn test_webhook(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    let body = crate::automation::webhooks::body(
        "test",
        None,
        &format!("A test from Plinth, sent by {}.", user.username),
        serde_json::json!({}),
    );
    let traceparent = crate::telemetry::traceparent();
    let queued = plinth_store::webhooks::enqueue_for(
        &state.pool,
        *id,
        "test",
        &body,
        traceparent.as_deref(),
    );
    if !queued.await? {
        return Err(AppError::NotFound(format!("There is no webhook {id}.")));
    }
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            "A test event is on its way; its delivery shows below.",
        );
    }
    Ok(see_other("/admin/webhooks"))
}
