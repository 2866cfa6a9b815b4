use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    // Without this, a TLS path that asks rustls for the process's provider (Postgres with
    // sslmode=verify-ca) panics: both of rustls's crypto back ends are linked in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    plinth::telemetry::init();
    plinth::cli::run(plinth::cli::Cli::parse()).await
}
