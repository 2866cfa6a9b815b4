//! Error bodies: the HTML error page with the site's layout, or JSON on the API paths, for every
//! error response (ours and actix-web's own), each carrying the request id of its log line.

use actix_session::SessionExt;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use crate::auth::PageCtx;
use crate::error::{is_api_path, AppError, GENERIC_500};
use crate::state::AppState;
use crate::telemetry::request_id;

/// Marks an error response whose body has been rendered already.
struct Rendered;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    ctx: &'a PageCtx,
    status: u16,
    title: &'a str,
    message: &'a str,
}

/// Renders the body of an error response: JSON on API paths, the HTML error page elsewhere.
pub fn render_error(
    req: &HttpRequest,
    ctx: &PageCtx,
    status: StatusCode,
    message: &str,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    if is_api_path(req.path()) {
        return builder.json(serde_json::json!({
            "error": message,
            "request_id": ctx.request_id,
        }));
    }
    let title = status.canonical_reason().unwrap_or("Error");
    let page = ErrorPage {
        ctx,
        status: status.as_u16(),
        title,
        message,
    };
    match page.render() {
        Ok(html) => builder.content_type("text/html; charset=utf-8").body(html),
        Err(err) => {
            tracing::error!(error = %err, "could not render the error page");
            builder
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{title}: {message} (request id {})",
                    ctx.request_id
                ))
        }
    }
}

/// The message for an error response that did not come from an [`AppError`].
pub fn message_for(status: StatusCode, err: Option<&actix_web::Error>) -> String {
    if let Some(app) = err.and_then(|e| e.as_error::<AppError>()) {
        return app.public_message();
    }
    match status {
        StatusCode::NOT_FOUND => {
            "There is nothing at this address. Check the link, or start again from the home page."
                .into()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            "This address does not accept that kind of request.".into()
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "The request body is larger than this server accepts.".into()
        }
        s if s.is_server_error() => GENERIC_500.into(),
        _ => match err {
            Some(e) => e.to_string(),
            None => status.canonical_reason().unwrap_or("Error").to_string(),
        },
    }
}

/// Inner middleware, inside the session layer: renders error pages with the signed-in user in
/// the header, as every other page has.
pub async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?.map_into_boxed_body();
    let http_req = res.request().clone();
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(res);
    }
    if !needs_error_body(&res) {
        return Ok(res);
    }
    let message = message_for(status, res.response().error());
    let api = crate::error::is_api_path(http_req.path());
    let ctx = match http_req.app_data::<web::Data<AppState>>() {
        Some(state) if !api => PageCtx::load(&http_req, http_req.get_session(), state)
            .await
            .unwrap_or_else(|_| PageCtx::anonymous(request_id(&http_req))),
        _ => PageCtx::anonymous(request_id(&http_req)),
    };
    let body = render_error(&http_req, &ctx, status, &message);
    Ok(carry_headers(res, body))
}

/// Errors and bodiless error statuses get a rendered body; a form re-rendered with a 400 or a
/// JSON 503 from `/readyz` keeps its own.
pub(super) fn needs_error_body(res: &ServiceResponse<BoxBody>) -> bool {
    use actix_web::body::BodySize;
    if res.response().extensions().get::<Rendered>().is_some() {
        return false;
    }
    let bodiless = matches!(
        res.response().body().size(),
        BodySize::None | BodySize::Sized(0)
    );
    res.response().error().is_some() || bodiless
}

/// Replaces the body of `res` with the rendered `page`, keeping the status, the headers set on
/// the original (such as `Retry-After` or `WWW-Authenticate`) and its error, for the log line.
pub(super) fn carry_headers(
    res: ServiceResponse<BoxBody>,
    page: actix_web::HttpResponse,
) -> ServiceResponse<BoxBody> {
    let (req, original) = res.into_parts();
    let (page_head, page_body) = page.into_parts();
    let mut res = original.set_body(page_body);
    if let Some(content_type) = page_head.headers().get(header::CONTENT_TYPE) {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    res.headers_mut().remove(header::CONTENT_LENGTH);
    res.extensions_mut().insert(Rendered);
    ServiceResponse::new(req, res)
}
