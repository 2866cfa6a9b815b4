//! The staff-only admin area.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use askama::Template;

use crate::auth::{PageCtx, StaffOnly};
use crate::db;
use crate::error::AppError;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(admin_index);
}

#[derive(Template)]
#[template(path = "admin/index.html")]
struct AdminIndex {
    ctx: PageCtx,
    counts: db::users::UserCounts,
    sessions: i64,
    recent: Vec<db::users::User>,
}

#[get("/admin")]
async fn admin_index(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let page = AdminIndex {
        ctx,
        counts: db::users::counts(&state.pool).await?,
        sessions: db::sessions::count_signed_in(&state.pool).await?,
        recent: db::users::recent_logins(&state.pool, 10).await?,
    };
    super::render(&page, StatusCode::OK)
}
