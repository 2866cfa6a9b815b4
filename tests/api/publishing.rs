//! The CI recipe (deploy/github-actions/publish-model.yml) run for real: its steps after
//! training, as bash runs them on a GitHub runner (curl and jq), against a real Plinth.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app_with, succeed, TestApp};

const WORKFLOW: &str = "deploy/github-actions/publish-model.yml";

/// The workflow's steps with a `run` script, by name (PyYAML reads the file as GitHub does).
fn steps() -> Vec<(String, String)> {
    let python = std::env::var("PLINTH_PYTHON")
        .expect("PLINTH_PYTHON names a Python with tests/requirements.txt (PyYAML)");
    let out = succeed(
        Command::new(python).args([
            "-c",
            "import json, sys, yaml; w = yaml.safe_load(open(sys.argv[1])); \
             print(json.dumps([[s['name'], s['run']] for s in w['jobs']['publish']['steps'] \
             if 'run' in s]))",
            WORKFLOW,
        ]),
        "reading the workflow with PyYAML",
    );
    serde_json::from_slice(&out).unwrap()
}

/// [`run_step_blocking`] off the test's runtime, which drives the server's database pool.
async fn run_step(script: &str, dir: &Path, env: &[(&str, String)]) -> (bool, String) {
    let (script, dir) = (script.to_string(), dir.to_path_buf());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        run_step_blocking(&script, &dir, &env)
    })
    .await
    .unwrap()
}

/// Runs one step as a runner would: bash with `-eo pipefail`, the job's environment, and what
/// earlier steps wrote to `$GITHUB_ENV`. The exit status and the output.
fn run_step_blocking(script: &str, dir: &Path, env: &[(&str, String)]) -> (bool, String) {
    let github_env = dir.join("github_env");
    let wrapped = format!("set -a; . \"$GITHUB_ENV\"; set +a\n{script}");
    let mut cmd = Command::new("bash");
    cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &wrapped])
        .current_dir(dir)
        .env("GITHUB_ENV", &github_env);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn production(app: &TestApp, token: &str) -> i64 {
    let (_, model) = app
        .call_json(Method::GET, "/api/v1/models/iris", token, None)
        .await;
    model["aliases"]["production"].as_i64().unwrap()
}

