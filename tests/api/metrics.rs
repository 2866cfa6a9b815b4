use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

/// Checks every line is a comment or `name{labels} value` and the text ends as OpenMetrics
/// requires, and returns the samples.
fn parse(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line}");
            for pair in series[name_end + 1..series.len() - 1].split("\",") {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                let _ = v;
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        samples.push((series.to_string(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

async fn scrape(app: &TestApp, token: &str) -> Vec<(String, f64)> {
    let res = app
        .api(Method::GET, "/metrics", token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    parse(&res.text().await.unwrap())
}

#[sqlx::test]
async fn metrics_parse_and_move_with_predictions(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let before = scrape(&app, &staff).await;
    let ok = "plinth_inference_success_total{model=\"iris\",version=\"1\"}";
    assert_eq!(sample(&before, ok), 0.0);

    let row =
        json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2});
    let res = app
        .api(Method::POST, "/api/v1/models/iris/predict", &staff)
        .json(&json!({"inputs": [row, row]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let res = app
        .api(Method::POST, "/api/v1/models/iris/predict", &staff)
        .json(&json!({"inputs": {"sepal_length": 5.1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);

    let after = scrape(&app, &staff).await;
    assert_eq!(sample(&after, ok), 2.0);
    assert_eq!(
        sample(
            &after,
            "plinth_inference_failure_total{model=\"iris\",version=\"1\",reason=\"invalid_input\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "plinth_inference_duration_seconds_count{model=\"iris\",version=\"1\",stage=\"total\"}"
        ),
        1.0
    );
    assert!(sample(&after, "plinth_inference_duration_seconds_count{model=\"iris\",version=\"1\",stage=\"compute\"}") >= 1.0);
    assert_eq!(sample(&after, "plinth_http_requests_total{method=\"POST\",route=\"/api/v1/models/{name}/predict\",status=\"200\"}"), 1.0);
    assert_eq!(sample(&after, "plinth_http_requests_total{method=\"POST\",route=\"/api/v1/models/{name}/predict\",status=\"422\"}"), 1.0);
    assert_eq!(sample(&after, "plinth_prediction_log_rows_total"), 2.0);
    assert_eq!(sample(&after, "plinth_prediction_log_pending_rows"), 0.0);
    assert!(sample(&after, "plinth_prediction_log_flush_seconds_count") >= 1.0);
    assert_eq!(
        sample(
            &after,
            &format!(
                "plinth_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
}

#[sqlx::test]
async fn metrics_need_a_staff_token(pool: PgPool) {
    let app = spawn_app(pool).await;
    let user = app.token_for("ada", false).await;

    assert_eq!(app.get("/metrics").await.status().as_u16(), 401);
    assert_eq!(
        app.api(Method::GET, "/metrics", &user)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
}

#[sqlx::test]
async fn a_separate_metrics_address_serves_them_without_a_token(pool: PgPool) {
    let app = spawn_app_with(pool, |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let port = app.metrics_port.expect("a metrics listener");

    let res = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 200);
    let samples = parse(&res.text().await.unwrap());
    assert!(samples
        .iter()
        .any(|(s, _)| s.starts_with("plinth_build_info")));
    assert_eq!(
        app.get("/metrics").await.status().as_u16(),
        401,
        "the main address still wants a token"
    );
}

/// Every metric the shipped alerting rules and Grafana dashboard use is one Plinth exposes, and
/// the drift gauge follows the latest check of each production version.
#[sqlx::test]
async fn the_alert_rules_and_the_dashboard_use_only_metrics_plinth_exposes(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("grace", true).await;
    // A drift verdict for iris's production version, as a check records it.
    sqlx::query(
        "insert into drift_run (model_id, version_id, window_label, rows, features,
                                drifted_features, drifted)
         select m.id, a.version_id, 'test', 500, 4, 3, true
         from model m join model_alias a on a.model_id = m.id and a.alias = 'production'
         where m.name = 'iris'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let text = app
        .api(Method::GET, "/metrics", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // A family shows on /metrics once it has a series: the ones this test cannot fill (streams,
    // batch jobs, failures) are taken from what the metrics module registers.
    let source = std::fs::read_to_string("src/monitoring/metrics.rs").unwrap();
    let registered: std::collections::BTreeSet<String> = source
        .match_indices("\"plinth_")
        .map(|(at, _)| source[at + 1..].split('"').next().unwrap().to_string())
        .collect();
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for family in &exposed {
        assert!(registered.contains(*family), "{family} is not registered");
    }
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/plinth.json"] {
        let body = std::fs::read_to_string(file).unwrap();
        let mut used = 0;
        for (at, _) in body.match_indices("plinth_") {
            let name: String = body[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                registered.contains(family),
                "{file} uses {name}, which Plinth does not register"
            );
            used += 1;
        }
        assert!(used >= 7, "{file} uses {used} metrics");
    }
    // The gauge is read every 10 s from the newest verdicts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = scrape(&app, &token).await;
        let flagged = samples
            .iter()
            .find(|(s, _)| s.starts_with("plinth_drift_flagged{") && s.contains("model=\"iris\""));
        if let Some((series, value)) = flagged {
            assert!(series.contains("version=\"1\""), "{series}");
            assert_eq!(*value, 1.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no plinth_drift_flagged for iris"
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
