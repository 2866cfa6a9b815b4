//! What every handler can reach: the one value the server shares between its workers.

use std::sync::Arc;

use sqlx::PgPool;

use crate::cache::Cache;
use crate::config::Settings;
use crate::exports::Exports;
use crate::heavy::Heavy;
use crate::monitoring::metrics::Metrics;
use crate::prediction_log::PredictionLog;
use crate::registry::Registry;
use plinth_store::users::User;

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub settings: Settings,
    pub registry: Registry,
    pub log: PredictionLog,
    pub metrics: Arc<Metrics>,
    /// API tokens seen lately: hash → (token id, owner).
    pub tokens: Cache<String, (i64, User)>,
    /// Signed-in users by id, for every page's session check; retired with `tokens`.
    pub users: Cache<i64, User>,
    /// An argon2 hash of nothing in particular, verified for unknown usernames.
    pub dummy_hash: String,
    /// CPU-heavy work requests cause (pictures, drift statistics), off the async workers.
    pub heavy: Heavy,
    /// CSV exports running, per user.
    pub exports: Exports,
    /// Set on SIGTERM: `/readyz` answers 503 for `PLINTH_DRAIN_SECONDS` before the server stops
    /// accepting, so balancers stop sending first.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Copies of live requests for the shadow versions.
    pub shadow: crate::shadow::Queue,
}
