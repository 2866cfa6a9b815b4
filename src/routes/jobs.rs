//! Batch jobs in the browser: the "Score a file" tab of a model's page, the job's page with its
//! progress, the list of jobs, cancelling, and the results' downloads.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::v1::jobs::{pace, results_response, visible_job};
use crate::auth::context::flash;
use crate::auth::csrf::CsrfForm;
use crate::auth::{LoggedIn, PageCtx};
use crate::batch::jobs::{self, Submission};
use crate::batch::Format;
use crate::error::AppError;
use crate::registry::card::fmt_num;
use crate::registry::{Selector, Served};
use crate::serving::{self, Caller};
use crate::state::AppState;
use crate::web::forms::read_form_spooled;
use crate::web::{fmt_time, render, see_other};
use plinth_store::batch::{self as db, JobRow};

/// A job as the pages show it.
pub struct JobView {
    pub id: i64,
    pub model: String,
    pub version: i32,
    pub user: String,
    pub input: String,
    pub format: String,
    pub state: String,
    pub badge: &'static str,
    pub open: bool,
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    pub max_errors: i64,
    /// The counts with thousands separators.
    pub done_text: String,
    pub total_text: String,
    pub failed_text: String,
    pub percent: String,
    pub rate: String,
    pub left: String,
    pub message: String,
    pub output_url: String,
    /// How many features' contributions the results give (0: none asked for).
    pub contributions: usize,
    pub created: String,
    pub started: String,
    pub finished: String,
}