#[sqlx::test]
#[ignore = "needs PLINTH_PYTHON (PyYAML, from tests/requirements.txt), curl and jq; .ci/run runs it"]
async fn the_ci_recipe_publishes_shadows_and_lets_the_rule_promote_a_version(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.automation_interval = Duration::from_secs(1)).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;

    // What "Train and export" leaves behind.
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    std::fs::create_dir(&build).unwrap();
    std::fs::copy("tests/fixtures/iris_v2.onnx", build.join("model.onnx")).unwrap();
    std::fs::copy("models/iris/1/card.toml", build.join("card.toml")).unwrap();
    std::fs::copy("models/iris/1/reference.csv", build.join("reference.csv")).unwrap();
    std::fs::copy("models/iris/1/reference.csv", build.join("train.csv")).unwrap();
    std::fs::write(dir.path().join("github_env"), "").unwrap();

    let steps = steps();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Train and export",
            "Register the training data",
            "Publish the version",
            "Run it as a shadow under a promotion rule",
            "Wait for Plinth to promote it"
        ]
    );
    let with = |env: &[(&'static str, String)], key: &'static str, value: &str| {
        let mut env = env.to_vec();
        env.retain(|(k, _)| *k != key);
        env.push((key, value.to_string()));
        env
    };
    let env = vec![
        ("PLINTH_URL", app.address.clone()),
        ("PLINTH_TOKEN", staff.clone()),
        ("MODEL", "iris".to_string()),
        ("DATASET", "iris-train".to_string()),
        ("MIN_PAIRS", "50".to_string()),
        // A bar no version reaches against another, to begin with.
        ("MIN_AGREEMENT", "1.0".to_string()),
        ("MAX_ERROR_RATE", "0.01".to_string()),
        ("ROLLBACK_ERROR_RATE", "0.05".to_string()),
        ("WAIT_MINUTES", "0".to_string()),
        ("POLL_SECONDS", "1".to_string()),
    ];
    let (register, publish, shadow, wait) = (&steps[1].1, &steps[2].1, &steps[3].1, &steps[4].1);
    let (ok, out) = run_step(register, dir.path(), &env).await;
    assert!(ok, "{out}");
    assert!(out.contains("iris-train version 1: 105 rows, new"), "{out}");
    let (ok, out) = run_step(publish, dir.path(), &env).await;
    assert!(ok, "{out}");
    // The version is linked to its training data; registering the same file again is no new
    // version (a re-run of the workflow).
    let (_, data) = app
        .call_json(Method::GET, "/api/v1/datasets/iris-train", &staff, None)
        .await;
    assert_eq!(
        data["versions"][0]["used_by"][0]["model_version"], 2,
        "{data}"
    );
    let (ok, out) = run_step(register, dir.path(), &env).await;
    assert!(
        ok && out.contains("iris-train version 1: 105 rows, unchanged"),
        "{out}"
    );
    let (ok, out) = run_step(shadow, dir.path(), &env).await;
    assert!(ok, "{out}");
    assert!(std::fs::read_to_string(dir.path().join("github_env"))
        .unwrap()
        .contains("VERSION=2"));
    assert_eq!(production(&app, &staff).await, 1);
    let (_, rules) = app
        .call_json(Method::GET, "/api/v1/models/iris/rules", &staff, None)
        .await;
    let kinds: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["promote", "rollback"]);

    // No live traffic yet: the wait gives up naming what the rule waits for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out) = run_step(wait, dir.path(), &env).await;
    assert!(!ok && out.contains("0 of 50 predictions"), "{out}");

    // Live traffic, copied to the shadow.
    for i in 0..60 {
        let x = 4.5 + (i % 30) as f64 * 0.1;
        let (status, body) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": {"sepal_length": x, "sepal_width": 3.0,
                                  "petal_length": 1.0 + (i % 50) as f64 * 0.1, "petal_width": 1.2}}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["version"], 1);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let agreement = loop {
        let (_, report) = app
            .call_json(Method::GET, "/api/v1/models/iris/shadows", &staff, None)
            .await;
        let shadow = &report["shadows"][0];
        if shadow["label_pairs"] == 60 {
            break shadow["agreement"].as_f64().unwrap();
        }
        assert!(Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        agreement < 1.0,
        "version 2 agrees on every flower; the test needs others"
    );

    // The bar it cannot reach: not promoted, and the wait says why.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out) = run_step(wait, dir.path(), &env).await;
    assert!(!ok && out.contains("< 100.0%"), "{out}");
    assert_eq!(production(&app, &staff).await, 1);

    // A bar it meets (the step run again, as a re-run of the workflow would): Plinth promotes it.
    let env = with(&env, "MIN_AGREEMENT", &format!("{agreement}"));
    let (ok, out) = run_step(shadow, dir.path(), &env).await;
    assert!(ok, "{out}");
    let env = with(&env, "WAIT_MINUTES", "1");
    let (ok, out) = run_step(wait, dir.path(), &env).await;
    assert!(ok, "{out}");
    assert!(out.contains("promoted: version 2 is production"), "{out}");
    assert_eq!(production(&app, &staff).await, 2);
    let (_, report) = app
        .call_json(Method::GET, "/api/v1/models/iris/shadows", &staff, None)
        .await;
    assert_eq!(report["shadows"], json!([]));
    let promoted: Vec<Value> = sqlx::query_scalar(
        "select detail from audit_event where action = 'automation.promoted' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(promoted.len(), 1);
    assert_eq!(
        (promoted[0]["from"].as_i64(), promoted[0]["to"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(promoted[0]["figures"]["predictions"], 60);
}
