//! The registry tables: `model`, `model_version`, `model_alias`, `alias_event`.

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ModelRow {
    pub id: i64,
    pub name: String,
    pub created_at: OffsetDateTime,
}

/// A version with what serving and the pages need. `card` and `signature` are JSON documents
/// owned by the registry module.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VersionRow {
    pub id: i64,
    pub model_id: i64,
    pub version: i32,
    pub sha256: String,
    pub size_bytes: i64,
    pub card: Json<serde_json::Value>,
    pub signature: Json<serde_json::Value>,
    pub metadata: Json<serde_json::Value>,
    pub reference_sha256: Option<String>,
    pub reference_rows: Option<i32>,
    pub source: String,
    pub created_at: OffsetDateTime,
    pub created_by_name: Option<String>,
}

const VERSION_COLUMNS: &str =
    "v.id, v.model_id, v.version, v.sha256, v.size_bytes, v.card, v.signature, v.metadata,
     v.reference_sha256, v.reference_rows, v.source, v.created_at, u.username as created_by_name";

/// At most `limit` model names, in name order: enough to tell "none", "only this one" and
/// "several" without reading the catalogue.
pub async fn model_names(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select name from model order by name limit $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The name of model `id`.
pub async fn model_name(pool: &PgPool, id: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select name from model where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn find_model(pool: &PgPool, name: &str) -> sqlx::Result<Option<ModelRow>> {
    sqlx::query_as("select id, name, created_at from model where name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// The model called `name`, created if it does not exist.
pub async fn ensure_model(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    actor: Option<i64>,
) -> sqlx::Result<ModelRow> {
    sqlx::query(
        "insert into model (name, created_by) values ($1, $2) on conflict (name) do nothing",
    )
    .bind(name)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    sqlx::query_as("select id, name, created_at from model where name = $1")
        .bind(name)
        .fetch_one(&mut **tx)
        .await
}

pub async fn version_by_sha(
    db: impl sqlx::PgExecutor<'_>,
    model_id: i64,
    sha256: &str,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar("select version from model_version where model_id = $1 and sha256 = $2")
        .bind(model_id)
        .bind(sha256)
        .fetch_optional(db)
        .await
}

/// What a new version is made of.
pub struct NewVersion<'a> {
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub card: serde_json::Value,
    pub signature: serde_json::Value,
    pub metadata: serde_json::Value,
    pub reference_sha256: Option<&'a str>,
    pub reference_rows: Option<i32>,
    pub source: &'a str,
    pub actor: Option<i64>,
}

/// Adds the next version of a model; returns its id and number.
pub async fn insert_version(
    tx: &mut Transaction<'_, Postgres>,
    model_id: i64,
    new: &NewVersion<'_>,
) -> sqlx::Result<(i64, i32)> {
    // Serialise version numbering per model.
    sqlx::query("select id from model where id = $1 for update")
        .bind(model_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query_as(
        "insert into model_version (model_id, version, sha256, size_bytes, card, signature, metadata,
                                    reference_sha256, reference_rows, source, created_by)
         values ($1, (select coalesce(max(version), 0) + 1 from model_version where model_id = $1),
                 $2, $3, $4, $5, $6, $7, $8, $9, $10)
         returning id, version",
    )
    .bind(model_id)
    .bind(new.sha256)
    .bind(new.size_bytes)
    .bind(Json(&new.card))
    .bind(Json(&new.signature))
    .bind(Json(&new.metadata))
    .bind(new.reference_sha256)
    .bind(new.reference_rows)
    .bind(new.source)
    .bind(new.actor)
    .fetch_one(&mut **tx)
    .await
}

/// Points `alias` at a version and records the move (with the rule that made it, when a rule
/// did). Returns the version it pointed at before.
pub async fn set_alias(
    tx: &mut Transaction<'_, Postgres>,
    model_id: i64,
    alias: &str,
    version_id: i64,
    actor: Option<i64>,
    reason: Option<&str>,
) -> sqlx::Result<Option<i64>> {
    let previous: Option<i64> = sqlx::query_scalar(
        "select version_id from model_alias where model_id = $1 and alias = $2 for update",
    )
    .bind(model_id)
    .bind(alias)
    .fetch_optional(&mut **tx)
    .await?;
    if previous == Some(version_id) {
        return Ok(previous);
    }
    sqlx::query(
        "insert into model_alias (model_id, alias, version_id, updated_by) values ($1, $2, $3, $4)
         on conflict (model_id, alias) do update
           set version_id = excluded.version_id, updated_by = excluded.updated_by, updated_at = now()",
    )
    .bind(model_id)
    .bind(alias)
    .bind(version_id)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "insert into alias_event (model_id, alias, from_version_id, to_version_id, actor_id, reason)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(model_id)
    .bind(alias)
    .bind(previous)
    .bind(version_id)
    .bind(actor)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(previous)
}

pub async fn has_alias(
    tx: &mut Transaction<'_, Postgres>,
    model_id: i64,
    alias: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from model_alias where model_id = $1 and alias = $2)",
    )
    .bind(model_id)
    .bind(alias)
    .fetch_one(&mut **tx)
    .await
}

/// The version `alias` points at.
pub async fn by_alias(
    pool: &PgPool,
    name: &str,
    alias: &str,
) -> sqlx::Result<Option<(ModelRow, VersionRow)>> {
    let sql = format!(
        "select {VERSION_COLUMNS} from model_version v
         join model m on m.id = v.model_id
         join model_alias a on a.version_id = v.id and a.model_id = m.id
         left join app_user u on u.id = v.created_by
         where m.name = $1 and a.alias = $2"
    );
    with_model(
        pool,
        name,
        sqlx::query_as(&sql)
            .bind(name)
            .bind(alias)
            .fetch_optional(pool)
            .await?,
    )
    .await
}

/// A version with its model's name and, when an alias points at it, the alias.
#[derive(Debug, sqlx::FromRow)]
pub struct NamedVersion {
    pub model: String,
    pub alias: Option<String>,
    #[sqlx(flatten)]
    pub version: VersionRow,
}

/// Every version of every model (`aliased_only`: only those an alias points at), by model and
/// version, one row per alias.
pub async fn all_versions(pool: &PgPool, aliased_only: bool) -> sqlx::Result<Vec<NamedVersion>> {
    let sql = format!(
        "select m.name as model, a.alias, {VERSION_COLUMNS} from model_version v
         join model m on m.id = v.model_id
         left join model_alias a on a.version_id = v.id and a.model_id = m.id
         left join app_user u on u.id = v.created_by
         where not $1 or a.alias is not null
         order by m.name, v.version, a.alias"
    );
    sqlx::query_as(&sql)
        .bind(aliased_only)
        .fetch_all(pool)
        .await
}

/// Version number `n` of a model.
pub async fn by_number(
    pool: &PgPool,
    name: &str,
    n: i32,
) -> sqlx::Result<Option<(ModelRow, VersionRow)>> {
    let sql = format!(
        "select {VERSION_COLUMNS} from model_version v
         join model m on m.id = v.model_id
         left join app_user u on u.id = v.created_by
         where m.name = $1 and v.version = $2"
    );
    with_model(
        pool,
        name,
        sqlx::query_as(&sql)
            .bind(name)
            .bind(n)
            .fetch_optional(pool)
            .await?,
    )
    .await
}

async fn with_model(
    pool: &PgPool,
    name: &str,
    version: Option<VersionRow>,
) -> sqlx::Result<Option<(ModelRow, VersionRow)>> {
    match version {
        None => Ok(None),
        Some(v) => Ok(find_model(pool, name).await?.map(|m| (m, v))),
    }
}

pub async fn version_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<VersionRow>> {
    let sql = format!(
        "select {VERSION_COLUMNS} from model_version v left join app_user u on u.id = v.created_by where v.id = $1"
    );
    sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
}

/// All versions of a model, newest first.
pub async fn versions(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<VersionRow>> {
    let sql = format!(
        "select {VERSION_COLUMNS} from model_version v left join app_user u on u.id = v.created_by
         where v.model_id = $1 order by v.version desc"
    );
    sqlx::query_as(&sql).bind(model_id).fetch_all(pool).await
}

/// Alias name and version number, for one model.
pub async fn aliases(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<(String, i32)>> {
    sqlx::query_as(
        "select a.alias, v.version from model_alias a join model_version v on v.id = a.version_id
         where a.model_id = $1 order by a.alias",
    )
    .bind(model_id)
    .fetch_all(pool)
    .await
}

/// One row of the catalogue: a model and the version `production` serves (if any).
#[derive(Debug, sqlx::FromRow)]
pub struct CatalogueRow {
    pub name: String,
    pub version: Option<i32>,
    pub card: Option<Json<serde_json::Value>>,
    pub versions: i64,
}

pub async fn catalogue(pool: &PgPool) -> sqlx::Result<Vec<CatalogueRow>> {
    sqlx::query_as(
        "select m.name, v.version, coalesce(v.card, latest.card) as card,
                (select count(*) from model_version where model_id = m.id) as versions
         from model m
         left join model_alias a on a.model_id = m.id and a.alias = 'production'
         left join model_version v on v.id = a.version_id
         left join lateral (select card from model_version where model_id = m.id
                            order by version desc limit 1) latest on true
         order by m.name",
    )
    .fetch_all(pool)
    .await
}

/// An alias move, for the history on the model's admin page.
#[derive(Debug, sqlx::FromRow)]
pub struct AliasEvent {
    pub alias: String,
    pub from_version: Option<i32>,
    pub to_version: i32,
    pub actor: Option<String>,
    /// The rule that moved it, when a rule did.
    pub reason: Option<String>,
    pub created_at: OffsetDateTime,
}

pub async fn alias_events(
    pool: &PgPool,
    model_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<AliasEvent>> {
    sqlx::query_as(
        "select e.alias, f.version as from_version, t.version as to_version, u.username as actor, e.reason, e.created_at
         from alias_event e
         left join model_version f on f.id = e.from_version_id
         join model_version t on t.id = e.to_version_id
         left join app_user u on u.id = e.actor_id
         where e.model_id = $1
         order by e.created_at desc, e.id desc
         limit $2",
    )
    .bind(model_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The version `alias` pointed at before its latest move: where a rollback goes.
pub async fn previous_target(
    pool: &PgPool,
    model_id: i64,
    alias: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select from_version_id from alias_event where model_id = $1 and alias = $2
         order by created_at desc, id desc limit 1",
    )
    .bind(model_id)
    .bind(alias)
    .fetch_optional(pool)
    .await
    .map(Option::flatten)
}
