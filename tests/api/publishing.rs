//! The CI recipe (deploy/github-actions/publish-model.yml) run for real: its steps after
//! training, as bash runs them on a GitHub runner (curl and jq), against a real Plinth.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

const WORKFLOW: &str = "deploy/github-actions/publish-model.yml";

/// The workflow's steps with a `run` script, by name (PyYAML reads the file as GitHub does).
fn steps() -> Vec<(String, String)> {
    let python = std::env::var("PLINTH_PYTHON")
        .expect("PLINTH_PYTHON names a Python with tests/requirements.txt (PyYAML)");
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; w = yaml.safe_load(open(sys.argv[1])); \
             print(json.dumps([[s['name'], s['run']] for s in w['jobs']['publish']['steps'] \
             if 'run' in s]))",
            WORKFLOW,
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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
async fn the_ci_recipe_publishes_shadows_and_promotes_a_version(pool: PgPool) {
    let app = spawn_app(pool).await;
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
    std::fs::write(dir.path().join("github_env"), "").unwrap();

    let steps = steps();
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Train and export",
            "Publish the version",
            "Run it as a shadow of production",
            "Promote it when it agrees with production"
        ]
    );
    let mut env = vec![
        ("PLINTH_URL", app.address.clone()),
        ("PLINTH_TOKEN", staff.clone()),
        ("MODEL", "iris".to_string()),
        ("MIN_PAIRS", "50".to_string()),
        ("MIN_AGREEMENT", "0.97".to_string()),
        ("WAIT_MINUTES", "0".to_string()),
    ];
    for (name, script) in &steps[1..3] {
        let (ok, out) = run_step(script, dir.path(), &env).await;
        assert!(ok, "{name}:\n{out}");
    }
    assert!(std::fs::read_to_string(dir.path().join("github_env"))
        .unwrap()
        .contains("VERSION=2"));
    assert_eq!(production(&app, &staff).await, 1);

    // Too few shadow answers yet: not promoted, and the step fails saying so.
    let promote = &steps[3].1;
    let (ok, out) = run_step(promote, dir.path(), &env).await;
    assert!(!ok && out.contains("only 0 shadow answers"), "{out}");

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

    // A bar it cannot reach: refused, production stays, the shadow keeps running.
    let bar = |a: f64| ("MIN_AGREEMENT", format!("{a}"));
    let mut strict = env.clone();
    strict.retain(|(k, _)| *k != "MIN_AGREEMENT");
    strict.push(bar(agreement + 0.01));
    let (ok, out) = run_step(promote, dir.path(), &strict).await;
    assert!(!ok && out.contains("not promoted"), "{out}");
    assert_eq!(production(&app, &staff).await, 1);

    // A bar it meets: promoted, the shadow stopped, the move in the alias history.
    env.retain(|(k, _)| *k != "MIN_AGREEMENT");
    env.push(bar(agreement));
    let (ok, out) = run_step(promote, dir.path(), &env).await;
    assert!(ok, "{out}");
    assert!(out.contains("promoted: version 2 is production"), "{out}");
    assert_eq!(production(&app, &staff).await, 2);
    let (_, report) = app
        .call_json(Method::GET, "/api/v1/models/iris/shadows", &staff, None)
        .await;
    assert_eq!(report["shadows"], json!([]));
    let moves: Vec<Value> = sqlx::query_scalar(
        "select detail from audit_event where action = 'alias.moved' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        moves.last().unwrap(),
        &json!({"model": "iris", "alias": "production", "from": 1, "to": 2})
    );
}
