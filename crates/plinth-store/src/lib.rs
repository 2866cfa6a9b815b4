//! Plinth's store: all SQL (one module per table family), the migrations compiled in, the
//! values the database keeps with rules of their own (`domain`), and the private PostgreSQL
//! cluster a zero-config start runs (`localdb`). It knows nothing of HTTP or of the engine.

pub mod audit;
pub mod automation;
pub mod batch;
pub mod comparisons;
pub mod dashboard;
pub mod datasets;
pub mod domain;
pub mod drift;
pub mod feedback;
pub mod jobs;
pub mod localdb;
pub mod login_failures;
pub mod models;
pub mod predictions;
pub mod secrets;
pub mod sessions;
pub mod shadow;
pub mod streams;
pub mod tokens;
pub mod traffic;
pub mod users;
pub mod webhooks;

use std::collections::HashSet;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres};

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Options shared by every pool: a short acquire timeout, so that with the database gone
/// requests fail quickly instead of hanging. Connections are not pinged before each use (that
/// would be a round trip per query); a broken one fails its query, is dropped, and the next
/// query gets a new one.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(2))
        .test_before_acquire(false)
}

/// The prediction log writer's own connections: it runs one statement at a time, and with
/// Postgres gone (a restart, a failover) it gives up on a connection after half a second, so the
/// requests waiting on it get a quick 503 rather than hanging.
pub fn log_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .test_before_acquire(false)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// The database a pool talks to: names the in-process caches' entries (sessions, prediction
/// names), since tests run many databases in one process.
pub fn database_of(pool: &PgPool) -> String {
    pool.connect_options()
        .get_database()
        .unwrap_or_default()
        .to_string()
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn ensure_database(url: &str) -> sqlx::Result<()> {
    if !Postgres::database_exists(url).await? {
        tracing::info!("creating the database");
        Postgres::create_database(url).await?;
    }
    Ok(())
}

/// The connection options of `url`. TLS follows the URL's `sslmode` (default `prefer`: used
/// when the server offers it), except to a server on this machine (a loopback address or a
/// socket) when the URL does not ask, where it would only cost: Debian's Postgres offers TLS by
/// default, and encrypting the prediction log's traffic over loopback cut Plinth's 1-row
/// throughput by about a tenth (measured, README "Performance").
pub fn connect_options(url: &str) -> sqlx::Result<PgConnectOptions> {
    name_tls_provider();
    let options: PgConnectOptions = url.parse()?;
    let host = options.get_host();
    let local = host.starts_with('/')
        || host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let asked = url.contains("sslmode=");
    Ok(if local && !asked {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// Names ring as the process's rustls provider: sqlx's verify-ca path asks rustls for one, and
/// with both of rustls's back ends linked (ring from sqlx, aws-lc-rs from the server's HTTP
/// client) there is none unless it is named. A second call is a no-op.
fn name_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects, creating the database first when needed; a refusal says what it means.
pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    name_tls_provider();
    let connected = async {
        ensure_database(url).await?;
        pool_options().connect_with(connect_options(url)?).await
    };
    connected.await.map_err(|e| refused(url, e))
}

/// Why a connection to `url` failed, in words an operator can act on: for TLS, which check
/// failed (the CA, the host name) and which settings of the URL decide it.
pub fn refused(url: &str, e: sqlx::Error) -> anyhow::Error {
    let Ok(options) = url.parse::<PgConnectOptions>() else {
        return anyhow::anyhow!("cannot connect to Postgres: {e}");
    };
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let text = e.to_string();
    // rustls's refusals come back as TLS errors or, mid-handshake, as I/O errors naming them.
    let tls = matches!(e, sqlx::Error::Tls(_)) || text.contains("certificate");
    let why = if tls {
        let query = |key: &str| {
            url.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
        };
        let ca = query("sslrootcert").map_or_else(
            || "the system's roots".to_string(),
            |p| format!("sslrootcert ({p})"),
        );
        if text.contains("UnknownIssuer") || text.contains("BadSignature") {
            format!(
                "the server's TLS certificate is not signed by a CA Plinth trusts: it trusts {ca}. \
                 Point sslrootcert at the CA that signed the server's certificate"
            )
        } else if text.contains("NotValidForName") || text.contains("not valid for name") {
            let mode = query("sslmode").unwrap_or_else(|| "verify-full".into());
            format!(
                "the server's TLS certificate does not name the host {} (sslmode={mode} checks \
                 it): connect by a name the certificate holds, or fix the certificate",
                options.get_host()
            )
        } else if text.contains("Expired") {
            "the server's TLS certificate has expired".to_string()
        } else {
            "the TLS handshake failed".to_string()
        }
    } else if text.contains("does not support TLS") || text.contains("server does not support SSL")
    {
        "the URL requires TLS (sslmode) and the server does not offer it".to_string()
    } else {
        return anyhow::anyhow!("cannot connect to Postgres at {server}: {text}");
    };
    anyhow::anyhow!("cannot connect to Postgres at {server}: {why} ({text})")
}

/// Migrations that were edited after they landed, by version: the SHA-384 of the edited file.
/// A database that ran the edited copy has its recorded checksum set back to the file's, so it
/// starts instead of failing the check; the migrations after it tolerate either schema.
/// Landed migrations are never edited again (README, "House style"); this list does not grow.
const EDITED_MIGRATIONS: &[(i64, &str)] = &[(
    20261126000008,
    "b9e87ca3f9af22a39fd5991746524621bf71abcb075af9f7560d28db9ef62d2ac05ec5dbb49c089e74ab0ece7d65d1c1",
)];

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    reconcile_edited_migrations(pool).await?;
    MIGRATOR.run(pool).await
}

async fn reconcile_edited_migrations(pool: &PgPool) -> sqlx::Result<()> {
    for (version, edited) in EDITED_MIGRATIONS {
        let Some(migration) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        let edited = hex::decode(edited).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let fixed = sqlx::query(
            "update _sqlx_migrations set checksum = $1 where version = $2 and checksum = $3",
        )
        .bind(migration.checksum.as_ref())
        .bind(version)
        .bind(edited)
        .execute(pool)
        .await;
        match fixed {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::info!(
                    version,
                    "recorded checksum of an edited migration reconciled"
                )
            }
            Ok(_) => {}
            // No migrations table yet: a new database, nothing to reconcile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// True when every migration compiled into this binary has been applied successfully.
pub async fn migrations_current(pool: &PgPool) -> sqlx::Result<bool> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // No migrations table: nothing has been applied.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e),
        };
    let applied: HashSet<i64> = applied.into_iter().collect();
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

/// The database answers a trivial query.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_left_off_only_for_this_machine_when_the_url_does_not_ask() {
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@localhost/db"), "Disable");
        assert_eq!(mode("postgres://u@[::1]:5432/db"), "Disable");
        assert_eq!(
            mode("postgres://u@localhost/db?host=/run/postgresql"),
            "Disable"
        );
        assert_eq!(mode("postgres://u@db.example.com/db"), "Prefer");
        assert_eq!(mode("postgres://u@127.0.0.1/db?sslmode=require"), "Require");
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_migrated_database_is_current(pool: PgPool) -> sqlx::Result<()> {
        ping(&pool).await?;
        assert!(migrations_current(&pool).await?);
        Ok(())
    }

    #[sqlx::test(migrations = false)]
    async fn an_empty_database_is_not_current(pool: PgPool) -> sqlx::Result<()> {
        assert!(!migrations_current(&pool).await?);
        Ok(())
    }
}

/// `#[sqlx::test]` reads `DATABASE_URL`: when it is unset, the local server or the private
/// cluster the run's test processes share (the workspace's `target/test-postgres`).
#[cfg(test)]
#[ctor::ctor(unsafe)]
fn test_database() {
    localdb::for_tests(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/test-postgres"
    )));
}
