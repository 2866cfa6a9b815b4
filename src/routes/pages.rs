//! The home page.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use askama::Template;

use crate::auth::PageCtx;
use crate::error::AppError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(home);
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    ctx: PageCtx,
}

#[get("/")]
async fn home(ctx: PageCtx) -> Result<HttpResponse, AppError> {
    super::render(&HomePage { ctx }, StatusCode::OK)
}
