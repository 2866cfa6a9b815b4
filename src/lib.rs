//! Plinth: ONNX models as a web application, inference APIs and an MLOps back office.

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod routes;
pub mod startup;
pub mod telemetry;
