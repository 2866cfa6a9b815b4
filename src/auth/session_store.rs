//! An actix-session [`SessionStore`] over Postgres, so that sessions can be ended from the
//! server: logout deletes the row, disabling a user deletes all of theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use actix_session::storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError};
use actix_web::cookie::time::Duration;
use rand::distr::{Alphanumeric, SampleString};
use sqlx::PgPool;

use plinth_store as db;

/// Session state in Postgres. The idle timeout is the TTL actix-session passes on every request;
/// the absolute timeout is enforced here from the row's creation time.
///
/// Extending the idle timeout is a write, so it is done at most once per [`TOUCH_EVERY`] for a
/// session: a session then ends between `idle - TOUCH_EVERY` and `idle` after its last request.
#[derive(Clone)]
pub struct PgSessionStore {
    pool: PgPool,
    max_age: StdDuration,
    /// When this process last extended each session (by the key's hash).
    touched: Arc<Mutex<HashMap<String, Instant>>>,
}

/// How often a busy session's expiry is pushed back.
pub const TOUCH_EVERY: StdDuration = StdDuration::from_secs(30);

impl PgSessionStore {
    pub fn new(pool: PgPool, max_age: StdDuration) -> Self {
        PgSessionStore {
            pool,
            max_age,
            touched: Default::default(),
        }
    }

    /// True when the session was extended lately, so extending it again can wait.
    fn recently_touched(&self, key: &str) -> bool {
        let Ok(mut touched) = self.touched.lock() else {
            return false;
        };
        let now = Instant::now();
        if let Some(at) = touched.get(key) {
            if now.duration_since(*at) < TOUCH_EVERY {
                return true;
            }
        }
        if touched.len() >= 10_000 {
            touched.retain(|_, at| now.duration_since(*at) < TOUCH_EVERY);
        }
        touched.insert(key.to_string(), now);
        false
    }
}

type State = HashMap<String, String>;

fn new_key() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 64)
}

/// The signed-in user recorded in the state, kept in its own column so sessions can be found
/// by user.
fn user_id(state: &State) -> Option<i64> {
    state
        .get(super::SESSION_USER_ID)
        .and_then(|v| v.parse().ok())
}

/// When the signed-in user proved who they are (unix seconds), carried across renewals so the
/// absolute limit counts from the login, not from the last renewal.
fn authenticated_at(state: &State) -> Option<i64> {
    state
        .get(super::SESSION_AUTHENTICATED_AT)
        .and_then(|v| v.parse().ok())
}

fn ttl_secs(ttl: &Duration) -> f64 {
    ttl.as_seconds_f64()
}

impl SessionStore for PgSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<State>, LoadError> {
        let row = db::sessions::load(&self.pool, session_key.as_ref(), self.max_age)
            .await
            .map_err(|e| LoadError::Other(e.into()))?;
        match row {
            None => Ok(None),
            Some(json) => serde_json::from_value(json)
                .map(Some)
                .map_err(|e| LoadError::Deserialization(e.into())),
        }
    }

    async fn save(&self, state: State, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let json = serde_json::to_value(&state).map_err(|e| SaveError::Serialization(e.into()))?;
        let key = new_key();
        db::sessions::insert(
            &self.pool,
            &key,
            user_id(&state),
            &json,
            ttl_secs(ttl),
            authenticated_at(&state),
        )
        .await
        .map_err(|e| SaveError::Other(e.into()))?;
        SessionKey::try_from(key).map_err(|e| SaveError::Other(e.into()))
    }

    async fn update(
        &self,
        session_key: SessionKey,
        state: State,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let json =
            serde_json::to_value(&state).map_err(|e| UpdateError::Serialization(e.into()))?;
        let found = db::sessions::update(
            &self.pool,
            session_key.as_ref(),
            user_id(&state),
            &json,
            ttl_secs(ttl),
        )
        .await
        .map_err(|e| UpdateError::Other(e.into()))?;
        if found {
            return Ok(session_key);
        }
        // The row went away during the request: the session was ended (logout elsewhere, a
        // password change, staff ending it, expiry). Nothing of it is written back — least of
        // all its user — so it stays ended; the cookie gets a fresh key that names no row, and
        // the next request starts a new, anonymous session.
        SessionKey::try_from(new_key()).map_err(|e| UpdateError::Other(e.into()))
    }

    async fn update_ttl(&self, session_key: &SessionKey, ttl: &Duration) -> anyhow::Result<()> {
        if self.recently_touched(session_key.as_ref()) {
            return Ok(());
        }
        db::sessions::touch(&self.pool, session_key.as_ref(), ttl_secs(ttl)).await?;
        Ok(())
    }

    async fn delete(&self, session_key: &SessionKey) -> anyhow::Result<()> {
        db::sessions::delete(&self.pool, session_key.as_ref()).await?;
        Ok(())
    }
}
