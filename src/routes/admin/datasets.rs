//! `/admin/datasets`: data sets and their versions (profiles, the model versions that used
//! each), adding a version from a file or an object-store URL, and two versions compared.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::dataset_views::{columns, ColumnView, ShiftView};
use crate::auth::context::flash;
use crate::auth::{PageCtx, StaffOnly};
use crate::batch::Format;
use crate::datasets::diff::{difference, RowChanges};
use crate::datasets::{self, AddError, Adding, Location};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::read_form_spooled;
use crate::web::{render, see_other};
use plinth_store as db;
use plinth_store::datasets::{DatasetRow, DatasetVersionRow, LinkRow};

pub struct DatasetSummary {
    pub name: String,
    pub description: String,
    pub versions: i64,
    pub latest: String,
    pub rows: String,
    pub used_by: i64,
}

impl From<&DatasetRow> for DatasetSummary {
    fn from(d: &DatasetRow) -> Self {
        DatasetSummary {
            name: d.name.clone(),
            description: d.description.clone(),
            versions: d.versions,
            latest: d.latest.map_or_else(|| "—".into(), |v| v.to_string()),
            rows: d.latest_rows.map_or_else(|| "—".into(), |r| r.to_string()),
            used_by: d.used_by,
        }
    }
}

/// A data set version in a table.
pub struct VersionView {
    pub version: i32,
    pub sha_short: String,
    pub rows: i64,
    pub columns: usize,
    pub format: String,
    pub key: String,
    pub location: String,
    pub from_url: bool,
    pub added: String,
    pub by: String,
    pub used_by: Vec<(String, i32, String)>,
}

fn version_view(v: &DatasetVersionRow, links: &[LinkRow]) -> VersionView {
    VersionView {
        version: v.version,
        sha_short: v.sha256.chars().take(12).collect(),
        rows: v.row_count,
        columns: v.schema.0.as_array().map_or(0, Vec::len),
        format: v.format.clone(),
        key: v.key_column.clone().unwrap_or_default(),
        location: if v.location_kind == "url" {
            v.location.clone()
        } else {
            "uploaded".into()
        },
        from_url: v.location_kind == "url",
        added: crate::web::fmt_time(&Some(v.created_at)),
        by: v.created_by_name.clone().unwrap_or_else(|| "—".into()),
        used_by: links
            .iter()
            .filter(|l| l.dataset_version == v.version)
            .map(|l| (l.model.clone(), l.model_version, l.role.clone()))
            .collect(),
    }
}

/// The add form's values, kept when it is refused.
#[derive(Default)]
pub struct AddForm {
    pub name: String,
    pub description: String,
    pub key: String,
    pub url: String,
}

#[derive(Template)]
#[template(path = "admin/datasets.html")]
struct DatasetsPage {
    ctx: PageCtx,
    datasets: Vec<DatasetSummary>,
    form: AddForm,
    error: Option<String>,
    urls: bool,
}

async fn datasets_page(
    ctx: PageCtx,
    state: &AppState,
    form: AddForm,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let datasets = db::datasets::list(&state.pool)
        .await?
        .iter()
        .map(DatasetSummary::from)
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let page = DatasetsPage {
        ctx,
        datasets,
        form,
        error,
        urls: !state.settings.job_urls.is_empty(),
    };
    render(&page, status)
}

pub async fn datasets_index(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    datasets_page(ctx, &state, AddForm::default(), None).await
}

