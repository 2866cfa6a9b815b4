//! The data set tables: `dataset`, `dataset_version`, `model_version_dataset`.

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;

/// A data set with its latest version's figures.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DatasetRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: OffsetDateTime,
    pub versions: i64,
    pub latest: Option<i32>,
    pub latest_rows: Option<i64>,
    /// Model versions linked to any of its versions.
    pub used_by: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DatasetVersionRow {
    pub id: i64,
    pub dataset_id: i64,
    pub dataset: String,
    pub version: i32,
    pub sha256: String,
    pub size_bytes: i64,
    pub row_count: i64,
    pub format: String,
    pub schema: Json<serde_json::Value>,
    pub profile: Json<serde_json::Value>,
    pub key_column: Option<String>,
    pub location_kind: String,
    pub location: String,
    pub created_at: OffsetDateTime,
    pub created_by_name: Option<String>,
}

const VERSION_COLUMNS: &str = "dv.id, dv.dataset_id, d.name as dataset, dv.version, dv.sha256,
     dv.size_bytes, dv.row_count, dv.format, dv.schema, dv.profile, dv.key_column,
     dv.location_kind, dv.location, dv.created_at, u.username as created_by_name";

const DATASET_SELECT: &str = "select d.id, d.name, d.description, d.created_at,
            (select count(*) from dataset_version v where v.dataset_id = d.id) as versions,
            (select max(version) from dataset_version v where v.dataset_id = d.id) as latest,
            (select row_count from dataset_version v where v.dataset_id = d.id
              order by version desc limit 1) as latest_rows,
            (select count(distinct l.version_id) from model_version_dataset l
               join dataset_version v on v.id = l.dataset_version_id
              where v.dataset_id = d.id) as used_by
       from dataset d";

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<DatasetRow>> {
    sqlx::query_as(&format!("{DATASET_SELECT} order by d.name"))
        .fetch_all(pool)
        .await
}

pub async fn find(pool: &PgPool, name: &str) -> sqlx::Result<Option<DatasetRow>> {
    sqlx::query_as(&format!("{DATASET_SELECT} where d.name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await
}

/// A data set's versions, newest first.
pub async fn versions(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<DatasetVersionRow>> {
    sqlx::query_as(&format!(
        "select {VERSION_COLUMNS} from dataset_version dv join dataset d on d.id = dv.dataset_id
         left join app_user u on u.id = dv.created_by
         where dv.dataset_id = $1 order by dv.version desc"
    ))
    .bind(dataset_id)
    .fetch_all(pool)
    .await
}

/// Version `version` of data set `name`; its latest when `version` is `None`.
pub async fn version(
    db: impl sqlx::PgExecutor<'_>,
    name: &str,
    version: Option<i32>,
) -> sqlx::Result<Option<DatasetVersionRow>> {
    sqlx::query_as(&format!(
        "select {VERSION_COLUMNS} from dataset_version dv join dataset d on d.id = dv.dataset_id
         left join app_user u on u.id = dv.created_by
         where d.name = $1 and ($2::int is null or dv.version = $2)
         order by dv.version desc limit 1"
    ))
    .bind(name)
    .bind(version)
    .fetch_optional(db)
    .await
}

/// The data set version with this SHA-256 (the earliest added, if several data sets hold it).
pub async fn by_sha(
    db: impl sqlx::PgExecutor<'_>,
    sha256: &str,
) -> sqlx::Result<Option<DatasetVersionRow>> {
    sqlx::query_as(&format!(
        "select {VERSION_COLUMNS} from dataset_version dv join dataset d on d.id = dv.dataset_id
         left join app_user u on u.id = dv.created_by
         where dv.sha256 = $1 order by dv.id limit 1"
    ))
    .bind(sha256)
    .fetch_optional(db)
    .await
}

/// Every data set version, for the upload form's choices: newest first within each data set.
pub async fn all_versions(pool: &PgPool) -> sqlx::Result<Vec<(String, i32, i64)>> {
    sqlx::query_as(
        "select d.name, v.version, v.row_count from dataset_version v
         join dataset d on d.id = v.dataset_id order by d.name, v.version desc limit 500",
    )
    .fetch_all(pool)
    .await
}

/// What a new data set version is.
pub struct NewDatasetVersion<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub sha256: &'a str,
    pub size_bytes: i64,
    pub row_count: i64,
    pub format: &'a str,
    pub schema: serde_json::Value,
    pub profile: serde_json::Value,
    pub key_column: Option<&'a str>,
    pub location_kind: &'a str,
    pub location: &'a str,
    pub actor: Option<i64>,
}

/// Adds a version to data set `name` (created if new). The same file already in that data set
/// is its existing version: returns the version's number and whether it is new.
pub async fn add(pool: &PgPool, new: &NewDatasetVersion<'_>) -> sqlx::Result<(i32, bool)> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into dataset (name, description, created_by) values ($1, $2, $3)
         on conflict (name) do nothing",
    )
    .bind(new.name)
    .bind(new.description)
    .bind(new.actor)
    .execute(&mut *tx)
    .await?;
    // Serialises numbering per data set.
    let dataset_id: i64 = sqlx::query_scalar("select id from dataset where name = $1 for update")
        .bind(new.name)
        .fetch_one(&mut *tx)
        .await?;
    if !new.description.is_empty() {
        sqlx::query("update dataset set description = $2 where id = $1")
            .bind(dataset_id)
            .bind(new.description)
            .execute(&mut *tx)
            .await?;
    }
    let existing: Option<i32> = sqlx::query_scalar(
        "select version from dataset_version where dataset_id = $1 and sha256 = $2",
    )
    .bind(dataset_id)
    .bind(new.sha256)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(v) = existing {
        tx.commit().await?;
        return Ok((v, false));
    }
    let version: i32 = sqlx::query_scalar(
        "insert into dataset_version (dataset_id, version, sha256, size_bytes, row_count, format,
                                      schema, profile, key_column, location_kind, location,
                                      created_by)
         values ($1, (select coalesce(max(version), 0) + 1 from dataset_version
                      where dataset_id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         returning version",
    )
    .bind(dataset_id)
    .bind(new.sha256)
    .bind(new.size_bytes)
    .bind(new.row_count)
    .bind(new.format)
    .bind(Json(&new.schema))
    .bind(Json(&new.profile))
    .bind(new.key_column)
    .bind(new.location_kind)
    .bind(new.location)
    .bind(new.actor)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((version, true))
}

/// A link between a model version and a data set version.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LinkRow {
    pub model: String,
    pub model_version: i32,
    pub dataset: String,
    pub dataset_version: i32,
    pub role: String,
    pub sha256: String,
    pub row_count: i64,
}

const LINK_SELECT: &str = "select m.name as model, mv.version as model_version,
            d.name as dataset, dv.version as dataset_version, l.role, dv.sha256, dv.row_count
       from model_version_dataset l
       join model_version mv on mv.id = l.version_id
       join model m on m.id = mv.model_id
       join dataset_version dv on dv.id = l.dataset_version_id
       join dataset d on d.id = dv.dataset_id";

/// Links a model version to a data set version in a role; linking twice is linking once.
pub async fn link(
    db: impl sqlx::PgExecutor<'_>,
    version_id: i64,
    dataset_version_id: i64,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into model_version_dataset (version_id, dataset_version_id, role)
         values ($1, $2, $3) on conflict do nothing",
    )
    .bind(version_id)
    .bind(dataset_version_id)
    .bind(role)
    .execute(db)
    .await?;
    Ok(())
}

