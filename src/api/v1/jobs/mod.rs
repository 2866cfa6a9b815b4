//! Batch jobs over the API: submit a file (or an object-store URL), follow its progress,
//! download the results, cancel.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{rfc3339, ErrorBody, VersionQuery};
use crate::auth::ApiUser;
use crate::batch::jobs::{self, Submission};
use crate::batch::Format;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::forms::read_form_spooled;
use plinth_store::batch::{self as db, JobRow};

pub mod results;

pub use results::{errors, results, results_response, JobError, ResultsQuery};

/// A batch job as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct JobOut {
    pub id: i64,
    pub model: String,
    pub version: i32,
    /// `queued`, `running`, `finishing` (writing `output_url`), `done`, `failed` or `cancelled`.
    pub state: String,
    /// The uploaded file's name, or the URL read.
    pub input: String,
    /// `csv` or `parquet`.
    pub format: String,
    pub total_rows: i64,
    /// Rows scored or refused so far.
    pub rows_done: i64,
    /// Rows refused so far (see `/api/v1/jobs/{id}/errors`).
    pub rows_failed: i64,
    /// The job stops once more rows than this were refused.
    pub max_errors: i64,
    /// The features whose contributions (exact SHAP values) the results give, after an
    /// `explanation_base` column; absent when the job was not asked to explain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contributions: Option<Vec<String>>,
    /// Rows a second since the job started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// At the current pace, while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_left: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The results as CSV (`results?format=parquet` for Parquet), once the job is over.
    pub results: String,
    /// The job's page.
    pub page: String,
}

/// Progress figures: rows a second since the start, seconds left at that pace.
pub fn pace(job: &JobRow) -> (Option<f64>, Option<f64>) {
    let Some(started) = job.started_at else {
        return (None, None);
    };
    let end = job
        .finished_at
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let seconds = (end - started).as_seconds_f64();
    if seconds <= 0.0 || job.rows_done == 0 {
        return (None, None);
    }
    let rate = job.rows_done as f64 / seconds;
    let left =
        (job.state == "running").then(|| (job.total_rows - job.rows_done).max(0) as f64 / rate);
    (Some(rate), left)
}

impl From<&JobRow> for JobOut {
    fn from(j: &JobRow) -> Self {
        let (rows_per_second, seconds_left) = pace(j);
        JobOut {
            id: j.id,
            model: j.model.clone(),
            version: j.version,
            state: j.state.clone(),
            input: j.input_name.clone(),
            format: j.input_format.clone(),
            total_rows: j.total_rows,
            rows_done: j.rows_done,
            rows_failed: j.rows_failed,
            max_errors: j.max_errors,
            contributions: j.contributions.as_ref().map(|c| c.0.clone()),
            rows_per_second: rows_per_second.map(|r| (r * 10.0).round() / 10.0),
            seconds_left: seconds_left.map(|s| (s * 10.0).round() / 10.0),
            message: j.message.clone(),
            output_url: j.output_url.clone(),
            created_at: rfc3339(j.created_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            results: format!("/api/v1/jobs/{}/results", j.id),
            page: format!("/jobs/{}", j.id),
        }
    }
}

/// A job reading its input from an object store.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobFromUrl {
    /// `s3://bucket/key.csv` (or `gs://`, `az://`), under one of the server's `PLINTH_JOB_URLS`.
    pub input_url: String,
    /// Where to write the results too (`.parquet` for Parquet, else CSV).
    pub output_url: Option<String>,
    /// `csv` or `parquet`; by default from the URL's extension.
    pub format: Option<String>,
    /// Refused rows tolerated before the job stops (default `PLINTH_JOB_MAX_ERRORS`).
    pub max_errors: Option<i64>,
    /// Add each feature's contribution to every prediction (exact SHAP values, as
    /// `?explain=true` gives them): an `explanation_base` column and a `contribution_<feature>`
    /// column a feature. A model Plinth cannot explain is refused with a 422.
    pub explain: Option<bool>,
}

