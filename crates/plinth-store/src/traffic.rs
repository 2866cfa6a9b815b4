//! `traffic_policy`: a model's canary (a candidate version answering a share of the callers of
//! `production`), and the arms' figures as SQL over the prediction log.

use sqlx::PgPool;
use time::OffsetDateTime;

/// A model's canary, with the candidate's version number.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PolicyRow {
    pub model_id: i64,
    pub candidate_version_id: i64,
    pub candidate: i32,
    pub share: f64,
    pub started_at: OffsetDateTime,
}

/// The canary of the model called `name`, if it has one.
pub async fn policy(pool: &PgPool, name: &str) -> sqlx::Result<Option<PolicyRow>> {
    sqlx::query_as(
        "select t.model_id, t.candidate_version_id, v.version as candidate, t.share, t.started_at
         from traffic_policy t
         join model m on m.id = t.model_id
         join model_version v on v.id = t.candidate_version_id
         where m.name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
}

/// Sets (or replaces) a model's canary; the figures start again when the candidate changes.
pub async fn set_policy(
    pool: &PgPool,
    model_id: i64,
    candidate_version_id: i64,
    share: f64,
    actor: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into traffic_policy (model_id, candidate_version_id, share, updated_by)
         values ($1, $2, $3, $4)
         on conflict (model_id) do update set
             share = excluded.share,
             updated_by = excluded.updated_by,
             started_at = case when traffic_policy.candidate_version_id = excluded.candidate_version_id
                               then traffic_policy.started_at else now() end,
             candidate_version_id = excluded.candidate_version_id",
    )
    .bind(model_id)
    .bind(candidate_version_id)
    .bind(share)
    .bind(actor)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends a model's canary; the version it had, if any.
pub async fn clear_policy(pool: &PgPool, model_id: i64) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar(
        "delete from traffic_policy t using model_version v
         where t.model_id = $1 and v.id = t.candidate_version_id
         returning v.version",
    )
    .bind(model_id)
    .fetch_optional(pool)
    .await
}

/// Ends the model's canary if `version_id` is its candidate (it has just become production).
pub async fn end_if_candidate(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    model_id: i64,
    version_id: i64,
) -> sqlx::Result<bool> {
    let done =
        sqlx::query("delete from traffic_policy where model_id = $1 and candidate_version_id = $2")
            .bind(model_id)
            .bind(version_id)
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// One arm's figures since the canary started: requests and predictions stored, failures,
/// latency percentiles (per request, in microseconds), and feedback.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct ArmFigures {
    pub version_id: i64,
    pub requests: i64,
    pub predictions: i64,
    pub failures: i64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// Predictions with feedback, and how many of them were right (classifiers: the label).
    pub judged: i64,
    pub correct: i64,
}

/// The figures of each version in `versions` since `since`, over the requests that routing
/// decides (every door's source but batch jobs, streams and shadows).
pub async fn arm_figures(
    pool: &PgPool,
    model_id: i64,
    versions: &[i64],
    since: OffsetDateTime,
) -> sqlx::Result<Vec<ArmFigures>> {
    sqlx::query_as(
        "with arms as (select unnest($2::bigint[]) as version_id),
         served as (
             select version_id, count(*) as requests, sum(n)::bigint as predictions,
                    percentile_cont(0.5) within group (order by latency_us) as p50_us,
                    percentile_cont(0.99) within group (order by latency_us) as p99_us
             from prediction
             where model_id = $1 and version_id = any($2) and created_at >= $3
               and source not in ('batch', 'stream', 'shadow')
             group by version_id),
         failed as (
             select version_id, count(*) as failures from prediction_failure
             where model_id = $1 and version_id = any($2) and created_at >= $3
               and source not in ('batch', 'stream', 'shadow')
             group by version_id),
         judged as (
             select version_id, count(*) as judged,
                    count(*) filter (where label is not null and label = predicted_label) as correct
             from feedback
             where version_id = any($2) and predicted_at >= $3
             group by version_id)
         select a.version_id,
                coalesce(s.requests, 0) as requests, coalesce(s.predictions, 0) as predictions,
                coalesce(f.failures, 0) as failures, s.p50_us, s.p99_us,
                coalesce(j.judged, 0) as judged, coalesce(j.correct, 0) as correct
         from arms a
         left join served s using (version_id)
         left join failed f using (version_id)
         left join judged j using (version_id)",
    )
    .bind(model_id)
    .bind(versions)
    .bind(since)
    .fetch_all(pool)
    .await
}
