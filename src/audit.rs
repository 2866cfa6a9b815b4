//! The audit log, as handlers write it: logins, uploads, alias moves, user changes, tokens.

use actix_web::HttpRequest;
use sqlx::PgPool;

use crate::error::AppError;
use plinth_store::audit::{self, NewEvent};
use plinth_store::users::User;

/// The client's address: the connection's, or, from a trusted proxy (`PLINTH_TRUSTED_PROXIES`),
/// the one its `X-Forwarded-For` names.
pub fn client_ip(req: &HttpRequest) -> String {
    let trusted = trusted_proxies(req);
    let forwarded: Vec<&str> = if trusted.is_empty() {
        Vec::new()
    } else {
        req.headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    plinth_store::domain::proxies::client_addr(req.peer_addr().map(|a| a.ip()), &forwarded, trusted)
        .map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

fn trusted_proxies(req: &HttpRequest) -> &[plinth_store::domain::proxies::Cidr] {
    req.app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|s| s.settings.trusted_proxies.as_slice())
        .unwrap_or_default()
}

/// Whether the client reached Plinth over HTTPS: from a trusted proxy, as its
/// `X-Forwarded-Proto` says; from anyone else, never (Plinth itself speaks plain HTTP, and a
/// client's own `X-Forwarded-Proto` proves nothing).
pub fn is_https(req: &HttpRequest) -> bool {
    let trusted = trusted_proxies(req);
    let from_proxy = req
        .peer_addr()
        .is_some_and(|peer| trusted.iter().any(|c| c.contains(peer.ip())));
    from_proxy
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            // A chain of proxies appends: the nearest one's word is the last.
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Records that `actor` did `action` to `target`.
pub async fn record(
    pool: &PgPool,
    req: Option<&HttpRequest>,
    actor: Option<&User>,
    action: &str,
    target: impl Into<Option<String>>,
    detail: serde_json::Value,
) -> Result<(), AppError> {
    let ip = req.map(client_ip);
    audit::record(
        pool,
        NewEvent {
            actor_id: actor.map(|u| u.id),
            actor: actor.map(|u| u.username.as_str()),
            action,
            target: target.into(),
            detail,
            client_ip: ip.as_deref(),
        },
    )
    .await?;
    Ok(())
}

/// Records an event whose actor is only a name (a failed login names whom it tried).
pub async fn record_named(
    pool: &PgPool,
    req: &HttpRequest,
    actor_id: Option<i64>,
    actor: &str,
    action: &str,
) -> Result<(), AppError> {
    let ip = client_ip(req);
    audit::record(
        pool,
        NewEvent {
            actor_id,
            actor: Some(actor),
            action,
            target: None,
            detail: serde_json::json!({}),
            client_ip: Some(&ip),
        },
    )
    .await?;
    Ok(())
}

/// Records an alias move: which model, which alias, from which version to which.
pub async fn alias_moved(
    pool: &PgPool,
    req: &HttpRequest,
    user: &User,
    model: &str,
    alias: &str,
    from: Option<i32>,
    to: i32,
) -> Result<(), AppError> {
    record(
        pool,
        Some(req),
        Some(user),
        "alias.moved",
        format!("{model} {alias}"),
        serde_json::json!({"model": model, "alias": alias, "from": from, "to": to}),
    )
    .await
}

/// Records a data set version added (or found to be there already).
pub async fn dataset_added(
    pool: &PgPool,
    req: Option<&HttpRequest>,
    user: &User,
    added: &crate::datasets::Added,
) -> Result<(), AppError> {
    if !added.created {
        return Ok(());
    }
    record(
        pool,
        req,
        Some(user),
        "dataset.added",
        format!("{} v{}", added.name, added.version),
        serde_json::json!({"dataset": added.name, "version": added.version, "rows": added.rows, "sha256": added.sha256}),
    )
    .await
}

/// Records a model version linked to a data set version.
pub async fn dataset_linked(
    pool: &PgPool,
    req: &HttpRequest,
    user: &User,
    (model, version): (&str, i32),
    (dataset, dataset_version): (&str, i32),
    role: &str,
) -> Result<(), AppError> {
    record(
        pool,
        Some(req),
        Some(user),
        "dataset.linked",
        format!("{model} v{version}"),
        serde_json::json!({"model": model, "version": version, "dataset": dataset, "dataset_version": dataset_version, "role": role}),
    )
    .await
}

/// Records that `user` started or changed a canary.
pub async fn canary_set(
    pool: &PgPool,
    req: &HttpRequest,
    user: &User,
    model: &str,
    candidate: i32,
    share: f64,
) -> Result<(), AppError> {
    record(
        pool,
        Some(req),
        Some(user),
        "canary.set",
        model.to_string(),
        serde_json::json!({"model": model, "candidate": candidate, "share": share}),
    )
    .await
}

/// Records that `user` started (`on`) or stopped shadowing a version.
pub async fn shadow_changed(
    pool: &PgPool,
    req: &HttpRequest,
    user: &User,
    model: &str,
    version: i32,
    on: bool,
) -> Result<(), AppError> {
    record(
        pool,
        Some(req),
        Some(user),
        if on {
            "shadow.started"
        } else {
            "shadow.stopped"
        },
        format!("{model} v{version}"),
        serde_json::json!({"model": model, "version": version}),
    )
    .await
}

/// Records that `user` ended a canary.
pub async fn canary_ended(
    pool: &PgPool,
    req: &HttpRequest,
    user: &User,
    model: &str,
    candidate: i32,
) -> Result<(), AppError> {
    record(
        pool,
        Some(req),
        Some(user),
        "canary.ended",
        model.to_string(),
        serde_json::json!({"model": model, "candidate": candidate}),
    )
    .await
}

/// Records a rule's change in the audit log.
pub async fn rule_changed(
    pool: &PgPool,
    req: &HttpRequest,
    user: &plinth_store::users::User,
    model: &str,
    kind: &str,
    set: Option<&plinth_store::automation::RuleSpec>,
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
    record(
        pool,
        Some(req),
        Some(user),
        action,
        format!("{model} {kind}"),
        detail,
    )
    .await
}

/// Records that a webhook was added or removed.
pub async fn webhook_changed(
    pool: &PgPool,
    req: &HttpRequest,
    user: &plinth_store::users::User,
    id: i64,
    url: &str,
    added: bool,
) -> Result<(), AppError> {
    record(
        pool,
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
