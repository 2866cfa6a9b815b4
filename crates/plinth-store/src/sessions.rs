//! The `session` table: server-side session state, keyed by the SHA-256 of the cookie's key.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::database_of;

/// Only the hash of a session key is stored.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Sessions this process read lately, so a busy session costs no query per request.
///
/// An entry is served until the session's expiry as read (or its absolute limit), and for at
/// most a minute. Every change of a session's state or user, and every
/// deletion, by any process, reaches this cache through the `plinth_session` notice (migration
/// 0012) and [`forget`]; this process's own changes forget the entry at once.
pub mod cache {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    use std::time::{Duration, Instant};

    struct Entry {
        state: serde_json::Value,
        until: Instant,
        stored: Instant,
    }

    /// Keyed by (database, key hash): tests run many databases in one process.
    type Map = HashMap<(String, String), Entry>;

    static ENTRIES: LazyLock<RwLock<Map>> = LazyLock::new(Default::default);
    /// The longest an entry is trusted without asking Postgres again.
    const TTL: Duration = Duration::from_secs(60);
    const MAX_ENTRIES: usize = 50_000;

    pub(super) fn get(db: &str, hash: &str) -> Option<serde_json::Value> {
        let map = ENTRIES.read().ok()?;
        let entry = map.get(&(db.to_string(), hash.to_string()))?;
        let now = Instant::now();
        (now < entry.until && now.duration_since(entry.stored) < TTL).then(|| entry.state.clone())
    }

    pub(super) fn put(db: &str, hash: &str, state: &serde_json::Value, valid_for: Duration) {
        if let Ok(mut map) = ENTRIES.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let now = Instant::now();
            map.insert(
                (db.to_string(), hash.to_string()),
                Entry {
                    state: state.clone(),
                    until: now + valid_for,
                    stored: now,
                },
            );
        }
    }

    /// A session changed or ended: its entry is not served again.
    pub fn forget(db: &str, hash: &str) {
        if let Ok(mut map) = ENTRIES.write() {
            map.remove(&(db.to_string(), hash.to_string()));
        }
    }

    /// Notices may have been missed: every entry of `db` goes.
    pub fn forget_all(db: &str) {
        if let Ok(mut map) = ENTRIES.write() {
            map.retain(|(d, _), _| d != db);
        }
    }
}

/// The state of a live session: not idle past its expiry, not older than `max_age`.
pub async fn load(
    pool: &PgPool,
    key: &str,
    max_age: Duration,
) -> sqlx::Result<Option<serde_json::Value>> {
    let hash = key_hash(key);
    let db = database_of(pool);
    if let Some(state) = cache::get(&db, &hash) {
        return Ok(Some(state));
    }
    let found: Option<(serde_json::Value, f64)> = sqlx::query_as(
        "select state,
                extract(epoch from least(expires_at, created_at + make_interval(secs => $2)) - now())::float8
         from session
         where key_hash = $1 and expires_at > now()
           and created_at > now() - make_interval(secs => $2)",
    )
    .bind(&hash)
    .bind(max_age.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(state, left)| {
        cache::put(&db, &hash, &state, Duration::from_secs_f64(left.max(0.0)));
        state
    }))
}

