//! Staff: data sets (add a version, read its profile, compare two), the data sets a model
//! version was trained and evaluated on, and two model versions compared over their reference
//! rows.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{rfc3339, ErrorBody};
use crate::api::json_body;
use crate::auth::ApiStaff;
use crate::batch::Format;
use crate::datasets::{self, AddError, Adding, Location};
use crate::error::AppError;
use crate::state::AppState;
use plinth_store::datasets::{DatasetVersionRow, LinkRow};

pub mod comparisons;
pub mod links;

pub use comparisons::{compare_versions, get_comparison, CompareRequest, ComparisonOut};
pub use links::{link_dataset, LinkOut, LinkRequest, LinksOut};

/// A data set version.
#[derive(Serialize, ToSchema)]
pub struct DatasetVersionOut {
    pub dataset: String,
    pub version: i32,
    pub sha256: String,
    pub size_bytes: i64,
    pub rows: i64,
    /// `csv` or `parquet`.
    pub format: String,
    /// `[{"name", "kind": "number" | "text"}]`.
    #[schema(value_type = Vec<Object>)]
    pub schema: serde_json::Value,
    /// Per column: count, missing, distinct; numbers: mean, std, min, quantiles, max and a
    /// histogram; text: the most frequent values.
    #[schema(value_type = Object)]
    pub profile: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// `uploaded`, or the object-store URL it is read from.
    pub location: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    pub used_by: Vec<LinkOut>,
    pub page: String,
}

fn version_out(v: &DatasetVersionRow, links: &[LinkRow]) -> DatasetVersionOut {
    DatasetVersionOut {
        dataset: v.dataset.clone(),
        version: v.version,
        sha256: v.sha256.clone(),
        size_bytes: v.size_bytes,
        rows: v.row_count,
        format: v.format.clone(),
        schema: v.schema.0.clone(),
        profile: v.profile.0.clone(),
        key_column: v.key_column.clone(),
        location: if v.location_kind == "url" {
            v.location.clone()
        } else {
            "uploaded".into()
        },
        created_at: rfc3339(v.created_at),
        created_by: v.created_by_name.clone(),
        used_by: links
            .iter()
            .filter(|l| l.dataset_version == v.version)
            .map(LinkOut::from)
            .collect(),
        page: format!("/admin/datasets/{}/versions/{}", v.dataset, v.version),
    }
}

/// What adding a file did.
#[derive(Serialize, ToSchema)]
pub struct AddedOut {
    /// False when the file was that version of the data set already.
    pub created: bool,
    pub version: DatasetVersionOut,
}

