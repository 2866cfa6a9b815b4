//! Kafka over TLS and SASL, as managed services ask: a real broker (tansu) that requires SASL
//! SCRAM, reached only through a real TLS-terminating proxy (nginx's stream module) holding a
//! certificate from a test CA. tansu checks SCRAM credentials but does not speak TLS itself;
//! nginx in front of a broker is how TLS is added to one that does not. Plinth scores a stream
//! through it, then is refused — with the reason on the stream's admin page and in its log —
//! for a wrong password and for a CA that did not sign the broker's certificate.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::tls::{ca, server_certificate};
use crate::helpers::{free_port, succeed};
use crate::instances::{Instance, ADMIN_PASSWORD};
use crate::streams::{
    add_stream, client_with, spawn_tansu, stored, tansu_binary, wait_listening, wait_stored,
};

const USER: &str = "plinth-stream";
const PASSWORD: &str = "scram-secret-7";

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// tansu on `port`, keeping its log, users and groups in SQLite under `dir`, advertising
/// `advertised` to clients.
async fn tansu(dir: &Path, port: u16, advertised: &str, authentication: bool) -> Running {
    let log = dir.join("tansu.log");
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(tansu_binary());
    command
        .current_dir(dir)
        .args(["broker", "--listener-url", &listener])
        .args(["--advertised-listener-url", advertised])
        .args(["--storage-engine", "sqlite://tansu.db", "--silent"])
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    if authentication {
        command.arg("--authentication");
    }
    let child = spawn_tansu(&mut command, &log);
    let running = Running(child);
    wait_listening(port, "tansu", &log).await;
    running
}

/// nginx's stream module terminating TLS on `port` with `server.pem` and passing the bytes to
/// the broker on `broker`.
async fn tls_proxy(dir: &Path, port: u16, broker: u16) -> Running {
    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
    let load = if module.exists() {
        format!("load_module {};", module.display())
    } else {
        String::new()
    };
    let d = dir.display();
    // Where the loopback has an IPv6 address, `localhost` may resolve to it first.
    let v6 = std::fs::read_to_string("/proc/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("00000000000000000000000000000001"));
    let listen_v6 = if v6 {
        format!("listen [::1]:{port} ssl;")
    } else {
        String::new()
    };
    // Workers as root when the tests run as root, reading nothing but the certificate the
    // master loaded (nginx ignores `user` when it is not started as root).
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "{load}
            user root root;
            worker_processes 1;
            pid {d}/nginx.pid;
            error_log {d}/nginx.log info;
            events {{ worker_connections 256; }}
            stream {{
                server {{
                    listen 127.0.0.1:{port} ssl;
                    {listen_v6}
                    ssl_certificate {d}/server.pem;
                    ssl_certificate_key {d}/server.key;
                    proxy_pass 127.0.0.1:{broker};
                }}
            }}"
        ),
    )
    .unwrap();
    let nginx: PathBuf = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "nginx".into());
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("nginx cannot run ({e}): apt-get install nginx libnginx-mod-stream (scripts/test does)")
        });
    let running = Running(child);
    wait_listening(port, "nginx", &dir.join("nginx.log")).await;
    running
}

