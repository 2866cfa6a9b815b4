//! deploy/Dockerfile, run without a container (no Docker engine runs here): its build command
//! exactly as written, then its entrypoint with its environment, as its non-root user, with its
//! paths (`/app`, `/data`) rebased to directories of the test's, the working directory not
//! writable, and its HEALTHCHECK command.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The Dockerfile's instructions with their continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current).trim().to_string());
            }
        }
    }
    out
}

/// `["a", "b"]` (the exec form) as words.
fn exec_form(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[sqlx::test]
#[ignore = "builds the release binary, as the image does (slow; .ci/run runs it)"]
async fn the_images_build_and_start_commands_work_outside_a_container(pool: PgPool) {
    // Read the recipe.
    let dockerfile = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    let steps = instructions(&dockerfile);
    let runtime = steps
        .iter()
        .position(|s| s.starts_with("FROM debian"))
        .expect("a runtime stage");
    let builds: Vec<&str> = steps[..runtime]
        .iter()
        .filter(|s| s.starts_with("RUN "))
        .flat_map(|s| s[4..].split("&&"))
        .map(str::trim)
        .filter(|c| c.starts_with("cargo build"))
        .collect();
    assert_eq!(
        builds, ["cargo build --release --locked --bin plinth"; 2],
        "the dependency layer and the real build use the same command"
    );
    let mut env = BTreeMap::new();
    for step in steps[runtime..].iter().filter(|s| s.starts_with("ENV ")) {
        for pair in step[4..].split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV key=value");
            env.insert(k.to_string(), v.to_string());
        }
    }
    let user = steps[runtime..]
        .iter()
        .find_map(|s| s.strip_prefix("USER "))
        .expect("a USER")
        .trim()
        .to_string();
    assert_ne!(user, "0", "the image runs as a non-root user");
    let entrypoint = exec_form(
        steps
            .iter()
            .find_map(|s| s.strip_prefix("ENTRYPOINT "))
            .unwrap(),
    );
    let cmd = exec_form(steps.iter().find_map(|s| s.strip_prefix("CMD ")).unwrap());
    let healthcheck = steps
        .iter()
        .find_map(|s| s.strip_prefix("HEALTHCHECK "))
        .and_then(|s| s.split_once("CMD "))
        .map(|(_, c)| exec_form(c))
        .expect("a HEALTHCHECK");
    assert_eq!(entrypoint, ["plinth"]);
    assert_eq!(
        env.get("PLINTH_ADDR").map(String::as_str),
        Some("0.0.0.0:8080")
    );

    // Build, exactly as written.
    let built = Command::new("sh")
        .args(["-c", builds[1]])
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(built.success());
    let binary = std::fs::canonicalize("target/release/plinth").unwrap();

    // The image's file system: /app with the models (not writable), /data owned by the user.
    let root = tempfile::tempdir().unwrap();
    let (app, data) = (root.path().join("app"), root.path().join("data"));
    copy_tree(Path::new("models"), &app.join("models"));
    std::fs::create_dir_all(&data).unwrap();
    let uid: u32 = user.parse().expect("a numeric USER");
    std::os::unix::fs::chown(&data, Some(uid), Some(uid)).unwrap();
    for dir in [root.path(), app.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rebase = |v: &str| {
        v.replace("/app/", &format!("{}/", app.display()))
            .replace("/data/", &format!("{}/", data.display()))
    };
    let url = crate::helpers::database_url(&pool).await;
    // The private cluster of a run without a configured database is reached through a socket
    // in root's directory; there the server runs as this user instead.
    let as_user = !url.contains("host=/");
    let command = |args: &[String]| {
        let mut c = if as_user {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        c.args(args)
            .current_dir(&app)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k.clone(), rebase(v))))
            .env("DATABASE_URL", &url)
            .env("PLINTH_ADMIN_PASSWORD", "an-image-secret-9");
        c
    };

    // Start: ENTRYPOINT + CMD.
    let args: Vec<String> = entrypoint[1..].iter().chain(&cmd).cloned().collect();
    let log = root.path().join("plinth.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = Server(
        command(&args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        ready = matches!(
            client.get("http://127.0.0.1:8080/readyz").send().await,
            Ok(r) if r.status().as_u16() == 200
        );
        if !ready {
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "the server exited:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // It runs as the image's user, logs JSON, serves the shipped models, and its HEALTHCHECK
    // command says healthy.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    if as_user {
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uids.split_whitespace().nth(1) == Some(&uid.to_string()),
            "{uids}"
        );
    }
    let res = client
        .post("http://127.0.0.1:8080/api/v1/models/iris/predict")
        .json(
            &serde_json::json!({"inputs": {"sepal_length": 5.1, "sepal_width": 3.5,
                                              "petal_length": 1.4, "petal_width": 0.2}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        401,
        "a token is needed outside a platform"
    );
    let check = command(&healthcheck[1..]).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let first = logged.lines().next().unwrap_or_default();
    assert!(first.starts_with('{'), "JSON logs: {first}");
    assert!(
        std::fs::read_dir(data.join("artifacts")).is_ok(),
        "artifacts under /data"
    );

    // SIGTERM: it drains and stops by itself.
    let sent = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = Instant::now() + Duration::from_secs(45);
    let mut code = None;
    while Instant::now() < stopped && code.is_none() {
        code = server.0.try_wait().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(code.is_some_and(|c| c.success()), "{code:?}");
}

/// The server process, killed and reaped whatever happens.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
