//! Automation: promotion and rollback rules evaluated on a schedule, and webhooks delivered to a
//! real HTTP server (retried when it answers 500, every attempt recorded).
//!
//! The versions are built for the purpose from iris's production model: one that agrees with it
//! (the same graph, another file), one that disagrees (it sees every flower with virginica's
//! petals) and one that fails on a range of inputs (a lookup out of bounds once the sepal is 7 cm
//! or longer).

use std::time::{Duration, Instant};

use prost::Message;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use tract_onnx::pb;

use crate::helpers::{receiver, spawn_app_with, TestApp};

mod alerts;

mod rollback;

// --- versions built to agree, to disagree and to fail ---------------------------------------

fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn int_tensor(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attributes,
        ..Default::default()
    }
}

/// Iris's production model with `prefix` computing `plinth_x` from its input; the original
/// graph reads `plinth_x` instead. Written to a file in `dir`.
fn iris_with(
    dir: &std::path::Path,
    file: &str,
    prefix: Vec<pb::NodeProto>,
    constants: Vec<pb::TensorProto>,
) -> String {
    let bytes = std::fs::read("models/iris/1/model.onnx").unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    model.doc_string = format!("iris, changed for tests/api/automation.rs: {file}");
    let graph = model.graph.as_mut().unwrap();
    let input = graph.input[0].name.clone();
    if !prefix.is_empty() {
        for n in graph.node.iter_mut() {
            for i in n.input.iter_mut() {
                if *i == input {
                    *i = "plinth_x".into();
                }
            }
        }
        let mut nodes: Vec<pb::NodeProto> = prefix
            .into_iter()
            .map(|mut n| {
                for i in n.input.iter_mut() {
                    if i == "X" {
                        *i = input.clone();
                    }
                }
                n
            })
            .collect();
        nodes.append(&mut graph.node);
        graph.node = nodes;
        graph.initializer.extend(constants);
    }
    let path = dir.join(file);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path.display().to_string()
}

/// The same answers as production from another file.
fn agreeing(dir: &std::path::Path) -> String {
    iris_with(dir, "agreeing.onnx", Vec::new(), Vec::new())
}

/// Every flower seen with virginica's petals (6 cm by 2.2 cm).
fn disagreeing(dir: &std::path::Path) -> String {
    iris_with(
        dir,
        "disagreeing.onnx",
        vec![
            node("Mul", &["X", "keep_sepals"], "sepals", vec![]),
            node("Add", &["sepals", "virginica_petals"], "plinth_x", vec![]),
        ],
        vec![
            float_tensor("keep_sepals", &[4], &[1.0, 1.0, 0.0, 0.0]),
            float_tensor("virginica_petals", &[4], &[0.0, 0.0, 6.0, 2.2]),
        ],
    )
}

// --- helpers ----------------------------------------------------------------------------------

/// Flowers over the whole of iris's ranges; sepals of 7 cm and more for one in five.
fn flower(i: usize) -> Value {
    let f = |k: usize, lo: f64, hi: f64| lo + (hi - lo) * (((i * k) % 97) as f64 / 96.0);
    let sepal = if i.is_multiple_of(5) {
        7.2
    } else {
        f(7, 4.3, 6.9)
    };
    json!({"sepal_length": sepal, "sepal_width": f(11, 2.0, 4.4),
           "petal_length": f(13, 1.0, 6.9), "petal_width": f(17, 0.1, 2.5)})
}

/// An app whose rules are evaluated every `seconds`, with quick webhook retries.
async fn app_with_rules(pool: PgPool, seconds: u64) -> TestApp {
    let app = spawn_app_with(pool, |s| {
        s.automation_interval = Duration::from_secs(seconds);
        s.webhook_first_retry = Duration::from_millis(200);
        s.webhook_attempts = 4;
    })
    .await;
    app.import_models().await;
    app
}

async fn publish(app: &TestApp, staff: &str, path: &str) -> i32 {
    let res = app
        .publish(staff, "iris", path, Some("models/iris/1/card.toml"))
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    body["version"].as_i64().unwrap() as i32
}

