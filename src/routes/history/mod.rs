//! A user's predictions (`/history`), filtered and paged; the listing staff see at
//! `/admin/predictions` is the same code.

pub mod export;

use crate::auth::{LoggedIn, PageCtx};
use crate::error::AppError;
use crate::registry::card::fmt_num;
use crate::state::AppState;
use crate::web::paging::{date_field, link, Pager};
use crate::web::render;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use plinth_store as db;
use plinth_store::predictions::{Filter, PredictionRow};
use serde::Deserialize;

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
    pub(crate) fn filter(&self) -> Result<Filter, String> {
        let non_empty = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
        let filter = Filter {
            user_id: None,
            username: non_empty(&self.user),
            model: non_empty(&self.model),
            from: date_field("From", &self.from)?,
            to: date_field("To", &self.to)?,
        };
        if let (Some(a), Some(b)) = (filter.from, filter.to) {
            if a > b {
                return Err("The start date is after the end date.".into());
            }
        }
        Ok(filter)
    }

    /// A link to this listing at `base` with the same filters, on `page`.
    pub(crate) fn link(&self, base: &str, page: Option<i64>) -> String {
        let page = page.map(|p| p.to_string()).unwrap_or_default();
        link(
            base,
            &[
                ("model", &self.model),
                ("from", &self.from),
                ("to", &self.to),
                ("user", &self.user),
                ("page", &page),
            ],
        )
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

pub(crate) fn result_of(p: &PredictionRow) -> String {
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
    /// "Predictions made before 24 Nov 2026 are no longer kept (retention: 7 days)."
    retention_note: Option<String>,
}

pub(crate) async fn listing(
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
    let pager = Pager::new(query.page, PER_PAGE);
    let models = db::predictions::models_used(&state.pool, user_id).await?;
    let (rows, error, more) = match query.filter() {
        Ok(mut filter) => {
            filter.user_id = user_id;
            let mut rows =
                db::predictions::list(&state.pool, &filter, pager.offset(), pager.fetch()).await?;
            let more = pager.cut(&mut rows);
            (rows, None, more)
        }
        Err(e) => (Vec::new(), Some(e), false),
    };
    let (prev_link, next_link) = pager.links(more, |p| query.link(base, Some(p)));
    let retention_note =
        match crate::prediction_log::maintenance::retained_from(&state.pool).await? {
            (Some(from), days) => Some(format!(
                "Predictions made before {} are no longer kept{}.",
                crate::web::fmt_time(&Some(from)),
                days.map(|d| format!(" (they are kept for {d} days)"))
                    .unwrap_or_default()
            )),
            (None, _) => None,
        };
    let page_view = HistoryPage {
        staff_view,
        rows: rows
            .iter()
            .map(|p| HistoryRow {
                id: p.id,
                created_at: crate::web::fmt_time(&Some(p.created_at)),
                model: p.model.clone(),
                version: p.version,
                result: result_of(p),
                source: p.source.clone(),
                user: p.username.clone().unwrap_or_else(|| "—".into()),
            })
            .collect(),
        models,
        prev_link,
        next_link,
        csv_link: query.link(&format!("{base}.csv"), None),
        retention_note,
        query,
        error,
        page: pager.page,
        ctx,
    };
    let status = if page_view.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(&page_view, status)
}

pub async fn history_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let mut query = query.into_inner();
    query.user.clear();
    listing(ctx, &state, query, Some(user.id)).await
}
