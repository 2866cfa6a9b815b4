//! What the people running Plinth watch: Prometheus metrics (and, later, drift).

pub mod dashboard;
pub mod drift;
pub mod metrics;
pub mod stats;
