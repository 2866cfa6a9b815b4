//! Users, for staff: `/admin/users`, one user's page, staff and active flags, temporary
//! passwords, ending sessions.

use crate::audit;
use crate::auth::context::flash;
use crate::auth::{password, CsrfForm, PageCtx, Password, StaffOnly};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::paging::{link, Pager};
use crate::web::{render, see_other, FormErrors};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use plinth_store as db;
use plinth_store::users::User;
use serde::Deserialize;

const PER_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UsersQuery {
    q: String,
    page: Option<i64>,
}

pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub is_staff: bool,
    pub is_active: bool,
    pub joined: String,
    pub last_login: String,
    pub sessions: i64,
    pub predictions: i64,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    ctx: PageCtx,
    q: String,
    users: Vec<UserRow>,
    page: i64,
    prev_link: Option<String>,
    next_link: Option<String>,
}

pub async fn users_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, AppError> {
    let pager = Pager::new(query.page, PER_PAGE);
    let q = query.q.replace('\0', "");
    let mut rows = db::users::search(&state.pool, &q, pager.offset(), pager.fetch()).await?;
    let more = pager.cut(&mut rows);
    let users = rows
        .into_iter()
        .map(|u| UserRow {
            id: u.id,
            username: u.username,
            is_staff: u.is_staff,
            is_active: u.is_active,
            joined: crate::web::fmt_time(&Some(u.created_at)),
            last_login: crate::web::fmt_time(&u.last_login_at),
            sessions: u.sessions,
            predictions: u.predictions,
        })
        .collect();
    let (prev_link, next_link) = pager.links(more, |p| {
        link("/admin/users", &[("q", &q), ("page", &p.to_string())])
    });
    render(
        &UsersPage {
            prev_link,
            next_link,
            ctx,
            q,
            users,
            page: pager.page,
        },
        StatusCode::OK,
    )
}

pub struct SessionRow {
    pub key_hash: String,
    pub started: String,
    pub expires: String,
    pub client_ip: String,
    pub user_agent: String,
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    ctx: PageCtx,
    user: User,
    joined: String,
    last_login: String,
    sessions: Vec<SessionRow>,
    is_self: bool,
    errors: FormErrors,
}

async fn find_user(state: &AppState, id: i64) -> Result<User, AppError> {
    db::users::find_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no user {id}.")))
}

async fn user_page_for(
    ctx: PageCtx,
    staff: &User,
    state: &AppState,
    user: User,
    errors: FormErrors,
) -> Result<HttpResponse, AppError> {
    let sessions = db::sessions::for_user(&state.pool, user.id)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            key_hash: s.key_hash,
            started: crate::web::fmt_time(&Some(s.created_at)),
            expires: crate::web::fmt_time(&Some(s.expires_at)),
            client_ip: s.client_ip.unwrap_or_else(|| "—".into()),
            user_agent: s.user_agent.unwrap_or_default(),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render(
        &UserPage {
            ctx,
            joined: crate::web::fmt_time(&Some(user.created_at)),
            last_login: crate::web::fmt_time(&user.last_login_at),
            is_self: user.id == staff.id,
            user,
            sessions,
            errors,
        },
        status,
    )
}