/// A data set in the list.
#[derive(Serialize, ToSchema)]
pub struct DatasetOut {
    pub name: String,
    pub description: String,
    pub versions: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<i32>,
    /// Model versions linked to any of its versions.
    pub used_by: i64,
    pub page: String,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetList {
    pub datasets: Vec<DatasetOut>,
}

/// A data set with all its versions, newest first.
#[derive(Serialize, ToSchema)]
pub struct DatasetDetail {
    pub name: String,
    pub description: String,
    pub versions: Vec<DatasetVersionOut>,
}

/// Staff: the data sets.
#[utoipa::path(
    get,
    path = "/api/v1/datasets",
    tag = "v1 data",
    responses(
        (status = 200, description = "The data sets", body = DatasetList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_datasets(
    _staff: ApiStaff,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let datasets = plinth_store::datasets::list(&state.pool)
        .await?
        .into_iter()
        .map(|d| DatasetOut {
            page: format!("/admin/datasets/{}", d.name),
            name: d.name,
            description: d.description,
            versions: d.versions,
            latest: d.latest,
            used_by: d.used_by,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DatasetList { datasets }))
}

/// A data set version read from an object store.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetFromUrl {
    pub name: String,
    /// `s3://bucket/train.csv` (or `gs://`, `az://`), under one of the server's
    /// `PLINTH_JOB_URLS`. Recorded, not copied: read again when compared.
    pub url: String,
    /// `csv` or `parquet`; by default from the URL's extension.
    pub format: Option<String>,
    /// A column whose values name the rows (unique).
    pub key: Option<String>,
    pub description: Option<String>,
}

/// Options for a file sent as the body.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AddQuery {
    /// The data set (created if new).
    pub name: Option<String>,
    /// A column whose values name the rows (unique).
    pub key: Option<String>,
    pub description: Option<String>,
    /// The file's name (`.parquet` for Parquet with `application/octet-stream`).
    pub filename: Option<String>,
}

fn format_of(text: Option<&str>, fallback: Format) -> Result<Format, AppError> {
    match text {
        None => Ok(fallback),
        Some(t) => Format::parse(t).ok_or_else(|| {
            AppError::Unprocessable(format!("{t:?} is not a format; use csv or parquet."))
        }),
    }
}

/// Staff: adds a data set version (the data set is created if new). The same file added to the
/// same data set again answers 200 with the version it already is.
///
/// Send the file as the body (`text/csv` or `application/vnd.apache.parquet`) with `name` in
/// the query, or a JSON body naming an object-store URL.
#[utoipa::path(
    post,
    path = "/api/v1/datasets",
    tag = "v1 data",
    params(AddQuery),
    request_body(content = DatasetFromUrl, description = "A CSV or Parquet file as the body (with `?name=`), or a JSON object naming an object-store URL", content_type = "application/json"),
    responses(
        (status = 201, description = "A new version", body = AddedOut),
        (status = 200, description = "The same file was that version already", body = AddedOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 413, description = "The file is too large", body = ErrorBody),
        (status = 415, description = "Not CSV, Parquet or JSON", body = ErrorBody),
        (status = 422, description = "The file cannot be read, or the name or key is wrong (the message says which)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn add_dataset(
    req: HttpRequest,
    payload: web::Payload,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    query: web::Query<AddQuery>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(_, staff) = api_staff;
    let content_type = req.content_type().to_ascii_lowercase();
    let (file, name, key, description, format, url) = match content_type.as_str() {
        "application/json" => {
            let body = super::jobs::read_small(payload, state.settings.max_body_bytes).await?;
            let r: DatasetFromUrl = json_body(&req, &body)?;
            let fallback = Format::from_name(&r.url);
            let format = format_of(r.format.as_deref(), fallback)?;
            let file = crate::batch::jobs::fetch(&state, &r.url).await?;
            (file, r.name, r.key, r.description, format, Some(r.url))
        }
        "text/csv" | "application/csv" | "application/vnd.apache.parquet"
        | "application/x-parquet" | "application/octet-stream" => {
            let name = query.name.clone().ok_or_else(|| {
                AppError::Unprocessable("Name the data set: ?name=… (the file is the body).".into())
            })?;
            datasets::check_name(&name).map_err(AppError::Unprocessable)?;
            let file = crate::batch::jobs::spool_body(&state, &req, payload).await?;
            let format = Format::of_body(&content_type, query.filename.as_deref());
            (
                file,
                name,
                query.key.clone(),
                query.description.clone(),
                format,
                None,
            )
        }
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Send the file as text/csv or application/vnd.apache.parquet, or JSON naming a URL; not {other:?}."
            )))
        }
    };
    let adding = Adding {
        name: &name,
        description: description.as_deref().unwrap_or(""),
        key: key.as_deref(),
        format,
        location: match &url {
            Some(u) => Location::Url(u),
            None => Location::Uploaded,
        },
        actor: Some(staff.id),
    };
    let added =
        match datasets::add(&state.pool, state.registry.artifacts(), &file.path, adding).await {
            Ok(a) => a,
            Err(AddError::Invalid(e)) => return Err(AppError::Unprocessable(e)),
            Err(AddError::Database(e)) => return Err(e.into()),
            Err(AddError::Storage(e)) => return Err(AppError::internal(e)),
        };
    crate::audit::dataset_added(&state.pool, Some(&req), &staff, &added).await?;
    let row = plinth_store::datasets::version(&state.pool, &added.name, Some(added.version))
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("the version just added is gone")))?;
    let links = plinth_store::datasets::links_of_dataset_version(&state.pool, row.id).await?;
    let body = AddedOut {
        created: added.created,
        version: version_out(&row, &links),
    };
    Ok(if added.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

async fn dataset_or_404(
    state: &AppState,
    name: &str,
) -> Result<plinth_store::datasets::DatasetRow, AppError> {
    plinth_store::datasets::find(&state.pool, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no data set called {name}.")))
}

/// Staff: a data set and its versions, with their profiles and the model versions that used
/// each.
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}",
    tag = "v1 data",
    params(("name" = String, Path, description = "Data set name", example = "iris-train")),
    responses(
        (status = 200, description = "The data set", body = DatasetDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such data set", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_dataset(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let d = dataset_or_404(&state, &name).await?;
    let links = plinth_store::datasets::links_of_dataset(&state.pool, d.id).await?;
    let versions = plinth_store::datasets::versions(&state.pool, d.id)
        .await?
        .iter()
        .map(|v| version_out(v, &links))
        .collect();
    Ok(HttpResponse::Ok().json(DatasetDetail {
        name: d.name,
        description: d.description,
        versions,
    }))
}

/// Staff: one data set version.
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/versions/{version}",
    tag = "v1 data",
    params(("name" = String, Path, description = "Data set name", example = "iris-train"),
           ("version" = i32, Path, description = "Version number", example = 1)),
    responses(
        (status = 200, description = "The version", body = DatasetVersionOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such data set or version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_dataset_version(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let (name, version) = path.into_inner();
    let row = plinth_store::datasets::version(&state.pool, &name, Some(version))
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "There is no version {version} of a data set called {name}."
            ))
        })?;
    let links = plinth_store::datasets::links_of_dataset_version(&state.pool, row.id).await?;
    Ok(HttpResponse::Ok().json(version_out(&row, &links)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PairParams {
    /// The earlier version (default: the one before `b`).
    pub a: Option<i32>,
    /// The later version (default: the latest).
    pub b: Option<i32>,
}

/// Staff: what changed between two versions of a data set: columns, rows (when both are keyed
/// by the same column) and each shared column's distribution with the drift statistic.
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/diff",
    tag = "v1 data",
    params(("name" = String, Path, description = "Data set name", example = "iris-train"), PairParams),
    responses(
        (status = 200, description = "The difference", body = Object),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such data set or version", body = ErrorBody),
        (status = 503, description = "A file cannot be read just now", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn dataset_diff(
    _staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PairParams>,
) -> Result<HttpResponse, AppError> {
    let d = dataset_or_404(&state, &name).await?;
    let latest = d.latest.unwrap_or(1);
    let b = query.b.unwrap_or(latest);
    let a = query.a.unwrap_or((b - 1).max(1));
    let get = |v: i32| {
        let state = state.clone();
        let name = d.name.clone();
        async move {
            plinth_store::datasets::version(&state.pool, &name, Some(v))
                .await?
                .ok_or_else(|| AppError::NotFound(format!("{name} has no version {v}.")))
        }
    };
    let (ra, rb) = (get(a).await?, get(b).await?);
    let ta = datasets::load(&state, &ra)
        .await
        .map_err(AppError::Unavailable)?;
    let tb = datasets::load(&state, &rb)
        .await
        .map_err(AppError::Unavailable)?;
    let (sa, sb) = (datasets::schema_of(&ra), datasets::schema_of(&rb));
    let key = match (&ra.key_column, &rb.key_column) {
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        _ => None,
    };
    let found = state
        .heavy
        .run(move || datasets::diff::difference(&ta, &sa, &tb, &sb, key.as_deref()))
        .await?;
    let mut body = serde_json::to_value(&found).map_err(AppError::internal)?;
    body["dataset"] = serde_json::json!(d.name);
    body["a"] = serde_json::json!(a);
    body["b"] = serde_json::json!(b);
    Ok(HttpResponse::Ok().json(body))
}
