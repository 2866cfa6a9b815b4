//! What the clouds' container services and ML platforms expect of a container, through the
//! real binary: the port they set, JSON logs, secrets in files, migrations left to a job, and
//! the serving contracts of SageMaker, Vertex AI, Azure ML and MLflow, each driven with the
//! requests its documentation gives (MLflow with its own client).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{free_port, TestApp};
use crate::instances::{Instance, Weed};

const FEATURES: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// A platform's model directory: iris's model file and card, at `dir` (or in `dir/sub`).
fn model_dir(root: &Path, sub: Option<&str>) -> PathBuf {
    let dir = match sub {
        Some(sub) => root.join(sub),
        None => root.to_path_buf(),
    };
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.onnx", "card.toml"] {
        std::fs::copy(format!("models/iris/1/{file}"), dir.join(file)).unwrap();
    }
    root.to_path_buf()
}

async fn send(
    app: &TestApp,
    path: &str,
    content_type: &str,
    accept: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let res = app
        .client
        .post(app.url(path))
        .header("content-type", content_type)
        .header("accept", accept)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn stored(pool: &PgPool, source: &str) -> i64 {
    sqlx::query_scalar("select coalesce(sum(n), 0)::bigint from prediction where source = $1")
        .bind(source)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[sqlx::test]
async fn port_json_logs_and_secrets_in_files_are_honoured(pool: PgPool) {
    // Arrange: the variables Cloud Run or App Runner set, and a mounted secret.
    let scratch = tempfile::tempdir().unwrap();
    let secret = scratch.path().join("admin_password");
    std::fs::write(&secret, "a-mounted-secret-77\n").unwrap();
    let port = free_port();
    let instance = Instance::start(
        &pool,
        scratch.path(),
        &[
            ("PORT", port.to_string()),
            ("PLINTH_ADMIN_PASSWORD", String::new()),
            ("PLINTH_ADMIN_PASSWORD_FILE", secret.display().to_string()),
            ("PLINTH_LOG_FORMAT", "json".into()),
            ("PLINTH_LOG", "info".into()),
        ],
    )
    .await;

    // Act
    let login = instance.app.login("admin", "a-mounted-secret-77").await;
    let _ = instance.app.get("/healthz").await;

    // Assert: it listens on every interface at $PORT, the password came from the file (its
    // final line break dropped), and every log line is one JSON object.
    assert_eq!(login.status().as_u16(), 303);
    let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(listening);
    let log = instance.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the server logged something");
    for line in &lines {
        let entry = json_of(line);
        assert!(
            entry["level"].is_string() && entry["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| json_of(l)["message"] == "request completed" && json_of(l)["status"] == 303),
        "{log}"
    );
}

#[sqlx::test]
async fn an_unreadable_secret_file_is_a_configuration_error(pool: PgPool) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("check")
        .env(
            "PLINTH_DATABASE_URL",
            crate::helpers::database_url(&pool).await,
        )
        .env("PLINTH_SECRET_KEY_FILE", "/no/such/secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("PLINTH_SECRET_KEY_FILE"), "{text}");
}

#[sqlx::test(migrations = false)]
async fn with_migrate_off_an_instance_waits_for_plinth_migrate(pool: PgPool) {
    // Arrange: an empty database and an instance told not to migrate.
    let scratch = tempfile::tempdir().unwrap();
    let mut instance =
        Instance::spawn(&pool, scratch.path(), &[("PLINTH_MIGRATE", "0".into())]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name = '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
    assert!(!instance.exited(), "it waits rather than fails");

    // Act: the migration job.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("migrate")
        .env(
            "PLINTH_DATABASE_URL",
            crate::helpers::database_url(&pool).await,
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Assert: the instance goes on to serve.
    instance.wait_ready().await;
    assert!(instance.log_text().contains("waiting for `plinth migrate`"));
}

#[sqlx::test]
async fn sagemaker_ping_invocations_in_csv_and_json_and_execution_parameters(pool: PgPool) {
    // Arrange: SageMaker's port variable and a model directory like /opt/ml/model.
    let scratch = tempfile::tempdir().unwrap();
    let dir = model_dir(&scratch.path().join("opt-ml-model"), None);
    let port = free_port();
    let sm = Instance::start(
        &pool,
        scratch.path(),
        &[
            ("SAGEMAKER_BIND_TO_PORT", port.to_string()),
            ("SM_MODEL_DIR", dir.display().to_string()),
            ("PLINTH_MODELS", String::new()),
        ],
    )
    .await;
    let app = &sm.app;

    // Health, within SageMaker's 2 s.
    let started = std::time::Instant::now();
    assert_eq!(app.get("/ping").await.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));

    // Batch Transform's CSV: rows of features, no header; answered in the Accept format.
    let rows = "5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n";
    let (status, text) = send(app, "/invocations", "text/csv", "text/csv", rows).await;
    assert_eq!((status, text.as_str()), (200, "setosa\nvirginica\n"));
    let (status, text) = send(app, "/invocations", "text/csv", "application/json", rows).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        json_of(&text),
        json!({"predictions": ["setosa", "virginica"]})
    );
    // JSON in.
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    let (status, text) = send(app, "/invocations", "application/json", "*/*", body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["predictions"], json!(["setosa"]));

    // A Batch Transform payload holds more rows than one API request may: the body limit
    // bounds it instead.
    let many = "5.1,3.5,1.4,0.2\n".repeat(5000);
    let (status, text) = send(app, "/invocations", "text/csv", "text/csv", many).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.lines().filter(|l| *l == "setosa").count(), 5000);

    // Batch Transform's parameters.
    let params: Value = app.get("/execution-parameters").await.json().await.unwrap();
    assert_eq!(params["BatchStrategy"], "MULTI_RECORD");
    assert!(params["MaxPayloadInMB"].as_u64().unwrap() >= 1);

    // Bad rows: a 400 naming what is wrong, nothing stored for them.
    let (status, text) = send(app, "/invocations", "text/csv", "text/csv", "1,2,3\n").await;
    assert_eq!(status, 400);
    let error = json_of(&text);
    assert_eq!(error["error_code"], "BAD_REQUEST");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("expected 4 values"),
        "{error}"
    );
    let (status, text) = send(app, "/invocations", "text/csv", "text/csv", "NaN,1,1,1\n").await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = send(app, "/invocations", "application/xml", "text/csv", "<a/>").await;
    assert_eq!(status, 400);

    // Every prediction answered is stored, as SageMaker's, and counts on the dashboard.
    assert_eq!(stored(&pool, "sagemaker").await, 5005);
    assert_eq!(
        app.login("admin", crate::instances::ADMIN_PASSWORD)
            .await
            .status()
            .as_u16(),
        303
    );
    let dashboard = app.get_html("/admin").await;
    assert!(dashboard.contains("sagemaker 5005"), "{dashboard}");
}

#[sqlx::test]
async fn azureml_scores_input_data_and_data(pool: PgPool) {
    // Arrange: Azure ML mounts the registered model's folder inside AZUREML_MODEL_DIR.
    let scratch = tempfile::tempdir().unwrap();
    let dir = model_dir(&scratch.path().join("azureml-models"), Some("iris-model/1"));
    let az = Instance::start(
        &pool,
        scratch.path(),
        &[
            (
                "AZUREML_MODEL_DIR",
                dir.join("iris-model").display().to_string(),
            ),
            ("PLINTH_MODELS", String::new()),
        ],
    )
    .await;
    let app = &az.app;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    assert_eq!(app.get("/readyz").await.status().as_u16(), 200);

    // MLflow-style input_data (split), as Azure ML's own deployments take it.
    let body = json!({"input_data": {
        "columns": FEATURES, "index": [0, 1],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}});
    let (status, text) = send(app, "/score", "application/json", "*/*", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text), json!(["setosa", "virginica"]));
    // A plain list of rows.
    let body = json!({"data": [[5.1, 3.5, 1.4, 0.2]]});
    let (status, text) = send(app, "/score", "application/json", "*/*", body.to_string()).await;
    assert_eq!((status, json_of(&text)), (200, json!(["setosa"])));

    // Bad input: 400 with {"error": ...}.
    let body = json!({"input_data": {"columns": ["petal_size"], "data": [[1.0]]}});
    let (status, text) = send(app, "/score", "application/json", "*/*", body.to_string()).await;
    assert_eq!(status, 400);
    assert!(
        json_of(&text)["error"]
            .as_str()
            .unwrap()
            .contains("petal_size"),
        "{text}"
    );
    assert_eq!(stored(&pool, "azureml").await, 3);
}

#[sqlx::test]
#[ignore = "needs SeaweedFS's weed (tests/requirements.txt; .ci/run installs it)"]
async fn vertex_serves_its_routes_from_a_repository_in_a_bucket(pool: PgPool) {
    // Arrange: the model repository in a bucket (AIP_STORAGE_URI; gs:// on Vertex, the same
    // object-store code with s3:// here), and Vertex's variables.
    let scratch = tempfile::tempdir().unwrap();
    let weed = Weed::start(&scratch.path().join("weed")).await;
    let client = reqwest::Client::new();
    for file in ["model.onnx", "card.toml"] {
        let url = format!("{}/{}/vertex/iris/1/{file}", weed.endpoint(), Weed::BUCKET);
        let bytes = std::fs::read(format!("models/iris/1/{file}")).unwrap();
        assert!(client
            .put(url)
            .body(bytes)
            .send()
            .await
            .unwrap()
            .status()
            .is_success());
    }
    let port = free_port();
    let mut env = weed.env("artifacts", &scratch.path().join("cache"));
    env.extend([
        ("AIP_HTTP_PORT", port.to_string()),
        (
            "AIP_HEALTH_ROUTE",
            "/v1/endpoints/42/deployedModels/7".into(),
        ),
        (
            "AIP_PREDICT_ROUTE",
            "/v1/endpoints/42/deployedModels/7:predict".into(),
        ),
        ("AIP_STORAGE_URI", format!("s3://{}/vertex", Weed::BUCKET)),
        ("PLINTH_MODELS", String::new()),
    ]);
    let vertex = Instance::start(&pool, scratch.path(), &env).await;
    let app = &vertex.app;
    let predict = "/v1/endpoints/42/deployedModels/7:predict";

    // Act and assert: health, then predictions for instances (objects or lists).
    let health = app.get("/v1/endpoints/42/deployedModels/7").await;
    assert_eq!(health.status().as_u16(), 200);
    let body = json!({
        "instances": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
            [6.7, 3.0, 5.2, 2.3]
        ],
        "parameters": {"confidence_threshold": 0.5}
    });
    let (status, text) = send(app, predict, "application/json", "*/*", body.to_string()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        json_of(&text),
        json!({"predictions": ["setosa", "virginica"]})
    );

    // Bad requests: Vertex's {"error": ...} with 400.
    let body = json!({"instances": [{"sepal_length": "long"}]});
    let (status, text) = send(app, predict, "application/json", "*/*", body.to_string()).await;
    assert_eq!(status, 400, "{text}");
    assert!(json_of(&text)["error"].is_string());
    let body = json!({"inputs": [[1, 2, 3, 4]]});
    let (status, text) = send(app, predict, "application/json", "*/*", body.to_string()).await;
    assert_eq!(status, 400);
    assert!(
        json_of(&text)["error"]
            .as_str()
            .unwrap()
            .contains("instances"),
        "{text}"
    );
    assert_eq!(stored(&pool, "vertex").await, 2);
}