async fn set_production(app: &TestApp, staff: &str, version: i32) {
    let (status, body) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/aliases/production",
            staff,
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn production(app: &TestApp) -> i32 {
    sqlx::query_scalar(
        "select v.version from model_alias a join model_version v on v.id = a.version_id
         join model m on m.id = a.model_id where m.name = 'iris' and a.alias = 'production'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn wait_for_production(app: &TestApp, want: i32, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if production(app).await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "production is still version {} after {within:?}",
            production(app).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn predict_many(app: &TestApp, token: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let (status, _) = app
            .post_json(
                "/api/v1/models/iris/predict",
                token,
                json!({"inputs": flower(i)}),
            )
            .await;
        statuses.push(status);
    }
    statuses
}

async fn audit_actions(app: &TestApp, prefix: &str) -> Vec<(String, Value)> {
    sqlx::query_as("select action, detail from audit_event where action like $1 || '%' order by id")
        .bind(prefix)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn outcome(app: &TestApp, kind: &str) -> String {
    let staff = app.token_for("grace", true).await;
    let (_, body) = app
        .call_json(Method::GET, "/api/v1/models/iris/rules", &staff, None)
        .await;
    body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind)
        .and_then(|r| r["last_outcome"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn wait_for_outcome(app: &TestApp, kind: &str, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = outcome(app, kind).await;
        if found.contains(words) {
            return found;
        }
        assert!(Instant::now() < deadline, "the {kind} rule says {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- the tests --------------------------------------------------------------------------------

#[sqlx::test]
async fn a_shadow_that_agrees_is_promoted_and_one_that_disagrees_is_not(pool: PgPool) {
    let app = app_with_rules(pool, 1).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let hook = receiver(0).await;
    let (status, _) = app
        .post_json(
            "/api/v1/webhooks",
            &staff,
            json!({"url": hook.url, "model": "iris"}),
        )
        .await;
    assert_eq!(status, 201);

    let disagrees = publish(&app, &staff, &disagreeing(scratch.path())).await;
    let agrees = publish(&app, &staff, &agreeing(scratch.path())).await;
    for v in [disagrees, agrees] {
        let path = format!("/api/v1/models/iris/shadows/{v}");
        assert_eq!(app.call_json(Method::PUT, &path, &staff, None).await.0, 200);
    }
    let (status, rules) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/promote",
            &staff,
            Some(json!({"min_predictions": 60, "min_agreement": 0.97, "max_error_rate": 0.01})),
        )
        .await;
    assert_eq!(status, 200, "{rules}");

    // Too few predictions: both wait, and production stays.
    let statuses = predict_many(&app, &user, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let waiting = wait_for_outcome(&app, "promote", "waiting").await;
    assert!(waiting.contains("of 60 predictions"), "{waiting}");
    assert_eq!(production(&app).await, 1);

    // Enough: the agreeing version is promoted, the disagreeing one is named for its agreement.
    predict_many(&app, &user, 60).await;
    wait_for_production(&app, agrees, Duration::from_secs(30)).await;

    // The figures behind it are SQL over the stored pairs.
    let (pairs, agree): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where s.label = l.label)
         from prediction s join prediction l on l.id = s.shadow_of
         join model_version v on v.id = s.version_id where v.version = $1",
    )
    .bind(disagrees)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        pairs >= 60 && agree < pairs * 97 / 100,
        "{agree} of {pairs}"
    );
    let promoted = audit_actions(&app, "automation.promoted").await;
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    let detail = &promoted[0].1;
    assert_eq!(
        (detail["from"].as_i64(), detail["to"].as_i64()),
        (Some(1), Some(agrees as i64))
    );
    assert_eq!(detail["figures"]["agreement"], 1.0);
    assert!(detail["figures"]["predictions"].as_i64().unwrap() >= 60);
    assert!(detail["rule"]
        .as_str()
        .unwrap()
        .contains("agreement ≥ 97.0%"));
    // The alias history says which rule moved it, and the promoted version is no shadow now.
    let (actor, reason): (Option<i64>, Option<String>) =
        sqlx::query_as("select actor_id, reason from alias_event order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(actor.is_none());
    assert!(reason
        .unwrap()
        .starts_with("rule: promote a candidate after 60 predictions"));
    let shadows: Vec<i32> = sqlx::query_scalar(
        "select v.version from shadow_version s join model_version v on v.id = s.version_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(shadows, [disagrees]);
    // The disagreeing shadow is still judged, and named for its agreement.
    let still = wait_for_outcome(&app, "promote", &format!("version {disagrees}: agreement")).await;
    assert!(still.contains("< 97.0%"), "{still}");

    // The webhook heard of it, with Slack's text.
    let body = hook.wait_for("promotion").await;
    assert_eq!(body["acted"], true);
    assert_eq!(body["model"], "iris");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("promoted to production automatically"),
        "{body}"
    );

    // The admin page shows the rule and the move's reason.
    app.sign_in("root", true).await;
    let html = app.get_html("/admin/models/iris").await;
    assert!(html.contains("Promotion rule"), "no rule on the page");
    assert!(html.contains("rule: promote a candidate after 60 predictions"));
}

#[sqlx::test]
async fn a_notify_only_rule_records_and_alerts_once_and_moves_nothing(pool: PgPool) {
    let app = app_with_rules(pool, 1).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let hook = receiver(0).await;
    app.post_json(
        "/api/v1/webhooks",
        &staff,
        json!({"url": hook.url, "events": ["promotion"]}),
    )
    .await;
    let agrees = publish(&app, &staff, &agreeing(scratch.path())).await;
    let path = format!("/api/v1/models/iris/shadows/{agrees}");
    app.call_json(Method::PUT, &path, &staff, None).await;
    let (status, _) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/promote",
            &staff,
            Some(json!({"mode": "notify", "min_predictions": 10, "min_agreement": 0.9})),
        )
        .await;
    assert_eq!(status, 200);
    predict_many(&app, &user, 15).await;
    wait_for_outcome(&app, "promote", "notify only").await;
    // Several more evaluations: still one record and one alert.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(production(&app).await, 1);
    assert_eq!(
        audit_actions(&app, "automation.would_promote").await.len(),
        1
    );
    assert!(audit_actions(&app, "automation.promoted").await.is_empty());
    hook.wait_for("promotion").await;
    assert_eq!(hook.events(), ["promotion"]);
    assert_eq!(hook.bodies.lock().unwrap()[0]["acted"], false);
}
