//! The `instance_secret` table: secrets generated once and shared by every instance.

use sqlx::PgPool;

/// The secret called `name`, created from `generate` by whichever instance asks first.
pub async fn get_or_create(
    pool: &PgPool,
    name: &str,
    generate: impl FnOnce() -> Vec<u8>,
) -> sqlx::Result<Vec<u8>> {
    sqlx::query("insert into instance_secret (name, value) values ($1, $2) on conflict do nothing")
        .bind(name)
        .bind(generate())
        .execute(pool)
        .await?;
    sqlx::query_scalar("select value from instance_secret where name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn the_first_secret_stays(pool: PgPool) -> sqlx::Result<()> {
        let first = get_or_create(&pool, "k", || vec![1; 64]).await?;
        let second = get_or_create(&pool, "k", || vec![2; 64]).await?;
        assert_eq!(first, vec![1; 64]);
        assert_eq!(second, first);
        Ok(())
    }
}