/// The data sets of a model's versions.
pub async fn links_of_model(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<LinkRow>> {
    sqlx::query_as(&format!(
        "{LINK_SELECT} where mv.model_id = $1 order by mv.version, l.role desc, d.name"
    ))
    .bind(model_id)
    .fetch_all(pool)
    .await
}

/// The model versions that used a data set version.
pub async fn links_of_dataset_version(
    pool: &PgPool,
    dataset_version_id: i64,
) -> sqlx::Result<Vec<LinkRow>> {
    sqlx::query_as(&format!(
        "{LINK_SELECT} where l.dataset_version_id = $1 order by m.name, mv.version"
    ))
    .bind(dataset_version_id)
    .fetch_all(pool)
    .await
}

/// The model versions that used any version of a data set.
pub async fn links_of_dataset(pool: &PgPool, dataset_id: i64) -> sqlx::Result<Vec<LinkRow>> {
    sqlx::query_as(&format!(
        "{LINK_SELECT} where dv.dataset_id = $1 order by dv.version desc, m.name, mv.version"
    ))
    .bind(dataset_id)
    .fetch_all(pool)
    .await
}

/// A data set version as people name it: `name@N`, or `name` for its latest. (A suffix that is
/// not a number stays part of the name, which then matches no data set.)
pub fn parse_spec(spec: &str) -> (&str, Option<i32>) {
    let spec = spec.trim();
    match spec.rsplit_once('@') {
        Some((name, v)) => match v.parse::<i32>() {
            Ok(v) => (name, Some(v)),
            Err(_) => (spec, None),
        },
        None => (spec, None),
    }
}

/// The roles a link can have.
pub const ROLES: [&str; 2] = ["training", "evaluation"];

/// Checks a link's role; the message names the ones there are.
pub fn check_role(role: &str) -> Result<(), String> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(format!(
            "{role:?} is not a role; use training or evaluation."
        ))
    }
}

/// What a card's `[training]` names of the data a version was trained and evaluated on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lineage<'a> {
    pub data_sha256: Option<&'a str>,
    pub dataset: Option<&'a str>,
    pub evaluation_dataset: Option<&'a str>,
}

/// Links a new version to what its card's `[training]` names: the data set version with its
/// `data_sha256`, else `dataset` (as `name` for the latest version, or `name@N`), and
/// `evaluation_dataset` likewise. Names that are not registered stay text in the card.
pub async fn link_lineage(
    tx: &mut Transaction<'_, Postgres>,
    version_id: i64,
    training: Lineage<'_>,
) -> sqlx::Result<()> {
    let mut found = None;
    if let Some(sha) = training.data_sha256 {
        found = by_sha(&mut **tx, &sha.to_ascii_lowercase()).await?;
    }
    if found.is_none() {
        if let Some(spec) = training.dataset {
            let (name, v) = parse_spec(spec);
            found = version(&mut **tx, name, v).await?;
        }
    }
    if let Some(dv) = found {
        link(&mut **tx, version_id, dv.id, "training").await?;
    }
    if let Some(spec) = training.evaluation_dataset {
        let (name, v) = parse_spec(spec);
        if let Some(dv) = version(&mut **tx, name, v).await? {
            link(&mut **tx, version_id, dv.id, "evaluation").await?;
        }
    }
    Ok(())
}
