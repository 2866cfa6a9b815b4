//! The `session` table: server-side session state, keyed by the SHA-256 of the cookie's key.

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Only the hash of a session key is stored.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The state of a live session: not idle past its expiry, not older than `max_age`.
pub async fn load(
    pool: &PgPool,
    key: &str,
    max_age: Duration,
) -> sqlx::Result<Option<serde_json::Value>> {
    sqlx::query_scalar(
        "select state from session
         where key_hash = $1 and expires_at > now()
           and created_at > now() - make_interval(secs => $2)",
    )
    .bind(key_hash(key))
    .bind(max_age.as_secs_f64())
    .fetch_optional(pool)
    .await
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
    let result = sqlx::query(
        "update session set state = $2, user_id = $3, expires_at = now() + make_interval(secs => $4)
         where key_hash = $1 and expires_at > now()",
    )
    .bind(key_hash(key))
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
    sqlx::query("delete from session where key_hash = $1")
        .bind(key_hash(key))
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a user (password change, disabling).
pub async fn delete_for_user(pool: &PgPool, user_id: i64) -> sqlx::Result<u64> {
    let result = sqlx::query("delete from session where user_id = $1")
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
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

    #[sqlx::test]
    async fn a_session_lives_until_idle_or_absolute_expiry(pool: PgPool) -> sqlx::Result<()> {
        let state = serde_json::json!({"csrf": "\"abc\""});
        insert(&pool, "k1", None, &state, 60.0, None).await?;
        let day = Duration::from_secs(86_400);
        assert_eq!(load(&pool, "k1", day).await?, Some(state.clone()));

        // Idle: the expiry has passed.
        sqlx::query("update session set expires_at = now() - interval '1 second'")
            .execute(&pool)
            .await?;
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
        assert_eq!(load(&pool, "k2", day).await?, None);
        assert_eq!(delete_expired(&pool, day).await?, 2);

        // A renewed session keeps its login time: one that logged in two days ago is dead even
        // when written afresh.
        let two_days_ago = time::OffsetDateTime::now_utc().unix_timestamp() - 2 * 86_400;
        insert(&pool, "k3", None, &state, 60.0, Some(two_days_ago)).await?;
        assert_eq!(load(&pool, "k3", day).await?, None);
        Ok(())
    }

    #[sqlx::test]
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
