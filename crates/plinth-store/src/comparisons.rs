//! `version_comparison`: two model versions run over their reference rows, as a job.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ComparisonRow {
    pub id: i64,
    pub model_id: i64,
    pub model: String,
    pub a_version_id: i64,
    pub b_version_id: i64,
    pub a_version: i32,
    pub b_version: i32,
    pub state: String,
    pub total_rows: i64,
    pub rows_done: i64,
    pub result: Option<Json<serde_json::Value>>,
    pub message: Option<String>,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub created_by_name: Option<String>,
}

impl ComparisonRow {
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running")
    }
}

const SELECT: &str = "select c.id, c.model_id, m.name as model, c.a_version_id, c.b_version_id,
            va.version as a_version, vb.version as b_version, c.state, c.total_rows,
            c.rows_done, c.result, c.message, c.attempts, c.created_at, c.started_at,
            c.finished_at, u.username as created_by_name
       from version_comparison c
       join model m on m.id = c.model_id
       join model_version va on va.id = c.a_version_id
       join model_version vb on vb.id = c.b_version_id
       left join app_user u on u.id = c.created_by";

/// Queues a comparison of versions a and b (ids), unless one is queued or running already:
/// returns that one's id, or the new one's.
pub async fn request(
    pool: &PgPool,
    model_id: i64,
    a: i64,
    b: i64,
    total_rows: i64,
    actor: Option<i64>,
) -> sqlx::Result<(i64, bool)> {
    let mut tx = pool.begin().await?;
    // One request at a time per model, so two clicks make one job.
    sqlx::query("select id from model where id = $1 for update")
        .bind(model_id)
        .execute(&mut *tx)
        .await?;
    let open: Option<i64> = sqlx::query_scalar(
        "select id from version_comparison
         where a_version_id = $1 and b_version_id = $2 and state in ('queued', 'running')
         order by id desc limit 1",
    )
    .bind(a)
    .bind(b)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = open {
        tx.commit().await?;
        return Ok((id, false));
    }
    let id = sqlx::query_scalar(
        "insert into version_comparison (model_id, a_version_id, b_version_id, total_rows, created_by)
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(model_id)
    .bind(a)
    .bind(b)
    .bind(total_rows)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, true))
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<ComparisonRow>> {
    sqlx::query_as(&format!("{SELECT} where c.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The latest comparison of versions a and b (ids).
pub async fn latest(pool: &PgPool, a: i64, b: i64) -> sqlx::Result<Option<ComparisonRow>> {
    sqlx::query_as(&format!(
        "{SELECT} where c.a_version_id = $1 and c.b_version_id = $2 order by c.id desc limit 1"
    ))
    .bind(a)
    .bind(b)
    .fetch_optional(pool)
    .await
}

/// A model's recent comparisons.
pub async fn of_model(
    pool: &PgPool,
    model_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<ComparisonRow>> {
    sqlx::query_as(&format!(
        "{SELECT} where c.model_id = $1 order by c.id desc limit $2"
    ))
    .bind(model_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Attempts after which a comparison that keeps losing its worker fails.
pub const MAX_ATTEMPTS: i32 = 3;

/// Claims a queued comparison, or a running one whose worker's lease ran out (started over).
pub async fn claim(pool: &PgPool, me: &str, lease: Duration) -> sqlx::Result<Option<i64>> {
    // Ones that keep failing to finish are given up.
    sqlx::query(
        "update version_comparison set state = 'failed', finished_at = now(),
                message = 'The comparison stopped ' || attempts || ' times before it finished.'
         where state = 'running' and lease_until < now() and attempts >= $1",
    )
    .bind(MAX_ATTEMPTS)
    .execute(pool)
    .await?;
    sqlx::query_scalar(
        "update version_comparison set state = 'running', leased_by = $1,
                lease_until = now() + make_interval(secs => $2), attempts = attempts + 1,
                rows_done = 0, started_at = now()
         where id = (select id from version_comparison
                     where state = 'queued' or (state = 'running' and lease_until < now())
                     order by id limit 1 for update skip locked)
         returning id",
    )
    .bind(me)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Records progress and renews the lease; false when another worker has taken the job over.
pub async fn progress(
    pool: &PgPool,
    id: i64,
    me: &str,
    lease: Duration,
    total_rows: i64,
    rows_done: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update version_comparison set rows_done = $4, total_rows = $5,
                lease_until = now() + make_interval(secs => $3)
         where id = $1 and leased_by = $2 and state = 'running'",
    )
    .bind(id)
    .bind(me)
    .bind(lease.as_secs_f64())
    .bind(rows_done)
    .bind(total_rows)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a comparison: its figures, or why it failed.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    me: &str,
    outcome: Result<&serde_json::Value, &str>,
) -> sqlx::Result<bool> {
    let (state, result, message) = match outcome {
        Ok(r) => ("done", Some(Json(r)), None),
        Err(m) => ("failed", None, Some(m)),
    };
    let done = sqlx::query(
        "update version_comparison set state = $3, result = $4, message = $5,
                finished_at = now(), leased_by = null, lease_until = null,
                rows_done = case when $3 = 'done' then total_rows else rows_done end
         where id = $1 and leased_by = $2 and state = 'running'",
    )
    .bind(id)
    .bind(me)
    .bind(state)
    .bind(result)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Comparisons waiting or running (for the metrics and the tests).
pub async fn open_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select count(*) from version_comparison where state in ('queued', 'running')",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with two versions; their ids.
    async fn two_versions(pool: &PgPool) -> sqlx::Result<(i64, i64, i64)> {
        let model: i64 = sqlx::query_scalar("insert into model (name) values ('m') returning id")
            .fetch_one(pool)
            .await?;
        let mut ids = Vec::new();
        for v in 1..=2 {
            ids.push(
                sqlx::query_scalar(
                    "insert into model_version (model_id, version, sha256, size_bytes, card, signature, source)
                     values ($1, $2, $3, 1, '{}', '{}', 'test') returning id",
                )
                .bind(model)
                .bind(v)
                .bind(format!("sha{v}"))
                .fetch_one(pool)
                .await?,
            );
        }
        Ok((model, ids[0], ids[1]))
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_dead_workers_comparison_is_taken_over_and_its_late_commit_refused(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let (model, a, b) = two_versions(&pool).await?;
        let (id, created) = request(&pool, model, a, b, 10, None).await?;
        assert!(created);
        // Asked again while it waits: the same one.
        assert_eq!(request(&pool, model, a, b, 10, None).await?, (id, false));

        let short = Duration::from_millis(300);
        assert_eq!(claim(&pool, "one", short).await?, Some(id));
        assert_eq!(
            claim(&pool, "two", short).await?,
            None,
            "held under a lease"
        );
        assert!(progress(&pool, id, "one", short, 10, 4).await?);
        // "one" stops renewing; once its lease runs out "two" starts it over.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            claim(&pool, "two", Duration::from_secs(60)).await?,
            Some(id)
        );
        let row = get(&pool, id).await?.expect("the comparison");
        assert_eq!(
            (row.attempts, row.rows_done, row.state.as_str()),
            (2, 0, "running")
        );
        // The first worker's progress and result are refused; the second's are kept.
        assert!(!progress(&pool, id, "one", short, 10, 8).await?);
        assert!(!finish(&pool, id, "one", Ok(&serde_json::json!({"from": "one"}))).await?);
        assert!(finish(&pool, id, "two", Ok(&serde_json::json!({"from": "two"}))).await?);
        let row = get(&pool, id).await?.expect("the comparison");
        assert_eq!(row.state, "done");
        assert_eq!(row.rows_done, 10);
        assert_eq!(row.result.expect("a result").0["from"], "two");
        assert_eq!(open_count(&pool).await?, 0);
        // Done: asking again queues a new one.
        assert!(request(&pool, model, a, b, 10, None).await?.1);
        Ok(())
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_comparison_that_keeps_losing_its_worker_fails(pool: PgPool) -> sqlx::Result<()> {
        let (model, a, b) = two_versions(&pool).await?;
        let (id, _) = request(&pool, model, a, b, 10, None).await?;
        let short = Duration::from_millis(100);
        for n in 0..MAX_ATTEMPTS {
            assert_eq!(claim(&pool, &format!("w{n}"), short).await?, Some(id));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(claim(&pool, "last", short).await?, None);
        let row = get(&pool, id).await?.expect("the comparison");
        assert_eq!(row.state, "failed");
        assert!(row.message.unwrap().contains("stopped 3 times"));
        Ok(())
    }
}
