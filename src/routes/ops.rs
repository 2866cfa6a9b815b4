//! Liveness and readiness probes.

use std::time::Duration;

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics);
}

/// Prometheus metrics, for a staff token (or without one on `PLINTH_METRICS_ADDR`).
#[get("/metrics")]
async fn metrics(_staff: crate::api::ApiStaff, state: web::Data<AppState>) -> HttpResponse {
    metrics_text(&state.metrics)
}

pub fn metrics_text(registry: &crate::monitoring::metrics::Metrics) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(registry.render())
}

/// The process answers.
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// The database answers and every migration is applied; 503 otherwise.
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = async {
        crate::db::ping(&state.pool)
            .await
            .map_err(|_| "database unreachable")?;
        match crate::db::migrations_current(&state.pool).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("migrations pending"),
            Err(_) => Err("database unreachable"),
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Ok(Err(reason)) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": reason})),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": "database did not answer in time"})),
    }
}