pub async fn user_page(
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let user = find_user(&state, *id).await?;
    user_page_for(ctx, &staff, &state, user, FormErrors::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Toggle {
    value: String,
}

impl Toggle {
    fn on(&self) -> Result<bool, AppError> {
        match self.value.as_str() {
            "1" => Ok(true),
            "0" => Ok(false),
            _ => Err(AppError::BadRequest("value must be 1 or 0.".into())),
        }
    }
}

/// A change made to a user: the audit action and detail, and what the staff member is told.
struct Change {
    action: &'static str,
    detail: serde_json::Value,
    message: String,
}

/// What every change to a user ends with: the change audited, the staff member told, and back
/// to the user's page.
async fn changed(
    req: &HttpRequest,
    ctx: &PageCtx,
    staff: &User,
    state: &AppState,
    user: &User,
    change: Change,
) -> Result<HttpResponse, AppError> {
    audit::record(
        &state.pool,
        Some(req),
        Some(staff),
        change.action,
        user.username.clone(),
        change.detail,
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(session, "success", change.message);
    }
    Ok(see_other(&format!("/admin/users/{}", user.id)))
}

fn not_yourself(staff: &User, user: &User, what: &str) -> Result<(), AppError> {
    if staff.id == user.id {
        return Err(AppError::Forbidden(format!(
            "You cannot {what} your own account; ask another staff member."
        )));
    }
    Ok(())
}

/// The two flags staff set on a user from the user's page.
#[derive(Clone, Copy)]
enum Flag {
    Staff,
    Active,
}

async fn set_flag(
    flag: Flag,
    req: HttpRequest,
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: i64,
    form: Toggle,
) -> Result<HttpResponse, AppError> {
    let on = form.on()?;
    let user = find_user(&state, id).await?;
    let (refused, action, text) = match (flag, on) {
        (Flag::Staff, true) => (
            "change the staff rights of",
            "user.staff_granted",
            "is now staff",
        ),
        (Flag::Staff, false) => (
            "change the staff rights of",
            "user.staff_revoked",
            "is no longer staff",
        ),
        (Flag::Active, true) => ("disable", "user.enabled", "is enabled again"),
        (Flag::Active, false) => (
            "disable",
            "user.disabled",
            "is disabled and signed out everywhere",
        ),
    };
    not_yourself(&staff, &user, refused)?;
    match flag {
        Flag::Staff => db::users::set_staff(&state.pool, user.id, on).await?,
        // Disabling ends every session of the user in the same transaction.
        Flag::Active => db::users::set_active(&state.pool, user.id, on).await?,
    }
    state.tokens.changed();
    let change = Change {
        action,
        detail: serde_json::json!({"user_id": user.id}),
        message: format!("{} {text}.", user.username),
    };
    changed(&req, &ctx, &staff, &state, &user, change).await
}

pub async fn set_staff(
    req: HttpRequest,
    staff: StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<Toggle>,
) -> Result<HttpResponse, AppError> {
    set_flag(Flag::Staff, req, staff, state, *id, form).await
}

pub async fn set_active(
    req: HttpRequest,
    staff: StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<Toggle>,
) -> Result<HttpResponse, AppError> {
    set_flag(Flag::Active, req, staff, state, *id, form).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TemporaryPassword {
    password: String,
    password2: String,
}

pub async fn set_temporary_password(
    req: HttpRequest,
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<TemporaryPassword>,
) -> Result<HttpResponse, AppError> {
    let user = find_user(&state, *id).await?;
    let mut errors = FormErrors::default();
    let new = Password::parse(&form.password, &user.username)
        .map_err(|e| errors.add("password", e))
        .ok();
    if form.password != form.password2 {
        errors.add("password2", "The two passwords differ.");
    }
    let (Some(new), true) = (new, errors.is_empty()) else {
        return user_page_for(ctx, &staff, &state, user, errors).await;
    };
    let hash = password::hash(&new).await?;
    // The user must choose their own at next login; their sessions end now.
    db::users::set_password(&state.pool, user.id, &hash, true).await?;
    state.tokens.changed();
    let message = format!(
        "{} has a temporary password and must choose a new one at next login.",
        user.username
    );
    let detail = serde_json::json!({"user_id": user.id});
    let action = "user.password_set";
    changed(
        &req,
        &ctx,
        &staff,
        &state,
        &user,
        Change {
            action,
            detail,
            message,
        },
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EndSessions {
    /// One session's stored hash, or `all`.
    session: String,
}

pub async fn end_sessions(
    req: HttpRequest,
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<EndSessions>,
) -> Result<HttpResponse, AppError> {
    let user = find_user(&state, *id).await?;
    let ended = if form.session == "all" {
        db::sessions::delete_for_user(&state.pool, user.id).await?
    } else {
        u64::from(db::sessions::delete_by_hash(&state.pool, user.id, &form.session).await?)
    };
    let message = format!("Ended {ended} session(s) of {}.", user.username);
    let detail = serde_json::json!({"user_id": user.id, "sessions": ended});
    let action = "session.ended";
    changed(
        &req,
        &ctx,
        &staff,
        &state,
        &user,
        Change {
            action,
            detail,
            message,
        },
    )
    .await
}
