//! Integration tests: the real server on a random port, a fresh Postgres database per test, and
//! an HTTP client that keeps cookies and does not follow redirects.

mod accounts;
mod admin_users;
mod api_v1;
mod api_v2;
mod caches;
mod cli;
mod dashboard;
mod drift;
mod hardening;
mod helpers;
mod history;
mod layout;
mod metrics;
mod migrations;
mod models;
mod ops;
mod registry;
mod sessions;
mod tokens;
mod triton;
mod zoo;
