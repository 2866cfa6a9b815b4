//! Sign up, log in, log out, change password.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{render, safe_next, see_other, FormErrors};
use crate::audit::{self, client_ip};
use crate::auth::context::flash;
use crate::auth::throttle;
use crate::auth::{csrf, password, CsrfForm, LoggedIn, PageCtx, Password, Username};
use crate::config::SignupPolicy;
use crate::db;
use crate::db::users::{CreateUserError, User};
use crate::error::AppError;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/accounts")
            .service(login_form)
            .service(login)
            .service(signup_form)
            .service(signup)
            .service(logout_form)
            .service(logout)
            .service(password_form)
            .service(change_password),
    );
}

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
struct LoginQuery {
    next: String,
    logged_out: Option<String>,
}

#[get("/login")]
async fn login_form(ctx: PageCtx, query: web::Query<LoginQuery>) -> Result<HttpResponse, AppError> {
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
struct LoginForm {
    username: String,
    password: String,
    next: String,
}

#[post("/login")]
async fn login(
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

/// Signs `user` in: a new session id (no fixation), the user recorded, a fresh CSRF token, and
/// where the login came from (shown to staff in the user's session list).
/// `authenticated_at` is kept from the session being renewed (a password change), so the
/// absolute limit still counts from the login; a login passes `None` and the clock starts now.
fn start_session(
    session: &Session,
    user: &User,
    req: &HttpRequest,
    authenticated_at: Option<i64>,
) -> Result<(), AppError> {
    session.renew();
    session
        .insert(crate::auth::SESSION_USER_ID, user.id)
        .map_err(AppError::internal)?;
    let at = authenticated_at.unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp());
    session
        .insert(crate::auth::SESSION_AUTHENTICATED_AT, at)
        .map_err(AppError::internal)?;
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let _ = session.insert("client_ip", client_ip(req));
    let _ = session.insert("user_agent", agent);
    csrf::rotate(session);
    Ok(())
}

// --- sign up ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/signup.html")]
struct SignupPage {
    ctx: PageCtx,
    open: bool,
    username: String,
    errors: FormErrors,
}

#[get("/signup")]
async fn signup_form(ctx: PageCtx, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let open = state.settings.signup == SignupPolicy::Open;
    let page = SignupPage {
        ctx,
        open,
        username: String::new(),
        errors: FormErrors::default(),
    };
    let status = if open {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    render(&page, status)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignupForm {
    username: String,
    password: String,
    password2: String,
}

#[post("/signup")]
async fn signup(
    req: HttpRequest,
    ctx: PageCtx,
    session: Session,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<SignupForm>,
) -> Result<HttpResponse, AppError> {
    if state.settings.signup == SignupPolicy::Closed {
        return Err(AppError::Forbidden(
            "Sign-up is closed on this server. Ask an administrator for an account.".into(),
        ));
    }
    if let Err(secs) = throttle::begin_signup(&state.pool, &client_ip(&req)).await? {
        return Err(AppError::TooManyRequests(format!(
            "Too many sign-ups from your address. Wait {secs} seconds, then try again."
        )));
    }
    let mut errors = FormErrors::default();
    let username = Username::parse(&form.username)
        .map_err(|e| errors.add("username", e))
        .ok();
    let password = Password::parse(&form.password, form.username.trim())
        .map_err(|e| errors.add("password", e))
        .ok();
    if form.password != form.password2 {
        errors.add("password2", "The two passwords differ.");
    }
    let rerender = |errors: FormErrors| {
        render(
            &SignupPage {
                ctx,
                open: true,
                username: form.username.clone(),
                errors,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let (Some(username), Some(password), true) = (username, password, errors.is_empty()) else {
        return rerender(errors);
    };
    if db::users::find_by_username(&state.pool, username.as_str())
        .await?
        .is_some()
    {
        errors.add("username", CreateUserError::UsernameTaken.to_string());
        return rerender(errors);
    }
    let hash = password::hash(&password).await?;
    let user = match db::users::create(&state.pool, &username, &hash, false).await {
        Ok(user) => user,
        Err(CreateUserError::UsernameTaken) => {
            errors.add("username", CreateUserError::UsernameTaken.to_string());
            return rerender(errors);
        }
        Err(CreateUserError::Database(e)) => return Err(e.into()),
    };
    db::users::record_login(&state.pool, user.id).await?;
    start_session(&session, &user, &req, None)?;
    audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "user.signed_up",
        user.username.clone(),
        serde_json::json!({}),
    )
    .await?;
    flash(
        &session,
        "success",
        format!("Welcome to Plinth, {}.", user.username),
    );
    tracing::info!(user_id = user.id, username = ?user.username, "account created");
    Ok(see_other("/"))
}

// --- log out ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/logout.html")]
struct LogoutPage {
    ctx: PageCtx,
}

/// Logging out changes state, so it is a POST; a GET shows the button (as Django does).
#[get("/logout")]
async fn logout_form(ctx: PageCtx) -> Result<HttpResponse, AppError> {
    render(&LogoutPage { ctx }, StatusCode::OK)
}

#[derive(Deserialize, Default)]
struct EmptyForm {}

#[post("/logout")]
async fn logout(
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

// --- change password ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/password.html")]
struct PasswordPage {
    ctx: PageCtx,
    must_change: bool,
    errors: FormErrors,
}

#[get("/password")]
async fn password_form(LoggedIn(ctx, user): LoggedIn) -> Result<HttpResponse, AppError> {
    let page = PasswordPage {
        ctx,
        must_change: user.must_change_password,
        errors: FormErrors::default(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PasswordForm {
    current_password: String,
    new_password: String,
    new_password2: String,
}

#[post("/password")]
async fn change_password(
    req: HttpRequest,
    LoggedIn(ctx, user): LoggedIn,
    session: Session,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<HttpResponse, AppError> {
    let mut errors = FormErrors::default();
    // A wrong current password is a failed login: throttled the same way.
    let attempt = match throttle::begin(&state.pool, &user.username, &client_ip(&req)).await? {
        Ok(attempt) => attempt,
        Err(secs) => {
            return Err(AppError::TooManyRequests(format!(
                "Too many wrong passwords. Wait {secs} seconds, then try again."
            )))
        }
    };
    let current_ok =
        password::verify(form.current_password.clone(), user.password_hash.clone()).await?;
    if current_ok {
        attempt.succeeded(&state.pool, &user.username).await?;
    } else {
        attempt.failed();
        errors.add("current_password", "That is not your current password.");
    }
    let new = Password::parse(&form.new_password, &user.username)
        .map_err(|e| errors.add("new_password", e))
        .ok();
    if form.new_password != form.new_password2 {
        errors.add("new_password2", "The two passwords differ.");
    }
    if current_ok && form.new_password == form.current_password {
        errors.add(
            "new_password",
            "Choose a password different from the current one.",
        );
    }
    let (Some(new), true) = (new, errors.is_empty()) else {
        let page = PasswordPage {
            ctx,
            must_change: user.must_change_password,
            errors,
        };
        return render(&page, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let hash = password::hash(&new).await?;
    let authenticated_at = session
        .get::<i64>(crate::auth::SESSION_AUTHENTICATED_AT)
        .ok()
        .flatten();
    // Ends every session of the user, this one included; a renewed one follows.
    db::users::set_password(&state.pool, user.id, &hash, false).await?;
    state.tokens.changed();
    start_session(&session, &user, &req, authenticated_at)?;
    audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "password.changed",
        user.username.clone(),
        serde_json::json!({}),
    )
    .await?;
    flash(
        &session,
        "success",
        "Your password was changed. Other browsers have been signed out.",
    );
    tracing::info!(user_id = user.id, "password changed");
    Ok(see_other("/"))
}
