//! The operational endpoints: liveness and readiness probes, Prometheus metrics.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::monitoring::metrics::Metrics;
use crate::state::AppState;

/// Prometheus metrics on the main listener, for a staff token.
pub async fn metrics(_staff: crate::auth::ApiStaff, state: web::Data<AppState>) -> HttpResponse {
    metrics_text(&state.metrics)
}

/// Prometheus metrics on the separate listener (`PLINTH_METRICS_ADDR`), without a token.
pub async fn open_metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    metrics_text(&metrics)
}

fn metrics_text(registry: &Metrics) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::monitoring::metrics::CONTENT_TYPE)
        .body(registry.render())
}

/// The process answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers, every migration is applied and every version an alias points at can
/// be loaded (loading it now if it is not in memory yet); 503 with the reason otherwise.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().json(
            json!({"status": "unavailable", "reason": "draining: this instance is stopping"}),
        );
    }
    let database = async {
        plinth_store::ping(&state.pool)
            .await
            .map_err(|_| "database unreachable")?;
        match plinth_store::migrations_current(&state.pool).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("migrations pending"),
            Err(_) => Err("database unreachable"),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), database).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "reason": reason}))
        }
        Err(_) => {
            return HttpResponse::ServiceUnavailable().json(
                json!({"status": "unavailable", "reason": "database did not answer in time"}),
            )
        }
    }
    let versions = match plinth_store::models::all_versions(&state.pool, true).await {
        Ok(v) => v,
        Err(_) => {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "reason": "database unreachable"}))
        }
    };
    let mut broken = Vec::new();
    for v in versions {
        if let Err(e) = state.registry.load(&v.version).await {
            broken.push(json!({
                "model": v.model,
                "version": v.version.version,
                "alias": v.alias,
                "reason": e.to_string(),
            }));
        }
    }
    if broken.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "reason": "some model versions cannot be served",
            "versions": broken,
        }))
    }
}
