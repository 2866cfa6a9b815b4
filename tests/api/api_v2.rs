use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.api(method, path, token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn iris_tensor(data: Value, shape: Value) -> Value {
    json!({"id": "req-7", "inputs": [{"name": "X", "shape": shape, "datatype": "FP32", "data": data}]})
}

#[sqlx::test]
async fn server_and_model_metadata_follow_the_protocol(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    let (status, server) = call(&app, Method::GET, "/v2", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(server["name"], "plinth");
    assert_eq!(app.get("/v2/health/live").await.status().as_u16(), 200);
    assert_eq!(app.get("/v2/health/ready").await.status().as_u16(), 200);

    let (status, meta) = call(&app, Method::GET, "/v2/models/iris", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "X", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "label", "datatype": "INT64", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]})
    );
    let (status, _) = call(
        &app,
        Method::GET,
        "/v2/models/iris/versions/1",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        call(&app, Method::GET, "/v2/models/iris/ready", &token, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/v2/models/iris/versions/1/ready",
            &token,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/v2/models/iris/versions/5/ready",
            &token,
            None
        )
        .await
        .0,
        404
    );
    let (status, err) = call(&app, Method::GET, "/v2/models/nobody", &token, None).await;
    assert_eq!(status, 404);
    assert!(err["error"].is_string());
}

#[sqlx::test]
async fn infer_takes_nested_or_flat_data_and_echoes_the_id(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/iris.json").unwrap())
            .unwrap();

    let nested = fx["rows"].clone();
    let flat: Vec<Value> = nested
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().clone())
        .collect();
    for data in [nested, Value::from(flat)] {
        let (status, out) = call(
            &app,
            Method::POST,
            "/v2/models/iris/infer",
            &token,
            Some(iris_tensor(data, json!([4, 4]))),
        )
        .await;
        assert_eq!(status, 200, "{out}");
        assert_eq!(out["id"], "req-7");
        assert_eq!(out["model_name"], "iris");
        assert_eq!(out["model_version"], "1");
        assert_eq!(out["outputs"][0]["name"], "label");
        assert_eq!(out["outputs"][0]["datatype"], "INT64");
        assert_eq!(out["outputs"][0]["data"], fx["outputs"]["label"]);
        assert_eq!(out["outputs"][1]["shape"], json!([4, 3]));
        let got: Vec<f64> = out["outputs"][1]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = fx["outputs"]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
    let sources: Vec<String> = sqlx::query_scalar("select distinct source from prediction")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(sources, ["v2"]);
    assert_eq!(app.predictions().await, 8);
}

#[sqlx::test]
async fn the_outputs_filter_and_versions_are_honoured(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let mut body = iris_tensor(json!([[5.1, 3.5, 1.4, 0.2]]), json!([1, 4]));
    body["outputs"] = json!([{"name": "probabilities"}]);

    let (status, out) = call(
        &app,
        Method::POST,
        "/v2/models/iris/versions/1/infer",
        &token,
        Some(body),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(out["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(out["outputs"][0]["name"], "probabilities");
}

#[sqlx::test]
async fn bad_tensors_get_triton_style_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let url = "/v2/models/iris/infer";

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            iris_tensor(json!([1, 2, 3]), json!([1, 3])),
            400,
            "shape [1, 3] does not match the model's [-1, 4]",
        ),
        (
            iris_tensor(json!([1, 2, 3]), json!([1, 4])),
            400,
            "3 values for shape [1, 4]",
        ),
        (
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
            400,
            "datatype FP64 does not match the model's FP32",
        ),
        (
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, "a", 3, 4]}]}),
            400,
            "is not a FP32 value",
        ),
        (
            json!({"inputs": [{"name": "Y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            400,
            "unexpected inference input \"Y\"",
        ),
        (json!({"inputs": []}), 400, "expected input \"X\""),
        (
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}),
            400,
            "unexpected inference output \"nope\"",
        ),
        (
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 2, 3, 4]}]}),
            400,
            "infinity is not a valid input",
        ),
        (
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, null, 4]}]}),
            400,
            "a missing value (NaN or null) for feature petal_length",
        ),
        (json!({"nothing": true}), 400, "missing field `inputs`"),
    ];
    for (body, status, message) in cases {
        let (got, answer) = call(&app, Method::POST, url, &token, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{body}: {answer}"
        );
    }
    let res = app
        .api(Method::POST, url, &token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    assert_eq!(app.predictions().await, 0);
}

#[sqlx::test]
async fn binary_tensors_work_both_ways(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let values: [f32; 4] = [7.7, 3.0, 6.1, 2.3];
    let binary: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "parameters": {"binary_data_output": true}
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&binary);

    let res = app
        .api(Method::POST, "/v2/models/iris/infer", &token)
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 200);
    let json_len: usize = res.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = res.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 12);
    let label = i64::from_le_bytes(bytes[json_len..json_len + 8].try_into().unwrap());
    assert_eq!(label, 2, "virginica");
}

#[sqlx::test]
async fn kserve_v1_predicts_instances(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    let (status, meta) = call(&app, Method::GET, "/v1/models/iris", &token, None).await;
    assert_eq!(status, 200);
    assert_eq!(meta, json!({"name": "iris", "ready": true}));
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2], {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}]});
    let (status, out) = call(
        &app,
        Method::POST,
        "/v1/models/iris:predict",
        &token,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"predictions": ["setosa", "virginica"]}));
    let sources: Vec<String> =
        sqlx::query_scalar("select source from prediction p, generate_series(1, p.n)")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(sources, ["v1", "v1"]);

    let (status, err) = call(
        &app,
        Method::POST,
        "/v1/models/iris:predict",
        &token,
        Some(json!({"instances": [[1, 2]]})),
    )
    .await;
    assert_eq!(status, 422);
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("instance 0: 2 values for 4 features"));
    let (status, _) = call(
        &app,
        Method::POST,
        "/v1/models/ghost:predict",
        &token,
        Some(json!({"instances": [[1, 2, 3, 4]]})),
    )
    .await;
    assert_eq!(status, 404);
}

#[sqlx::test]
async fn the_openapi_document_and_the_reference_are_served(pool: PgPool) {
    let app = spawn_app(pool).await;

    let doc: Value = app.get("/api/openapi.json").await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/models/{name}/predict",
        "/v2/models/{name}/infer",
        "/v1/models/{name}:predict",
        "/api/v1/predictions/{id}/feedback",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["components"]["schemas"]["PredictResponse"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let html = app.get_html("/api/docs").await;
    assert!(html.contains("/api/v1/models/{name}/predict"));
    assert!(html.contains("PredictResponse"));
    assert!(!html.contains("<script"), "no script, no CDN");
}
