//! Staff pages for people: users (staff rights, disabling, temporary passwords, sessions) and
//! the audit log.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{render, see_other, FormErrors};
use crate::audit;
use crate::auth::context::flash;
use crate::auth::{password, CsrfForm, PageCtx, Password, StaffOnly};
use crate::db;
use crate::db::users::User;
use crate::error::AppError;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(users_page)
        .service(user_page)
        .service(set_staff)
        .service(set_active)
        .service(set_temporary_password)
        .service(end_sessions)
        .service(audit_page);
}

const PER_PAGE: i64 = 50;

#[derive(Deserialize, Default)]
#[serde(default)]
struct UsersQuery {
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

fn link(base: &str, pairs: &[(&str, String)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    format!(
        "{base}?{}",
        serde_urlencoded::to_string(kept).unwrap_or_default()
    )
}

#[get("/admin/users")]
async fn users_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<UsersQuery>,
) -> Result<HttpResponse, AppError> {
    let page = query.page.unwrap_or(1).clamp(1, 1_000_000);
    let q = query.q.replace('\0', "");
    let mut rows = db::users::search(&state.pool, &q, (page - 1) * PER_PAGE, PER_PAGE + 1).await?;
    let more = rows.len() as i64 > PER_PAGE;
    rows.truncate(PER_PAGE as usize);
    let users = rows
        .into_iter()
        .map(|u| UserRow {
            id: u.id,
            username: u.username,
            is_staff: u.is_staff,
            is_active: u.is_active,
            joined: super::fmt_time(&Some(u.created_at)),
            last_login: super::fmt_time(&u.last_login_at),
            sessions: u.sessions,
            predictions: u.predictions,
        })
        .collect();
    let page_link = |p: i64| link("/admin/users", &[("q", q.clone()), ("page", p.to_string())]);
    render(
        &UsersPage {
            prev_link: (page > 1).then(|| page_link(page - 1)),
            next_link: more.then(|| page_link(page + 1)),
            ctx,
            q,
            users,
            page,
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
            started: super::fmt_time(&Some(s.created_at)),
            expires: super::fmt_time(&Some(s.expires_at)),
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
            joined: super::fmt_time(&Some(user.created_at)),
            last_login: super::fmt_time(&user.last_login_at),
            is_self: user.id == staff.id,
            user,
            sessions,
            errors,
        },
        status,
    )
}

#[get("/admin/users/{id}")]
async fn user_page(
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let user = find_user(&state, *id).await?;
    user_page_for(ctx, &staff, &state, user, FormErrors::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Toggle {
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

fn not_yourself(staff: &User, user: &User, what: &str) -> Result<(), AppError> {
    if staff.id == user.id {
        return Err(AppError::Forbidden(format!(
            "You cannot {what} your own account; ask another staff member."
        )));
    }
    Ok(())
}

#[post("/admin/users/{id}/staff")]
async fn set_staff(
    req: HttpRequest,
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<Toggle>,
) -> Result<HttpResponse, AppError> {
    let on = form.on()?;
    let user = find_user(&state, *id).await?;
    not_yourself(&staff, &user, "change the staff rights of")?;
    db::users::set_staff(&state.pool, user.id, on).await?;
    state.tokens.changed();
    let action = if on {
        "user.staff_granted"
    } else {
        "user.staff_revoked"
    };
    audit::record(
        &state.pool,
        Some(&req),
        Some(&staff),
        action,
        user.username.clone(),
        serde_json::json!({"user_id": user.id}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        let text = if on {
            "is now staff"
        } else {
            "is no longer staff"
        };
        flash(session, "success", format!("{} {text}.", user.username));
    }
    Ok(see_other(&format!("/admin/users/{}", user.id)))
}

#[post("/admin/users/{id}/active")]
async fn set_active(
    req: HttpRequest,
    StaffOnly(ctx, staff): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
    CsrfForm(form): CsrfForm<Toggle>,
) -> Result<HttpResponse, AppError> {
    let on = form.on()?;
    let user = find_user(&state, *id).await?;
    not_yourself(&staff, &user, "disable")?;
    // Disabling ends every session of the user in the same transaction.
    db::users::set_active(&state.pool, user.id, on).await?;
    state.tokens.changed();
    let action = if on { "user.enabled" } else { "user.disabled" };
    audit::record(
        &state.pool,
        Some(&req),
        Some(&staff),
        action,
        user.username.clone(),
        serde_json::json!({"user_id": user.id}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        let text = if on {
            "is enabled again"
        } else {
            "is disabled and signed out everywhere"
        };
        flash(session, "success", format!("{} {text}.", user.username));
    }
    Ok(see_other(&format!("/admin/users/{}", user.id)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TemporaryPassword {
    password: String,
    password2: String,
}

#[post("/admin/users/{id}/password")]
async fn set_temporary_password(
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
    audit::record(
        &state.pool,
        Some(&req),
        Some(&staff),
        "user.password_set",
        user.username.clone(),
        serde_json::json!({"user_id": user.id}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!(
                "{} has a temporary password and must choose a new one at next login.",
                user.username
            ),
        );
    }
    Ok(see_other(&format!("/admin/users/{}", user.id)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EndSessions {
    /// One session's stored hash, or `all`.
    session: String,
}

#[post("/admin/users/{id}/sessions/end")]
async fn end_sessions(
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
    audit::record(
        &state.pool,
        Some(&req),
        Some(&staff),
        "session.ended",
        user.username.clone(),
        serde_json::json!({"user_id": user.id, "sessions": ended}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!("Ended {ended} session(s) of {}.", user.username),
        );
    }
    Ok(see_other(&format!("/admin/users/{}", user.id)))
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct AuditQuery {
    action: String,
    actor: String,
    from: String,
    to: String,
    page: Option<i64>,
}

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub client_ip: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    ctx: PageCtx,
    rows: Vec<AuditRow>,
    actions: Vec<String>,
    action: String,
    actor: String,
    from: String,
    to: String,
    error: Option<String>,
    page: i64,
    prev_link: Option<String>,
    next_link: Option<String>,
}

fn date(label: &str, v: &str) -> Result<Option<time::Date>, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match v.trim() {
        "" => Ok(None),
        s => time::Date::parse(s, &format)
            .map(Some)
            .map_err(|_| format!("{label}: enter a date as YYYY-MM-DD.")),
    }
}

#[get("/admin/audit")]
async fn audit_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    let page = q.page.unwrap_or(1).clamp(1, 1_000_000);
    let non_empty = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
    let filter = date("From", &q.from).and_then(|from| {
        Ok(db::audit::Filter {
            action: non_empty(&q.action),
            actor: non_empty(&q.actor),
            from,
            to: date("To", &q.to)?,
        })
    });
    let (rows, error, more) = match filter {
        Ok(filter) => {
            let mut rows =
                db::audit::list(&state.pool, &filter, (page - 1) * PER_PAGE, PER_PAGE + 1).await?;
            let more = rows.len() as i64 > PER_PAGE;
            rows.truncate(PER_PAGE as usize);
            (rows, None, more)
        }
        Err(e) => (Vec::new(), Some(e), false),
    };
    let page_link = |p: i64| {
        link(
            "/admin/audit",
            &[
                ("action", q.action.clone()),
                ("actor", q.actor.clone()),
                ("from", q.from.clone()),
                ("to", q.to.clone()),
                ("page", p.to_string()),
            ],
        )
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        &AuditPage {
            rows: rows
                .into_iter()
                .map(|e| AuditRow {
                    at: super::fmt_time(&Some(e.created_at)),
                    actor: e.actor.unwrap_or_else(|| "system".into()),
                    action: e.action,
                    target: e.target.unwrap_or_default(),
                    detail: match &e.detail.0 {
                        serde_json::Value::Object(m) if m.is_empty() => String::new(),
                        other => other.to_string(),
                    },
                    client_ip: e.client_ip.unwrap_or_default(),
                })
                .collect(),
            actions: db::audit::actions(&state.pool).await?,
            prev_link: (page > 1).then(|| page_link(page - 1)),
            next_link: more.then(|| page_link(page + 1)),
            action: q.action,
            actor: q.actor,
            from: q.from,
            to: q.to,
            error,
            page,
            ctx,
        },
        status,
    )
}
