//! deploy/Dockerfile built with podman and run as an orchestrator runs it. The Rust stage cannot
//! be pulled here, so the binary cargo builds stands in for it (`--build-context
//! build=target/release`); the rest of the file runs unchanged on the local `debian:bookworm-slim`
//! (made by scripts/base-image). The container reaches the test's database on the host's network.

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::helpers::{database_url, free_port, prediction_id, test_app_at};

pub const IMAGE: &str = "localhost/plinth:test";

/// Runs podman, saying how to get it when it is missing.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e} (scripts/test installs podman)"))
}

/// Runs podman and returns what it printed, failing the test with its error when it fails.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `podman build` as the tests build every image: Docker's format (the OCI one drops
/// `HEALTHCHECK`), the host's network for the package installs.
pub fn build(file: &str, tag: &str, extra: &[&str], context: &str) {
    let mut args = vec![
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--file",
        file,
        "--tag",
        tag,
    ];
    args.extend_from_slice(extra);
    args.push(context);
    podman_ok(&args);
}

/// Builds the release binary and, from it, the image (once per test run).
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let built = Command::new("cargo")
            .args(["build", "--release", "--locked", "--bin", "plinth"])
            .env_remove("RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(built.success(), "the release build failed");
        // The build stage's stand-in: a directory holding only the binary (target/release
        // holds gigabytes the build does not need).
        let stage = tempfile::tempdir().unwrap();
        std::fs::copy("target/release/plinth", stage.path().join("plinth")).unwrap();
        let context = format!("build={}", stage.path().display());
        build(
            "deploy/Dockerfile",
            IMAGE,
            &[
                "--ignorefile",
                "deploy/Dockerfile.dockerignore",
                "--build-context",
                &context,
                "--target",
                "runtime",
            ],
            ".",
        );
        // Each build leaves the runtime-files stage behind (the binary is new each time): the
        // images no tag names are dropped, so repeated runs do not fill the disk.
        podman_ok(&["image", "prune", "--force"]);
    });
    IMAGE
}

/// A container and its volume, removed whatever happens.
pub struct Container {
    pub name: String,
    volume: Option<String>,
}

impl Container {
    pub fn named(name: String, volume: Option<String>) -> Container {
        // Left over from an interrupted run.
        podman(&["rm", "--force", "--time", "0", &name]);
        Container { name, volume }
    }

    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.name])
    }

    pub fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        podman(&["rm", "--force", "--volumes", "--time", "0", &self.name]);
        if let Some(volume) = &self.volume {
            podman(&["volume", "rm", "--force", volume]);
        }
    }
}

/// Waits for `url` to answer 200, or fails with the container's log.
pub async fn wait_ready(url: &str, container: &Container) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        assert_eq!(
            container.inspect("{{.State.Running}}"),
            "true",
            "the container exited:\n{}",
            container.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{url} was not ready in 90 s:\n{}", container.logs());
}

/// The user id a container's main process runs as, read from the host's /proc.
fn process_uid(container: &Container) -> String {
    let pid = container.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uids.split_whitespace().nth(1).unwrap().to_string()
}

#[sqlx::test(migrations = false)]
#[ignore = "builds the release binary and the image with podman (slow; scripts/test runs it)"]
async fn the_image_is_small_runs_read_only_as_its_user_and_drains_on_sigterm(pool: PgPool) {
    let image = image();
    let url = database_url(&pool).await;
    assert!(
        !url.contains("host=/"),
        "a container reaches Postgres over TCP: run with DATABASE_URL at 127.0.0.1"
    );

    // Small, and made to run as its user.
    let size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .parse()
        .unwrap();
    assert!(size <= 120_000_000, "the image is {size} bytes");
    let user = podman_ok(&["image", "inspect", "--format", "{{.Config.User}}", image]);
    assert_eq!(user, "10001");

    // `plinth migrate` as a one-off container makes the schema.
    let database = format!("DATABASE_URL={url}");
    podman_ok(&[
        "run",
        "--rm",
        "--read-only",
        "--network",
        "host",
        "--env",
        &database,
        image,
        "migrate",
    ]);
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let shipped = std::fs::read_dir("migrations").unwrap().count() as i64;
    assert_eq!(applied, shipped, "every migration applied");

    // Served read-only, /data a new volume.
    let port = free_port();
    let container = Container::named(
        format!("plinth-test-{port}"),
        Some(format!("plinth-test-data-{port}")),
    );
    let volume = format!("plinth-test-data-{port}:/data");
    let addr = format!("PLINTH_ADDR=127.0.0.1:{port}");
    podman_ok(&[
        "run",
        "--detach",
        "--name",
        &container.name,
        "--read-only",
        "--network",
        "host",
        "--volume",
        &volume,
        "--env",
        &database,
        "--env",
        &addr,
        "--env",
        "PLINTH_MIGRATE=0",
        "--env",
        "PLINTH_ADMIN_PASSWORD=an-image-secret-9",
        image,
    ]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz"), &container).await;
    assert_eq!(container.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(process_uid(&container), "10001");

    // A prediction through the form and one through v1, both stored.
    let app = test_app_at(base.clone(), pool.clone());
    app.sign_in("ada", false).await;
    let res = app.predict_iris_example().await;
    assert_eq!(res.status().as_u16(), 303);
    let id = prediction_id(&res);
    let page = app.get_html(&format!("/predictions/{id}")).await;
    assert!(page.contains("setosa"), "{page}");
    let token = app.token_for("grace", false).await;
    let (status, answer) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            serde_json::json!({"inputs": {"sepal_length": 6.3, "sepal_width": 3.3,
                                          "petal_length": 6.0, "petal_width": 2.5}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["label"], "virginica", "{answer}");
    assert_eq!(app.predictions().await, 2);

    // Its artifacts went to the volume, as its user.
    let mount = podman_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &format!("plinth-test-data-{port}"),
    ]);
    let artifacts = std::fs::metadata(format!("{mount}/artifacts")).expect("/data/artifacts");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&artifacts), 10001);

    // JSON logs, and the HEALTHCHECK says healthy.
    let logs = container.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "a log line that is not JSON: {line}");
    }
    let check = podman(&["healthcheck", "run", &container.name]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(container.inspect("{{.State.Health.Status}}"), "healthy");

    // SIGTERM: it drains (PLINTH_DRAIN_SECONDS=5 in the image) and exits 0 within 5 s more.
    let sent = Instant::now();
    podman_ok(&["kill", "--signal", "TERM", &container.name]);
    while container.inspect("{{.State.Running}}") == "true" {
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM:\n{}",
            container.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        container.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        container.logs()
    );
}
