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
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

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

    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(crate::config::with_files(|name| std::env::var(name).ok()))
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

/// A private cluster: its directory, its socket, and the server process when this process
/// started it.
pub struct Cluster {
    pub dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The postmaster of a cluster this process joined rather than started.
    joined: Option<u32>,
}

/// What to install, by system, when no server programs are found.
const INSTALL_HELP: &str = "\
Plinth needs PostgreSQL: either a server it can reach, or the server programs (initdb, postgres) \
to run its own.
  Debian, Ubuntu:  sudo apt install postgresql        (programs in /usr/lib/postgresql/*/bin)
  Fedora:          sudo dnf install postgresql-server
  macOS:           brew install postgresql@16
Or point Plinth at an existing server: PLINTH_DATABASE_URL=postgres://user:password@host:5432/plinth
(PLINTH_PG_BIN names the directory of initdb and postgres if they are somewhere else.)";

impl Cluster {
    /// Creates the cluster if it does not exist and starts it, or joins the one already running
    /// in the same directory. `tied` ties the server's life to this process (it stops when the
    /// process dies, even by `kill -9`); the tests' shared cluster is not tied.
    pub fn start(options: &Options, tied: bool) -> anyhow::Result<Cluster> {
        let bin = find_bin(options.bin_dir.as_deref())?;
        let dir = absolute(&options.data_dir)?;
        let parent = dir
            .parent()
            .context("the cluster directory has no parent")?
            .to_path_buf();
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // One process sets the cluster up at a time.
        let lock_path = parent.join(format!("{}.lock", file_name(&dir)));
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let owner = Owner::for_cluster(&dir)?;
        let port = options.port.unwrap_or(5432);
        let socket_dir = socket_dir(&dir, port, &owner)?;
        if !dir.join("PG_VERSION").exists() {
            init(&bin, &dir, &owner)?;
        }
        if let Some(pid) = running_postmaster(&dir) {
            tracing::info!(pid, dir = %dir.display(), "the private cluster is running already; joining it");
            return Ok(Cluster {
                dir,
                socket_dir,
                port,
                child: None,
                joined: Some(pid),
            });
        }
        let log_path = parent.join(format!("{}.log", file_name(&dir)));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let listen = if options.port.is_some() {
            "127.0.0.1"
        } else {
            ""
        };
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&dir)
            .arg("-k")
            .arg(&socket_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: Ctrl-C in the terminal reaches Plinth, which drains its
            // requests and then stops the cluster, rather than both at once.
            .process_group(0);
        owner.apply(&mut command);
        if tied {
            tie_to_parent(&mut command);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.join("postgres").display()))?;
        drop(lock);
        Ok(Cluster {
            dir,
            socket_dir,
            port,
            child: Some(child),
            joined: None,
        })
    }

    /// The URL of `database` in this cluster, through its socket.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://plinth@localhost:{}/{database}?host={}",
            self.port,
            self.socket_dir.display()
        )
    }

    /// The `psql` arguments that reach `database`.
    pub fn psql(&self, database: &str) -> String {
        format!(
            "-h {} -p {} -U plinth {database}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Waits until the server accepts connections (a first start replays nothing and takes a
    /// second; recovery after a crash can take longer).
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let options: PgConnectOptions = self
            .url("postgres")
            .parse::<PgConnectOptions>()?
            .disable_statement_logging();
        loop {
            match options.connect().await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                // A server that was shutting down when we joined it (the one a killed Plinth
                // left) is gone: start again.
                Err(_) if self.joined.is_some_and(|pid| !alive(pid)) => {
                    bail!(Gone);
                }
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    bail!(
                        "the private PostgreSQL cluster in {} did not start within a minute ({e}); its log is {}.log",
                        self.dir.display(),
                        self.dir.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops the server this process started, cleanly (a fast shutdown), and waits for it.
    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        tracing::info!(dir = %self.dir.display(), "the private PostgreSQL cluster stopped");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn file_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "postgres".into(), |n| n.to_string_lossy().into_owned())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// The directory holding `initdb` and `postgres`: `PLINTH_PG_BIN`, `PATH`, then where the
/// packages of Debian, Ubuntu, Fedora and Homebrew put them (the newest version first).
fn find_bin(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = configured {
        if has_both(dir) {
            return Ok(dir.to_path_buf());
        }
        bail!(
            "PLINTH_PG_BIN is {}, which holds no initdb and postgres.\n{INSTALL_HELP}",
            dir.display()
        );
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for pattern in [
        "/usr/lib/postgresql",
        "/usr/local/opt",
        "/opt/homebrew/opt",
        "/usr",
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(pattern)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                match pattern {
                    "/usr/lib/postgresql" => true,
                    "/usr" => name.is_some_and(|n| n.starts_with("pgsql-")),
                    _ => name.is_some_and(|n| n.starts_with("postgresql")),
                }
            })
            .map(|p| p.join("bin"))
            .collect();
        // Newest first: `16` before `15`, `postgresql@17` before `postgresql@16`.
        found.sort_by_key(|p| std::cmp::Reverse(version_of(p)));
        candidates.extend(found);
    }
    candidates
        .into_iter()
        .find(|d| has_both(d))
        .with_context(|| format!("no PostgreSQL server programs were found.\n{INSTALL_HELP}"))
}

/// The first number in a path's components, for ordering versions.
fn version_of(path: &Path) -> u32 {
    path.to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .find_map(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Who runs the cluster: this process's user, or, for root, the `postgres` user.
struct Owner {
    /// `(uid, gid)` to switch to; `None` to stay as we are.
    switch: Option<(u32, u32)>,
}

impl Owner {
    fn for_cluster(dir: &Path) -> anyhow::Result<Owner> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Owner { switch: None });
        }
        let Some((uid, gid)) = user("postgres") else {
            bail!(
                "Plinth runs as root, and PostgreSQL will not run as root. Create an unprivileged \
                 user named postgres for the private cluster (Debian: adduser --system --group \
                 postgres; the postgresql package makes one), run Plinth as an ordinary user, or \
                 set PLINTH_DATABASE_URL to a server."
            );
        };
        // Every directory above the cluster must let that user through: those of its real
        // path, since a link on the way (a checkout whose target/ lives elsewhere) can lead
        // through a directory the user cannot enter.
        let real = real_path(dir);
        let mut at = real.parent();
        while let Some(d) = at {
            if let Ok(meta) = std::fs::metadata(d) {
                let mode = meta.permissions().mode();
                let passable = mode & 0o001 != 0
                    || (meta.uid() == uid && mode & 0o100 != 0)
                    || (meta.gid() == gid && mode & 0o010 != 0);
                if !passable {
                    bail!(
                        "Plinth runs as root and runs its private cluster as user postgres, who \
                         cannot enter {}. Allow it (chmod o+x {}), put the cluster elsewhere with \
                         PLINTH_PG_DATA, or set PLINTH_DATABASE_URL to a server.",
                        d.display(),
                        d.display()
                    );
                }
            }
            at = d.parent();
        }
        Ok(Owner {
            switch: Some((uid, gid)),
        })
    }

    fn apply(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.switch {
            command.uid(uid).gid(gid);
        }
    }

    /// Makes `path` the cluster user's (no-op when we are that user).
    fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.switch {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to user postgres", path.display()))?;
        }
        Ok(())
    }
}

/// `(uid, gid)` of a user by name.
fn user(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam takes a NUL-terminated string and returns a pointer into static storage
    // (or null), read here at once, before any other call could overwrite it.
    unsafe {
        let entry = libc::getpwnam(name.as_ptr());
        if entry.is_null() {
            None
        } else {
            Some(((*entry).pw_uid, (*entry).pw_gid))
        }
    }
}

/// The socket directory: the cluster's own, unless its path is too long for a Unix socket
/// (about 100 bytes), then one under `/tmp` named after the cluster.
fn socket_dir(dir: &Path, port: u16, owner: &Owner) -> anyhow::Result<PathBuf> {
    let socket = dir.join(format!(".s.PGSQL.{port}"));
    if socket.as_os_str().len() < 100 {
        return Ok(dir.to_path_buf());
    }
    let hash = hex::encode(&Sha256::digest(dir.as_os_str().as_encoded_bytes())[..6]);
    let short = PathBuf::from(format!("/tmp/plinth-pg-{hash}"));
    std::fs::create_dir_all(&short)?;
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o700))?;
    owner.own(&short)?;
    Ok(short)
}

/// `initdb`: trust authentication (the socket is inside the cluster's directory, which only
/// its owner can enter), UTF-8, user `plinth`.
fn init(bin: &Path, dir: &Path, owner: &Owner) -> anyhow::Result<()> {
    tracing::info!(dir = %dir.display(), "creating Plinth's private PostgreSQL cluster");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    owner.own(dir)?;
    let mut command = Command::new(bin.join("initdb"));
    command
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            "plinth",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ])
        .stdin(Stdio::null());
    owner.apply(&mut command);
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", bin.join("initdb").display()))?;
    if !out.status.success() {
        // Leave no half-made cluster behind: the next start tries again from nothing.
        let _ = std::fs::remove_dir_all(dir);
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The postmaster running this cluster, from `postmaster.pid`. A lock file whose process is gone
/// (or is not a postgres) is stale, left by a run that was killed: it is removed here.
fn running_postmaster(dir: &Path) -> Option<u32> {
    let lock = dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&lock).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let alive = alive(pid)
        && (cmdline.is_empty() || String::from_utf8_lossy(&cmdline).contains("postgres"));
    if alive {
        return Some(pid);
    }
    tracing::warn!(pid, lock = %lock.display(), "removing the stale lock of a cluster that was not stopped");
    let _ = std::fs::remove_file(&lock);
    None
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: sending a signal to a process id has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// On Linux, the server gets SIGINT (a fast, clean shutdown) when the thread that started it
/// dies, so a `kill -9` of Plinth leaves no cluster running. Elsewhere the next start finds
/// the server still running and joins it.
#[cfg(target_os = "linux")]
fn tie_to_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe, as a pre_exec closure requires.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie_to_parent(_command: &mut Command) {}

/// For test binaries: sets `DATABASE_URL` (which `#[sqlx::test]` reads) when it is unset, to
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
mod tests {
    use super::*;

    #[test]
    fn the_configured_url_comes_first() {
        let options = Options::from_lookup(|name| match name {
            "DATABASE_URL" => Some("postgres://a@b/c".into()),
            "PLINTH_LOCAL_POSTGRES" => Some("off".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            options.configured,
            Some(("DATABASE_URL", "postgres://a@b/c".into()))
        );
        assert_eq!(options.local_server, None);
        let options = Options::from_lookup(|name| match name {
            "DATABASE_URL" => Some("postgres://a@b/c".into()),
            "PLINTH_DATABASE_URL" => Some("postgres://d@e/f".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(options.configured.unwrap().0, "PLINTH_DATABASE_URL");
        assert_eq!(options.local_server.as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(options.data_dir, PathBuf::from("data/postgres"));
        assert!(Options::from_lookup(|n| (n == "PLINTH_PG_PORT").then(|| "x".into())).is_err());
    }

    #[test]
    fn missing_programs_say_what_to_install() {
        let err = find_bin(Some(Path::new("/nonexistent")))
            .unwrap_err()
            .to_string();
        for what in [
            "apt install postgresql",
            "dnf install",
            "brew install",
            "PLINTH_DATABASE_URL",
        ] {
            assert!(err.contains(what), "{err}");
        }
    }

    #[test]
    fn versions_order_the_candidates() {
        assert_eq!(version_of(Path::new("/usr/lib/postgresql/15/bin")), 15);
        assert_eq!(
            version_of(Path::new("/opt/homebrew/opt/postgresql@17/bin")),
            17
        );
        assert_eq!(version_of(Path::new("/usr/bin")), 0);
    }

    #[test]
    fn the_tests_cluster_leaves_a_checkout_user_postgres_cannot_enter() {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let wanted = home.path().join("target/test-postgres");
        let chosen = test_cluster_dir(&wanted);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(chosen.starts_with(std::env::temp_dir()), "{chosen:?}");
            assert!(chosen.to_string_lossy().contains("plinth-test-postgres-"));
            assert!(Owner::for_cluster(&chosen).is_ok());
        } else {
            assert_eq!(chosen, wanted);
        }
    }

    /// A checkout whose target/ is a link into a directory user postgres cannot enter (as
    /// `.ci/run` keeps it in ~/.cache) is no place for the cluster either.
    #[test]
    fn the_tests_cluster_leaves_a_link_into_a_directory_user_postgres_cannot_enter() {
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(home.path().join("target")).unwrap();
        let checkout = tempfile::tempdir().unwrap();
        std::fs::set_permissions(checkout.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(home.path().join("target"), checkout.path().join("target"))
            .unwrap();
        let wanted = checkout.path().join("target/test-postgres");
        assert_eq!(
            real_path(&wanted),
            std::fs::canonicalize(home.path())
                .unwrap()
                .join("target/test-postgres")
        );
        let chosen = test_cluster_dir(&wanted);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(chosen.starts_with(std::env::temp_dir()), "{chosen:?}");
        } else {
            assert_eq!(chosen, wanted);
        }
    }

    #[test]
    fn a_stale_lock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postmaster.pid"), "999999999\n").unwrap();
        assert_eq!(running_postmaster(dir.path()), None);
        assert!(!dir.path().join("postmaster.pid").exists());
    }
}
