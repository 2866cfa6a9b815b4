//! Changing one's own password: `/accounts/password`.

use super::start_session;
use crate::audit::{self, client_ip};
use crate::auth::context::flash;
use crate::auth::throttle;
use crate::auth::{password, CsrfForm, LoggedIn, PageCtx, Password};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::{render, see_other, FormErrors};
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use plinth_store as db;
use serde::Deserialize;

// --- change password ----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/password.html")]
struct PasswordPage {
    ctx: PageCtx,
    must_change: bool,
    errors: FormErrors,
}

pub async fn password_form(LoggedIn(ctx, user): LoggedIn) -> Result<HttpResponse, AppError> {
    let page = PasswordPage {
        ctx,
        must_change: user.must_change_password,
        errors: FormErrors::default(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    new_password2: String,
}

pub async fn change_password(
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
