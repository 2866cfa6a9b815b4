//! Releasing versions from a model's admin page: aliases, rollback, canaries and shadows, each recorded in the audit log.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{form_done, model_admin_page, number, posted};
use crate::auth::context::flash;
use crate::auth::StaffOnly;
use crate::error::AppError;
use crate::registry::{ImportError, PRODUCTION};
use crate::state::AppState;
use crate::web::see_other;
use plinth_store as db;
use plinth_store::models::ModelRow;

pub async fn set_alias(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (form, model) = posted(&req, payload, &state, &name).await?;
    let alias = form.field("alias").trim().to_lowercase();
    let Some(version) = number(&form, "version") else {
        return model_admin_page(ctx, &state, &model, Some("Choose a version number.".into()))
            .await;
    };
    let outcome = move_alias(&state, &req, &user, &model, &alias, version).await?;
    let outcome = outcome.map(|()| format!("{alias} now points at version {version}."));
    form_done(ctx, &state, &model, outcome, "").await
}

pub async fn rollback(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (_, model) = posted(&req, payload, &state, &name).await?;
    let target = db::models::previous_target(&state.pool, model.id, PRODUCTION).await?;
    let version = match target {
        Some(id) => db::models::version_by_id(&state.pool, id).await?,
        None => None,
    };
    let Some(version) = version else {
        let e = "There is no earlier production version to go back to.".to_string();
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    };
    let number = version.version;
    let outcome = move_alias(&state, &req, &user, &model, PRODUCTION, number).await?;
    let outcome = outcome.map(|()| format!("Rolled back: production is version {number} again."));
    form_done(ctx, &state, &model, outcome, "").await
}

/// Points `alias` at `version`, recording the move (and where the alias pointed before) in the
/// audit log; the inner error is the registry's refusal, for the page to show.
async fn move_alias(
    state: &AppState,
    req: &HttpRequest,
    user: &plinth_store::users::User,
    model: &ModelRow,
    alias: &str,
    version: i32,
) -> Result<Result<(), ImportError>, AppError> {
    let moved = state
        .registry
        .move_alias(model, alias, version, Some(user.id))
        .await;
    Ok(match moved {
        Ok(previous) => {
            crate::audit::alias_moved(
                &state.pool,
                req,
                user,
                &model.name,
                alias,
                previous,
                version,
            )
            .await?;
            Ok(())
        }
        Err(e) => Err(e),
    })
}

/// Starts or changes the canary: `candidate` answers `share` percent of production's callers.
pub async fn set_canary(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (form, model) = posted(&req, payload, &state, &name).await?;
    let Some(candidate) = number(&form, "candidate") else {
        let e = "Choose the candidate version.".to_string();
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    };
    let percent = form
        .field("share")
        .trim()
        .trim_end_matches('%')
        .parse::<f64>();
    let Ok(percent) = percent else {
        let e = "The candidate's share is a percentage, such as 10.".to_string();
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    };
    let share = percent / 100.0;
    let outcome = state
        .registry
        .set_canary(&model, candidate, share, Some(user.id))
        .await;
    if outcome.is_ok() {
        crate::audit::canary_set(&state.pool, &req, &user, &model.name, candidate, share).await?;
    }
    let outcome = outcome
        .map(|()| format!("Version {candidate} now answers {percent}% of production's callers."));
    form_done(ctx, &state, &model, outcome, "#canary").await
}

/// Ends the canary: everyone gets production again.
pub async fn end_canary(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (_, model) = posted(&req, payload, &state, &name).await?;
    if let Some(candidate) = state.registry.end_canary(&model).await? {
        crate::audit::canary_ended(&state.pool, &req, &user, &model.name, candidate).await?;
        if let Some(session) = ctx.session() {
            flash(
                session,
                "success",
                format!("Canary ended: version {candidate} no longer answers; production answers everyone."),
            );
        }
    }
    Ok(see_other(&format!("/admin/models/{}#canary", model.name)))
}

/// Starts shadowing the version the form names.
pub async fn start_shadow(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (form, model) = posted(&req, payload, &state, &name).await?;
    let Some(version) = number(&form, "version") else {
        let e = "Choose the version to shadow.".to_string();
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    };
    let outcome = state
        .registry
        .start_shadow(&model, version, Some(user.id))
        .await;
    if let Ok(true) = outcome {
        crate::audit::shadow_changed(&state.pool, &req, &user, &model.name, version, true).await?;
    }
    let outcome =
        outcome.map(|_| format!("Version {version} now receives a copy of the live requests."));
    form_done(ctx, &state, &model, outcome, "#shadows").await
}

/// Stops shadowing a version.
pub async fn stop_shadow(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
) -> Result<HttpResponse, AppError> {
    let (name, version) = path.into_inner();
    let (_, model) = posted(&req, payload, &state, &name).await?;
    let outcome = state.registry.stop_shadow(&model, version).await;
    if let Ok(true) = outcome {
        crate::audit::shadow_changed(&state.pool, &req, &user, &model.name, version, false).await?;
    }
    let outcome = outcome
        .map(|_| format!("Version {version} no longer receives copies; its answers stay stored."));
    form_done(ctx, &state, &model, outcome, "#shadows").await
}
