//! A private PostgreSQL cluster: found server programs, initdb, started as an unprivileged
//! owner when run as root, tied to this process, stopped when dropped.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{real_path, Gone, Options};

/// A private cluster: its directory, its socket, and the server process when this process
/// started it.
pub struct Cluster {
    pub dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) port: u16,
    pub(super) child: Option<Child>,
    /// The postmaster of a cluster this process joined rather than started.
    pub(super) joined: Option<u32>,
}

/// What to install, by system, when no server programs are found.
pub(super) const INSTALL_HELP: &str = "\
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
    pub(super) fn shut_down(&mut self) {
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

pub(super) fn file_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "postgres".into(), |n| n.to_string_lossy().into_owned())
}

pub(super) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// The directory holding `initdb` and `postgres`: `PLINTH_PG_BIN`, `PATH`, then where the
/// packages of Debian, Ubuntu, Fedora and Homebrew put them (the newest version first).
pub(super) fn find_bin(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
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
pub(super) fn version_of(path: &Path) -> u32 {
    path.to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .find_map(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Who runs the cluster: this process's user, or, for root, the `postgres` user.
pub(super) struct Owner {
    /// `(uid, gid)` to switch to; `None` to stay as we are.
    pub(super) switch: Option<(u32, u32)>,
}

impl Owner {
    pub(super) fn for_cluster(dir: &Path) -> anyhow::Result<Owner> {
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

    pub(super) fn apply(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.switch {
            command.uid(uid).gid(gid);
        }
    }

    /// Makes `path` the cluster user's (no-op when we are that user).
    pub(super) fn own(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.switch {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("cannot give {} to user postgres", path.display()))?;
        }
        Ok(())
    }
}

/// `(uid, gid)` of a user by name.
pub(super) fn user(name: &str) -> Option<(u32, u32)> {
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
pub(super) fn socket_dir(dir: &Path, port: u16, owner: &Owner) -> anyhow::Result<PathBuf> {
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
pub(super) fn init(bin: &Path, dir: &Path, owner: &Owner) -> anyhow::Result<()> {
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
pub(super) fn running_postmaster(dir: &Path) -> Option<u32> {
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

pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
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
pub(super) fn tie_to_parent(command: &mut Command) {
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
pub(super) fn tie_to_parent(_command: &mut Command) {}
