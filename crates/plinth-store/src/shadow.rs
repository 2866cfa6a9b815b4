//! `shadow_version` and the shadows' figures: SQL over the pairs of live and shadow rows in the
//! prediction log (a shadow row's `shadow_of` is its live row's id; row i answers row i).

use sqlx::PgPool;
use time::OffsetDateTime;

/// The shadow version numbers of the model called `name`.
pub async fn versions(pool: &PgPool, name: &str) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar(
        "select v.version from shadow_version s
         join model m on m.id = s.model_id
         join model_version v on v.id = s.version_id
         where m.name = $1 order by v.version",
    )
    .bind(name)
    .fetch_all(pool)
    .await
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ShadowRow {
    pub version_id: i64,
    pub version: i32,
    pub started_at: OffsetDateTime,
}

/// A model's shadows, by version.
pub async fn of_model(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<ShadowRow>> {
    sqlx::query_as(
        "select s.version_id, v.version, s.started_at from shadow_version s
         join model_version v on v.id = s.version_id
         where s.model_id = $1 order by v.version",
    )
    .bind(model_id)
    .fetch_all(pool)
    .await
}

/// Starts shadowing; false when the version was a shadow already.
pub async fn start(
    pool: &PgPool,
    model_id: i64,
    version_id: i64,
    actor: Option<i64>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into shadow_version (model_id, version_id, created_by) values ($1, $2, $3)
         on conflict do nothing",
    )
    .bind(model_id)
    .bind(version_id)
    .bind(actor)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Stops shadowing; false when the version was not a shadow.
pub async fn stop(pool: &PgPool, model_id: i64, version_id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from shadow_version where model_id = $1 and version_id = $2")
        .bind(model_id)
        .bind(version_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How a shadow's answers compare with the live ones since `since`: pairs of labels and how
/// many agree (classifiers), pairs of values and their absolute differences (regressors).
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct Agreement {
    pub label_pairs: i64,
    pub agree: i64,
    pub value_pairs: i64,
    pub mean_abs_difference: Option<f64>,
    pub p50_abs_difference: Option<f64>,
    pub p95_abs_difference: Option<f64>,
    pub max_abs_difference: Option<f64>,
}

pub async fn agreement(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
) -> sqlx::Result<Agreement> {
    sqlx::query_as(
        "with pairs as (
             select sp.label as s_label, lp.label as l_label, sp.value as s_value, lp.value as l_value
             from prediction sp
             join prediction lp on lp.id = sp.shadow_of
             where sp.version_id = $1 and sp.shadow_of is not null and sp.created_at >= $2),
         labels as (
             select count(*) as label_pairs, count(*) filter (where u.s = u.l) as agree
             from pairs cross join lateral unnest(s_label, l_label) as u(s, l)
             where s_label is not null and l_label is not null),
         diffs as (
             select abs(w.s - w.l) as d
             from pairs cross join lateral unnest(s_value, l_value) as w(s, l)
             where s_value is not null and l_value is not null)
         select l.label_pairs, l.agree,
                (select count(*) from diffs) as value_pairs,
                (select avg(d) from diffs) as mean_abs_difference,
                (select percentile_cont(0.5) within group (order by d) from diffs) as p50_abs_difference,
                (select percentile_cont(0.95) within group (order by d) from diffs) as p95_abs_difference,
                (select max(d) from diffs) as max_abs_difference
         from labels l",
    )
    .bind(version_id)
    .bind(since)
    .fetch_one(pool)
    .await
}

/// A live prediction the shadow answered differently.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Disagreement {
    pub prediction_id: i64,
    pub live: Option<String>,
    pub shadow: Option<String>,
    /// The row's features in the card's order, or an object of them.
    pub inputs: Option<serde_json::Value>,
    /// The shadow's probability for its own label (classifiers) or the absolute difference.
    pub gap: Option<f64>,
}

/// The latest live predictions the shadow disagrees with most: for classifiers, different labels
/// the shadow was surest of; for regressors, the largest differences.
pub async fn disagreements(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<Vec<Disagreement>> {
    sqlx::query_as(
        "with recent as (
             select sp.label as s_label, sp.value as s_value, sp.proba as s_proba, sp.n as s_n,
                    lp.id as live_id, lp.n, lp.label as l_label, lp.value as l_value,
                    lp.x, lp.inputs
             from prediction sp
             join prediction lp on lp.id = sp.shadow_of
             where sp.version_id = $1 and sp.shadow_of is not null and sp.created_at >= $2
             order by sp.created_at desc
             limit 5000),
         rows as (
             select r.*, i::int as i from recent r
             cross join lateral generate_series(1, r.n) as i)
         select live_id + i - 1 as prediction_id,
                coalesce(l_label[i], l_value[i]::text) as live,
                coalesce(s_label[i], s_value[i]::text) as shadow,
                case when x is not null
                     then to_jsonb(x[((i - 1) * (cardinality(x) / n) + 1):(i * (cardinality(x) / n))])
                     else inputs -> (i - 1) end as inputs,
                case when s_label is not null
                     then (select max(p) from unnest(s_proba[((i - 1) * (cardinality(s_proba) / s_n) + 1):(i * (cardinality(s_proba) / s_n))]) p)
                     else abs(s_value[i] - l_value[i]) end as gap
         from rows
         where (s_label is not null and s_label[i] is distinct from l_label[i])
            or (s_label is null and s_value is not null and s_value[i] <> l_value[i])
         order by gap desc nulls last, prediction_id desc
         limit $3",
    )
    .bind(version_id)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}
