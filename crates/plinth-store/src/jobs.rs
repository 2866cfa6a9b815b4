//! The `job_lease` table: which instance runs a scheduled job, once per interval.

use std::time::Duration;

use sqlx::PgPool;

/// Claims job `name` for `instance` when it has not run within `interval` (by any instance);
/// true when this instance should run it now.
pub async fn claim(
    pool: &PgPool,
    name: &str,
    interval: Duration,
    instance: &str,
) -> sqlx::Result<bool> {
    sqlx::query("insert into job_lease (name) values ($1) on conflict (name) do nothing")
        .bind(name)
        .execute(pool)
        .await?;
    let claimed = sqlx::query(
        "update job_lease set last_run_at = now(), run_by = $3
         where name = $1
           and (last_run_at is null or last_run_at <= now() - make_interval(secs => $2))",
    )
    .bind(name)
    .bind(interval.as_secs_f64())
    .bind(instance)
    .execute(pool)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which instance last ran job `name`, and when.
    async fn last_run(
        pool: &PgPool,
        name: &str,
    ) -> sqlx::Result<Option<(Option<time::OffsetDateTime>, Option<String>)>> {
        sqlx::query_as("select last_run_at, run_by from job_lease where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn one_instance_per_interval_and_another_takes_over(pool: PgPool) -> sqlx::Result<()> {
        let other = sqlx::postgres::PgPoolOptions::new()
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let hour = Duration::from_secs(3600);

        // Two instances tick at the same moment: one runs the job.
        let (a, b) = tokio::join!(
            claim(&pool, "drift", hour, "a"),
            claim(&other, "drift", hour, "b")
        );
        assert!(a? ^ b?, "exactly one claims it");
        // Within the interval nobody runs it again.
        assert!(!claim(&pool, "drift", hour, "a").await?);
        assert!(!claim(&other, "drift", hour, "b").await?);
        // Another job is its own.
        assert!(claim(&other, "session_sweep", hour, "b").await?);

        // The runner dies; an hour after its claim the job is due and the other instance takes it.
        sqlx::query(
            "update job_lease set last_run_at = now() - interval '1 hour' where name = 'drift'",
        )
        .execute(&pool)
        .await?;
        assert!(claim(&other, "drift", hour, "b").await?);
        let (_, by) = last_run(&pool, "drift").await?.expect("a lease row");
        assert_eq!(by.as_deref(), Some("b"));
        Ok(())
    }
}
