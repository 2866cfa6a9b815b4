//! Integration tests: the real server on a random port, a fresh Postgres database per test, and
//! an HTTP client that keeps cookies and does not follow redirects.

/// `#[sqlx::test]` reads `DATABASE_URL`: when it is unset, the local server or a private cluster
/// shared by the run's test processes (see `plinth_store::localdb::for_tests`).
#[ctor::ctor(unsafe)]
fn test_database() {
    plinth_store::localdb::for_tests(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-postgres"
    )));
}

mod accounts;
mod admin_users;
mod api_v1;
mod api_v2;
mod automation;
mod batching;
mod caches;
mod canary;
mod cli;
mod cloud;
mod compose;
mod container;
mod dashboard;
mod datasets;
mod drift;
mod explain;
mod hardening;
mod helpers;
mod history;
mod instances;
mod jobs;
mod kafka_tls;
mod layout;
mod metrics;
mod migrations;
mod missing;
mod models;
mod ops;
mod postgres_tls;
mod prediction_log;
mod proxies;
mod publishing;
mod registry;
mod sessions;
mod shadow;
mod streams;
mod tokens;
mod traces;
mod triton;
mod zero_config;
mod zoo;
