use crate::helpers::setosa;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{file_part, spawn_app, spawn_app_with};

mod publishing;

#[sqlx::test]
async fn models_are_listed_and_described(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    let list: Value = app
        .api(Method::GET, "/api/v1/models", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["diabetes", "digits", "iris"]);
    assert_eq!(list[2]["production_version"], 1);

    let iris: Value = app
        .api(Method::GET, "/api/v1/models/iris", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(iris["task"], "classification");
    assert_eq!(
        iris["card"]["labels"],
        json!(["setosa", "versicolor", "virginica"])
    );
    assert_eq!(iris["signature"]["inputs"][0]["shape"], json!([null, 4]));
    assert_eq!(iris["aliases"]["production"], 1);
    assert_eq!(iris["versions"][0]["aliases"], json!(["production"]));

    let res = app
        .api(Method::GET, "/api/v1/models/nope", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[sqlx::test]
async fn predict_takes_one_row_or_a_batch_and_stores_each(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    let (status, one) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            json!({"inputs": setosa()}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["model"], "iris");
    assert_eq!(one["version"], 1);
    assert_eq!(one["predictions"][0]["label"], "setosa");
    let p = one["predictions"][0]["probabilities"].as_object().unwrap();
    assert!((p.values().map(|v| v.as_f64().unwrap()).sum::<f64>() - 1.0).abs() < 1e-5);

    let rows = vec![
        setosa(),
        json!({"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}),
    ];
    let (status, batch) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            json!({"inputs": rows}),
        )
        .await;
    assert_eq!(status, 200);
    let labels: Vec<&str> = batch["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["setosa", "virginica"]);

    let stored: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
        "select p.id + k, p.source, p.token_id from prediction p, generate_series(0, p.n - 1) k order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 3);
    assert!(stored
        .iter()
        .all(|(_, source, token)| source == "api" && token.is_some()));
    assert_eq!(batch["predictions"][1]["id"], stored[2].0);

    let (status, regression) = app.post_json("/api/v1/models/diabetes/predict",
        &token,
        json!({"inputs": {"age": 59, "sex": 2, "bmi": 32.1, "bp": 101, "s1": 157, "s2": 93.2, "s3": 38, "s4": 4, "s5": 4.8598, "s6": 87}}),
    )
    .await;
    assert_eq!(status, 200, "{regression}");
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/diabetes.json").unwrap())
            .unwrap();
    let expected = fx["outputs"]["variable"][0][0].as_f64().unwrap();
    assert!((regression["predictions"][0]["value"].as_f64().unwrap() - expected).abs() < 1e-3);
}

#[sqlx::test]
async fn a_version_or_alias_can_be_chosen(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let res = app.publish_iris_v2(&staff).await;
    assert_eq!(res.status().as_u16(), 201);
    let res = app
        .api(Method::PUT, "/api/v1/models/iris/aliases/staging", &staff)
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    for (query, version) in [
        ("", 1),
        ("?version=2", 2),
        ("?alias=staging", 2),
        ("?alias=production", 1),
    ] {
        let (status, body) = app
            .post_json(
                &format!("/api/v1/models/iris/predict{query}"),
                &staff,
                json!({"inputs": setosa()}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["version"], version, "{query}");
    }
    let (status, body) = app
        .post_json(
            "/api/v1/models/iris/predict?version=9",
            &staff,
            json!({"inputs": setosa()}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no version 9"));
    let (status, _) = app
        .post_json(
            "/api/v1/models/iris/predict?alias=nope",
            &staff,
            json!({"inputs": setosa()}),
        )
        .await;
    assert_eq!(status, 404);
}

#[sqlx::test]
async fn bad_input_is_a_4xx_that_names_the_problem(pool: PgPool) {
    let app = spawn_app_with(pool, |s| {
        s.max_batch_rows = 5;
        s.max_body_bytes = 4096;
    })
    .await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let url = "/api/v1/models/iris/predict";

    let send_raw = |body: &'static str, content_type: &'static str| {
        app.api(Method::POST, url, &token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let res = send_raw("{not json", "application/json").await.unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let res = send_raw("inputs=1", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    let res = send_raw(r#"{"inputs": {"sepal_length": NaN}}"#, "application/json")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400, "NaN is not JSON");

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"inputs": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}}),
            422,
            "missing feature \"petal_width\"",
        ),
        (
            json!({"inputs": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "colour": 1}}),
            422,
            "unknown feature \"colour\"",
        ),
        (
            json!({"inputs": {"sepal_length": "5.1", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}),
            422,
            "sepal_length: expected a number",
        ),
        (
            json!({"inputs": {"sepal_length": 50, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}),
            422,
            "between 4.3 and 7.9",
        ),
        (
            json!({"inputs": [setosa(), [1, 2, 3, 4]]}),
            422,
            "row 1: each row must be an object",
        ),
        (
            json!({"inputs": [setosa(), setosa(), setosa(), setosa(), setosa(), setosa()]}),
            413,
            "6 rows is more than the 5",
        ),
        (json!({"inputs": []}), 422, "at least one row"),
        (json!({"rows": []}), 400, "unknown field `rows`"),
        (json!([1, 2]), 400, "JSON"),
    ];
    for (body, status, message) in cases {
        let (got, answer) = app.post_json(url, &token, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{body}: {error}");
        assert!(answer["request_id"].is_string());
    }
    let big = json!({"inputs": setosa(), "padding": "x".repeat(5000)});
    let res = app
        .api(Method::POST, url, &token)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let (status, _) = app
        .post_json(
            "/api/v1/models/ghost/predict",
            &token,
            json!({"inputs": setosa()}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.predictions().await, 0, "nothing bad was stored");
}

#[sqlx::test]
async fn history_and_single_predictions_are_the_callers_own(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let ada = app.token_for("ada", false).await;
    let bob = app.token_for("bob", false).await;
    let rows: Vec<Value> = (0..7).map(|_| setosa()).collect();
    let (_, mine) = app
        .post_json("/api/v1/models/iris/predict", &ada, json!({"inputs": rows}))
        .await;
    let (_, theirs) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &bob,
            json!({"inputs": setosa()}),
        )
        .await;

    let page: Value = app
        .api(Method::GET, "/api/v1/predictions?per_page=5", &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_page"], 2);
    let last_id = mine["predictions"][6]["id"].as_i64().unwrap();
    assert_eq!(page["items"][0]["id"], last_id, "newest first");
    let page2: Value = app
        .api(Method::GET, "/api/v1/predictions?per_page=5&page=2", &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 2);
    assert_eq!(page2["next_page"], Value::Null);
    let filtered: Value = app
        .api(Method::GET, "/api/v1/predictions?model=diabetes", &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 0);
    let res = app
        .api(Method::GET, "/api/v1/predictions?from=soon", &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    let one: Value = app
        .api(Method::GET, &format!("/api/v1/predictions/{last_id}"), &ada)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["outputs"]["label"], "setosa");
    assert_eq!(one["inputs"]["petal_width"], 0.2);
    assert_eq!(one["source"], "api");
    let bobs = theirs["predictions"][0]["id"].as_i64().unwrap();
    let res = app
        .api(Method::GET, &format!("/api/v1/predictions/{bobs}"), &ada)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
}

#[sqlx::test]
async fn feedback_is_recorded_once_and_a_second_call_replaces_it(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let (_, answer) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            json!({"inputs": setosa()}),
        )
        .await;
    let id = answer["predictions"][0]["id"].as_i64().unwrap();
    let url = format!("/api/v1/predictions/{id}/feedback");

    let (status, first) = app
        .post_json(&url, &token, json!({"label": "setosa"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(first["replaced"], false);
    let (status, second) = app
        .post_json(&url, &token, json!({"label": "versicolor"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(second["replaced"], true);
    let stored: String = sqlx::query_scalar("select label from feedback where prediction_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, "versicolor");
    assert_eq!(app.count("feedback").await, 1);

    let (status, bad) = app.post_json(&url, &token, json!({"label": "rose"})).await;
    assert_eq!(status, 422);
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("not one of the model's labels"));
    let (status, _) = app.post_json(&url, &token, json!({"value": 3.0})).await;
    assert_eq!(status, 422);
    let other = app.token_for("bob", false).await;
    let (status, _) = app
        .post_json(&url, &other, json!({"label": "setosa"}))
        .await;
    assert_eq!(status, 404);
}

#[sqlx::test]
async fn hostile_addresses_and_pages_are_4xx_not_crashes(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    for path in [
        "/api/v1/models/%00",
        "/v2/models/a%00b/ready",
        "/history?model=%00",
    ] {
        let res = app.api(Method::GET, path, &token).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400, "{path}");
    }
    let res = app
        .api(
            Method::GET,
            "/api/v1/predictions?page=9223372036854775807",
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let res = app
        .api(Method::GET, "/api/v1/models", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "the server is still up");
}
