//! What every page needs to know about the request: the signed-in user, the CSRF token, the
//! flash messages, the request id. Also the extractors that require a user or staff.

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;
use crate::telemetry::request_id;
use plinth_store::users::User;

const FLASH_KEY: &str = "flash";

/// A one-time message shown on the next page rendered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flash {
    /// `success`, `info` or `error`; also the CSS class.
    pub level: String,
    pub text: String,
}

/// The layout's view of the request.
pub struct PageCtx {
    pub user: Option<User>,
    pub request_id: String,
    pub path: String,
    pub signup_open: bool,
    session: Option<Session>,
}

impl PageCtx {
    /// A context with no session, for error pages rendered outside the session layer.
    pub fn anonymous(request_id: String) -> Self {
        PageCtx {
            user: None,
            request_id,
            path: String::new(),
            signup_open: false,
            session: None,
        }
    }

    /// Reads the session and loads its user. A user who was disabled or deleted since is signed
    /// out here and the session purged.
    pub async fn load(
        req: &HttpRequest,
        session: Session,
        state: &AppState,
    ) -> Result<Self, AppError> {
        let user_id = session
            .get::<i64>(super::SESSION_USER_ID)
            .unwrap_or_default();
        let user = match user_id {
            None => None,
            Some(id) => match user_by_id(state, id).await? {
                Some(user) if user.is_active => Some(user),
                _ => {
                    session.purge();
                    None
                }
            },
        };
        Ok(PageCtx {
            user,
            request_id: request_id(req),
            path: req.path().to_string(),
            signup_open: state.settings.signup == crate::config::SignupPolicy::Open,
            session: Some(session),
        })
    }

    /// The CSRF token for the forms on this page.
    pub fn csrf_token(&self) -> String {
        self.session
            .as_ref()
            .map(super::csrf::token)
            .unwrap_or_default()
    }

    /// Takes the flash messages waiting in the session.
    pub fn flashes(&self) -> Vec<Flash> {
        let Some(session) = &self.session else {
            return Vec::new();
        };
        match session.remove_as::<Vec<Flash>>(FLASH_KEY) {
            Some(Ok(flashes)) => flashes,
            _ => Vec::new(),
        }
    }

    pub fn is_staff(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.is_staff)
    }

    pub fn username(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.username.as_str())
    }

    /// True when `prefix` is the current area, for highlighting navigation.
    pub fn in_area(&self, prefix: &str) -> bool {
        if prefix == "/" {
            self.path == "/"
        } else {
            self.path.starts_with(prefix)
        }
    }

    /// The running version, for the footer.
    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }
}

/// Queues a message for the next page.
pub fn flash(session: &Session, level: &str, text: impl Into<String>) {
    let mut flashes = match session.get::<Vec<Flash>>(FLASH_KEY) {
        Ok(Some(f)) => f,
        _ => Vec::new(),
    };
    flashes.push(Flash {
        level: level.to_string(),
        text: text.into(),
    });
    let _ = session.insert(FLASH_KEY, flashes);
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, AppError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")))
}

impl FromRequest for PageCtx {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            Ok(PageCtx::load(&req, req.get_session(), &state).await?)
        })
    }
}

/// The full path and query of the request, the place to come back to after login.
fn here(req: &HttpRequest) -> String {
    match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_string(),
    }
}

/// A page for signed-in users: anonymous visitors are sent to the login page.
pub struct LoggedIn(pub PageCtx, pub User);

impl FromRequest for LoggedIn {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let ctx = PageCtx::from_request(&req, payload);
        Box::pin(async move {
            let ctx = ctx.await?;
            match ctx.user.clone() {
                Some(user)
                    if user.must_change_password
                        && !matches!(req.path(), "/accounts/password" | "/accounts/logout") =>
                {
                    Err(AppError::PasswordChangeRequired.into())
                }
                Some(user) => Ok(LoggedIn(ctx, user)),
                None => Err(AppError::LoginRequired { next: here(&req) }.into()),
            }
        })
    }
}

/// A page for staff: anonymous visitors are sent to log in, other users get 403.
pub struct StaffOnly(pub PageCtx, pub User);

impl FromRequest for StaffOnly {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let logged_in = LoggedIn::from_request(req, payload);
        Box::pin(async move {
            let LoggedIn(ctx, user) = logged_in.await?;
            if user.is_staff {
                Ok(StaffOnly(ctx, user))
            } else {
                Err(AppError::Forbidden(
                    "This area is for staff. Ask an administrator if you need access.".into(),
                )
                .into())
            }
        })
    }
}

/// A user by id, from the cache when it holds them (see [`crate::cache`]).
async fn user_by_id(
    state: &AppState,
    id: i64,
) -> Result<Option<plinth_store::users::User>, AppError> {
    Ok(state
        .users
        .get_or_fetch(id, || plinth_store::users::find_by_id(&state.pool, id))
        .await?)
}
