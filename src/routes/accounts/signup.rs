//! Creating an account: `/accounts/signup`, open, invite-only or closed (`PLINTH_SIGNUP`).

use super::start_session;
use crate::audit::{self, client_ip};
use crate::auth::context::flash;
use crate::auth::throttle;
use crate::auth::{password, CsrfForm, PageCtx, Password};
use crate::config::SignupPolicy;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::{render, see_other, FormErrors};
use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use plinth_store as db;
use plinth_store::domain::Username;
use plinth_store::users::CreateUserError;
use serde::Deserialize;

// --- sign up ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "accounts/signup.html")]
struct SignupPage {
    ctx: PageCtx,
    open: bool,
    username: String,
    errors: FormErrors,
}

pub async fn signup_form(
    ctx: PageCtx,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
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
pub struct SignupForm {
    username: String,
    password: String,
    password2: String,
}

pub async fn signup(
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
