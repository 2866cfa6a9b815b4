//! Signing in and out: `/accounts/login`, `/accounts/logout`.

use super::start_session;
use crate::audit::{self, client_ip};
use crate::auth::context::flash;
use crate::auth::throttle;
use crate::auth::{password, CsrfForm, PageCtx};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::{render, safe_next, see_other};
use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use plinth_store as db;
use serde::Deserialize;

// --- log in -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/login.html")]
struct LoginPage {
    ctx: PageCtx,
    username: String,
    next: String,
    error: Option<String>,
    logged_out: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
    logged_out: Option<String>,
}

pub async fn login_form(
    ctx: PageCtx,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, AppError> {
    if ctx.user.is_some() {
        return Ok(see_other(safe_next(&query.next)));
    }
    let page = LoginPage {
        ctx,
        username: String::new(),
        next: query.next.clone(),
        error: None,
        logged_out: query.logged_out.is_some(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    username: String,
    password: String,
    next: String,
}

pub async fn login(
    req: HttpRequest,
    ctx: PageCtx,
    session: Session,
    state: web::Data<AppState>,
    CsrfForm(mut form): CsrfForm<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let pool = &state.pool;
    // No username holds a NUL, and Postgres text cannot: drop it before any lookup.
    form.username.retain(|c| c != '\0');
    let ip = client_ip(&req);
    let refuse = |ctx: PageCtx, status: StatusCode, error: String| {
        LoginPage {
            ctx,
            username: form.username.clone(),
            next: form.next.clone(),
            error: Some(error),
            logged_out: false,
        }
        .render()
        .map_err(AppError::internal)
        .map(|html| {
            HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(html)
        })
    };

    if form.username.trim().is_empty() || form.password.is_empty() {
        return refuse(
            ctx,
            StatusCode::BAD_REQUEST,
            "Enter your username and password.".into(),
        );
    }
    // The attempt is recorded before the password is checked, so parallel guesses count
    // against each other.
    let attempt = match throttle::begin(pool, &form.username, &ip).await? {
        Ok(attempt) => attempt,
        Err(secs) => {
            // Debug formatting escapes CR and LF: a username cannot forge log lines.
            tracing::warn!(username = ?form.username, client_ip = %ip, retry_after = secs, "login throttled");
            audit::record_named(pool, &req, None, &form.username, "login.throttled").await?;
            let mut res = refuse(
                ctx,
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed attempts. Wait {secs} seconds, then try again."),
            )?;
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return Ok(res);
        }
    };

    let user = db::users::find_by_username(pool, &form.username).await?;
    // Unknown users are checked against a dummy hash so the answer takes as long either way.
    let hash = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    let password_ok = password::verify(form.password.clone(), hash).await?;
    let user = match user {
        Some(user) if password_ok && user.is_active => user,
        _ => {
            attempt.failed();
            let known = user.as_ref().map(|u| u.id);
            audit::record_named(pool, &req, known, &form.username, "login.failed").await?;
            tracing::info!(username = ?form.username, client_ip = %ip, "login failed");
            return refuse(
                ctx,
                StatusCode::BAD_REQUEST,
                "That username and password do not match an active account.".into(),
            );
        }
    };

    attempt.succeeded(pool, &user.username).await?;
    db::users::record_login(pool, user.id).await?;
    start_session(&session, &user, &req, None)?;
    audit::record(
        pool,
        Some(&req),
        Some(&user),
        "login.succeeded",
        None,
        serde_json::json!({}),
    )
    .await?;
    tracing::info!(user_id = user.id, username = ?user.username, "login succeeded");
    if user.must_change_password {
        flash(&session, "info", "Choose a new password to continue.");
        return Ok(see_other("/accounts/password"));
    }
    Ok(see_other(safe_next(&form.next)))
}

// --- log out ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/logout.html")]
struct LogoutPage {
    ctx: PageCtx,
}

/// Logging out changes state, so it is a POST; a GET shows the button (as Django does).
pub async fn logout_form(ctx: PageCtx) -> Result<HttpResponse, AppError> {
    render(&LogoutPage { ctx }, StatusCode::OK)
}

#[derive(Deserialize, Default)]
pub struct EmptyForm {}

pub async fn logout(
    req: HttpRequest,
    ctx: PageCtx,
    session: Session,
    state: web::Data<AppState>,
    CsrfForm(_): CsrfForm<EmptyForm>,
) -> Result<HttpResponse, AppError> {
    if let Some(user) = &ctx.user {
        audit::record(
            &state.pool,
            Some(&req),
            Some(user),
            "logout",
            None,
            serde_json::json!({}),
        )
        .await?;
    }
    // Purging deletes the row: the old cookie is worthless from now on.
    session.purge();
    Ok(see_other("/accounts/login?logged_out=1"))
}
