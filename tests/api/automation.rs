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

/// Production's answers below a 7 cm sepal; a model error (an index out of bounds) from 7 cm.
fn failing_from_7cm(dir: &std::path::Path) -> String {
    let int = |name: &str, i: i64| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    };
    iris_with(
        dir,
        "failing.onnx",
        vec![
            node("Slice", &["X", "zero", "one", "one"], "sepal", vec![]),
            node("Div", &["sepal", "seven"], "scaled", vec![]),
            node("Floor", &["scaled"], "floored", vec![]),
            node("Cast", &["floored"], "index", vec![int("to", 7)]),
            node(
                "Gather",
                &["table", "index"],
                "looked_up",
                vec![int("axis", 0)],
            ),
            node("Add", &["X", "looked_up"], "plinth_x", vec![]),
        ],
        vec![
            int_tensor("zero", &[0]),
            int_tensor("one", &[1]),
            float_tensor("seven", &[], &[7.0]),
            float_tensor("table", &[1], &[0.0]),
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

#[sqlx::test]
async fn production_failing_on_a_range_of_inputs_is_rolled_back_within_an_interval(pool: PgPool) {
    let interval = 2;
    let app = app_with_rules(pool, interval).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let hook = receiver(0).await;
    app.post_json("/api/v1/webhooks", &staff, json!({"url": hook.url}))
        .await;

    // Version 2 fails on sepals of 7 cm and more; it goes to production by hand.
    let failing = publish(&app, &staff, &failing_from_7cm(scratch.path())).await;
    set_production(&app, &staff, failing).await;
    let (status, body) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/rollback",
            &staff,
            Some(json!({"max_error_rate": 0.135, "window_minutes": 5, "min_predictions": 20})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Short sepals only: healthy, nothing moves.
    let short = |i: usize| {
        let mut f = flower(i);
        f["sepal_length"] = json!(5.0);
        f
    };
    for i in 0..25 {
        let (status, _) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": short(i)}),
            )
            .await;
        assert_eq!(status, 200);
    }
    wait_for_outcome(&app, "rollback", "healthy").await;
    assert_eq!(production(&app).await, failing);
    for i in 25..73 {
        app.post_json(
            "/api/v1/models/iris/predict",
            &user,
            json!({"inputs": short(i)}),
        )
        .await;
    }

    // Then 12 long sepals: each fails; the 12th takes the error rate over 13.5% (12 of 85).
    for i in 0..12 {
        let mut f = flower(i);
        f["sepal_length"] = json!(7.2);
        let (status, body) = app
            .post_json("/api/v1/models/iris/predict", &user, json!({"inputs": f}))
            .await;
        assert_eq!(status, 500, "{body}");
    }
    // The rollback comes within one interval (and the time an evaluation takes).
    let took = wait_for_production(&app, 1, Duration::from_secs(interval + 3)).await;
    println!("rolled back {took:?} after the threshold was crossed (interval {interval} s)");
    assert!(audit_actions(&app, "automation.rolled_back").await.len() == 1);

    // The error rate is SQL over the failures and the stored predictions.
    let (errors, answered): (i64, i64) = sqlx::query_as(
        "select (select count(*) from prediction_failure f join model_version v on v.id = f.version_id
                  where v.version = $1 and f.reason = 'model_error'),
                (select count(*) from prediction p join model_version v on v.id = p.version_id
                  where v.version = $1)",
    )
    .bind(failing)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((errors, answered), (12, 73));
    let rolled = audit_actions(&app, "automation.rolled_back").await;
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    let figures = &rolled[0].1["figures"];
    assert_eq!(figures["model_errors"], 12);
    assert_eq!(figures["requests"], 73);
    assert_eq!(rolled[0].1["to"], 1);
    let reason: String =
        sqlx::query_scalar("select reason from alias_event order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        reason.contains("error rate 14.1% over 85 requests"),
        "{reason}"
    );

    // Both alerts arrived; after the rollback the rule finds version 1 healthy.
    hook.wait_for("error_rate.crossed").await;
    let body = hook.wait_for("rollback").await;
    assert_eq!(body["acted"], true);
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains(&format!("from version {failing} to version 1")));
    wait_for_outcome(&app, "rollback", "version 1 is healthy").await;
    predict_many(&app, &user, 10).await;
    assert_eq!(production(&app).await, 1);
}

