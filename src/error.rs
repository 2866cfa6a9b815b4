//! One error type for every handler, rendered as an HTML page or, on API paths, as JSON.
//!
//! Handlers return [`AppError`]; its `error_response` only sets the status. The
//! [`crate::web::errors`] middleware then renders the body for every error response (ours and
//! actix-web's own, such as a payload over the limit), so each carries the request id that also
//! appears in the log line.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

pub type Result<T, E = AppError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("The form was missing its security token or it has expired. Go back, reload the page and try again.")]
    Csrf,
    #[error("{0}")]
    NotFound(String),
    #[error("login required")]
    LoginRequired { next: String },
    #[error("password change required")]
    PasswordChangeRequired,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// The request is sound but the thing is not in a state for it (a job not over yet).
    #[error("{0}")]
    Conflict(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(err.into())
    }

    /// The message shown to the person or program that made the request. Internal details are
    /// logged, never shown.
    pub fn public_message(&self) -> String {
        match self {
            AppError::Database(e) if database_unavailable(e) => DATABASE_DOWN.to_string(),
            AppError::Database(_) | AppError::Internal(_) => GENERIC_500.to_string(),
            other => other.to_string(),
        }
    }
}

const DATABASE_DOWN: &str =
    "The database is unavailable just now; nothing was changed. Try again in a few seconds.";

/// Errors that say Postgres cannot be reached or is restarting, rather than that a query is
/// wrong: answered 503 (try again), not 500.
pub fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01–57P03: admin shutdown, crash shutdown, cannot
        // connect now (starting up or shutting down).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

pub const GENERIC_500: &str = "Something went wrong on our side. It has been logged; if it keeps happening, quote the request id below.";

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) | AppError::Csrf => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::LoginRequired { .. } | AppError::PasswordChangeRequired => {
                StatusCode::SEE_OTHER
            }
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Database(e) if database_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Database(_) | AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::LoginRequired { next } => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, login_url(next)))
                .finish(),
            AppError::PasswordChangeRequired => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/accounts/password"))
                .finish(),
            AppError::Unauthorized(_) => HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"plinth\""))
                .finish(),
            // The body is rendered by the telemetry middleware, which knows the request.
            other => HttpResponse::new(other.status_code()),
        }
    }
}

/// The login page, sending the user back to `next` afterwards.
pub fn login_url(next: &str) -> String {
    if next.is_empty() || next == "/" {
        "/accounts/login".to_string()
    } else {
        format!("/accounts/login?next={}", urlencode(next))
    }
}

/// Everything but the unreserved characters (RFC 3986) and `/` is percent-encoded.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes a value for a query string, keeping `/` readable.
pub fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Paths answered in JSON rather than HTML.
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/api/")
        || path == "/api"
        || path == "/v2"
        || path.starts_with("/v2/")
        || path.starts_with("/v1/")
        || path == "/metrics"
        || matches!(
            path,
            "/invocations" | "/ping" | "/health" | "/version" | "/score" | "/execution-parameters"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_url_keeps_the_destination() {
        assert_eq!(login_url("/"), "/accounts/login");
        assert_eq!(
            login_url("/history?page=2"),
            "/accounts/login?next=/history%3Fpage%3D2"
        );
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let err = AppError::internal(anyhow::anyhow!("password=hunter2 in connection string"));
        assert!(!err.public_message().contains("hunter2"));
    }

    #[test]
    fn api_paths_are_recognised() {
        assert!(is_api_path("/api/v1/models"));
        assert!(is_api_path("/v2/models/iris/infer"));
        assert!(!is_api_path("/accounts/login"));
        assert!(!is_api_path("/v2x"));
    }
}
