//! The staff-only admin area.

pub mod audit;
pub mod automation;
pub mod compare;
pub mod dataset_views;
pub mod datasets;
pub mod drift;
pub mod models;
pub mod predictions;
pub mod users;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::{PageCtx, StaffOnly};
use crate::error::AppError;
use crate::monitoring::dashboard::{self, VersionStats, Window};
use crate::state::AppState;
use plinth_store as db;

/// One bar of a traffic chart, in SVG units.
pub struct ChartBar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub count: i64,
}

/// A model version's panel: its figures and its traffic chart.
pub struct Panel {
    pub stats: VersionStats,
    pub bars: Vec<ChartBar>,
    pub peak: i64,
}

const CHART_WIDTH: f64 = 320.0;
const CHART_HEIGHT: f64 = 64.0;

fn panel(stats: VersionStats) -> Panel {
    let peak = stats.series.iter().copied().max().unwrap_or(0);
    let width = CHART_WIDTH / stats.series.len().max(1) as f64;
    let bars = stats
        .series
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let height = if peak > 0 {
                (*count as f64 / peak as f64 * CHART_HEIGHT).max(if *count > 0 { 1.0 } else { 0.0 })
            } else {
                0.0
            };
            ChartBar {
                x: (i as f64 * width * 10.0).round() / 10.0,
                y: ((CHART_HEIGHT - height) * 10.0).round() / 10.0,
                width: ((width - 1.0).max(1.0) * 10.0).round() / 10.0,
                height: (height * 10.0).round() / 10.0,
                count: *count,
            }
        })
        .collect();
    Panel { stats, bars, peak }
}

pub fn pct(v: &f64) -> String {
    format!("{:.1}%", v * 100.0)
}

pub fn ms(v: &f64) -> String {
    format!("{v:.2}")
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct AdminIndex {
    ctx: PageCtx,
    counts: db::users::UserCounts,
    sessions: i64,
    recent: Vec<db::users::User>,
    window: &'static str,
    window_label: &'static str,
    panels: Vec<Panel>,
    windows: Vec<(&'static str, &'static str)>,
    streams: Vec<db::streams::StreamRow>,
    /// Batch jobs queued or running, and their rows left.
    jobs_open: (i64, i64),
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DashboardQuery {
    window: String,
}

pub async fn admin_index(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<DashboardQuery>,
) -> Result<HttpResponse, AppError> {
    let window = Window::parse(&query.window);
    let stats = dashboard::stats(&state.pool, window, time::OffsetDateTime::now_utc()).await?;
    let page = AdminIndex {
        window: window.key(),
        window_label: window.label(),
        panels: stats.into_iter().map(panel).collect(),
        windows: [Window::Hour, Window::Day, Window::Week]
            .iter()
            .map(|w| (w.key(), w.label()))
            .collect(),
        ctx,
        counts: db::users::counts(&state.pool).await?,
        sessions: db::sessions::count_signed_in(&state.pool).await?,
        recent: db::users::recent_logins(&state.pool, 10).await?,
        streams: db::streams::all(&state.pool).await?,
        jobs_open: db::batch::backlog(&state.pool).await?,
    };
    crate::web::render(&page, StatusCode::OK)
}
