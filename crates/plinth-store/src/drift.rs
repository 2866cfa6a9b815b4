//! The drift tables: runs and their per-feature results.

use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

/// One feature's result in a run.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FeatureResult {
    pub feature: String,
    pub method: String,
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    pub psi: f64,
    pub histogram: Json<serde_json::Value>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: i64,
    pub version_id: i64,
    pub window_label: String,
    pub rows: i32,
    pub features: i32,
    pub drifted_features: i32,
    pub drifted: Option<bool>,
    pub created_at: OffsetDateTime,
}

#[allow(clippy::too_many_arguments)]
pub async fn record_run(
    pool: &PgPool,
    model_id: i64,
    version_id: i64,
    window_label: &str,
    rows: i32,
    drifted: Option<bool>,
    results: &[FeatureResult],
) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    let drifted_features = results.iter().filter(|r| r.drifted).count() as i32;
    let id: i64 = sqlx::query_scalar(
        "insert into drift_run (model_id, version_id, window_label, rows, features, drifted_features, drifted)
         values ($1, $2, $3, $4, $5, $6, $7) returning id",
    )
    .bind(model_id)
    .bind(version_id)
    .bind(window_label)
    .bind(rows)
    .bind(results.len() as i32)
    .bind(drifted_features)
    .bind(drifted)
    .fetch_one(&mut *tx)
    .await?;
    for r in results {
        sqlx::query(
            "insert into drift_feature (run_id, feature, method, statistic, p_value, threshold, drifted, psi, histogram)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(&r.feature)
        .bind(&r.method)
        .bind(r.statistic)
        .bind(r.p_value)
        .bind(r.threshold)
        .bind(r.drifted)
        .bind(r.psi)
        .bind(&r.histogram)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

pub async fn latest_run(pool: &PgPool, version_id: i64) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(
        "select id, version_id, window_label, rows, features, drifted_features, drifted, created_at
         from drift_run where version_id = $1 order by created_at desc, id desc limit 1",
    )
    .bind(version_id)
    .fetch_optional(pool)
    .await
}

pub async fn runs(pool: &PgPool, version_id: i64, limit: i64) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as(
        "select id, version_id, window_label, rows, features, drifted_features, drifted, created_at
         from drift_run where version_id = $1 order by created_at desc, id desc limit $2",
    )
    .bind(version_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn features(pool: &PgPool, run_id: i64) -> sqlx::Result<Vec<FeatureResult>> {
    sqlx::query_as(
        "select feature, method, statistic, p_value, threshold, drifted, psi, histogram
         from drift_feature where run_id = $1 order by drifted desc, feature",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// A feature's statistic over a version's recent runs, oldest first.
pub async fn history(
    pool: &PgPool,
    version_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<(String, f64, bool)>> {
    sqlx::query_as(
        "select f.feature, f.statistic, f.drifted from drift_feature f
         join (select id, created_at from drift_run where version_id = $1 and drifted is not null
               order by created_at desc, id desc limit $2) r on r.id = f.run_id
         order by r.created_at, r.id",
    )
    .bind(version_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Versions whose latest verdict is "drifting".
pub async fn drifting_versions(pool: &PgPool) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "select version_id from (select distinct on (version_id) version_id, drifted from drift_run
         where drifted is not null order by version_id, created_at desc, id desc) latest
         where drifted",
    )
    .fetch_all(pool)
    .await
}

/// Each production version's latest drift verdict (versions never checked, or whose latest
/// check had too few rows for one, are left out): model, version, flagged.
pub async fn production_verdicts(pool: &PgPool) -> sqlx::Result<Vec<(String, i32, bool)>> {
    sqlx::query_as(
        "select m.name, v.version, r.drifted
         from model_alias a
         join model m on m.id = a.model_id
         join model_version v on v.id = a.version_id
         join lateral (select drifted from drift_run
                       where version_id = a.version_id and drifted is not null
                       order by created_at desc, id desc limit 1) r on true
         where a.alias = 'production'
         order by m.name",
    )
    .fetch_all(pool)
    .await
}
