//! Kafka streams against a real broker (tansu, a Kafka API broker from crates.io) and a real
//! Kafka client (kafka-python): records in, results out, every prediction stored once, through
//! a killed Plinth, a restarted broker, malformed records, pauses and a promotion.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{csrf_in, free_port};
use crate::instances::{Instance, Weed, ADMIN_PASSWORD};

/// A tansu broker on a free port; killed when dropped. Its log is kept in memory, or in an S3
/// store (a real `weed` server) when it must outlive a restart as a Kafka broker's log does.
pub struct Tansu {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    store: Option<Weed>,
}

pub fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PLINTH_TANSU") {
        return path.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let tools =
        std::env::var("PLINTH_TOOLS_DIR").unwrap_or_else(|_| format!("{home}/.cache/plinth"));
    let installed = Path::new(&tools).join("tansu/bin/tansu");
    if installed.exists() {
        return installed;
    }
    "tansu".into()
}

impl Tansu {
    /// A broker keeping its log in memory (lost when it stops).
    pub async fn start(dir: &Path) -> Tansu {
        let mut t = Tansu {
            port: free_port(),
            child: None,
            log: dir.join("tansu.log"),
            store: None,
        };
        t.run().await;
        t
    }

    /// A broker keeping its log in S3 (a `weed` server of its own): a restart keeps the topics,
    /// the records and the consumer groups' offsets.
    pub async fn start_durable(dir: &Path) -> Tansu {
        let mut t = Tansu {
            port: free_port(),
            child: None,
            log: dir.join("tansu.log"),
            store: Some(Weed::start(&dir.join("tansu-s3")).await),
        };
        t.run().await;
        t
    }

    /// Kills the broker and starts it again on the same port.
    pub async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.run().await;
    }

    pub fn broker(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(tansu_binary());
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .env("RUST_LOG", "warn");
        match &self.store {
            None => command.args(["--storage-engine", "memory://tansu/"]),
            Some(weed) => command
                .arg("--storage-engine")
                .arg(format!("s3://{}/", Weed::BUCKET))
                .env("AWS_ENDPOINT", weed.endpoint())
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "tansu")
                .env("AWS_SECRET_ACCESS_KEY", "tansu-secret")
                .env("AWS_DEFAULT_REGION", "us-east-1"),
        };
        self.child = Some(spawn_tansu(&mut command, &self.log));
        wait_listening(self.port, "tansu", &self.log).await;
    }
}

/// Starts `command` (tansu's), its output appended to `log`.
pub fn spawn_tansu(command: &mut Command, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    command
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "tansu cannot run ({e}): cargo install tansu --locked --features dynostore,postgres,libsql (scripts/test does)"
            )
        })
}

/// Waits until something listens on the loopback `port`; panics with `log` after 30 s.
pub async fn wait_listening(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what} never listened on {port}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs tests/kafka/client.py with the tests' Python; its JSON answer.
fn client(broker: &str, args: &[&str]) -> Value {
    client_with(broker, &Value::Null, args)
}

