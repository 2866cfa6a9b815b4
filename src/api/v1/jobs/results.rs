//! A job's results (CSV or Parquet, streamed) and its refused rows.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::visible_job;
use crate::api::v1::ErrorBody;
use crate::auth::ApiUser;
use crate::batch::jobs;
use crate::batch::Format;
use crate::error::AppError;
use crate::state::AppState;
use plinth_store::batch::{self as db, JobRow};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `csv` (default) or `parquet`.
    pub format: Option<String>,
}

/// The results: each input row with its prediction (or the reason it was refused).
///
/// Columns: the input's, then `prediction_id`, `prediction` (a label or a value),
/// `probability_<label>` per class for classifiers, and `error`. Available once the job is over;
/// a cancelled or stopped job's results hold the rows scored before it ended.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/results",
    tag = "v1",
    params(("id" = i64, Path, description = "Job id"), ResultsQuery),
    responses(
        (status = 200, description = "The results", content_type = "text/csv"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job (or not yours)", body = ErrorBody),
        (status = 409, description = "The job is not over yet", body = ErrorBody),
        (status = 422, description = "Not a format results come in", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn results(
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    query: web::Query<ResultsQuery>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let job = visible_job(&state, *id, &user).await?;
    let format = match query.format.as_deref() {
        None => Format::Csv,
        Some(f) => Format::parse(f).ok_or_else(|| {
            AppError::Unprocessable(format!("format must be csv or parquet, not {f:?}."))
        })?,
    };
    results_response(&state, &job, format)
}

/// The results as a download, streamed.
pub fn results_response(
    state: &web::Data<AppState>,
    job: &JobRow,
    format: Format,
) -> Result<HttpResponse, AppError> {
    if job.is_open() {
        return Err(AppError::Conflict(format!(
            "Job {} is {}: its results can be downloaded once it is over ({} of {} rows so far).",
            job.id, job.state, job.rows_done, job.total_rows
        )));
    }
    let pieces = jobs::results(state, job, format);
    let stream = futures_util::stream::unfold(pieces, |mut rx| async move {
        rx.recv().await.map(|piece| {
            (
                piece.map_err(actix_web::error::ErrorInternalServerError),
                rx,
            )
        })
    });
    let filename = format!("job-{}-{}.{}", job.id, job.model, format.as_str());
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .streaming(stream))
}

/// A refused row.
#[derive(Serialize, ToSchema)]
pub struct JobError {
    /// Its line in a CSV file (the header is line 1), or its row in a Parquet file.
    pub line: i64,
    /// Why, in the form's words, naming the column.
    pub reason: String,
}

/// The rows a job refused, in file order (at most 1,000).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/errors",
    tag = "v1",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "Refused rows", body = [JobError]),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such job (or not yours)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn errors(
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let job = visible_job(&state, *id, &user).await?;
    let errors = db::errors(&state.pool, job.id, 1000).await?;
    Ok(HttpResponse::Ok().json(
        errors
            .into_iter()
            .map(|(line, reason)| JobError { line, reason })
            .collect::<Vec<_>>(),
    ))
}
