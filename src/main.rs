use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    plinth::telemetry::init();
    plinth::cli::run(plinth::cli::Cli::parse()).await
}
