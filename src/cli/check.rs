//! plinth check and plinth healthcheck: the configuration, the database, the migrations and
//! every version's artifacts checked, each failure with its exit status.

use std::process::ExitCode;

use super::{EXIT_ARTIFACTS, EXIT_DATABASE, EXIT_MIGRATIONS};
use crate::config::Settings;
use plinth_store as db;
use plinth_store::localdb;

pub(super) async fn check(settings: &Settings, database: &localdb::Database) -> ExitCode {
    println!("configuration: ok (listening address {})", settings.addr);
    println!(
        "database: {} ({})",
        redacted(&database.url),
        database.describe()
    );
    let connected = match db::connect_options(&settings.database_url) {
        Ok(options) => db::pool_options().connect_with(options).await,
        Err(e) => Err(e),
    };
    let pool = match connected {
        Ok(pool) => pool,
        // The server answers but the database is not made yet: a first `plinth` or
        // `plinth migrate` creates it.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            println!("database: not created yet (`plinth migrate` or the first start creates it)");
            return ExitCode::from(EXIT_MIGRATIONS);
        }
        Err(e) => {
            println!("database: unreachable ({e})");
            return ExitCode::from(EXIT_DATABASE);
        }
    };
    if let Err(e) = db::ping(&pool).await {
        println!("database: unreachable ({e})");
        return ExitCode::from(EXIT_DATABASE);
    }
    println!("database: ok");
    match db::migrations_current(&pool).await {
        Ok(true) => {
            println!("migrations: ok");
            check_artifacts(settings, &pool).await
        }
        Ok(false) => {
            println!("migrations: pending (run `plinth migrate`)");
            ExitCode::from(EXIT_MIGRATIONS)
        }
        Err(e) => {
            println!("database: unreachable ({e})");
            ExitCode::from(EXIT_DATABASE)
        }
    }
}

/// Every version's model file and reference data: present and intact in the artifact store, or
/// restored from the model repository.
pub(super) async fn check_artifacts(settings: &Settings, pool: &sqlx::PgPool) -> ExitCode {
    let versions = match db::models::all_versions(pool, false).await {
        Ok(v) => v,
        Err(e) => {
            println!("database: unreachable ({e})");
            return ExitCode::from(EXIT_DATABASE);
        }
    };
    let registry = match crate::startup::registry_for(pool, settings) {
        Ok(registry) => registry,
        Err(e) => {
            println!("artifact store: unusable ({e})");
            return ExitCode::from(EXIT_ARTIFACTS);
        }
    };
    match registry.artifacts().check().await {
        Ok(store) => println!("artifact store: ok ({store})"),
        Err(e) => {
            println!("artifact store: unreachable ({e})");
            return ExitCode::from(EXIT_ARTIFACTS);
        }
    }
    let mut broken = 0;
    let mut seen = std::collections::HashSet::new();
    for v in &versions {
        if !seen.insert(v.version.id) {
            continue;
        }
        if let Err(reason) = registry.verify_artifacts(&v.version).await {
            println!(
                "artifacts: {} version {}: {reason}",
                v.model, v.version.version
            );
            broken += 1;
        }
    }
    if broken > 0 {
        println!("artifacts: {broken} version(s) cannot be served");
        return ExitCode::from(EXIT_ARTIFACTS);
    }
    println!("artifacts: ok ({} version(s))", seen.len());
    ExitCode::SUCCESS
}

/// `GET /healthz` over a plain socket to the configured address (an unspecified address such
/// as `0.0.0.0` means this machine).
pub(super) fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(3);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).to_string())
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => {
            println!("healthy ({target})");
            ExitCode::SUCCESS
        }
        Ok(text) => {
            println!(
                "unhealthy ({target}): {}",
                text.lines().next().unwrap_or("")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            println!("unreachable ({target}): {e}");
            ExitCode::from(1)
        }
    }
}

/// A database URL with its password, if any, replaced by `***`.
pub(super) fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
