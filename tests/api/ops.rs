use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::helpers::{spawn_app, spawn_app_with};

#[sqlx::test]
async fn healthz_and_readyz_answer_when_all_is_well(pool: PgPool) {
    let app = spawn_app(pool).await;

    let res = app.get("/healthz").await;
    assert_eq!(res.status().as_u16(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[sqlx::test(migrations = false)]
async fn readyz_is_503_while_migrations_are_pending(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.secret_key = Some(vec![7; 64])).await;

    let res = app.get("/readyz").await;

    assert_eq!(res.status().as_u16(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["reason"], "migrations pending");
}

#[tokio::test]
async fn readyz_is_503_quickly_when_the_database_is_unreachable() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/plinth")
        .unwrap();
    let app = spawn_app_with(pool, |s| s.secret_key = Some(vec![7; 64])).await;

    let started = Instant::now();
    let res = app.get("/readyz").await;

    assert_eq!(res.status().as_u16(), 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(
        app.get("/healthz").await.status().as_u16(),
        200,
        "the process still answers"
    );
}
