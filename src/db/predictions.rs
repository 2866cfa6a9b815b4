//! The `prediction` table: the log of every prediction made.

use sqlx::types::Json;
use sqlx::PgPool;
use time::{Date, OffsetDateTime};

/// A prediction about to be stored.
#[derive(Clone, Debug)]
pub struct NewPrediction {
    pub model_id: i64,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub source: &'static str,
    pub inputs: serde_json::Value,
    pub outputs: serde_json::Value,
    pub latency_us: i32,
}

/// Stores a batch in one statement (and one commit); ids come back in the order given.
pub async fn insert_batch(pool: &PgPool, rows: &[NewPrediction]) -> sqlx::Result<Vec<i64>> {
    let mut model_ids = Vec::with_capacity(rows.len());
    let mut version_ids = Vec::with_capacity(rows.len());
    let mut user_ids = Vec::with_capacity(rows.len());
    let mut token_ids = Vec::with_capacity(rows.len());
    let mut sources = Vec::with_capacity(rows.len());
    let mut inputs = Vec::with_capacity(rows.len());
    let mut outputs = Vec::with_capacity(rows.len());
    let mut latencies = Vec::with_capacity(rows.len());
    for r in rows {
        model_ids.push(r.model_id);
        version_ids.push(r.version_id);
        user_ids.push(r.user_id);
        token_ids.push(r.token_id);
        sources.push(r.source);
        inputs.push(Json(&r.inputs));
        outputs.push(Json(&r.outputs));
        latencies.push(r.latency_us);
    }
    // `with ordinality` + `order by` makes the insertion order, and so the order of the
    // returned identity values, follow the input arrays.
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "with input as (
             select * from unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                                  $6::jsonb[], $7::jsonb[], $8::int[])
                 with ordinality as t(model_id, version_id, user_id, token_id, source, inputs, outputs, latency_us, n)
         ), inserted as (
             insert into prediction (model_id, version_id, user_id, token_id, source, inputs, outputs, latency_us)
             select model_id, version_id, user_id, token_id, source, inputs, outputs, latency_us
             from input order by n
             returning id
         )
         select id from inserted",
    )
    .bind(&model_ids)
    .bind(&version_ids)
    .bind(&user_ids)
    .bind(&token_ids)
    .bind(&sources)
    .bind(&inputs)
    .bind(&outputs)
    .bind(&latencies)
    .fetch_all(pool)
    .await?;
    // Identity values are handed out in insertion order within the statement.
    ids.sort_unstable();
    Ok(ids)
}

/// A stored prediction with the names the pages show.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PredictionRow {
    pub id: i64,
    pub model: String,
    pub version: i32,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub source: String,
    pub inputs: Json<serde_json::Value>,
    pub outputs: Json<serde_json::Value>,
    pub latency_us: i32,
    pub created_at: OffsetDateTime,
}

const COLUMNS: &str =
    "p.id, m.name as model, v.version, p.version_id, p.user_id, u.username, p.source,
     p.inputs, p.outputs, p.latency_us, p.created_at";
const FROM: &str = "from prediction p
     join model m on m.id = p.model_id
     join model_version v on v.id = p.version_id
     left join app_user u on u.id = p.user_id";

pub async fn find(pool: &PgPool, id: i64) -> sqlx::Result<Option<PredictionRow>> {
    let sql = format!("select {COLUMNS} {FROM} where p.id = $1");
    sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
}

/// Which predictions a listing shows. Dates are inclusive, in UTC.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub model: Option<String>,
    pub from: Option<Date>,
    pub to: Option<Date>,
}

const WHERE: &str = "where ($1::bigint is null or p.user_id = $1)
       and ($2::text is null or m.name = $2)
       and ($3::date is null or p.created_at >= $3::date::timestamptz)
       and ($4::date is null or p.created_at < ($4::date + 1)::timestamptz)
       and ($5::text is null or lower(u.username) = lower($5))";

/// One page, newest first; fetches one extra row to tell whether there is a next page.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<PredictionRow>> {
    let sql = format!(
        "select {COLUMNS} {FROM} {WHERE} order by p.created_at desc, p.id desc offset $6 limit $7"
    );
    sqlx::query_as(&sql)
        .bind(filter.user_id)
        .bind(filter.model.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.username.as_deref())
        .bind(offset)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Where an export's previous page ended: the last row's time and id.
pub type Cursor = (OffsetDateTime, i64);

/// The next page of an export, newest first, after `cursor`. Each page is its own short query
/// with a statement timeout, so an export never holds a connection between pages (while the
/// client reads) and a slow query cannot hold one for long.
pub async fn export_page(
    pool: &PgPool,
    filter: &Filter,
    cursor: Option<Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<PredictionRow>> {
    let sql = format!(
        "select {COLUMNS} {FROM} {WHERE}
           and ($6::timestamptz is null or (p.created_at, p.id) < ($6, $7))
         order by p.created_at desc, p.id desc limit $8"
    );
    let rows = sqlx::query_as(&sql)
        .bind(filter.user_id)
        .bind(filter.model.as_deref())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.username.as_deref())
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map_or(0, |c| c.1))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// Distinct model names in a user's history (all users when `None`), for the filter's select.
pub async fn models_used(pool: &PgPool, user_id: Option<i64>) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select m.name from model m
         where exists (select 1 from prediction p where p.model_id = m.id and ($1::bigint is null or p.user_id = $1))
         order by m.name",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}