impl From<&JobRow> for JobView {
    fn from(j: &JobRow) -> Self {
        let (rate, left) = pace(j);
        let percent = if j.total_rows > 0 {
            (j.rows_done as f64 * 100.0 / j.total_rows as f64).floor()
        } else {
            0.0
        };
        JobView {
            id: j.id,
            model: j.model.clone(),
            version: j.version,
            user: j.username.clone().unwrap_or_else(|| "—".into()),
            input: j.input_name.clone(),
            format: j.input_format.to_uppercase(),
            state: j.state.clone(),
            badge: match j.state.as_str() {
                "done" => "badge-ok",
                "failed" => "badge-bad",
                "cancelled" => "badge-warn",
                _ => "",
            },
            open: j.is_open(),
            total: j.total_rows,
            done: j.rows_done,
            failed: j.rows_failed,
            max_errors: j.max_errors,
            done_text: thousands(j.rows_done),
            total_text: thousands(j.total_rows),
            failed_text: thousands(j.rows_failed),
            percent: fmt_num(percent),
            rate: rate.map_or_else(|| "—".into(), |r| thousands(r.round() as i64)),
            left: left.map_or_else(|| "—".into(), duration_text),
            message: j.message.clone().unwrap_or_default(),
            output_url: j.output_url.clone().unwrap_or_default(),
            contributions: j.contributions.as_ref().map_or(0, |c| c.0.len()),
            created: fmt_time(&Some(j.created_at)),
            started: fmt_time(&j.started_at),
            finished: fmt_time(&j.finished_at),
        }
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as "1 GiB" or "64 MiB".
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Seconds as "2 min 5 s".
fn duration_text(seconds: f64) -> String {
    let s = seconds.ceil().max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

// --- the "Score a file" tab ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "models/batch.html")]
struct BatchPage {
    ctx: PageCtx,
    name: String,
    title: String,
    task: &'static str,
    version: i32,
    columns: Vec<String>,
    header_line: String,
    example_line: String,
    max_errors: i64,
    max_size: String,
    /// Why the results cannot add contributions for this version; `None` when they can.
    unexplainable: Option<String>,
    explain: bool,
    error: Option<String>,
    jobs: Vec<JobView>,
}

async fn batch_page_for(
    ctx: PageCtx,
    state: &AppState,
    served: &Served,
    user_id: i64,
    error: Option<String>,
    explain: bool,
) -> Result<BatchPage, AppError> {
    let card = &served.card;
    let unexplainable = state
        .registry
        .explanation_base(served)
        .await
        .as_ref()
        .as_ref()
        .err()
        .cloned();
    let columns: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
    let example: Vec<String> = card
        .example_row()
        .iter()
        .zip(&card.features)
        .map(|(v, f)| {
            f.choice_text(*v)
                .map_or_else(|| fmt_num(*v), str::to_string)
        })
        .collect();
    let mine = db::list(&state.pool, Some(user_id), 50).await?;
    Ok(BatchPage {
        ctx,
        name: served.model.name.clone(),
        title: card.display_title(&served.model.name).to_string(),
        task: card.task.as_str(),
        version: served.version.version,
        header_line: truncate(&columns.join(","), 400),
        example_line: truncate(&example.join(","), 400),
        columns,
        max_errors: state.settings.job_max_errors,
        max_size: size_text(state.settings.max_job_bytes),
        unexplainable,
        explain,
        error,
        jobs: mine
            .iter()
            .filter(|j| j.model == served.model.name)
            .take(10)
            .map(JobView::from)
            .collect(),
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

pub async fn batch_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let served = serving::served(&state, &name, &Selector::default()).await?;
    let page = batch_page_for(ctx, &state, &served, user.id, None, false).await?;
    render(&page, StatusCode::OK)
}

/// The upload: the file is spooled to disk as it arrives (the CSRF token checked first), then
/// read into a job; a file that does not fit the model re-renders the tab with the reason.
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let served = serving::served(&state, &name, &Selector::default()).await?;
    let limit = usize::try_from(state.settings.max_job_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let mut form =
        match read_form_spooled(&req, payload, limit, &jobs::spool_dir(&state), true).await {
            Ok(form) => form,
            Err(AppError::PayloadTooLarge(_)) => {
                let message = format!(
                    "The file is larger than the {} MiB a job accepts.",
                    state.settings.max_job_bytes >> 20
                );
                return refuse(ctx, &state, &served, user.id, message, false).await;
            }
            Err(e) => return Err(e),
        };
    let Some((filename, file)) = form.spooled.remove("file").filter(|(_, f)| f.size > 0) else {
        return refuse(
            ctx,
            &state,
            &served,
            user.id,
            "Choose a CSV or Parquet file to score.".into(),
            form.field("explain") == "on",
        )
        .await;
    };
    let max_errors = match form.field("max_errors").trim() {
        "" => None,
        text => match text.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return refuse(
                    ctx,
                    &state,
                    &served,
                    user.id,
                    "The error budget must be a whole number, 0 or more.".into(),
                    form.field("explain") == "on",
                )
                .await
            }
        },
    };
    let submission = Submission {
        model: served.model.name.clone(),
        selector: Selector::Number(served.version.version),
        caller: Caller {
            user_id: Some(user.id),
            token_id: None,
        },
        input_name: crate::api::v1::jobs::clean_name(&filename),
        format: Format::from_name(&filename),
        output_url: None,
        max_errors,
        explain: form.field("explain") == "on",
    };
    let explain = submission.explain;
    match jobs::submit(&state, submission, &file.path).await {
        Ok(job) => Ok(see_other(&format!("/jobs/{}", job.id))),
        Err(AppError::Unprocessable(message)) => {
            refuse(ctx, &state, &served, user.id, message, explain).await
        }
        Err(e) => Err(e),
    }
}

/// The tab again with the reason the upload was refused (422).
async fn refuse(
    ctx: PageCtx,
    state: &AppState,
    served: &Served,
    user_id: i64,
    message: String,
    explain: bool,
) -> Result<HttpResponse, AppError> {
    let page = batch_page_for(ctx, state, served, user_id, Some(message), explain).await?;
    render(&page, StatusCode::UNPROCESSABLE_ENTITY)
}

// --- a job's page ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "jobs/detail.html")]
struct JobPage {
    ctx: PageCtx,
    job: JobView,
    errors: Vec<(i64, String)>,
    /// More rows were refused than are listed.
    truncated: bool,
    place: &'static str,
}

pub async fn job_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let job = visible_job(&state, *id, &user).await?;
    let errors = db::errors(&state.pool, job.id, 100).await?;
    let place = Format::parse(&job.input_format)
        .unwrap_or(Format::Csv)
        .place();
    let page = JobPage {
        ctx,
        job: JobView::from(&job),
        truncated: job.rows_failed > errors.len() as i64,
        errors,
        place,
    };
    render(&page, StatusCode::OK)
}

/// The figures the job page's script refreshes.
pub async fn progress(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let job = visible_job(&state, *id, &user).await?;
    let view = JobView::from(&job);
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(serde_json::json!({
            "state": view.state,
            "open": view.open,
            "total": view.total,
            "done": view.done,
            "failed": view.failed,
            "percent": view.percent,
            "rate": view.rate,
            "done_text": view.done_text,
            "failed_text": view.failed_text,
            "left": view.left,
            "message": view.message,
        })))
}

#[derive(Deserialize)]
pub struct CancelForm {}

pub async fn cancel(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    session: Session,
    id: web::Path<i64>,
    _form: CsrfForm<CancelForm>,
) -> Result<HttpResponse, AppError> {
    let job = visible_job(&state, *id, &user).await?;
    if db::cancel(&state.pool, job.id, &user.username).await? {
        flash(
            &session,
            "info",
            format!(
                "Job {} was cancelled; the rows scored before that are kept.",
                job.id
            ),
        );
    } else {
        flash(
            &session,
            "info",
            format!("Job {} was already {}.", job.id, job.state),
        );
    }
    Ok(see_other(&format!("/jobs/{}", job.id)))
}

pub async fn results_csv(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let job = visible_job(&state, *id, &user).await?;
    results_response(&state, &job, Format::Csv)
}

pub async fn results_parquet(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let job = visible_job(&state, *id, &user).await?;
    results_response(&state, &job, Format::Parquet)
}

// --- the list -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "jobs/list.html")]
struct JobsPage {
    ctx: PageCtx,
    staff_view: bool,
    jobs: Vec<JobView>,
}

pub async fn jobs_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let owner = (!user.is_staff).then_some(user.id);
    let jobs = db::list(&state.pool, owner, 200).await?;
    let page = JobsPage {
        ctx,
        staff_view: user.is_staff,
        jobs: jobs.iter().map(JobView::from).collect(),
    };
    render(&page, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_easily() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-45_000), "-45,000");
        assert_eq!(duration_text(0.2), "1 s");
        assert_eq!(duration_text(125.0), "2 min 5 s");
        assert_eq!(duration_text(7300.0), "2 h 1 min");
    }
}
