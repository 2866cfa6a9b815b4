//! The log subscriber and request ids. The middleware that assigns the ids and writes one log
//! line per request is [`crate::web::middleware`].

use actix_web::{HttpMessage, HttpRequest};

/// Sets up the global `tracing` subscriber. `PLINTH_LOG` (or `RUST_LOG`) filters, default `info`;
/// `PLINTH_LOG_FORMAT=json` writes one JSON object per line (for CloudWatch, Cloud Logging and
/// Azure Monitor), anything else the readable text format.
pub fn init() {
    let filter = std::env::var("PLINTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,actix_server=warn".to_string());
    let json = std::env::var("PLINTH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
}

/// The id of one request, shown on error pages and written in its log line.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The request id of `req`, or `-` outside the middleware (unit tests).
pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map_or_else(|| "-".to_string(), |id| id.0.clone())
}
