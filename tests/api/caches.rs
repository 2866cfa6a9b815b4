//! Tokens and alias resolutions are cached in memory; changes made by another process (here: SQL
//! straight into the database, as another Plinth instance or `psql` would) reach the cache
//! through Postgres NOTIFY.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::spawn_app;

const ROW: &str = r#"{"inputs": {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}}"#;

/// How long a change may take to reach the cache. NOTIFY arrives in milliseconds; the margin is
/// for a loaded 2-core CI machine, where the listener task may wait its turn.
const NOTIFY_DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it holds or `limit` passes; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[sqlx::test]
async fn a_token_revoked_by_another_process_is_refused_without_waiting_for_the_cache(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    for _ in 0..3 {
        let res = app
            .api(Method::GET, "/api/v1/models", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
    }
    sqlx::query("update api_token set revoked_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let refused = async |token: &str| {
        app.api(Method::GET, "/api/v1/models", token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 401
    };
    let took = within(NOTIFY_DEADLINE, async || refused(&token).await).await;
    assert!(
        took.is_some(),
        "the revoked token was still accepted after {NOTIFY_DEADLINE:?}, past the cache's minute"
    );

    // A user disabled elsewhere loses their (cached) tokens too.
    let other = app.token_for("bob", false).await;
    let ok = app
        .api(Method::GET, "/api/v1/models", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    sqlx::query("update app_user set is_active = false where username = 'bob'")
        .execute(&app.pool)
        .await
        .unwrap();
    let took = within(NOTIFY_DEADLINE, async || refused(&other).await).await;
    assert!(
        took.is_some(),
        "the disabled user's token was still accepted"
    );
}

#[sqlx::test]
async fn an_alias_moved_by_another_process_is_followed_without_waiting_for_the_cache(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let res = app.publish_iris_v2(&staff).await;
    assert_eq!(res.status().as_u16(), 201);

    let version = async || -> i64 {
        let res = app
            .api(Method::POST, "/api/v1/models/iris/predict", &staff)
            .header("content-type", "application/json")
            .body(ROW)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        res.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(version().await, 1);
    assert_eq!(version().await, 1, "served from the cache the second time");

    sqlx::query(
        "update model_alias set version_id = (select id from model_version where version = 2)
         where alias = 'production' and model_id = (select id from model where name = 'iris')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let took = within(NOTIFY_DEADLINE, async || version().await == 2).await;
    assert!(
        took.is_some(),
        "still serving version 1 after {NOTIFY_DEADLINE:?}"
    );

    // A move through Plinth itself is followed by the very next request.
    let res = app
        .api(
            Method::PUT,
            "/api/v1/models/iris/aliases/production",
            &staff,
        )
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(version().await, 1);
}
