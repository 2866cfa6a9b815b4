//! The outermost middleware: the request id, one log line per request, the security headers,
//! the HTTP metrics, and an error body for what failed before the session layer.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

use super::errors::{carry_headers, message_for, needs_error_body, render_error};
use crate::auth::PageCtx;
use crate::state::AppState;
use crate::telemetry::RequestId;

const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Outermost middleware: assigns the request id, logs one line per request, adds the security
/// headers to every response and renders any error that reached it without a body.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    // Kept here rather than through tracing-actix-web: this one pass also sets the headers,
    // renders error bodies and counts the metrics, and the id is a uuid either way.
    let id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    // Postgres text cannot hold NUL; refuse it here rather than fail deeper down.
    let uri = req.uri().to_string();
    if uri.contains("%00") || uri.contains('\0') {
        let res = req.into_response(actix_web::HttpResponse::BadRequest().finish());
        let (http_req, res) = res.into_parts();
        let ctx = PageCtx::anonymous(id.clone());
        let page = render_error(
            &http_req,
            &ctx,
            res.status(),
            "The address contains a NUL character (%00), which nothing here accepts.",
        );
        let mut res = ServiceResponse::new(http_req, page).map_into_boxed_body();
        add_headers(&mut res, &id);
        return Ok(res);
    }
    // The request's span: its route, status, model and version are recorded as they become
    // known; a caller's W3C `traceparent` makes it part of the caller's trace.
    macro_rules! request_span {
        ($($key:ident = $value:expr)?) => {
            tracing::info_span!(
                "request",
                request_id = %id,
                method = %req.method(),
                path = %req.path(),
                route = tracing::field::Empty,
                status = tracing::field::Empty,
                model = tracing::field::Empty,
                version = tracing::field::Empty
                $(, $key = $value)?
            )
        };
    }
    let span = match req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        Some(traceparent) => request_span!(traceparent = traceparent),
        None => request_span!(),
    };
    // The request cannot be cloned before routing, so an error raised by a middleware itself
    // (rather than turned into a response) is logged and handed to actix-web as it is.
    let mut res = match next.call(req).instrument(span.clone()).await {
        Ok(res) => res.map_into_boxed_body(),
        Err(err) => {
            span.in_scope(|| tracing::error!(error = ?err, "request failed in a middleware"));
            return Err(err);
        }
    };
    let http_req = res.request().clone();
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        if let Some(err) = res.response().error() {
            if status.is_server_error() {
                span.in_scope(|| tracing::error!(error = ?err, "request failed"));
            }
        }
        if needs_error_body(&res) {
            let message = message_for(status, res.response().error());
            let ctx = PageCtx::anonymous(id.clone());
            let body = render_error(&http_req, &ctx, status, &message);
            res = carry_headers(res, body);
        }
    }
    add_headers(&mut res, &id);
    if let Some(state) = res.request().app_data::<web::Data<AppState>>().cloned() {
        // Draining before a stop: each kept-alive connection ends after its current answer, so
        // a balancer's pool moves to the other instances before this one stops listening.
        if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
            res.response_mut()
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        // With PLINTH_INSECURE_COOKIES (plain-HTTP setups), cookies are still `Secure` on
        // answers to clients that came over HTTPS through a trusted proxy.
        if state.settings.insecure_cookies && crate::audit::is_https(res.request()) {
            secure_cookies(&mut res);
        }
        let route = route_of(res.request());
        state
            .metrics
            .http(res.request().method().as_str(), &route, status.as_u16());
        span.record("route", route.as_str());
    }
    span.record("status", status.as_u16());
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            client = %crate::audit::client_ip(&http_req),
            elapsed_ms = format_args!("{elapsed_ms:.2}"),
            "request completed"
        )
    });
    Ok(res)
}

/// Marks every cookie the response sets `Secure`.
fn secure_cookies(res: &mut ServiceResponse<BoxBody>) {
    use actix_web::http::header::SET_COOKIE;
    let cookies: Vec<HeaderValue> = res.headers().get_all(SET_COOKIE).cloned().collect();
    if cookies.is_empty() {
        return;
    }
    let headers = res.headers_mut();
    headers.remove(SET_COOKIE);
    for cookie in cookies {
        let text = cookie.to_str().unwrap_or_default();
        let already = text
            .split(';')
            .any(|part| part.trim().eq_ignore_ascii_case("secure"));
        let value = if already || text.is_empty() {
            cookie
        } else {
            HeaderValue::from_str(&format!("{text}; Secure")).unwrap_or(cookie)
        };
        headers.append(SET_COOKIE, value);
    }
}

/// The security headers and the request id, on every response.
fn add_headers(res: &mut ServiceResponse<BoxBody>, id: &str) {
    let headers = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    // Pages and API answers are per user (a new token's secret, a history): no cache, shared
    // or private, keeps them. Static assets set their own policy.
    if !headers.contains_key(actix_web::http::header::CACHE_CONTROL) {
        headers.insert(
            actix_web::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    let hsts = res
        .request()
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| s.settings.hsts);
    if hsts {
        res.headers_mut().insert(
            actix_web::http::header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

/// The route pattern a request matched (`/api/v1/models/{name}/predict`), for the metrics label.
/// Finding it runs the router's regular expressions again, so the answer is remembered per path
/// (a bounded map: paths carrying ids would otherwise grow it without end).
fn route_of(req: &actix_web::HttpRequest) -> String {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static SEEN: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let path = req.path();
    if let Some(route) = seen.read().ok().and_then(|m| m.get(path).cloned()) {
        return route;
    }
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    if let Ok(mut map) = seen.write() {
        if map.len() >= 4096 {
            map.clear();
        }
        map.insert(path.to_string(), route.clone());
    }
    route
}