/// Options for a file sent as the body.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitQuery {
    /// A version number (default: the `production` alias).
    pub version: Option<i32>,
    /// An alias such as `staging`.
    pub alias: Option<String>,
    /// Refused rows tolerated before the job stops.
    pub max_errors: Option<i64>,
    /// Where to write the results too.
    pub output_url: Option<String>,
    /// The file's name, shown on the job's page.
    pub filename: Option<String>,
    /// Add each feature's contribution to the results (see `JobFromUrl.explain`).
    pub explain: Option<bool>,
}

/// Submits a batch scoring job.
///
/// Send the file as the body (`text/csv`, or `application/vnd.apache.parquet`), as the `file`
/// part of a `multipart/form-data` form (with optional `max_errors`, `output_url` and `explain`
/// parts before it), or name an object with a JSON body. `explain` adds each feature's
/// contribution (exact SHAP values) to the results. The columns are matched to the card's
/// features by name; other columns are passed through to the results.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/jobs",
    tag = "v1",
    params(("name" = String, Path, description = "Model name", example = "iris"), SubmitQuery),
    request_body(content = JobFromUrl, description = "A CSV or Parquet file as the body, a multipart form with a `file` part, or a JSON object naming an object-store URL", content_type = "application/json"),
    responses(
        (status = 201, description = "The job, queued", body = JobOut),
        (status = 400, description = "The request cannot be read", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "The file is too large", body = ErrorBody),
        (status = 415, description = "Not a format jobs take", body = ErrorBody),
        (status = 422, description = "The file cannot be read, or its columns do not fit the model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    api_user: ApiUser,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<SubmitQuery>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(caller, _) = api_user;
    let selector = VersionQuery {
        version: query.version,
        alias: query.alias.clone(),
    }
    .selector()?;
    // Unknown models are refused before a byte of the file is read.
    crate::serving::served(&state, &name, &selector).await?;
    let content_type = req.content_type().to_ascii_lowercase();
    let filename = query.filename.clone();
    let mut explain = query.explain.unwrap_or(false);
    let (file, input_name, format, output_url, max_errors) = match content_type.as_str() {
        "multipart/form-data" => {
            let limit = usize::try_from(state.settings.max_job_bytes)
                .unwrap_or(usize::MAX)
                .saturating_add(1 << 20);
            let mut form =
                read_form_spooled(&req, payload, limit, &jobs::spool_dir(&state), false).await?;
            let (filename, file) = form.spooled.remove("file").ok_or_else(|| {
                AppError::Unprocessable("The form has no file part called \"file\".".into())
            })?;
            let max_errors = parse_max_errors(form.field("max_errors"))?.or(query.max_errors);
            explain |= parse_explain(form.field("explain"))?;
            let output_url = Some(form.field("output_url").trim().to_string())
                .filter(|u| !u.is_empty())
                .or_else(|| query.output_url.clone());
            let format = Format::from_name(&filename);
            (file, filename, format, output_url, max_errors)
        }
        "text/csv" | "application/csv" | "application/vnd.apache.parquet"
        | "application/x-parquet" | "application/octet-stream" => {
            let file = jobs::spool_body(&state, &req, payload).await?;
            let format = Format::of_body(&content_type, filename.as_deref());
            let name = filename.unwrap_or_else(|| format!("upload.{}", format.as_str()));
            (file, name, format, query.output_url.clone(), query.max_errors)
        }
        "application/json" => {
            let body = read_small(payload, state.settings.max_body_bytes).await?;
            let request: JobFromUrl = crate::api::json_body(&req, &body)?;
            let format = match &request.format {
                Some(f) => Format::parse(f).ok_or_else(|| {
                    AppError::Unprocessable(format!("format must be csv or parquet, not {f:?}."))
                })?,
                None => Format::from_name(&request.input_url),
            };
            let file = jobs::fetch(&state, &request.input_url).await?;
            let max_errors = request.max_errors.or(query.max_errors);
            explain = request.explain.unwrap_or(explain);
            let output_url = request.output_url.or_else(|| query.output_url.clone());
            (file, request.input_url, format, output_url, max_errors)
        }
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Send the file as text/csv, application/vnd.apache.parquet or multipart/form-data, or a JSON object naming input_url; not {}.",
                if other.is_empty() { "a body without a content type" } else { other }
            )))
        }
    };
    let job = jobs::submit(
        &state,
        Submission {
            model: name.into_inner(),
            selector,
            caller,
            input_name: clean_name(&input_name),
            format,
            output_url,
            max_errors,
            explain,
        },
        &file.path,
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/jobs/{}", job.id)))
        .json(JobOut::from(&job)))
}

