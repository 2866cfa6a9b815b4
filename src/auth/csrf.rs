//! CSRF tokens tied to the session, and a form extractor that checks them before anything else.

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::AppError;

const SESSION_KEY: &str = "csrf";
/// The form field carrying the token.
pub const FIELD: &str = "csrf_token";

/// The session's token, created on first use.
pub fn token(session: &Session) -> String {
    if let Ok(Some(token)) = session.get::<String>(SESSION_KEY) {
        return token;
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    // A session that cannot be written will simply fail the check later.
    let _ = session.insert(SESSION_KEY, &token);
    token
}

/// A fresh token, after login, so a token seen before authentication is worthless after.
pub fn rotate(session: &Session) {
    session.remove(SESSION_KEY);
    token(session);
}

/// Constant-time comparison of the submitted token with the session's.
pub fn verify(session: &Session, submitted: &str) -> bool {
    let Ok(Some(expected)) = session.get::<String>(SESSION_KEY) else {
        return false;
    };
    // `subtle` compares every byte whatever the first difference (the length is not secret).
    bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        submitted.as_bytes(),
    ))
}

/// A URL-encoded form whose CSRF token has been checked. The check comes first, so a forged
/// POST gets 403 whatever else it carries.
pub struct CsrfForm<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for CsrfForm<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = req.get_session();
        let is_form = req.content_type() == "application/x-www-form-urlencoded";
        let body = web::Bytes::from_request(req, payload);
        let has_content_type = req.headers().contains_key(header::CONTENT_TYPE);
        Box::pin(async move {
            let body = body.await?;
            if !is_form && has_content_type {
                return Err(AppError::BadRequest(
                    "Forms must be sent as application/x-www-form-urlencoded.".into(),
                )
                .into());
            }
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
                .map_err(|_| AppError::BadRequest("The form could not be read.".into()))?;
            let submitted = pairs
                .iter()
                .find(|(k, _)| k == FIELD)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            if !verify(&session, submitted) {
                return Err(AppError::Csrf.into());
            }
            let form = serde_urlencoded::from_bytes::<T>(&body)
                .map_err(|e| AppError::BadRequest(format!("The form could not be read: {e}.")))?;
            Ok(CsrfForm(form))
        })
    }
}
