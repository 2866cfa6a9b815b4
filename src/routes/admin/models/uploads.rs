//! New models and versions from the admin pages: the upload read, checked and imported, and a version linked to its data set.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{audit, find_model, form_done, model_admin_page, models_index_page, number, posted};
use crate::auth::context::flash;
use crate::auth::StaffOnly;
use crate::error::AppError;
use crate::registry::{ImportError, Imported, Upload};
use crate::state::AppState;
use crate::web::forms::{read_form, Submitted};
use crate::web::see_other;
use plinth_store as db;

pub(super) fn upload_from(form: &Submitted, model: String, actor: i64) -> Result<Upload, String> {
    let onnx = form
        .file("model")
        .ok_or("Choose the model file (model.onnx) to upload.")?
        .to_vec();
    let card = match form.file("card") {
        Some(bytes) => Some(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| "card.toml is not UTF-8 text.".to_string())?,
        ),
        None => None,
    };
    Ok(Upload {
        model,
        onnx,
        card,
        reference_csv: form.file("reference").map(<[u8]>::to_vec),
        source: "upload",
        actor: Some(actor),
    })
}

pub async fn create_model(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_upload_bytes).await?;
    let name = form.field("name").trim().to_string();
    if let Err(e) = crate::registry::check_model_name(&name) {
        return models_index_page(ctx, &state, name, Some(e)).await;
    }
    if db::models::find_model(&state.pool, &name).await?.is_some() {
        let e = format!("A model called {name} exists already; upload a new version on its page.");
        return models_index_page(ctx, &state, name, Some(e)).await;
    }
    let upload = match upload_from(&form, name.clone(), user.id) {
        Ok(u) => u,
        Err(e) => return models_index_page(ctx, &state, name, Some(e)).await,
    };
    match state.registry.import(upload).await {
        Ok(_) => {
            audit(&state, &req, &user, "model.created", format!("{name} v1")).await?;
            if let Some(session) = ctx.session() {
                flash(
                    session,
                    "success",
                    format!("Created {name} with version 1, now in production."),
                );
            }
            Ok(see_other(&format!("/admin/models/{name}")))
        }
        Err(ImportError::Invalid(e)) => models_index_page(ctx, &state, name, Some(e)).await,
        Err(e) => Err(AppError::from(e)),
    }
}

pub async fn upload_version(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_upload_bytes).await?;
    let model = find_model(&state, &name).await?;
    let upload = match upload_from(&form, model.name.clone(), user.id) {
        Ok(u) => u,
        Err(e) => return model_admin_page(ctx, &state, &model, Some(e)).await,
    };
    // The data sets picked on the form, checked before anything is stored.
    let mut picked = Vec::new();
    for role in ["training", "evaluation"] {
        let spec = form.field(&format!("{role}_dataset")).trim().to_string();
        if spec.is_empty() {
            continue;
        }
        match dataset_version(&state, &spec).await? {
            Some(dv) => picked.push((role, dv)),
            None => {
                let e = format!("There is no data set version {spec:?}.");
                return model_admin_page(ctx, &state, &model, Some(e)).await;
            }
        }
    }
    let imported = state.registry.import(upload).await;
    if let Ok(Imported::New { version, .. } | Imported::AlreadyThere { version, .. }) = &imported {
        if let Some((_, v)) = db::models::by_number(&state.pool, &model.name, *version).await? {
            for (role, dv) in &picked {
                db::datasets::link(&state.pool, v.id, dv.id, role).await?;
                crate::audit::dataset_linked(
                    &state.pool,
                    &req,
                    &user,
                    (&model.name, *version),
                    (&dv.dataset, dv.version),
                    role,
                )
                .await?;
            }
        }
    }
    let message = match imported {
        Ok(Imported::New { version, .. }) => {
            let target = format!("{} v{version}", model.name);
            audit(&state, &req, &user, "model.version_uploaded", target).await?;
            format!("Version {version} uploaded. Move an alias to it to serve it.")
        }
        Ok(Imported::AlreadyThere { version, .. }) => {
            format!("That file is version {version} already; nothing was added.")
        }
        Err(ImportError::Invalid(e)) => {
            return model_admin_page(ctx, &state, &model, Some(e)).await
        }
        Err(e) => return Err(AppError::from(e)),
    };
    if let Some(session) = ctx.session() {
        flash(session, "success", message);
    }
    Ok(see_other(&format!("/admin/models/{}", model.name)))
}

/// The data set version `name@N` (or `name` for its latest).
pub(super) async fn dataset_version(
    state: &AppState,
    spec: &str,
) -> Result<Option<db::datasets::DatasetVersionRow>, AppError> {
    let (name, version) = db::datasets::parse_spec(spec);
    Ok(db::datasets::version(&state.pool, name, version).await?)
}

/// Links a version to a data set version it was trained or evaluated on.
pub async fn link_dataset(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (form, model) = posted(&req, payload, &state, &name).await?;
    let role = form.field("role").trim().to_string();
    let spec = form.field("dataset").trim().to_string();
    let outcome = async {
        let Some(number) = number(&form, "version") else {
            return Err(ImportError::Invalid("Choose a version number.".into()));
        };
        let Some((_, v)) = db::models::by_number(&state.pool, &model.name, number).await? else {
            return Err(ImportError::Invalid(format!(
                "{} has no version {number}.",
                model.name
            )));
        };
        db::datasets::check_role(&role).map_err(ImportError::Invalid)?;
        let Some(dv) = dataset_version(&state, &spec)
            .await
            .map_err(|e| ImportError::Invalid(e.to_string()))?
        else {
            return Err(ImportError::Invalid(format!(
                "There is no data set version {spec:?}."
            )));
        };
        db::datasets::link(&state.pool, v.id, dv.id, &role).await?;
        crate::audit::dataset_linked(
            &state.pool,
            &req,
            &user,
            (&model.name, number),
            (&dv.dataset, dv.version),
            &role,
        )
        .await
        .map_err(|e| ImportError::Invalid(e.to_string()))?;
        Ok(format!(
            "Version {number} is linked to {} v{} ({role}).",
            dv.dataset, dv.version
        ))
    }
    .await;
    form_done(ctx, &state, &model, outcome, "#versions").await
}
