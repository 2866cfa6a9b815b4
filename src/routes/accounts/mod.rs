//! The account pages (`templates/accounts/`): sign in and out, sign up, password, API tokens.

pub mod login;
pub mod password;
pub mod signup;
pub mod tokens;

use actix_session::Session;
use actix_web::http::header;
use actix_web::HttpRequest;

use crate::audit::client_ip;
use crate::auth::csrf;
use crate::error::AppError;
use plinth_store::users::User;

/// Signs `user` in: a new session id (no fixation), the user recorded, a fresh CSRF token, and
/// where the login came from (shown to staff in the user's session list).
/// `authenticated_at` is kept from the session being renewed (a password change), so the
/// absolute limit still counts from the login; a login passes `None` and the clock starts now.
pub(super) fn start_session(
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
