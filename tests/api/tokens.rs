use sqlx::PgPool;

use crate::helpers::{spawn_app, spawn_app_with};

#[sqlx::test]
async fn a_token_is_shown_once_listed_by_prefix_and_revocable(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    let res = app
        .post_form_from(
            "/accounts/tokens",
            "/accounts/tokens",
            &[("name", "nightly job")],
        )
        .await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "the secret is in the POST's own answer"
    );
    assert_eq!(
        res.headers()["cache-control"].to_str().unwrap(),
        "no-store",
        "and never cached"
    );
    let page = res.text().await.unwrap();
    let marker = "<code class=\"token-secret\">";
    let start = page.find(marker).expect("the secret is shown") + marker.len();
    let secret = page[start..start + 47].to_string();
    assert!(secret.starts_with("plinth_"));
    assert!(page.contains("nightly job"));
    let again = app.get_html("/accounts/tokens").await;
    assert!(!again.contains(&secret), "shown only once");
    let sessions: Vec<String> = sqlx::query_scalar("select state::text from session")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        sessions.iter().all(|s| !s.contains(&secret)),
        "the secret is never stored in a session"
    );
    assert!(
        again.contains(&format!("{}…", &secret[..14])),
        "listed by its prefix"
    );
    let stored: String = sqlx::query_scalar("select token_hash from api_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(stored, secret);

    let res = app
        .api(reqwest::Method::GET, "/api/v1/models", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let used: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select last_used_at from api_token")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(used.is_some(), "last use is recorded");

    let id: i64 = sqlx::query_scalar("select id from api_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let res = app
        .post_form_from(
            "/accounts/tokens",
            &format!("/accounts/tokens/{id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let res = app
        .api(reqwest::Method::GET, "/api/v1/models", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "revoked tokens fail at once");
}

#[sqlx::test]
async fn without_a_token_the_api_answers_401_with_a_challenge(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;

    for path in [
        "/api/v1/models",
        "/v2/models/iris",
        "/v1/models/iris",
        "/api/v1/predictions",
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status().as_u16(), 401, "{path}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"plinth\"");
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("API token is required"));
    }
    let res = app
        .api(reqwest::Method::GET, "/api/v1/models", "plinth_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("not valid"));
}

#[sqlx::test]
async fn public_inference_opens_only_the_inference_endpoints(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.public_inference = true).await;
    app.import_models().await;

    let res = app
        .client
        .post(app.url("/api/v1/models/iris/predict"))
        .json(&serde_json::json!({"inputs": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (user, token): (Option<i64>, Option<i64>) =
        sqlx::query_as("select user_id, token_id from prediction")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((user, token), (None, None));
    assert_eq!(app.get("/api/v1/predictions").await.status().as_u16(), 401);
}