/// A new session. `created_at` is `authenticated_at` (unix seconds) when the state carries one,
/// so renewing a session never extends its absolute limit; otherwise now.
pub async fn insert(
    pool: &PgPool,
    key: &str,
    user_id: Option<i64>,
    state: &serde_json::Value,
    ttl_secs: f64,
    authenticated_at: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into session (key_hash, user_id, state, expires_at, created_at)
         values ($1, $2, $3, now() + make_interval(secs => $4),
                 least(now(), coalesce(to_timestamp($5::bigint), now())))",
    )
    .bind(key_hash(key))
    .bind(user_id)
    .bind(state)
    .bind(ttl_secs)
    .bind(authenticated_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replaces the state; false when the session no longer exists.
pub async fn update(
    pool: &PgPool,
    key: &str,
    user_id: Option<i64>,
    state: &serde_json::Value,
    ttl_secs: f64,
) -> sqlx::Result<bool> {
    let hash = key_hash(key);
    cache::forget(&database_of(pool), &hash);
    let result = sqlx::query(
        "update session set state = $2, user_id = $3, expires_at = now() + make_interval(secs => $4)
         where key_hash = $1 and expires_at > now()",
    )
    .bind(&hash)
    .bind(state)
    .bind(user_id)
    .bind(ttl_secs)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Pushes the idle expiry forward after a request that did not change the state.
pub async fn touch(pool: &PgPool, key: &str, ttl_secs: f64) -> sqlx::Result<()> {
    sqlx::query(
        "update session set expires_at = now() + make_interval(secs => $2)
         where key_hash = $1 and expires_at > now()",
    )
    .bind(key_hash(key))
    .bind(ttl_secs)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn delete(pool: &PgPool, key: &str) -> sqlx::Result<()> {
    let hash = key_hash(key);
    sqlx::query("delete from session where key_hash = $1")
        .bind(&hash)
        .execute(pool)
        .await?;
    cache::forget(&database_of(pool), &hash);
    Ok(())
}

/// Ends every session of a user (password change, disabling).
pub async fn delete_for_user(pool: &PgPool, user_id: i64) -> sqlx::Result<u64> {
    let ended: Vec<String> =
        sqlx::query_scalar("delete from session where user_id = $1 returning key_hash")
            .bind(user_id)
            .fetch_all(pool)
            .await?;
    let db = database_of(pool);
    for hash in &ended {
        cache::forget(&db, hash);
    }
    Ok(ended.len() as u64)
}

/// A live session, as staff see it.
#[derive(Debug, sqlx::FromRow)]
pub struct SessionInfo {
    pub key_hash: String,
    pub created_at: time::OffsetDateTime,
    pub expires_at: time::OffsetDateTime,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A user's live sessions, newest first. The address and browser were recorded at login.
pub async fn for_user(pool: &PgPool, user_id: i64) -> sqlx::Result<Vec<SessionInfo>> {
    sqlx::query_as(
        "select key_hash, created_at, expires_at,
                (state->>'client_ip')::jsonb #>> '{}' as client_ip,
                (state->>'user_agent')::jsonb #>> '{}' as user_agent
         from session where user_id = $1 and expires_at > now() order by created_at desc",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Ends one session of a user, by the stored hash.
pub async fn delete_by_hash(pool: &PgPool, user_id: i64, key_hash: &str) -> sqlx::Result<bool> {
    let result = sqlx::query("delete from session where user_id = $1 and key_hash = $2")
        .bind(user_id)
        .bind(key_hash)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Live sessions of signed-in users.
pub async fn count_signed_in(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from session where user_id is not null and expires_at > now()",
    )
    .fetch_one(pool)
    .await
}

/// Removes sessions that can no longer be used.
pub async fn delete_expired(pool: &PgPool, max_age: Duration) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "delete from session
         where expires_at <= now() or created_at <= now() - make_interval(secs => $1)",
    )
    .bind(max_age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_session_lives_until_idle_or_absolute_expiry(pool: PgPool) -> sqlx::Result<()> {
        let state = serde_json::json!({"csrf": "\"abc\""});
        insert(&pool, "k1", None, &state, 60.0, None).await?;
        let day = Duration::from_secs(86_400);
        assert_eq!(load(&pool, "k1", day).await?, Some(state.clone()));

        // Idle: the expiry has passed.
        sqlx::query("update session set expires_at = now() - interval '1 second'")
            .execute(&pool)
            .await?;
        // (No listener runs here to pass on the trigger's notice.)
        cache::forget_all(&database_of(&pool));
        assert_eq!(load(&pool, "k1", day).await?, None);
        assert!(!update(&pool, "k1", None, &state, 60.0).await?);

        // Absolute: fresh expiry, but created too long ago.
        insert(&pool, "k2", None, &state, 60.0, None).await?;
        sqlx::query(
            "update session set created_at = now() - interval '2 days' where key_hash = $1",
        )
        .bind(key_hash("k2"))
        .execute(&pool)
        .await?;
        cache::forget(&database_of(&pool), &key_hash("k2"));
        assert_eq!(load(&pool, "k2", day).await?, None);
        assert_eq!(delete_expired(&pool, day).await?, 2);

        // A renewed session keeps its login time: one that logged in two days ago is dead even
        // when written afresh.
        let two_days_ago = time::OffsetDateTime::now_utc().unix_timestamp() - 2 * 86_400;
        insert(&pool, "k3", None, &state, 60.0, Some(two_days_ago)).await?;
        assert_eq!(load(&pool, "k3", day).await?, None);
        Ok(())
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn sessions_are_stored_by_hash_and_touch_extends(pool: PgPool) -> sqlx::Result<()> {
        let state = serde_json::json!({});
        insert(&pool, "secret-key", None, &state, 1.0, None).await?;
        let stored: String = sqlx::query_scalar("select key_hash from session")
            .fetch_one(&pool)
            .await?;
        assert_ne!(stored, "secret-key");
        assert_eq!(stored.len(), 64);
        touch(&pool, "secret-key", 3600.0).await?;
        let left: f64 = sqlx::query_scalar(
            "select extract(epoch from expires_at - now())::float8 from session",
        )
        .fetch_one(&pool)
        .await?;
        assert!(left > 3000.0);
        delete(&pool, "secret-key").await?;
        assert_eq!(
            load(&pool, "secret-key", Duration::from_secs(60)).await?,
            None
        );
        Ok(())
    }
}
