//! Plinth: ONNX models as a web application, inference APIs and an MLOps back office.

pub mod api;
pub mod audit;
pub mod auth;
pub mod automation;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
pub mod datasets;
pub mod error;
pub mod exports;
pub mod heavy;
pub mod monitoring;
pub mod prediction_log;
pub mod registry;
pub mod routes;
pub mod serving;
pub mod shadow;
pub mod startup;
pub mod state;
pub mod stream;
pub mod telemetry;
pub mod urls;
pub mod web;

/// `#[sqlx::test]` reads `DATABASE_URL`: when it is unset, the local server or a private cluster
/// shared by the run's test processes.
#[cfg(test)]
#[ctor::ctor(unsafe)]
fn test_database() {
    plinth_store::localdb::for_tests(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-postgres"
    )));
}
