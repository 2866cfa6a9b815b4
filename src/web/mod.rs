//! What the HTML pages and the JSON API share about HTTP: reading forms and uploads, rendering
//! templates, error bodies, the outer middleware, and small helpers for pages.

pub mod errors;
pub mod forms;
pub mod middleware;
pub mod paging;

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use askama::Template;
use time::OffsetDateTime;

use crate::error::AppError;

/// Renders a template as an HTML response with `status`.
pub fn render(template: &impl Template, status: StatusCode) -> Result<HttpResponse, AppError> {
    let html = template.render().map_err(AppError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// Post/redirect/get: a 303 to `location`.
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Field errors of a submitted form, by field name.
#[derive(Debug, Default)]
pub struct FormErrors(BTreeMap<&'static str, String>);

impl FormErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| message.into());
    }
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A timestamp as pages show it: `2026-11-26 05:16 UTC`, or a dash.
pub fn fmt_time(t: &Option<OffsetDateTime>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    match t {
        Some(t) => t
            .to_offset(time::UtcOffset::UTC)
            .format(&format)
            .unwrap_or_default(),
        None => "—".to_string(),
    }
}

/// A `next` destination that stays on this site; anything else becomes `/`.
pub fn safe_next(next: &str) -> &str {
    let next = next.trim();
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control())
        && !next.starts_with("/accounts/logout");
    if local {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_on_this_site() {
        assert_eq!(safe_next("/history?page=2"), "/history?page=2");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next("javascript:alert(1)"), "/");
        assert_eq!(safe_next("/ok\r\nSet-Cookie: x"), "/");
        assert_eq!(safe_next(""), "/");
    }

    #[test]
    fn form_errors_keep_the_first_message_per_field() {
        let mut errors = FormErrors::default();
        errors.add("username", "first");
        errors.add("username", "second");
        assert_eq!(errors.get("username"), Some("first"));
        assert!(errors.has("username") && !errors.has("password"));
    }
}