#[sqlx::test]
async fn a_webhook_answering_500_is_retried_until_it_takes_the_delivery(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let hook = receiver(2).await;
    let (status, created) = app
        .post_json(
            "/api/v1/webhooks",
            &staff,
            json!({"url": hook.url, "model": "iris"}),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().unwrap();

    // A test event from the admin page.
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/webhooks",
            &format!("/admin/webhooks/{id}/test"),
            &[],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let body = hook.wait_for("test").await;
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains("A test from Plinth"));

    // Two refusals and a success, each attempt recorded with what came back. The receiver has
    // the body a moment before the delivery's row says so: asked until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let (status, deliveries) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries"),
                &staff,
                None,
            )
            .await;
        assert_eq!(status, 200);
        if deliveries[0]["state"] == "delivered" || Instant::now() > deadline {
            break deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = &deliveries[0];
    assert_eq!(d["state"], "delivered", "{d}");
    let tries: Vec<(Value, Value)> = d["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["status"].clone(), t["response"].clone()))
        .collect();
    assert_eq!(
        tries,
        [
            (json!(500), json!("down (0)")),
            (json!(500), json!("down (1)")),
            (json!(200), json!("ok"))
        ]
    );
    let page = app.get_html("/admin/webhooks").await;
    assert!(page.contains("HTTP 500") && page.contains("down (1)") && page.contains("delivered"));

    // A receiver that is gone: the delivery fails for good after its attempts.
    let (_, gone) = app
        .post_json(
            "/api/v1/webhooks",
            &staff,
            json!({"url": "http://127.0.0.1:9/nobody"}),
        )
        .await;
    let gone = gone["id"].as_i64().unwrap();
    sqlx::query("update webhook set enabled = false where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    plinth::automation::webhooks::alert(&app.pool, "job.failed", None, "a job".into(), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/webhooks/{gone}/deliveries"),
                &staff,
                None,
            )
            .await;
        if d[0]["state"] == "failed" {
            assert_eq!(d[0]["attempts"], app.settings.webhook_attempts);
            assert!(
                d[0]["tries"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("onnect"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test]
async fn rules_and_webhooks_that_cannot_work_are_refused_with_the_reason(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let put = |kind: &str| format!("/api/v1/models/iris/rules/{kind}");
    for (kind, body, status, words) in [
        (
            "promote",
            json!({"min_predictions": 10}),
            422,
            "at least one criterion",
        ),
        (
            "promote",
            json!({"min_agreement": 1.5}),
            422,
            "min_agreement is a share",
        ),
        (
            "promote",
            json!({"min_agreement": 0.9, "window_minutes": 5}),
            422,
            "belong to the rollback rule",
        ),
        (
            "rollback",
            json!({"window_minutes": 5}),
            422,
            "max_error_rate, drift_checks",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "mode": "maybe"}),
            422,
            "act or notify",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "min_predictions": 0}),
            422,
            "min_predictions",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "speed": 3}),
            400,
            "unknown field",
        ),
        (
            "sideways",
            json!({"max_error_rate": 0.1}),
            404,
            "promote and rollback",
        ),
    ] {
        let (got, error) = app
            .call_json(Method::PUT, &put(kind), &staff, Some(body))
            .await;
        assert_eq!(got, status, "{error}");
        assert!(error["error"].as_str().unwrap().contains(words), "{error}");
    }
    let (status, _) = app
        .call_json(
            Method::PUT,
            &put("promote"),
            &user,
            Some(json!({"min_agreement": 0.9})),
        )
        .await;
    assert_eq!(status, 403);
    for (body, words) in [
        (json!({"url": "ftp://example.com/"}), "http:// or https://"),
        (
            json!({"url": "http://x/", "events": ["everything"]}),
            "no event \"everything\"",
        ),
        (
            json!({"url": "http://x/", "model": "nope"}),
            "no model called nope",
        ),
    ] {
        let (status, error) = app.post_json("/api/v1/webhooks", &staff, body).await;
        assert_eq!(status, 422);
        assert!(error["error"].as_str().unwrap().contains(words), "{error}");
    }

    // The admin form marks a bad figure and keeps the page.
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/rules/rollback",
            &[("max_error_rate", "lots"), ("window_minutes", "10")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("The error rate must be a number"));
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/rules/rollback",
            &[
                ("max_error_rate", "5"),
                ("window_minutes", "10"),
                ("mode", "notify"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let rules: Vec<(String, String, Option<f64>)> =
        sqlx::query_as("select kind, mode, max_error_rate from automation_rule")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rules, [("rollback".into(), "notify".into(), Some(0.05))]);
    assert_eq!(audit_actions(&app, "automation.rule_set").await.len(), 1);
}