/// A file name as shown: its last path segment, without control characters, at most 200
/// characters.
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let base = if name.contains("://") { name } else { last };
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if clean.trim().is_empty() {
        "upload".into()
    } else {
        clean
    }
}

fn parse_max_errors(text: &str) -> Result<Option<i64>, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            AppError::Unprocessable("max_errors must be a whole number, 0 or more.".into())
        })
}

/// A form's `explain` field: a checkbox's `on`, or `true`/`false`.
fn parse_explain(text: &str) -> Result<bool, AppError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "off" => Ok(false),
        "true" | "1" | "on" => Ok(true),
        other => Err(AppError::Unprocessable(format!(
            "explain must be true or false, not {other:?}."
        ))),
    }
}

/// A JSON body of at most `limit` bytes, read from the stream (the body of an endpoint that
/// also takes large files, so no `web::Bytes` limit applies).
pub(super) async fn read_small(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, AppError> {
    use futures_util::StreamExt;
    let mut body = Vec::new();
    while let Some(piece) = payload.next().await {
        let piece =
            piece.map_err(|e| AppError::BadRequest(format!("The request body broke off: {e}")))?;
        if body.len() + piece.len() > limit {
            return Err(AppError::PayloadTooLarge(format!(
                "The JSON body is larger than {} KiB.",
                limit >> 10
            )));
        }
        body.extend_from_slice(&piece);
    }
    Ok(body)
}

/// The job, when the caller may see it (its owner, or staff); 404 otherwise.
pub async fn visible_job(
    state: &AppState,
    id: i64,
    user: &plinth_store::users::User,
) -> Result<JobRow, AppError> {
    db::get(&state.pool, id)
        .await?
        .filter(|job| jobs::may_see(job, user))
        .ok_or_else(|| AppError::NotFound(format!("There is no job {id}.")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many, newest first (default 50, at most 500).
    pub limit: Option<i64>,
}

/// Lists the caller's jobs, newest first (staff: everyone's).
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "v1",
    params(ListQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = [JobOut]),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    api_user: ApiUser,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let owner = (!user.is_staff).then_some(user.id);
    let jobs = db::list(&state.pool, owner, limit).await?;
    Ok(HttpResponse::Ok().json(jobs.iter().map(JobOut::from).collect::<Vec<_>>()))
}

/// A job and its progress.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "v1",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job (or not yours)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let job = visible_job(&state, *id, &user).await?;
    Ok(HttpResponse::Ok().json(JobOut::from(&job)))
}

/// Cancels a job that is not over. Rows already scored stay stored and in the results.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/cancel",
    tag = "v1",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, cancelled", body = JobOut),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job (or not yours)", body = ErrorBody),
        (status = 409, description = "The job is already over", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let job = visible_job(&state, *id, &user).await?;
    if !db::cancel(&state.pool, job.id, &user.username).await? {
        return Err(AppError::Conflict(format!(
            "Job {} is already {}.",
            job.id, job.state
        )));
    }
    let job = visible_job(&state, *id, &user).await?;
    Ok(HttpResponse::Ok().json(JobOut::from(&job)))
}
