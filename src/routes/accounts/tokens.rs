//! `/accounts/tokens`: a user's API tokens.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::auth::context::flash;
use crate::auth::{tokens, CsrfForm, LoggedIn, PageCtx};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::{render, see_other, FormErrors};
use plinth_store as db;

pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "accounts/tokens.html")]
struct TokensPage {
    ctx: PageCtx,
    tokens: Vec<TokenView>,
    secret: Option<String>,
    name: String,
    errors: FormErrors,
}

async fn page(
    ctx: PageCtx,
    state: &AppState,
    user_id: i64,
    secret: Option<String>,
    name: String,
    errors: FormErrors,
) -> Result<HttpResponse, AppError> {
    let tokens = db::tokens::for_user(&state.pool, user_id)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: crate::web::fmt_time(&Some(t.created_at)),
            last_used_at: crate::web::fmt_time(&t.last_used_at),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(
        &TokensPage {
            ctx,
            tokens,
            secret,
            name,
            errors,
        },
        status,
    )
}

pub async fn tokens_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    page(
        ctx,
        &state,
        user.id,
        None,
        String::new(),
        FormErrors::default(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NewToken {
    name: String,
}

pub async fn create_token(
    req: HttpRequest,
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    CsrfForm(form): CsrfForm<NewToken>,
) -> Result<HttpResponse, AppError> {
    let name = form.name.trim().to_string();
    let mut errors = FormErrors::default();
    if name.is_empty() {
        errors.add(
            "name",
            "Give the token a name, such as the program that will use it.",
        );
    } else if name.chars().any(char::is_control) {
        errors.add("name", "Use letters, digits, spaces and punctuation only.");
    } else if name.chars().count() > 100 {
        errors.add("name", "Use at most 100 characters.");
    }
    if !errors.is_empty() {
        return page(ctx, &state, user.id, None, name, errors).await;
    }
    let secret = tokens::generate();
    db::tokens::create(
        &state.pool,
        user.id,
        &name,
        &tokens::visible_prefix(&secret),
        &tokens::hash(&secret),
    )
    .await?;
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "token.created",
        name.clone(),
        serde_json::json!({"prefix": tokens::visible_prefix(&secret)}),
    )
    .await?;
    tracing::info!(user_id = user.id, token = ?name, "API token created");
    // The secret is in this response only: never stored, not even in the session. (Every
    // signed-in page carries `Cache-Control: no-store`, so it is not cached either.)
    let mut res = page(
        ctx,
        &state,
        user.id,
        Some(secret),
        String::new(),
        FormErrors::default(),
    )
    .await?;
    *res.status_mut() = actix_web::http::StatusCode::CREATED;
    Ok(res)
}

#[derive(Deserialize, Default)]
pub struct Empty {}

pub async fn revoke_token(
    req: HttpRequest,
    LoggedIn(_, user): LoggedIn,
    session: Session,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<HttpResponse, AppError> {
    let revoked = db::tokens::revoke(&state.pool, user.id, *id).await?;
    state.tokens.changed();
    if !revoked {
        return Err(AppError::NotFound(
            "You have no live token with that number.".into(),
        ));
    }
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "token.revoked",
        format!("token {id}"),
        serde_json::json!({}),
    )
    .await?;
    flash(
        &session,
        "success",
        "The token was revoked; requests using it now fail.",
    );
    tracing::info!(user_id = user.id, token_id = *id, "API token revoked");
    Ok(see_other("/accounts/tokens"))
}