#[sqlx::test]
async fn drift_flagged_and_a_failed_job_reach_the_webhooks_that_want_them(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let drift_hook = receiver(0).await;
    let jobs_hook = receiver(0).await;
    for (hook, event) in [(&drift_hook, "drift.flagged"), (&jobs_hook, "job.failed")] {
        let (status, _) = app
            .post_json(
                "/api/v1/webhooks",
                &staff,
                json!({"url": hook.url, "events": [event]}),
            )
            .await;
        assert_eq!(status, 201);
    }

    // Shifted inputs: the check flags drift, and the drift webhook hears of it, once.
    app.sign_in("root", true).await;
    crate::drift::live_window(&app, 200, 0.8).await;
    let page = crate::drift::check_now(&app).await;
    assert!(page.contains("drifting"), "{page}");
    let body = drift_hook.wait_for("drift.flagged").await;
    assert_eq!(body["model"], "iris");
    assert_eq!(body["version"], 1);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("drift flagged on version 1 (4 of 4 features"),
        "{body}"
    );
    crate::drift::check_now(&app).await;

    // A job over its error budget fails, and the jobs webhook hears of it.
    let (status, created) = crate::jobs::submit_csv(
        &app,
        &user,
        "iris",
        crate::jobs::iris_csv(100, |i| i % 2 == 0),
        "?max_errors=3",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let over = crate::jobs::wait_over(&app, &user, id, Duration::from_secs(60)).await;
    assert_eq!(over["state"], "failed");
    let body = jobs_hook.wait_for("job.failed").await;
    assert_eq!(body["job"], id);
    assert!(
        body["text"].as_str().unwrap().contains("error budget of 3"),
        "{body}"
    );

    // Each receiver got only its own event, the second drift check (still drifting) adding none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(drift_hook.events(), ["drift.flagged"]);
    assert_eq!(jobs_hook.events(), ["job.failed"]);
}

#[sqlx::test]
async fn drift_flagged_on_k_checks_in_a_row_rolls_production_back(pool: PgPool) {
    let app = app_with_rules(pool, 1).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    // Version 1 (with its reference data) is production again after version 2 was: a rollback
    // goes to version 2.
    let other = publish(&app, &staff, &agreeing(scratch.path())).await;
    for v in [other, 1] {
        set_production(&app, &staff, v).await;
    }
    let (status, body) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/rollback",
            &staff,
            Some(json!({"drift_checks": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // One check flags drift: one of two, nothing moves.
    app.sign_in("root", true).await;
    crate::drift::live_window(&app, 200, 0.8).await;
    assert!(crate::drift::check_now(&app).await.contains("drifting"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(production(&app).await, 1);
    let healthy = outcome(&app, "rollback").await;
    assert!(
        healthy.contains("drift flagged on 1 of its last 1 checks"),
        "{healthy}"
    );

    // The second in a row: rolled back within an interval, with the verdicts in the audit entry.
    assert!(crate::drift::check_now(&app).await.contains("drifting"));
    wait_for_production(&app, other, Duration::from_secs(4)).await;
    let rolled = audit_actions(&app, "automation.rolled_back").await;
    assert_eq!(rolled.len(), 1);
    assert_eq!(
        rolled[0].1["figures"]["drift_verdicts"],
        json!([true, true])
    );
    let reason: String =
        sqlx::query_scalar("select reason from alias_event order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        reason.ends_with("drift flagged on 2 checks in a row"),
        "{reason}"
    );
}

#[sqlx::test]
async fn a_stream_whose_broker_is_away_fails_and_alerts_once(pool: PgPool) {
    // A broker address where nothing listens: the consumer is never given a partition.
    let nowhere = crate::helpers::free_port();
    let app = spawn_app_with(pool, |s| {
        s.kafka_brokers = Some(format!("127.0.0.1:{nowhere}"));
    })
    .await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let hook = receiver(0).await;
    app.post_json(
        "/api/v1/webhooks",
        &staff,
        json!({"url": hook.url, "events": ["stream.failed"]}),
    )
    .await;
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/streams",
            &[("input_topic", "flowers"), ("output_topic", "species")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);

    // It fails once it has held no partition for 20 s, restarts, fails again: one alert.
    let body = tokio::time::timeout(Duration::from_secs(60), hook.wait_for("stream.failed"))
        .await
        .expect("an alert within a minute");
    assert_eq!(body["model"], "iris");
    assert_eq!(body["input_topic"], "flowers");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("the stream from flowers failed"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(hook.events(), ["stream.failed"]);
}
