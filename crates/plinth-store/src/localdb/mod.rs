//! Which Postgres Plinth uses, and the private cluster it runs itself when none is configured.
//!
//! In order: the URL in `PLINTH_DATABASE_URL` (or `DATABASE_URL`); a server on `127.0.0.1:5432`
//! that lets user `postgres` in (`PLINTH_LOCAL_POSTGRES` names another address, `off` skips
//! it); otherwise a private cluster in `data/postgres` (`PLINTH_PG_DATA`), made with the server
//! programs found on the machine, reached through a Unix socket inside it with trust
//! authentication and no TCP port (`PLINTH_PG_PORT` opens one on 127.0.0.1). Plinth starts the
//! cluster as its child and stops it when it exits; a cluster left by a run that was killed is
//! recovered. Running as root, the cluster runs as the `postgres` user (PostgreSQL refuses root).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::ConnectOptions;

mod cluster;

pub use cluster::Cluster;
use cluster::{absolute, alive, running_postmaster, signal, Owner};

/// Where the database came from, as `plinth check` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Named by this environment variable.
    Configured(&'static str),
    /// A server already listening on the local address, letting user `postgres` in.
    LocalServer(String),
    /// Plinth's own cluster in this directory.
    PrivateCluster(PathBuf),
}

/// The database Plinth talks to, and the cluster it runs, if any.
pub struct Database {
    pub url: String,
    pub source: Source,
    cluster: Option<Cluster>,
}

impl Database {
    /// Why this database, in a sentence.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Configured(var) => format!("configured by {var}"),
            Source::LocalServer(addr) => {
                format!("no URL configured; the server on {addr} lets user postgres in")
            }
            Source::PrivateCluster(dir) => format!(
                "no URL configured and no local server accepts Plinth; Plinth's private cluster in {}",
                dir.display()
            ),
        }
    }

    /// Stops the private cluster if this process started it; a no-op otherwise.
    pub async fn stop(mut self) {
        if let Some(cluster) = self.cluster.take() {
            let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
        }
    }
}

/// The settings this module reads, from the environment through `lookup`.
#[derive(Clone, Debug)]
pub struct Options {
    pub configured: Option<(&'static str, String)>,
    /// `None`: do not look for a local server.
    pub local_server: Option<String>,
    pub data_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub port: Option<u16>,
}

impl Options {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let configured = get("PLINTH_DATABASE_URL")
            .map(|url| ("PLINTH_DATABASE_URL", url))
            .or_else(|| get("DATABASE_URL").map(|url| ("DATABASE_URL", url)));
        let local_server = match get("PLINTH_LOCAL_POSTGRES") {
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v),
            None => Some("127.0.0.1:5432".to_string()),
        };
        let port =
            match get("PLINTH_PG_PORT") {
                None => None,
                Some(v) => Some(v.parse::<u16>().ok().filter(|p| *p > 0).with_context(|| {
                    format!("PLINTH_PG_PORT: expected a port number, not {v:?}")
                })?),
            };
        Ok(Options {
            configured,
            local_server,
            data_dir: PathBuf::from(
                get("PLINTH_PG_DATA").unwrap_or_else(|| "data/postgres".into()),
            ),
            bin_dir: get("PLINTH_PG_BIN").map(PathBuf::from),
            port,
        })
    }
}

/// Finds the database: configured, local, or a private cluster started now. `database` names the
/// database Plinth uses on a local server or in the cluster.
pub async fn resolve(options: &Options, database: &str) -> anyhow::Result<Database> {
    if let Some((var, url)) = &options.configured {
        return Ok(Database {
            url: url.clone(),
            source: Source::Configured(var),
            cluster: None,
        });
    }
    if let Some(addr) = &options.local_server {
        if accepts_postgres(addr).await {
            return Ok(Database {
                url: format!("postgres://postgres@{addr}/{database}"),
                source: Source::LocalServer(addr.clone()),
                cluster: None,
            });
        }
    }
    let cluster = start_ready(options, true).await?;
    let url = cluster.url(database);
    tracing::info!(
        dir = %cluster.dir.display(),
        %url,
        "no database configured and none on {}: using Plinth's private PostgreSQL cluster; reach it with: psql {}",
        options.local_server.as_deref().unwrap_or("the local address"),
        cluster.psql(database),
    );
    Ok(Database {
        url,
        source: Source::PrivateCluster(cluster.dir.clone()),
        cluster: Some(cluster),
    })
}

