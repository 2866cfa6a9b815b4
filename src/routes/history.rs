//! The prediction history: a user's own at `/history`, everyone's for staff at
//! `/admin/predictions`, each with a streamed CSV export of the filtered set.

use actix_web::http::{header, StatusCode};
use actix_web::{get, web, HttpResponse};
use askama::Template;
use serde::Deserialize;
use time::Date;

use super::render;
use crate::auth::{LoggedIn, PageCtx, StaffOnly};
use crate::db;
use crate::db::predictions::{Filter, PredictionRow};
use crate::error::AppError;
use crate::registry::card::fmt_num;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(history_page)
        .service(history_csv)
        .service(admin_predictions)
        .service(admin_predictions_csv);
}

const PER_PAGE: i64 = 25;

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct HistoryQuery {
    model: String,
    from: String,
    to: String,
    user: String,
    page: Option<i64>,
}

impl HistoryQuery {
    /// The filter, or a message naming the field that cannot be read.
    fn filter(&self) -> Result<Filter, String> {
        let date = |label: &str, v: &str| -> Result<Option<Date>, String> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            let format = time::macros::format_description!("[year]-[month]-[day]");
            Date::parse(v.trim(), &format)
                .map(Some)
                .map_err(|_| format!("{label}: enter a date as YYYY-MM-DD."))
        };
        let non_empty = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
        let filter = Filter {
            user_id: None,
            username: non_empty(&self.user),
            model: non_empty(&self.model),
            from: date("From", &self.from)?,
            to: date("To", &self.to)?,
        };
        if let (Some(a), Some(b)) = (filter.from, filter.to) {
            if a > b {
                return Err("The start date is after the end date.".into());
            }
        }
        Ok(filter)
    }

    /// The query string for links to other pages of the same listing.
    fn query_string(&self, page: Option<i64>) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (k, v) in [
            ("model", &self.model),
            ("from", &self.from),
            ("to", &self.to),
            ("user", &self.user),
        ] {
            if !v.trim().is_empty() {
                pairs.push((k, v.trim().to_string()));
            }
        }
        if let Some(p) = page {
            pairs.push(("page", p.to_string()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

pub struct HistoryRow {
    pub id: i64,
    pub created_at: String,
    pub model: String,
    pub version: i32,
    pub result: String,
    pub source: String,
    pub user: String,
}

fn result_of(p: &PredictionRow) -> String {
    let o = &p.outputs.0;
    if let Some(label) = o.get("label").and_then(|v| v.as_str()) {
        return label.to_string();
    }
    o.get("value")
        .and_then(|v| v.as_f64())
        .map(|v| fmt_num((v * 1000.0).round() / 1000.0))
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "history/list.html")]
struct HistoryPage {
    ctx: PageCtx,
    staff_view: bool,
    rows: Vec<HistoryRow>,
    models: Vec<String>,
    query: HistoryQuery,
    error: Option<String>,
    page: i64,
    prev_link: Option<String>,
    next_link: Option<String>,
    csv_link: String,
}

async fn listing(
    ctx: PageCtx,
    state: &AppState,
    query: HistoryQuery,
    user_id: Option<i64>,
) -> Result<HttpResponse, AppError> {
    let staff_view = user_id.is_none();
    let base = if staff_view {
        "/admin/predictions"
    } else {
        "/history"
    };
    let page = query.page.unwrap_or(1).clamp(1, 1_000_000);
    let models = db::predictions::models_used(&state.pool, user_id).await?;
    let (rows, error, more) = match query.filter() {
        Ok(mut filter) => {
            filter.user_id = user_id;
            let mut rows =
                db::predictions::list(&state.pool, &filter, (page - 1) * PER_PAGE, PER_PAGE + 1)
                    .await?;
            let more = rows.len() as i64 > PER_PAGE;
            rows.truncate(PER_PAGE as usize);
            (rows, None, more)
        }
        Err(e) => (Vec::new(), Some(e), false),
    };
    let link = |p: i64| format!("{base}?{}", query.query_string(Some(p)));
    let page_view = HistoryPage {
        staff_view,
        rows: rows
            .iter()
            .map(|p| HistoryRow {
                id: p.id,
                created_at: super::fmt_time(&Some(p.created_at)),
                model: p.model.clone(),
                version: p.version,
                result: result_of(p),
                source: p.source.clone(),
                user: p.username.clone().unwrap_or_else(|| "—".into()),
            })
            .collect(),
        models,
        prev_link: (page > 1).then(|| link(page - 1)),
        next_link: more.then(|| link(page + 1)),
        csv_link: format!("{base}.csv?{}", query.query_string(None)),
        query,
        error,
        page,
        ctx,
    };
    let status = if page_view.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(&page_view, status)
}

#[get("/history")]
async fn history_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let mut query = query.into_inner();
    query.user.clear();
    listing(ctx, &state, query, Some(user.id)).await
}

#[get("/admin/predictions")]
async fn admin_predictions(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    listing(ctx, &state, query.into_inner(), None).await
}

/// One CSV cell. A cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'`, as OWASP advises; labels and usernames reach
/// these cells.
pub fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

fn csv_line(p: &PredictionRow) -> String {
    let time_format = time::format_description::well_known::Rfc3339;
    let cells = [
        p.id.to_string(),
        p.created_at.format(&time_format).unwrap_or_default(),
        p.username.clone().unwrap_or_default(),
        p.model.clone(),
        p.version.to_string(),
        p.source.clone(),
        result_of(p),
        format!("{:.3}", p.latency_us as f64 / 1000.0),
        p.inputs.0.to_string(),
        p.outputs.0.to_string(),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Rows per export page: one short query each.
const EXPORT_PAGE: i64 = 500;
/// How long an export waits for the client to take the next page before giving up.
const EXPORT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Streams the filtered rows as CSV, a page at a time. The pages are read by a task that holds
/// no connection while it waits for the client, and gives up when the client stops reading.
fn csv_response(
    state: &AppState,
    filter: Filter,
    filename: &str,
    slot: crate::exports::ExportSlot,
) -> HttpResponse {
    const HEADER: &str =
        "id,created_at,user,model,version,source,result,latency_ms,inputs,outputs\r\n";
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, AppError>>(2);
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let send = |item| tx.send_timeout(item, EXPORT_SEND_TIMEOUT);
        if send(Ok(web::Bytes::from_static(HEADER.as_bytes())))
            .await
            .is_err()
        {
            return;
        }
        let mut cursor = None;
        loop {
            let rows = match db::predictions::export_page(&pool, &filter, cursor, EXPORT_PAGE).await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "an export page failed");
                    let _ = send(Err(AppError::from(e))).await;
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            cursor = Some((last.created_at, last.id));
            let full = rows.len() as i64 == EXPORT_PAGE;
            let chunk: String = rows.iter().map(csv_line).collect();
            // A client that stops reading (or went away) ends the export.
            if send(Ok(web::Bytes::from(chunk))).await.is_err() || !full {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .streaming(body)
}

#[get("/history.csv")]
async fn history_csv(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let mut filter = query.filter().map_err(AppError::BadRequest)?;
    filter.user_id = Some(user.id);
    filter.username = None;
    let slot = state.exports.start(user.id)?;
    Ok(csv_response(&state, filter, "plinth-history.csv", slot))
}

#[get("/admin/predictions.csv")]
async fn admin_predictions_csv(
    StaffOnly(_, staff): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let filter = query.filter().map_err(AppError::BadRequest)?;
    let slot = state.exports.start(staff.id)?;
    Ok(csv_response(&state, filter, "plinth-predictions.csv", slot))
}