/// The Python with MLflow's client: `PLINTH_MLFLOW_PYTHON`, else target/mlflow-venv (which
/// .ci/run makes from tests/requirements-mlflow.txt).
fn mlflow_python() -> String {
    std::env::var("PLINTH_MLFLOW_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/mlflow-venv/bin/python").to_string()
    })
}

#[sqlx::test]
#[ignore = "needs mlflow-skinny (tests/requirements-mlflow.txt; .ci/run installs it)"]
async fn mlflows_own_scoring_client_talks_to_invocations(pool: PgPool) {
    // Arrange: the shipped repository (several models), iris served at /invocations, and no
    // token needed, as `mlflow models serve` has none.
    let scratch = tempfile::tempdir().unwrap();
    let mlflow = Instance::start(
        &pool,
        scratch.path(),
        &[
            ("PLINTH_MODELS", "models".into()),
            (
                "PLINTH_ARTIFACTS",
                scratch.path().join("artifacts").display().to_string(),
            ),
            ("PLINTH_DEFAULT_MODEL", "iris".into()),
            ("PLINTH_PUBLIC_INFERENCE", "1".into()),
        ],
    )
    .await;
    let port = mlflow.app.address.rsplit(':').next().unwrap().to_string();
    let script = r#"
import json, sys
import numpy as np
import pandas as pd
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

client = ScoringServerClient("127.0.0.1", int(sys.argv[1]))
client.wait_server_ready(timeout=30)
columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
out = {"version": client.get_version()}
# A DataFrame goes as dataframe_split; a numpy array as inputs; a dict of arrays as inputs too.
out["dataframe"] = client.invoke(pd.DataFrame(rows, columns=columns)).get_predictions(predictions_format="ndarray").tolist()
out["ndarray"] = client.invoke(np.array(rows)).get_predictions(predictions_format="ndarray").tolist()
out["params"] = client.invoke(pd.DataFrame(rows[:1], columns=columns), params={"note": 1}).get_predictions(predictions_format="ndarray").tolist()
try:
    client.invoke(pd.DataFrame([[1.0, 2.0]], columns=["sepal_length", "petal_size"]))
    out["bad"] = "accepted"
except Exception as e:
    out["bad"] = str(e)
print(json.dumps(out))
"#;
    let python = mlflow_python();

    // Act
    let run = python.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&run)
            .args(["-c", script, &port])
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{python}: {e}"));

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = json_of(stdout.trim());
    assert!(got["version"].as_str().unwrap().starts_with("plinth "));
    for key in ["dataframe", "ndarray"] {
        assert_eq!(got[key], json!(["setosa", "virginica"]), "{key}: {got}");
    }
    assert_eq!(got["params"], json!(["setosa"]));
    let bad = got["bad"].as_str().unwrap();
    assert!(
        bad.contains("400") && bad.contains("BAD_REQUEST") && bad.contains("petal_size"),
        "{bad}"
    );
    assert_eq!(stored(&pool, "mlflow").await, 5);

    // The other shapes of the protocol: records, and inputs as one list per column.
    let records = json!({"dataframe_records": [
        {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]});
    let columns = json!({"inputs": {"sepal_length": [5.1], "sepal_width": [3.5],
                                    "petal_length": [1.4], "petal_width": [0.2]}});
    for (body, label) in [(records, "virginica"), (columns, "setosa")] {
        let (status, text) = send(
            &mlflow.app,
            "/invocations",
            "application/json",
            "*/*",
            body.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(json_of(&text)["predictions"], json!([label]));
    }
    let (status, text) = send(
        &mlflow.app,
        "/invocations",
        "text/csv",
        "*/*",
        "5.1,3.5,1.4,0.2",
    )
    .await;
    assert_eq!(
        (status, json_of(&text)["predictions"].clone()),
        (200, json!(["setosa"]))
    );
    let both = json!({"inputs": [[1, 2, 3, 4]], "instances": [[1, 2, 3, 4]]});
    let (status, text) = send(
        &mlflow.app,
        "/invocations",
        "application/json",
        "*/*",
        both.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(json_of(&text)["error_code"], "BAD_REQUEST");

    // With tokens required, a call without one gets 401 in MLflow's error shape.
    let locked = Instance::start(
        &pool,
        scratch.path(),
        &[("PLINTH_DEFAULT_MODEL", "iris".into())],
    )
    .await;
    let body = json!({"inputs": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    let (status, text) = send(&locked.app, "/invocations", "application/json", "*/*", body).await;
    assert_eq!(status, 401);
    assert_eq!(json_of(&text)["error_code"], "UNAUTHENTICATED");
}