/// The joined server went away while we waited for it.
#[derive(Debug, thiserror::Error)]
#[error("the cluster's server stopped while Plinth was joining it")]
struct Gone;

/// Starts (or joins) the cluster and waits until it answers; starts again if a joined server
/// was on its way out.
async fn start_ready(options: &Options, tied: bool) -> anyhow::Result<Cluster> {
    for _ in 0..3 {
        let cluster = Cluster::start(options, tied)?;
        match cluster.wait_ready().await {
            Ok(()) => return Ok(cluster),
            Err(e) if e.is::<Gone>() => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("the private PostgreSQL cluster kept stopping while Plinth started it")
}

/// Whether a server at `addr` answers and lets user `postgres` in.
async fn accepts_postgres(addr: &str) -> bool {
    let Ok(options) = format!("postgres://postgres@{addr}/postgres").parse::<PgConnectOptions>()
    else {
        return false;
    };
    let options = options.disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options);
    match tokio::time::timeout(Duration::from_secs(3), pool).await {
        Ok(Ok(pool)) => {
            pool.close().await;
            true
        }
        _ => false,
    }
}

/// For test binaries: sets `DATABASE_URL` (which `#[sqlx::test(migrator = "crate::MIGRATOR")]` reads) when it is unset, to
/// the local server if one lets user `postgres` in, otherwise to a private cluster in `dir`
/// shared by every test process of the run. The last test process to exit stops it.
pub fn for_tests(dir: &Path) {
    if std::env::var_os("DATABASE_URL").is_some() {
        return;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => panic!("cannot start a runtime to find the test database: {e}"),
    };
    let url = runtime.block_on(async {
        if accepts_postgres("127.0.0.1:5432").await {
            return "postgres://postgres@127.0.0.1:5432/postgres".to_string();
        }
        let dir = &test_cluster_dir(dir);
        let options = Options {
            configured: None,
            local_server: None,
            data_dir: dir.to_path_buf(),
            bin_dir: std::env::var_os("PLINTH_PG_BIN").map(PathBuf::from),
            port: None,
        };
        let users = users_lock(dir);
        let mut cluster = match start_ready(&options, false).await {
            Ok(c) => c,
            Err(e) => panic!("the tests need PostgreSQL: {e:#}"),
        };
        // The server outlives this process if others use it; the last one out stops it.
        let _ = cluster.child.take();
        TEST_CLUSTER.get_or_init(|| (dir.to_path_buf(), users));
        // SAFETY: registering a plain `extern "C" fn` with atexit has no preconditions.
        unsafe {
            libc::atexit(stop_test_cluster);
        }
        cluster.url("postgres")
    });
    std::env::set_var("DATABASE_URL", url);
}

/// `dir`, unless run as root from a checkout user `postgres` cannot enter (a home directory):
/// then the same cluster under the system's temporary directory, named after `dir`.
/// `dir` with its links resolved, as far as it exists (the rest appended as given).
fn real_path(dir: &Path) -> PathBuf {
    let mut existing = dir;
    let mut rest = Vec::new();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(existing) {
            real.extend(rest.iter().rev());
            return real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return dir.to_path_buf(),
        }
    }
}

fn test_cluster_dir(dir: &Path) -> PathBuf {
    let dir = absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if Owner::for_cluster(&dir).is_ok() {
        return dir;
    }
    let hash = hex::encode(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..6]);
    std::env::temp_dir().join(format!("plinth-test-postgres-{hash}"))
}

static TEST_CLUSTER: std::sync::OnceLock<(PathBuf, File)> = std::sync::OnceLock::new();

/// A shared lock held for the life of each test process using the cluster.
fn users_lock(dir: &Path) -> File {
    let path = absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .with_extension("users");
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => panic!("cannot create {}: {e}", path.display()),
    };
    if let Err(e) = file.lock_shared() {
        panic!("cannot lock {}: {e}", path.display());
    }
    file
}

extern "C" fn stop_test_cluster() {
    let Some((dir, users)) = TEST_CLUSTER.get() else {
        return;
    };
    // Only the last process holding the shared lock gets it exclusively.
    if users.unlock().is_err() {
        return;
    }
    if users.try_lock().is_err() {
        return;
    }
    let Ok(dir) = absolute(dir) else { return };
    let Some(pid) = running_postmaster(&dir) else {
        return;
    };
    signal(pid, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests;
