//! The CI pipeline's publish-and-promote steps with a staff token.

use super::*;

#[sqlx::test]
async fn a_ci_pipeline_publishes_and_promotes_with_a_staff_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = app.token_for("root", true).await;
    let user = app.token_for("ada", false).await;
    let upload = || {
        reqwest::multipart::Form::new()
            .part(
                "model",
                file_part(
                    std::fs::read("models/diabetes/1/model.onnx").unwrap(),
                    "model.onnx",
                ),
            )
            .part(
                "card",
                file_part(
                    std::fs::read("models/diabetes/1/card.toml").unwrap(),
                    "card.toml",
                ),
            )
            .part(
                "reference",
                file_part(
                    std::fs::read("models/diabetes/1/reference.csv").unwrap(),
                    "reference.csv",
                ),
            )
    };

    let res = app
        .api(Method::POST, "/api/v1/models/sugar/versions", &user)
        .multipart(upload())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let res = app
        .api(Method::POST, "/api/v1/models/sugar/versions", &staff)
        .multipart(upload())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"model": "sugar", "version": 1, "created": true})
    );
    let res = app
        .api(Method::POST, "/api/v1/models/sugar/versions", &staff)
        .multipart(upload())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["created"], false);

    let bad =
        reqwest::multipart::Form::new().part("model", file_part(b"junk".to_vec(), "model.onnx"));
    let res = app
        .api(Method::POST, "/api/v1/models/sugar/versions", &staff)
        .multipart(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not an ONNX model"));

    let res = app
        .api(
            Method::PUT,
            "/api/v1/models/sugar/aliases/production",
            &user,
        )
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let res = app
        .api(Method::PUT, "/api/v1/models/sugar/aliases/canary", &staff)
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let event: Option<String> = sqlx::query_scalar(
        "select u.username from alias_event e join app_user u on u.id = e.actor_id where e.alias = 'canary'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(event.as_deref(), Some("root"), "audited like the pages");
    let res = app
        .api(Method::PUT, "/api/v1/models/sugar/aliases/canary", &staff)
        .json(&json!({"version": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
}
