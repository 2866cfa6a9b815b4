//! A start with nothing configured: no database URL and no server that accepts Plinth, so the
//! real binary makes, starts, reuses and stops its own private cluster.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;

use crate::helpers::{csrf_in, free_port, location, new_client};

const PASSWORD: &str = "zero-config-pedestal-42";

/// `plinth serve` in `dir`, with no database configured and the local address it would look
/// for a server at closed.
fn start(dir: &Path, port: u16, closed: u16) -> Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join("plinth.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_plinth"))
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("PLINTH_DATABASE_URL")
        .env("PLINTH_LOCAL_POSTGRES", format!("127.0.0.1:{closed}"))
        .env("PLINTH_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "PLINTH_MODELS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models"),
        )
        .env("PLINTH_ADMIN_PASSWORD", PASSWORD)
        .env("PLINTH_INSECURE_COOKIES", "1")
        .env("PLINTH_WORKERS", "1")
        .env("PLINTH_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &Client, base: &str, child: &mut Child, dir: &Path) {
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{base}/readyz")).send().await {
            if res.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("plinth exited ({status}): {}", log(dir));
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "plinth did not become ready: {}",
            log(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("plinth.log")).unwrap_or_default()
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The postmaster of the cluster in `dir`, if one runs.
fn postmaster(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join("data/postgres/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Waits for `child` to exit, then for the cluster's server to be gone.
async fn stopped(child: &mut Child, dir: &Path) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "plinth did not exit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while let Some(pid) = postmaster(dir) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cluster's server {pid} is still running after plinth exited: {}",
            log(dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(client: &Client, base: &str) {
    let page = client
        .get(format!("{base}/accounts/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let res = client
        .post(format!("{base}/accounts/login"))
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf_token", &csrf_in(&page)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303, "signed in");
}

async fn prediction_page(client: &Client, base: &str, path: &str) -> String {
    let res = client.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{path}");
    res.text().await.unwrap()
}

#[tokio::test]
#[ignore = "needs PostgreSQL's server programs (initdb, postgres); .ci/run runs it"]
async fn plinth_runs_its_own_cluster_when_nothing_is_configured() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // Run as root, the cluster runs as user postgres, who must be able to enter the directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (port, closed) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");

    // A first start creates the cluster, migrates, imports the models; a form prediction is
    // stored.
    let mut plinth = start(dir, port, closed);
    let (client, _) = new_client();
    wait_ready(&client, &base, &mut plinth, dir).await;
    assert!(dir.join("data/postgres/PG_VERSION").is_file(), "no cluster");
    assert!(
        log(dir).contains("private PostgreSQL cluster"),
        "{}",
        log(dir)
    );
    sign_in(&client, &base).await;
    let form = prediction_page(&client, &base, "/models/iris").await;
    let res = client
        .post(format!("{base}/models/iris"))
        .form(&[
            ("sepal_length", "6.7"),
            ("sepal_width", "3.0"),
            ("petal_length", "5.6"),
            ("petal_width", "2.2"),
            ("csrf_token", &csrf_in(&form)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303);
    let result = location(&res);
    assert!(result.starts_with("/predictions/"), "{result}");
    assert!(prediction_page(&client, &base, &result)
        .await
        .contains("virginica"));

    // A normal exit stops the cluster: no server is left running.
    signal(&plinth, "-TERM");
    stopped(&mut plinth, dir).await;

    // A restart reuses the cluster: the prediction is still there.
    let mut plinth = start(dir, port, closed);
    let (client, _) = new_client();
    wait_ready(&client, &base, &mut plinth, dir).await;
    assert_eq!(
        log(dir)
            .matches("creating Plinth's private PostgreSQL cluster")
            .count(),
        1,
        "the cluster was made again: {}",
        log(dir)
    );
    sign_in(&client, &base).await;
    assert!(prediction_page(&client, &base, &result)
        .await
        .contains("virginica"));

    // `kill -9` of Plinth: the next start is clean, and the prediction is still there.
    signal(&plinth, "-KILL");
    let _ = plinth.wait();
    let mut plinth = start(dir, port, closed);
    let (client, _) = new_client();
    wait_ready(&client, &base, &mut plinth, dir).await;
    sign_in(&client, &base).await;
    assert!(prediction_page(&client, &base, &result)
        .await
        .contains("virginica"));

    // `plinth check` says which database and why.
    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("check")
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("PLINTH_DATABASE_URL")
        .env("PLINTH_LOCAL_POSTGRES", format!("127.0.0.1:{closed}"))
        .env(
            "PLINTH_MODELS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models"),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("private cluster in"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");

    signal(&plinth, "-TERM");
    stopped(&mut plinth, dir).await;
}
