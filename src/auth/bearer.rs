//! The extractors of the JSON API: who is calling, from `Authorization: Bearer <token>`.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use tracing::Instrument;

use crate::error::AppError;
use crate::serving::Caller;
use crate::state::AppState;
use plinth_store::users::User;

/// The token's owner, from `Authorization: Bearer …`. `None` when no token was sent; an
/// invalid or revoked token is refused outright.
async fn bearer(req: &HttpRequest) -> Result<Option<(i64, User)>, AppError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    let Some(secret) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return Err(AppError::Unauthorized(
            "The Authorization header must be \"Bearer <token>\".".into(),
        ));
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("AppState is not registered")))?;
    let hash = crate::auth::tokens::hash(secret.trim());
    let found = state
        .tokens
        .get_or_fetch(hash.clone(), || {
            plinth_store::tokens::authenticate(&state.pool, &hash)
        })
        .instrument(tracing::info_span!("authenticate", credential = "token"))
        .await?;
    match found {
        Some(found) => Ok(Some(found)),
        None => Err(AppError::Unauthorized(
            "The API token is not valid: it is unknown, revoked, or its user is disabled.".into(),
        )),
    }
}

fn token_required() -> AppError {
    AppError::Unauthorized(
        "An API token is required: send Authorization: Bearer <token> (create one at /accounts/tokens).".into(),
    )
}

/// Whoever may run inference: a token's user, or anyone when `PLINTH_PUBLIC_INFERENCE=1`.
pub struct InferenceCaller(pub Caller, pub Option<User>);

/// A token's user, required.
pub struct ApiUser(pub Caller, pub User);

/// A staff user's token, required.
pub struct ApiStaff(pub Caller, pub User);

type Extracted<T> = Pin<Box<dyn Future<Output = Result<T, actix_web::Error>>>>;

impl FromRequest for InferenceCaller {
    type Error = actix_web::Error;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match bearer(&req).await? {
                Some((token_id, user)) => Ok(InferenceCaller(
                    Caller {
                        user_id: Some(user.id),
                        token_id: Some(token_id),
                    },
                    Some(user),
                )),
                None => {
                    let public = req
                        .app_data::<web::Data<AppState>>()
                        .is_some_and(|s| s.settings.public_inference);
                    if public {
                        Ok(InferenceCaller(Caller::default(), None))
                    } else {
                        Err(token_required().into())
                    }
                }
            }
        })
    }
}

impl FromRequest for ApiUser {
    type Error = actix_web::Error;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (token_id, user) = bearer(&req).await?.ok_or_else(token_required)?;
            let caller = Caller {
                user_id: Some(user.id),
                token_id: Some(token_id),
            };
            Ok(ApiUser(caller, user))
        })
    }
}

impl FromRequest for ApiStaff {
    type Error = actix_web::Error;
    type Future = Extracted<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = ApiUser::from_request(req, payload);
        Box::pin(async move {
            let ApiUser(caller, user) = user.await?;
            if !user.is_staff {
                return Err(AppError::Forbidden(
                    "This endpoint needs a staff user's token.".into(),
                )
                .into());
            }
            Ok(ApiStaff(caller, user))
        })
    }
}