/// Adds a data set version from the form: a file, or an object-store URL.
pub async fn add_dataset(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let limit = usize::try_from(state.settings.max_job_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let mut submitted = read_form_spooled(
        &req,
        payload,
        limit,
        &crate::batch::jobs::spool_dir(&state),
        true,
    )
    .await?;
    let form = AddForm {
        name: submitted.field("name").trim().to_string(),
        description: submitted.field("description").trim().to_string(),
        key: submitted.field("key").trim().to_string(),
        url: submitted.field("url").trim().to_string(),
    };
    let file = submitted.spooled.remove("file").filter(|(_, f)| f.size > 0);
    if let Err(e) = datasets::check_name(&form.name) {
        return datasets_page(ctx, &state, form, Some(e)).await;
    }
    let (spooled, format, location) = match (file, form.url.is_empty()) {
        (Some((filename, f)), true) => (f, Format::from_name(&filename), Location::Uploaded),
        (None, false) => {
            let f = match crate::batch::jobs::fetch(&state, &form.url).await {
                Ok(f) => f,
                Err(AppError::Unprocessable(e)) => {
                    return datasets_page(ctx, &state, form, Some(e)).await
                }
                Err(e) => return Err(e),
            };
            (f, Format::from_name(&form.url), Location::Url(&form.url))
        }
        (Some(_), false) => {
            let e = "Choose a file or give a URL, not both.".to_string();
            return datasets_page(ctx, &state, form, Some(e)).await;
        }
        (None, true) => {
            let e = "Choose the file to add, or give its object-store URL.".to_string();
            return datasets_page(ctx, &state, form, Some(e)).await;
        }
    };
    let adding = Adding {
        name: &form.name,
        description: &form.description,
        key: Some(form.key.as_str()),
        format,
        location,
        actor: Some(user.id),
    };
    match datasets::add(
        &state.pool,
        state.registry.artifacts(),
        &spooled.path,
        adding,
    )
    .await
    {
        Ok(added) => {
            crate::audit::dataset_added(&state.pool, Some(&req), &user, &added).await?;
            let message = if added.created {
                format!(
                    "Added {} version {} ({} rows).",
                    added.name, added.version, added.rows
                )
            } else {
                format!(
                    "That file is version {} of {} already; nothing was added.",
                    added.version, added.name
                )
            };
            if let Some(session) = ctx.session() {
                flash(session, "success", message);
            }
            Ok(see_other(&format!(
                "/admin/datasets/{}/versions/{}",
                added.name, added.version
            )))
        }
        Err(AddError::Invalid(e)) => datasets_page(ctx, &state, form, Some(e)).await,
        Err(AddError::Database(e)) => Err(e.into()),
        Err(AddError::Storage(e)) => Err(AppError::internal(e)),
    }
}

async fn dataset_or_404(state: &AppState, name: &str) -> Result<DatasetRow, AppError> {
    db::datasets::find(&state.pool, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no data set called {name}.")))
}

#[derive(Template)]
#[template(path = "admin/dataset.html")]
struct DatasetPage {
    ctx: PageCtx,
    name: String,
    description: String,
    versions: Vec<VersionView>,
    urls: bool,
    /// The two versions the compare form starts with.
    pick: (i32, i32),
}

pub async fn dataset_admin(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let d = dataset_or_404(&state, &name).await?;
    let rows = db::datasets::versions(&state.pool, d.id).await?;
    let links = db::datasets::links_of_dataset(&state.pool, d.id).await?;
    let versions: Vec<VersionView> = rows.iter().map(|v| version_view(v, &links)).collect();
    let latest = versions.first().map_or(1, |v| v.version);
    let before = versions.get(1).map_or(latest, |v| v.version);
    let page = DatasetPage {
        ctx,
        name: d.name,
        description: d.description,
        versions,
        urls: !state.settings.job_urls.is_empty(),
        pick: (before, latest),
    };
    render(&page, StatusCode::OK)
}

#[derive(Template)]
#[template(path = "admin/dataset_version.html")]
struct DatasetVersionPage {
    ctx: PageCtx,
    name: String,
    v: VersionView,
    sha256: String,
    columns: Vec<ColumnView>,
    previous: Option<i32>,
}

async fn version_or_404(
    state: &AppState,
    name: &str,
    version: i32,
) -> Result<DatasetVersionRow, AppError> {
    db::datasets::version(&state.pool, name, Some(version))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{name} has no version {version}.")))
}

pub async fn dataset_version(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let (name, version) = path.into_inner();
    let row = version_or_404(&state, &name, version).await?;
    let links = db::datasets::links_of_dataset_version(&state.pool, row.id).await?;
    let schema = datasets::schema_of(&row);
    let page = DatasetVersionPage {
        ctx,
        name: row.dataset.clone(),
        columns: columns(&schema, &row.profile.0, row.key_column.as_deref()),
        sha256: row.sha256.clone(),
        previous: (version > 1).then_some(version - 1),
        v: version_view(&row, &links),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct PairQuery {
    pub a: Option<i32>,
    pub b: Option<i32>,
}

#[derive(Template)]
#[template(path = "admin/dataset_diff.html")]
struct DiffPage {
    ctx: PageCtx,
    name: String,
    a: i32,
    b: i32,
    versions: Vec<i32>,
    a_rows: usize,
    b_rows: usize,
    added_columns: Vec<String>,
    removed_columns: Vec<String>,
    retyped_columns: Vec<(String, String, String)>,
    rows: Option<RowChanges>,
    /// Why rows are not compared one by one.
    unkeyed: String,
    shifts: Vec<ShiftView>,
    drifted: usize,
}

/// Two versions of a data set compared: schema, rows (when keyed), each column's distribution.
pub async fn dataset_diff(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PairQuery>,
) -> Result<HttpResponse, AppError> {
    let d = dataset_or_404(&state, &name).await?;
    let versions: Vec<i32> = db::datasets::versions(&state.pool, d.id)
        .await?
        .iter()
        .map(|v| v.version)
        .collect();
    let latest = versions.first().copied().unwrap_or(1);
    let b = query.b.unwrap_or(latest);
    let a = query.a.unwrap_or(if b > 1 { b - 1 } else { b });
    let (ra, rb) = (
        version_or_404(&state, &d.name, a).await?,
        version_or_404(&state, &d.name, b).await?,
    );
    let (ta, tb) = match (
        datasets::load(&state, &ra).await,
        datasets::load(&state, &rb).await,
    ) {
        (Ok(ta), Ok(tb)) => (ta, tb),
        (Err(e), _) | (_, Err(e)) => return Err(AppError::Unavailable(e)),
    };
    let (sa, sb) = (datasets::schema_of(&ra), datasets::schema_of(&rb));
    let key = match (&ra.key_column, &rb.key_column) {
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        _ => None,
    };
    let unkeyed = match (&ra.key_column, &rb.key_column) {
        (Some(x), Some(y)) if x != y => format!(
            "Version {a} is keyed by {x} and version {b} by {y}, so rows are not matched one by one."
        ),
        (Some(_), Some(_)) => String::new(),
        _ => "Rows are matched one by one when both versions name a key column; these are compared by distribution only.".into(),
    };
    let key_for = key.clone();
    let found = state
        .heavy
        .run(move || difference(&ta, &sa, &tb, &sb, key_for.as_deref()))
        .await?;
    let shifts: Vec<ShiftView> = found.shifts.iter().map(ShiftView::from).collect();
    let page = DiffPage {
        ctx,
        name: d.name,
        a,
        b,
        versions,
        a_rows: found.a_rows,
        b_rows: found.b_rows,
        added_columns: found.added_columns,
        removed_columns: found.removed_columns,
        retyped_columns: found
            .retyped_columns
            .iter()
            .map(|(c, x, y)| (c.clone(), x.as_str().to_string(), y.as_str().to_string()))
            .collect(),
        drifted: shifts.iter().filter(|s| s.drifted).count(),
        rows: found.rows,
        unkeyed,
        shifts,
    };
    render(&page, StatusCode::OK)
}