/// The stream's error as the admin page shows it, once one is there.
async fn page_error(plinth: &Instance, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let page = plinth.app.get_html("/admin/models/iris").await;
        if let Some(at) = page.find("class=\"stream-error\"") {
            let row = &page[at..];
            return row[..row.find("</tr>").unwrap_or(row.len())].to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no error on the admin page:\n{}",
            plinth.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[sqlx::test]
#[ignore = "needs tansu (with libsql), nginx with its stream module and kafka-python (scripts/test installs them)"]
async fn a_stream_reads_a_broker_over_tls_and_sasl_and_says_why_it_is_refused(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    ca(dir, "ca");
    ca(dir, "other-ca");
    server_certificate(dir, "ca", "DNS:localhost");
    let (broker_port, tls_port) = (free_port(), free_port());
    let secure = format!("localhost:{tls_port}");

    // The user and the topics made on the broker while it still takes anyone, then the broker
    // started again asking for SCRAM, and advertising only the TLS address.
    let plain = format!("127.0.0.1:{broker_port}");
    let broker = tansu(dir, broker_port, &format!("tcp://{plain}"), false).await;
    succeed(
        Command::new(tansu_binary())
            .args(["user", "create", "--broker", &format!("tcp://{plain}")])
            .args([USER, PASSWORD, "--mechanism", "scram256"]),
        "tansu user create",
    );
    client_with(
        &plain,
        &Value::Null,
        &["create", "in", "out", "in.dead", "--partitions", "1"],
    );
    drop(broker);
    let _broker = tansu(dir, broker_port, &format!("tcp://{secure}"), true).await;
    let _proxy = tls_proxy(dir, tls_port, broker_port).await;
    let ca_file = dir.join("ca.pem").display().to_string();
    let security = json!({
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": ca_file,
    });

    // Plinth with the password in a file, as a secret is mounted.
    let password_file = dir.join("kafka-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let env = |password: &Path, ca: &str| {
        vec![
            ("PLINTH_MODELS", "models".to_string()),
            ("PLINTH_KAFKA_BROKERS", secure.clone()),
            ("PLINTH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256".to_string()),
            ("PLINTH_KAFKA_SASL_USERNAME", USER.to_string()),
            (
                "PLINTH_KAFKA_SASL_PASSWORD_FILE",
                password.display().to_string(),
            ),
            ("PLINTH_KAFKA_CA_FILE", ca.to_string()),
            ("PLINTH_LOG", "info".to_string()),
        ]
    };
    let mut plinth = Instance::start(&pool, dir, &env(&password_file, &ca_file)).await;
    add_stream(&plinth.app, "in", "out", "in.dead").await;
    client_with(&secure, &security, &["produce", "in", "--count", "200"]);
    wait_stored(&pool, 200, Duration::from_secs(90), || plinth.log_text()).await;
    let results = client_with(
        &secure,
        &security,
        &["consume", "out", "--count", "200", "--timeout", "60"],
    );
    assert_eq!(results["keys"].as_i64(), Some(200), "{results}");
    let log = plinth.log_text();
    assert!(
        log.contains("sasl.password=***") && !log.contains(PASSWORD),
        "the settings are logged without the password:\n{log}"
    );
    let page = plinth.app.get_html("/admin/models/iris").await;
    assert!(
        !page.contains("stream-error"),
        "no error shown while it flows"
    );
    plinth.kill();

    // A wrong password: refused, and said so where an operator looks.
    let wrong = dir.join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let refused = Instance::start(&pool, dir, &env(&wrong, &ca_file)).await;
    assert_eq!(
        refused.app.login("admin", ADMIN_PASSWORD).await.status(),
        303
    );
    let shown = page_error(&refused, Duration::from_secs(60)).await;
    assert!(
        shown.contains("refused the SASL credentials")
            && shown.contains("PLINTH_KAFKA_SASL_PASSWORD"),
        "{shown}"
    );
    assert!(!shown.contains("not-the-password"), "{shown}");
    assert!(
        refused.log_text().contains("refused the SASL credentials"),
        "{}",
        refused.log_text()
    );
    let failing = refused.app.get_html("/admin").await;
    assert!(
        failing.contains(">failing</span>"),
        "the dashboard marks it"
    );
    drop(refused);

    // A CA that did not sign the broker's certificate: not trusted, and said so.
    let other = dir.join("other-ca.pem").display().to_string();
    let untrusting = Instance::start(&pool, dir, &env(&password_file, &other)).await;
    assert_eq!(
        untrusting.app.login("admin", ADMIN_PASSWORD).await.status(),
        303
    );
    // The wrong password's message stays until this instance has its own to show.
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown = page_error(&untrusting, Duration::from_secs(60)).await;
        if shown.contains("not trusted") || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        shown.contains("certificate is not trusted") && shown.contains("PLINTH_KAFKA_CA_FILE"),
        "{shown}"
    );
    assert!(
        untrusting.log_text().contains("not trusted"),
        "{}",
        untrusting.log_text()
    );
    drop(untrusting);

    // The right settings again: the records sent meanwhile flow, and the error is cleared.
    client_with(
        &secure,
        &security,
        &["produce", "in", "--count", "50", "--start", "200"],
    );
    plinth.restart().await;
    wait_stored(&pool, 250, Duration::from_secs(90), || plinth.log_text()).await;
    assert_eq!(stored(&pool).await, 250, "each record stored once");
    let error: Option<String> = sqlx::query_scalar("select last_error from stream")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(error, None);
}
