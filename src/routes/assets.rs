//! The stylesheet, scripts and icons, compiled into the binary so it runs from anywhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::AppError;

/// Every file under `static/`: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "plinth.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/plinth.css"),
    ),
    (
        "draw.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/draw.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/jobs.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../static/favicon.svg"),
    ),
];

fn serve(name: &str) -> Result<HttpResponse, AppError> {
    let (_, content_type, bytes) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| AppError::NotFound(format!("There is no static file called {name}.")))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(*bytes))
}

pub async fn static_file(name: web::Path<String>) -> Result<HttpResponse, AppError> {
    serve(&name)
}

pub async fn favicon() -> Result<HttpResponse, AppError> {
    serve("favicon.svg")
}