/// [`client`] for a broker that wants TLS or SASL: `security` holds kafka-python's settings.
pub fn client_with(broker: &str, security: &Value, args: &[&str]) -> Value {
    let python = std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .env("KAFKA_SECURITY", security.to_string())
        .arg("tests/kafka/client.py")
        .arg(broker)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{python} cannot run: {e}"));
    assert!(out.status.success(), "client.py {args:?} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client.py {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Signs the instance's client in as the admin and adds a stream to iris.
pub async fn add_stream(app: &crate::helpers::TestApp, input: &str, output: &str, dead: &str) {
    let res = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(res.status().as_u16(), 303);
    let token = csrf_in(&app.get_html("/admin/models/iris").await);
    let res = app
        .client
        .post(app.url("/admin/models/iris/streams"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("input_topic", input),
            ("output_topic", output),
            ("dead_letter_topic", dead),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 303, "{}", res.text().await.unwrap());
}

pub async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select coalesce(sum(n), 0)::bigint from prediction where source = 'stream'")
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn wait_stored(pool: &PgPool, n: i64, within: Duration, what: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    loop {
        let have = stored(pool).await;
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{have} of {n} stored: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test]
#[ignore = "needs tansu and kafka-python (.ci/run installs both)"]
async fn a_stream_scores_every_record_once_through_crashes_and_dead_letters(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    // The broker's log in S3, so that it outlives the broker's restart as Kafka's does.
    let mut broker = Tansu::start_durable(scratch.path()).await;
    let b = broker.broker();
    client(
        &b,
        &[
            "create",
            "flowers",
            "predictions",
            "flowers.dead",
            "--partitions",
            "3",
        ],
    );
    let env = [
        ("PLINTH_MODELS", "models".to_string()),
        ("PLINTH_KAFKA_BROKERS", b.clone()),
    ];
    let mut plinth = Instance::start(&pool, scratch.path(), &env).await;
    add_stream(&plinth.app, "flowers", "predictions", "flowers.dead").await;

    // 100,000 records in two halves, every 10,000th of them not JSON.
    let n = 100_000;
    let half = n / 2;
    let bad = 10_000;
    // Half of the records from `start`, every one acknowledged by the broker.
    let produce_half = |start: i64| {
        let produced = client(
            &b,
            &[
                "produce",
                "flowers",
                "--count",
                &half.to_string(),
                "--start",
                &start.to_string(),
                "--bad",
                &bad.to_string(),
            ],
        );
        assert_eq!(produced["produced"], half);
    };
    produce_half(0);
    let good = n - n / bad;
    // Plinth killed (SIGKILL) mid-stream; the broker killed and started again while records
    // wait to be read; Plinth started again.
    wait_stored(&pool, 1, Duration::from_secs(60), || plinth.log_text()).await;
    plinth.kill();
    let mid = stored(&pool).await;
    assert!(mid < good / 2, "the first half was stored before the kill");
    broker.restart().await;
    plinth.restart().await;
    produce_half(half);
    wait_stored(&pool, good, Duration::from_secs(300), || plinth.log_text()).await;

    // Every record stored once; every good record's result on the output topic (at least
    // once), the malformed ones on the dead-letter topic with the reason.
    assert_eq!(stored(&pool).await, good, "stored exactly once");
    let results = client(
        &b,
        &[
            "consume",
            "predictions",
            "--count",
            &good.to_string(),
            "--timeout",
            "120",
        ],
    );
    // (A record answered, its result produced, and Plinth killed before the commit is answered
    // again after the restart under a new prediction id: the topic may hold both results.)
    assert!(results["count"].as_i64().unwrap() >= good, "{results}");
    assert_eq!(results["keys"].as_i64().unwrap(), good, "{results}");
    assert!(
        results["distinct_ids"].as_i64().unwrap() >= good,
        "{results}"
    );
    let dead = client(
        &b,
        &[
            "consume",
            "flowers.dead",
            "--count",
            &(n / bad).to_string(),
            "--timeout",
            "60",
        ],
    );
    assert!(dead["dead_count"].as_i64().unwrap() >= n / bad, "{dead}");
    let first = &dead["dead"][0];
    assert!(
        first["reason"].as_str().unwrap().contains("not valid JSON"),
        "{dead}"
    );
    assert!(
        first["trace"].as_str().unwrap().starts_with('t'),
        "the record's headers travel: {dead}"
    );
    let (records, dead_letters): (i64, i64) =
        sqlx::query_as("select records, dead_letters from stream")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        records >= good && dead_letters >= n / bad,
        "{records} {dead_letters}"
    );

    // /metrics counts them.
    let token = plinth.app.token_for("ops", true).await;
    let metrics = plinth
        .app
        .api(reqwest::Method::GET, "/metrics", &token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("plinth_stream_records_total{model=\"iris\",topic=\"flowers\"}"),
        "{metrics}"
    );
}

#[sqlx::test]
#[ignore = "needs tansu and kafka-python (.ci/run installs both)"]
async fn a_stream_pauses_resumes_and_follows_the_alias(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    let broker = Tansu::start(scratch.path()).await;
    let b = broker.broker();
    client(&b, &["create", "in", "out", "in.dead", "--partitions", "1"]);
    let env = [
        ("PLINTH_MODELS", "models".to_string()),
        ("PLINTH_KAFKA_BROKERS", b.clone()),
    ];
    let plinth = Instance::start(&pool, scratch.path(), &env).await;
    let app = &plinth.app;
    add_stream(app, "in", "out", "in.dead").await;
    client(&b, &["produce", "in", "--count", "100"]);
    wait_stored(&pool, 100, Duration::from_secs(60), || plinth.log_text()).await;

    // Paused: nothing is consumed; recorded in the audit log.
    let id: i64 = sqlx::query_scalar("select id from stream")
        .fetch_one(&pool)
        .await
        .unwrap();
    let pause = |state: &'static str| async move {
        let token = csrf_in(&app.get_html("/admin/models/iris").await);
        let res = app
            .client
            .post(app.url(&format!("/admin/streams/{id}/state")))
            .form(&[("csrf_token", token.as_str()), ("state", state)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 303);
    };
    pause("paused").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    client(&b, &["produce", "in", "--count", "50", "--start", "100"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored(&pool).await, 100, "a paused stream consumes nothing");
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_event where action in ('stream.pause', 'stream.create')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 2);

    // A new version promoted while paused answers the next records.
    let staff = app.token_for("root", true).await;
    let res = app.publish_iris_v2(&staff).await;
    assert!(res.status().is_success());
    let res = app
        .api(
            reqwest::Method::PUT,
            "/api/v1/models/iris/aliases/production",
            &staff,
        )
        .json(&serde_json::json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    pause("running").await;
    wait_stored(&pool, 150, Duration::from_secs(60), || plinth.log_text()).await;
    let v2: i64 = sqlx::query_scalar(
        "select coalesce(sum(p.n), 0)::bigint from prediction p join model_version v on v.id = p.version_id
         where p.source = 'stream' and v.version = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(v2, 50, "the records after the promotion used version 2");
}
