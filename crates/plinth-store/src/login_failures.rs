//! The `login_failure` table: the memory of the login throttle.

use sqlx::PgPool;

/// Failures in the last hour for one key (an account or a client address).
#[derive(Debug, Default, Clone, Copy, sqlx::FromRow)]
pub struct FailureWindow {
    pub count: i64,
    /// Seconds since the most recent failure.
    pub since_last: Option<f64>,
    /// Seconds until the oldest failure of the hour leaves the window.
    pub oldest_expires_in: Option<f64>,
}

/// The account's window; with `before`, only the attempts recorded before that one.
pub async fn for_username(
    pool: &PgPool,
    username: &str,
    before: Option<i64>,
) -> sqlx::Result<FailureWindow> {
    sqlx::query_as::<_, FailureWindow>(
        "select count(*) as count,
                extract(epoch from now() - max(created_at))::float8 as since_last,
                extract(epoch from min(created_at) + interval '1 hour' - now())::float8 as oldest_expires_in
         from login_failure
         where username = lower($1) and created_at > now() - interval '1 hour'
           and ($2::bigint is null or id < $2)",
    )
    .bind(username.trim())
    .bind(before)
    .fetch_one(pool)
    .await
}

/// The client address's window; with `before`, only the attempts recorded before that one.
pub async fn for_client(
    pool: &PgPool,
    client_ip: &str,
    before: Option<i64>,
) -> sqlx::Result<FailureWindow> {
    sqlx::query_as::<_, FailureWindow>(
        "select count(*) as count,
                extract(epoch from now() - max(created_at))::float8 as since_last,
                extract(epoch from min(created_at) + interval '1 hour' - now())::float8 as oldest_expires_in
         from login_failure
         where client_ip = $1 and created_at > now() - interval '1 hour'
           and ($2::bigint is null or id < $2)",
    )
    .bind(client_ip)
    .bind(before)
    .fetch_one(pool)
    .await
}

/// Records an attempt as failed (before it is checked, so parallel attempts see each other);
/// returns its id.
pub async fn record(pool: &PgPool, username: &str, client_ip: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into login_failure (username, client_ip) values (lower($1), $2) returning id",
    )
    .bind(username.trim())
    .bind(client_ip)
    .fetch_one(pool)
    .await
}

/// Takes back one recorded attempt (it succeeded, or it was never tried).
pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("delete from login_failure where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A successful login forgives the account's failures.
pub async fn clear_username(pool: &PgPool, username: &str) -> sqlx::Result<()> {
    sqlx::query("delete from login_failure where username = lower($1)")
        .bind(username.trim())
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets failures older than the throttle's window.
pub async fn delete_old(pool: &PgPool) -> sqlx::Result<u64> {
    let result =
        sqlx::query("delete from login_failure where created_at <= now() - interval '1 hour'")
            .execute(pool)
            .await?;
    Ok(result.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn failures_are_counted_per_account_and_per_client(pool: PgPool) -> sqlx::Result<()> {
        record(&pool, "Ada", "10.0.0.1").await?;
        record(&pool, "ada", "10.0.0.2").await?;
        record(&pool, "bob", "10.0.0.1").await?;
        let ada = for_username(&pool, "ADA", None).await?;
        assert_eq!(ada.count, 2);
        assert!(ada.since_last.unwrap() < 5.0);
        assert!(ada.oldest_expires_in.unwrap() > 3500.0);
        assert_eq!(for_client(&pool, "10.0.0.1", None).await?.count, 2);
        let later = record(&pool, "ada", "10.0.0.3").await?;
        assert_eq!(for_username(&pool, "ada", Some(later)).await?.count, 2);
        delete(&pool, later).await?;
        clear_username(&pool, "ada").await?;
        assert_eq!(for_username(&pool, "ada", None).await?.count, 0);
        sqlx::query("update login_failure set created_at = now() - interval '2 hours'")
            .execute(&pool)
            .await?;
        assert_eq!(for_client(&pool, "10.0.0.1", None).await?.count, 0);
        assert_eq!(delete_old(&pool).await?, 1);
        Ok(())
    }
}
