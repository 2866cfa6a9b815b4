//! The management commands, in the manner of Django's `manage.py`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::{password, Password};
use crate::config::Settings;
use crate::db;
use crate::domain::Username;
use crate::localdb;
use crate::registry::Imported;
use crate::startup::{bootstrap_admin, Application};

#[derive(Parser, Debug)]
#[command(
    name = "plinth",
    version,
    about = "Serve ONNX models to people and programs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the web server (the default): creates the database if missing, migrates, serves.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create a staff account. The password comes from PLINTH_SUPERUSER_PASSWORD or stdin.
    Createsuperuser {
        #[arg(long)]
        username: String,
    },
    /// Check the configuration, the database and the migrations. Exit status: 0 all good,
    /// 2 configuration invalid, 3 database unreachable, 4 migrations pending.
    Check,
    /// Create an API token for a user and print its secret (shown only this once).
    Createtoken {
        #[arg(long)]
        username: String,
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Ask the running server's /healthz on this machine (a container's HEALTHCHECK, which
    /// has no curl): exit status 0 when it answers 200, 1 otherwise. Needs no database.
    Healthcheck,
    /// Score a CSV or Parquet file with a model, the batch jobs' code without a server: MODEL
    /// is a model directory (`model.onnx` with its `card.toml`) or an `.onnx` file, which needs
    /// no database, or the name of a model in the registry. Results (the input's columns, then
    /// the prediction) go to OUTPUT (`.parquet` for Parquet), or as CSV to standard output.
    /// Nothing is stored. Exit status 1 when the error budget is spent.
    Score {
        model: String,
        input: std::path::PathBuf,
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
        /// A registry model's version (default: production).
        #[arg(long)]
        version: Option<i32>,
        /// Refused rows tolerated before stopping.
        #[arg(long, default_value_t = 1000)]
        max_errors: u64,
        /// Threads scoring chunks (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Add each feature's contribution (exact SHAP values): an `explanation_base` column and
        /// a `contribution_<feature>` column a feature. Needs the reference data: the model
        /// directory's `reference.csv`, or the registry version's.
        #[arg(long)]
        explain: bool,
    },
    /// The model registry.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Data sets: the files models were trained and evaluated on, by version.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DatasetsCommand {
    /// Add FILE (CSV with a header, or Parquet) as the next version of data set NAME (created
    /// if new), or an object-store URL (recorded, not copied; under PLINTH_JOB_URLS). The same
    /// file added again is the version it already is.
    Add {
        name: String,
        file: String,
        /// A column whose values name the rows (unique in the file).
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List data sets and their versions.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Import a model repository (`<name>/<version>/model.onnx`, with `card.toml` and
    /// `reference.csv` beside it). Files already imported are skipped.
    Import { path: std::path::PathBuf },
    /// List models, their versions and aliases.
    List,
}

pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_DATABASE: u8 = 3;
pub const EXIT_MIGRATIONS: u8 = 4;
pub const EXIT_ARTIFACTS: u8 = 5;

/// Runs one command to completion.
pub async fn run(cli: Cli) -> ExitCode {
    let (mut settings, options) = match Settings::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|s| Ok((s, localdb::Options::from_env()?)))
    {
        Ok(both) => both,
        Err(e) => {
            eprintln!("configuration invalid: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck = command {
        return healthcheck(settings.addr);
    }
    // A model on disk needs no database.
    if let Command::Score { model, .. } = &command {
        if std::path::Path::new(model).exists() {
            return score(None, command);
        }
    }
    // Which database: configured, a local server, or the private cluster, started now.
    let database = match localdb::resolve(&options, "plinth").await {
        Ok(database) => database,
        Err(e) => {
            if let Command::Check = command {
                println!("configuration: ok (listening address {})", settings.addr);
                println!("database: unavailable ({e:#})");
            } else {
                eprintln!("error: {e:#}");
            }
            return ExitCode::from(EXIT_DATABASE);
        }
    };
    settings.database_url = database.url.clone();
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Createsuperuser { username } => createsuperuser(&settings, &username).await,
        Command::Check => {
            let code = check(&settings, &database).await;
            database.stop().await;
            return code;
        }
        Command::Models { command } => models(&settings, command).await,
        Command::Datasets { command } => datasets(&settings, command).await,
        Command::Createtoken { username, name } => createtoken(&settings, &username, &name).await,
        Command::Score { .. } => {
            let code = match registry_model(&settings, &command).await {
                Ok(found) => score(Some(found), command),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
            database.stop().await;
            return code;
        }
        // Answered before any database is looked for.
        Command::Healthcheck => Ok(()),
    };
    database.stop().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A registry model's card and loaded version, for `plinth score NAME`; with what explaining
/// it needs when `--explain` asks (or why it cannot be explained).
async fn registry_model(settings: &Settings, command: &Command) -> anyhow::Result<Found> {
    let Command::Score {
        model,
        version,
        explain,
        ..
    } = command
    else {
        anyhow::bail!("not a score command");
    };
    let pool = db::connect(&settings.database_url).await?;
    let registry = crate::startup::registry_for(&pool, settings)?;
    let selector = match version {
        Some(n) => crate::registry::Selector::Number(*n),
        None => crate::registry::Selector::default(),
    };
    let served = registry
        .resolve(model, &selector)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{model:?} is neither a model directory or .onnx file nor a model in the registry (with that version)"
            )
        })?;
    let explanation = if *explain {
        Some(registry.explanation_base(&served).await.as_ref().clone())
    } else {
        None
    };
    Ok(((*served.card).clone(), served.loaded.clone(), explanation))
}

/// What `plinth score` found in the registry: the card, the loaded version, and (when asked)
/// what explaining it needs or why it cannot be explained.
type Found = (
    crate::registry::card::Card,
    std::sync::Arc<crate::inference::LoadedModel>,
    crate::batch::local::AskedExplanation,
);

/// `plinth score`: scores the file and reports on standard error.
fn score(found: Option<Found>, command: Command) -> ExitCode {
    use crate::batch::local::{load_model_explained, score_file, Output};
    use crate::batch::Format;
    let Command::Score {
        model,
        input,
        output,
        max_errors,
        threads,
        explain,
        ..
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let (card, loaded, explanation) = match found {
        Some(found) => found,
        None => match load_model_explained(std::path::Path::new(&model), explain) {
            Ok((card, loaded, explanation)) => (card, std::sync::Arc::new(loaded), explanation),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let explanation = match explanation {
        Some(Ok(e)) => Some(e),
        Some(Err(why)) => {
            eprintln!("error: {model} cannot explain its predictions, so --explain cannot add contributions: {why}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let format = Format::from_name(&input.to_string_lossy());
    let sink: Box<dyn std::io::Write + Send> = match &output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )),
    };
    let sink = match output
        .as_ref()
        .map(|p| Format::from_name(&p.to_string_lossy()))
    {
        Some(Format::Parquet) => Output::Parquet(sink),
        _ => Output::Csv(sink),
    };
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    match score_file(
        &card,
        &loaded,
        &input,
        format,
        sink,
        threads,
        max_errors,
        explanation.as_ref(),
    ) {
        Ok(report) => {
            let place = format.place();
            for (line, reason) in &report.first_errors {
                eprintln!("{place} {line}: {reason}");
            }
            if report.refused as usize > report.first_errors.len() {
                eprintln!(
                    "… and {} more refused rows",
                    report.refused as usize - report.first_errors.len()
                );
            }
            let secs = report.elapsed.as_secs_f64();
            eprintln!(
                "scored {} rows ({} refused) in {secs:.2} s, {:.0} rows/s",
                report.rows - report.refused,
                report.refused,
                report.rows as f64 / secs.max(1e-9)
            );
            match report.stopped {
                Some(why) => {
                    eprintln!("{why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings.clone()).await?;
    tracing::info!(
        "Plinth listening on http://{}:{}",
        settings.addr.ip(),
        app.port()
    );
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    bootstrap_admin(&pool, settings).await?;
    println!("migrations applied");
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("PLINTH_SUPERUSER_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Password: ")?);
    }
    // Piped: one line from standard input.
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn createsuperuser(settings: &Settings, username: &str) -> anyhow::Result<()> {
    let username = Username::parse(username).map_err(anyhow::Error::msg)?;
    let raw = read_password()?;
    let password = Password::parse(&raw, username.as_str()).map_err(anyhow::Error::msg)?;
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    let hash = password::hash(&password).await?;
    db::users::create(&pool, &username, &hash, true).await?;
    println!("superuser {:?} created", username.as_str());
    Ok(())
}

async fn models(settings: &Settings, command: ModelsCommand) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    match command {
        ModelsCommand::Import { path } => {
            let registry = crate::startup::registry_for(&pool, settings)?;
            let report = registry.import_repository(&path).await?;
            for imported in report.imported {
                match imported {
                    Imported::New { model, version } => {
                        println!("{model}: imported as version {version}")
                    }
                    Imported::AlreadyThere { model, version } => {
                        println!("{model}: already there as version {version}")
                    }
                }
            }
            for (dir, reason) in &report.refused {
                eprintln!("{}: refused: {reason}", dir.display());
            }
            if !report.refused.is_empty() {
                anyhow::bail!(
                    "{} version(s) refused; the others were imported",
                    report.refused.len()
                );
            }
        }
        ModelsCommand::List => {
            let models = db::models::catalogue(&pool).await?;
            if models.is_empty() {
                println!("no models");
            }
            for m in models {
                let model = db::models::find_model(&pool, &m.name)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{} vanished", m.name))?;
                let aliases = db::models::aliases(&pool, model.id).await?;
                let aliases: Vec<String> =
                    aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
                println!(
                    "{}\t{} version(s)\t{}",
                    m.name,
                    m.versions,
                    aliases.join(" ")
                );
            }
        }
    }
    Ok(())
}

async fn datasets(settings: &Settings, command: DatasetsCommand) -> anyhow::Result<()> {
    use crate::datasets::{AddError, Adding, Location};
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    match command {
        DatasetsCommand::Add {
            name,
            file,
            key,
            description,
        } => {
            let registry = crate::startup::registry_for(&pool, settings)?;
            let is_url = crate::registry::artifacts::is_url(&file);
            // A URL is read into a scratch file to be profiled; a path is read where it is.
            let scratch = tempfile_path(settings);
            let path = if is_url {
                crate::registry::artifacts::check_object_url(&file).map_err(anyhow::Error::msg)?;
                crate::registry::artifacts::download_to_file(
                    &file,
                    &scratch,
                    settings.max_job_bytes,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                scratch.clone()
            } else {
                std::path::PathBuf::from(&file)
            };
            let adding = Adding {
                name: &name,
                description: &description,
                key: key.as_deref(),
                format: crate::batch::Format::from_name(&file),
                location: if is_url {
                    Location::Url(&file)
                } else {
                    Location::Uploaded
                },
                actor: None,
            };
            let added = crate::datasets::add(&pool, registry.artifacts(), &path, adding).await;
            let _ = std::fs::remove_file(&scratch);
            let added = match added {
                Ok(a) => a,
                Err(AddError::Invalid(e)) => anyhow::bail!("{file}: {e}"),
                Err(e) => return Err(e.into()),
            };
            if added.created {
                crate::audit::record(
                    &pool,
                    None,
                    None,
                    "dataset.added",
                    format!("{} v{}", added.name, added.version),
                    serde_json::json!({"dataset": added.name, "version": added.version, "rows": added.rows, "sha256": added.sha256, "by": "cli"}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "{}: added as version {} ({} rows)",
                    added.name, added.version, added.rows
                );
            } else {
                println!("{}: already there as version {}", added.name, added.version);
            }
        }
        DatasetsCommand::List => {
            let all = db::datasets::list(&pool).await?;
            if all.is_empty() {
                println!("no data sets");
            }
            for d in all {
                for v in db::datasets::versions(&pool, d.id).await? {
                    println!(
                        "{}\tv{}\t{} rows\t{}\t{}",
                        d.name,
                        v.version,
                        v.row_count,
                        &v.sha256[..12.min(v.sha256.len())],
                        if v.location_kind == "url" {
                            v.location.as_str()
                        } else {
                            "uploaded"
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// A scratch file's path under the cache directory.
fn tempfile_path(settings: &Settings) -> std::path::PathBuf {
    let dir = settings.cache_dir.join("uploads");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("dataset-{}", uuid::Uuid::new_v4().simple()))
}

async fn createtoken(settings: &Settings, username: &str, name: &str) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    let user = db::users::find_by_username(&pool, username)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| anyhow::anyhow!("there is no active user called {username:?}"))?;
    let secret = crate::auth::tokens::generate();
    db::tokens::create(
        &pool,
        user.id,
        name,
        &crate::auth::tokens::visible_prefix(&secret),
        &crate::auth::tokens::hash(&secret),
    )
    .await?;
    println!("{secret}");
    Ok(())
}

async fn check(settings: &Settings, database: &localdb::Database) -> ExitCode {
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
async fn check_artifacts(settings: &Settings, pool: &sqlx::PgPool) -> ExitCode {
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
fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
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
fn redacted(url: &str) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redacted("postgres://plinth:secret@db:5432/plinth"),
            "postgres://plinth:***@db:5432/plinth"
        );
        assert_eq!(
            super::redacted("postgres://postgres@127.0.0.1:5432/plinth"),
            "postgres://postgres@127.0.0.1:5432/plinth"
        );
    }
}
