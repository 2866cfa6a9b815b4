//! The management commands, in the manner of Django's `manage.py`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::{password, Password};
use crate::config::Settings;
use crate::startup::{bootstrap_admin, Application};
use plinth_store as db;
use plinth_store::domain::Username;
use plinth_store::localdb;

mod catalog;
mod check;
mod score;

use catalog::{datasets, models};
use check::{check, healthcheck};
use score::{registry_model, score};

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
    let (mut settings, options) =
        match Settings::from_env()
            .map_err(anyhow::Error::from)
            .and_then(|s| {
                Ok((
                    s,
                    localdb::Options::from_lookup(crate::config::with_files(|name| {
                        std::env::var(name).ok()
                    }))?,
                ))
            }) {
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings.clone()).await?;
    tracing::info!(
        "Plinth listening on http://{}:{}",
        settings.addr.ip(),
        app.port()
    );
    let stopped = app.run_until_stopped().await;
    // The last requests' spans, before the process ends.
    let _ = tokio::task::spawn_blocking(crate::telemetry::flush).await;
    stopped?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::check::redacted("postgres://plinth:secret@db:5432/plinth"),
            "postgres://plinth:***@db:5432/plinth"
        );
        assert_eq!(
            super::check::redacted("postgres://postgres@127.0.0.1:5432/plinth"),
            "postgres://postgres@127.0.0.1:5432/plinth"
        );
    }
}
