//! Postgres over TLS with the certificate checked: a private cluster of the test's with `ssl=on`,
//! a certificate from a test CA (made with openssl), TCP connections allowed only over TLS, and
//! `plinth migrate` connecting with `sslmode=verify-full` — then refused, with a message that
//! says why, for a CA that did not sign the server's certificate and for a host name the
//! certificate does not hold.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use plinth_store::localdb::{Cluster, Options};
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::free_port;
use crate::helpers::tls::{ca, server_certificate};

/// `plinth migrate` against `url`: its exit status and what it printed.
fn migrate(url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLINTH_DATABASE_URL", url)
        .env("PLINTH_ADMIN_PASSWORD", "a-tls-secret-42")
        .output()
        .expect("plinth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn plinth_connects_over_tls_with_verify_full_and_says_why_it_refuses() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    // The cluster runs as user postgres when the tests run as root: it reads its key here.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let certs = dir.join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).unwrap();
    ca(&certs, "ca");
    ca(&certs, "other-ca");
    server_certificate(&certs, "ca", "DNS:localhost");
    let key = certs.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        let owned = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(owned.success());
    }

    let port = free_port();
    let options = Options {
        configured: None,
        local_server: None,
        data_dir: dir.join("pg"),
        bin_dir: None,
        port: Some(port),
    };
    let cluster = Cluster::start(&options, true).expect("a private cluster");
    cluster.wait_ready().await.expect("it starts");

    // TLS on, and TCP connections only over TLS.
    let mut admin = PgConnection::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    for (setting, value) in [
        ("ssl_cert_file", certs.join("server.pem")),
        ("ssl_key_file", key.clone()),
    ] {
        let sql = format!("alter system set {setting} = '{}'", value.display());
        admin.execute(sql.as_str()).await.unwrap();
    }
    admin.execute("alter system set ssl = on").await.unwrap();
    std::fs::write(
        dir.join("pg/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
    )
    .unwrap();
    admin.execute("select pg_reload_conf()").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ssl: String = sqlx::query_scalar("show ssl")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if ssl == "on" {
            break;
        }
        assert!(Instant::now() < deadline, "ssl stayed {ssl}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ca_file = certs.join("ca.pem");
    let other_ca = certs.join("other-ca.pem");
    let url = |host: &str, mode: &str, root: &Path| {
        format!(
            "postgres://plinth@{host}:{port}/plinth_tls?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };

    // Without TLS the server turns Plinth away: what follows goes over TLS.
    let (ok, said) = migrate(&url("localhost", "disable", &ca_file));
    assert!(!ok, "a plain connection was let in:\n{said}");
    assert!(said.contains("no encryption"), "{said}");

    // verify-full with the CA that signed the certificate, by the name it holds.
    let (ok, said) = migrate(&url("localhost", "verify-full", &ca_file));
    assert!(ok, "{said}");
    assert!(said.contains("migrations applied"), "{said}");
    let mut tls = PgConnection::connect(&url("localhost", "verify-full", &ca_file))
        .await
        .unwrap();
    let encrypted: bool =
        sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(&mut tls)
            .await
            .unwrap();
    assert!(encrypted);
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_name = 'prediction'",
    )
    .fetch_one(&mut tls)
    .await
    .unwrap();
    assert_eq!(tables, 1, "the schema was made over TLS");

    // Another CA: refused, naming the CA file that was trusted.
    let (ok, said) = migrate(&url("localhost", "verify-full", &other_ca));
    assert!(!ok, "{said}");
    assert!(
        said.contains("not signed by a CA Plinth trusts")
            && said.contains(&other_ca.display().to_string()),
        "{said}"
    );

    // A host name the certificate does not hold: refused, naming it.
    let (ok, said) = migrate(&url("127.0.0.1", "verify-full", &ca_file));
    assert!(!ok, "{said}");
    assert!(said.contains("does not name the host 127.0.0.1"), "{said}");

    // verify-ca: with sqlx's rustls the name is checked too (see the deploying guide); the
    // message names the mode that was asked for.
    let (ok, said) = migrate(&url("127.0.0.1", "verify-ca", &ca_file));
    assert!(
        !ok && said.contains("(sslmode=verify-ca checks it)"),
        "{said}"
    );

    drop(admin);
    drop(tls);
    drop(cluster);
}
