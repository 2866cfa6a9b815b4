//! The queries behind the admin dashboard: rollups, failures and feedback over a window.

use sqlx::PgPool;
use time::OffsetDateTime;

/// Upper bounds of the rollup's latency buckets, in microseconds (the last is open).
pub const LATENCY_BOUNDS_US: [i64; 14] = [
    50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000,
];

/// A version's traffic over the window, by source.
#[derive(Debug, sqlx::FromRow)]
pub struct SourceTotals {
    pub model: String,
    pub model_id: i64,
    pub version: i32,
    pub version_id: i64,
    pub source: String,
    pub n: i64,
    pub latency_sum_us: i64,
    pub latency_hist: Vec<i64>,
}

pub async fn totals(pool: &PgPool, since: OffsetDateTime) -> sqlx::Result<Vec<SourceTotals>> {
    // One pass over the window's rollup rows: the histogram is summed element by element.
    sqlx::query_as(
        "select m.name as model, m.id as model_id, v.version, v.id as version_id, r.source,
                sum(r.n)::bigint as n, sum(r.latency_sum_us)::bigint as latency_sum_us,
                array[sum(r.latency_hist[1])::bigint, sum(r.latency_hist[2])::bigint, sum(r.latency_hist[3])::bigint, sum(r.latency_hist[4])::bigint, sum(r.latency_hist[5])::bigint, sum(r.latency_hist[6])::bigint, sum(r.latency_hist[7])::bigint, sum(r.latency_hist[8])::bigint, sum(r.latency_hist[9])::bigint, sum(r.latency_hist[10])::bigint, sum(r.latency_hist[11])::bigint, sum(r.latency_hist[12])::bigint, sum(r.latency_hist[13])::bigint, sum(r.latency_hist[14])::bigint, sum(r.latency_hist[15])::bigint] as latency_hist
         from prediction_rollup r
         join model_version v on v.id = r.version_id
         join model m on m.id = r.model_id
         where r.bucket >= date_trunc('minute', $1::timestamptz)
         group by m.name, m.id, v.version, v.id, r.source
         order by m.name, v.version desc, r.source",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// Predictions per time bucket for one version.
pub async fn series(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
    bucket_secs: i64,
) -> sqlx::Result<Vec<(OffsetDateTime, i64)>> {
    sqlx::query_as(
        "select to_timestamp(floor(extract(epoch from bucket) / $3) * $3) as t, sum(n)::bigint
         from prediction_rollup
         where version_id = $1 and bucket >= date_trunc('minute', $2::timestamptz)
         group by 1 order by 1",
    )
    .bind(version_id)
    .bind(since)
    .bind(bucket_secs as f64)
    .fetch_all(pool)
    .await
}

/// Failures by version over the window.
pub async fn failures(pool: &PgPool, since: OffsetDateTime) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "select version_id, count(*) from prediction_failure where created_at >= $1 group by version_id",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

pub async fn record_failure(
    pool: &PgPool,
    model_id: i64,
    version_id: i64,
    source: &str,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into prediction_failure (model_id, version_id, source, reason) values ($1, $2, $3, $4)",
    )
    .bind(model_id)
    .bind(version_id)
    .bind(source)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// Feedback on a version's predictions made in the window: how many, how many right
/// (classification), and the absolute and squared errors (regression).
#[derive(Debug, Default, sqlx::FromRow)]
pub struct Quality {
    pub version_id: i64,
    pub with_feedback: i64,
    pub correct: i64,
    pub abs_error_sum: Option<f64>,
    pub sq_error_sum: Option<f64>,
}

pub async fn quality(pool: &PgPool, since: OffsetDateTime) -> sqlx::Result<Vec<Quality>> {
    sqlx::query_as(
        "select version_id, count(*) as with_feedback,
                count(*) filter (where label is not null and label = predicted_label) as correct,
                sum(abs(value - predicted_value)) filter (where value is not null) as abs_error_sum,
                sum(power(value - predicted_value, 2)) filter (where value is not null) as sq_error_sum
         from feedback
         where predicted_at >= $1
         group by version_id",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}
