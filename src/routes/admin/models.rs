//! Staff pages of the registry: models, versions, uploads, aliases and rollback.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use crate::auth::context::flash;
use crate::auth::{PageCtx, StaffOnly};
use crate::db;
use crate::db::models::ModelRow;
use crate::error::AppError;
use crate::registry::card::Card;
use crate::registry::{ImportError, Imported, Upload, PRODUCTION};
use crate::state::AppState;
use crate::web::forms::{read_form, Submitted};
use crate::web::{render, see_other};

async fn audit(
    state: &AppState,
    req: &HttpRequest,
    user: &crate::db::users::User,
    action: &str,
    target: String,
) -> Result<(), AppError> {
    crate::audit::record(
        &state.pool,
        Some(req),
        Some(user),
        action,
        target,
        serde_json::json!({}),
    )
    .await
}

pub struct ModelSummary {
    pub name: String,
    pub title: String,
    pub production: Option<i32>,
    pub versions: i64,
}

#[derive(Template)]
#[template(path = "admin/models.html")]
struct ModelsIndex {
    ctx: PageCtx,
    models: Vec<ModelSummary>,
    name: String,
    error: Option<String>,
}

async fn models_index_page(
    ctx: PageCtx,
    state: &AppState,
    name: String,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let models = db::models::catalogue(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let card: Card = Card::from_stored(row.card.as_ref().map(|c| &c.0));
            ModelSummary {
                title: card.display_title(&row.name).to_string(),
                name: row.name,
                production: row.version,
                versions: row.versions,
            }
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        &ModelsIndex {
            ctx,
            models,
            name,
            error,
        },
        status,
    )
}

pub async fn models_index(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    models_index_page(ctx, &state, String::new(), None).await
}

fn upload_from(form: &Submitted, model: String, actor: i64) -> Result<Upload, String> {
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
        Err(e) => Err(AppError::import(e)),
    }
}

pub struct VersionView {
    pub version: i32,
    pub created_at: String,
    pub created_by: String,
    pub source: String,
    pub sha_short: String,
    pub size: String,
    pub aliases: Vec<String>,
    pub reference_rows: Option<i32>,
    pub inputs: String,
    /// The data sets it was trained and evaluated on: name, version, role.
    pub datasets: Vec<(String, i32, String)>,
}

pub struct EventView {
    pub alias: String,
    pub from: String,
    pub to: i32,
    pub actor: String,
    /// The rule that moved it, when a rule did.
    pub reason: Option<String>,
    pub at: String,
    /// The compare page of the versions it moved between.
    pub compare: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/model.html")]
struct ModelAdmin {
    ctx: PageCtx,
    name: String,
    title: String,
    versions: Vec<VersionView>,
    events: Vec<EventView>,
    production: Option<i32>,
    rollback_to: Option<i32>,
    error: Option<String>,
    streams: Vec<StreamView>,
    /// Whether this instance has a Kafka broker configured.
    kafka: bool,
    /// The canary and its figures, if one runs.
    canary: Option<crate::registry::traffic::Report>,
    /// The versions a canary may try: all but production's.
    candidates: Vec<i32>,
    /// The shadow versions and their figures.
    shadows: Vec<crate::registry::traffic::ShadowReport>,
    /// Live requests this instance could not copy to the shadows (queue full).
    shadow_dropped: u64,
    /// The promotion and rollback rules, and how often they are evaluated.
    /// The promotion and rollback rules (the ones set, in that order) and each on its own.
    rules: Vec<crate::automation::views::RuleView>,
    promote: Option<crate::automation::views::RuleView>,
    rollback: Option<crate::automation::views::RuleView>,
    automation_seconds: u64,
    /// Whether production is a classifier (the quality drop is in points of accuracy).
    classifier: bool,
    /// Data set versions a version may be linked to: `name@version` and a label.
    dataset_choices: Vec<(String, String)>,
    /// The compare form's starting pair.
    compare_pick: (i32, i32),
}

/// Whether the model's production version (else its latest) is a classifier.
pub(super) async fn is_classifier(state: &AppState, model: &ModelRow) -> Result<bool, AppError> {
    let card = match db::models::by_alias(&state.pool, &model.name, PRODUCTION).await? {
        Some((_, v)) => crate::registry::card_of(&v),
        None => match db::models::versions(&state.pool, model.id).await?.first() {
            Some(v) => crate::registry::card_of(v),
            None => return Ok(true),
        },
    };
    Ok(card.task == crate::registry::card::Task::Classification)
}

/// A Kafka stream as the model's admin page shows it.
pub struct StreamView {
    pub id: i64,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub alias: String,
    pub state: String,
    pub records: i64,
    pub dead_letters: i64,
    pub lag: String,
}

fn human_size(bytes: i64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

pub(super) async fn find_model(state: &AppState, name: &str) -> Result<ModelRow, AppError> {
    db::models::find_model(&state.pool, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no model called {name}.")))
}

pub(super) async fn model_admin_page(
    ctx: PageCtx,
    state: &AppState,
    model: &ModelRow,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let versions = db::models::versions(&state.pool, model.id).await?;
    let aliases = db::models::aliases(&state.pool, model.id).await?;
    let production = aliases
        .iter()
        .find(|(a, _)| a == PRODUCTION)
        .map(|(_, v)| *v);
    let rollback_to = match db::models::previous_target(&state.pool, model.id, PRODUCTION).await? {
        Some(id) => versions.iter().find(|v| v.id == id).map(|v| v.version),
        None => None,
    };
    let title = versions
        .first()
        .map(crate::registry::card_of)
        .map(|c| c.display_title(&model.name).to_string())
        .unwrap_or_else(|| model.name.clone());
    let links = db::datasets::links_of_model(&state.pool, model.id).await?;
    let views = versions
        .iter()
        .map(|v| {
            let signature = crate::registry::signature_of(v);
            VersionView {
                version: v.version,
                created_at: crate::web::fmt_time(&Some(v.created_at)),
                created_by: v.created_by_name.clone().unwrap_or_else(|| "—".into()),
                source: v.source.clone(),
                sha_short: v.sha256.chars().take(12).collect(),
                size: human_size(v.size_bytes),
                aliases: aliases
                    .iter()
                    .filter(|(_, n)| *n == v.version)
                    .map(|(a, _)| a.clone())
                    .collect(),
                reference_rows: v.reference_rows,
                datasets: links
                    .iter()
                    .filter(|l| l.model_version == v.version)
                    .map(|l| (l.dataset.clone(), l.dataset_version, l.role.clone()))
                    .collect(),
                inputs: signature
                    .map(|s| {
                        s.inputs
                            .iter()
                            .map(|i| {
                                format!(
                                    "{} {} {}",
                                    i.name,
                                    i.dtype.v2_name(),
                                    crate::inference::shape_text(&i.shape)
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let events = db::models::alias_events(&state.pool, model.id, 20)
        .await?
        .into_iter()
        .map(|e| EventView {
            compare: e.from_version.filter(|f| *f != e.to_version).map(|f| {
                format!(
                    "/admin/models/{}/compare?a={f}&b={}",
                    model.name, e.to_version
                )
            }),
            alias: e.alias,
            from: e
                .from_version
                .map_or_else(|| "—".to_string(), |v| v.to_string()),
            to: e.to_version,
            actor: match (e.actor, &e.reason) {
                (Some(a), _) => a,
                (None, Some(_)) => "automation".into(),
                (None, None) => "system".into(),
            },
            reason: e.reason,
            at: crate::web::fmt_time(&Some(e.created_at)),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let streams = db::streams::of_model(&state.pool, model.id)
        .await?
        .into_iter()
        .map(|s| StreamView {
            id: s.id,
            input_topic: s.input_topic,
            output_topic: s.output_topic,
            dead_letter_topic: s.dead_letter_topic,
            group_id: s.group_id,
            alias: s.alias,
            state: s.state,
            records: s.records,
            dead_letters: s.dead_letters,
            lag: s.lag.map_or_else(|| "—".into(), |l| l.to_string()),
        })
        .collect();
    let production_row = versions
        .iter()
        .find(|v| Some(v.version) == production)
        .map(|v| (v.id, v.version));
    let canary = match db::traffic::policy(&state.pool, &model.name).await? {
        Some(p) => Some(crate::registry::traffic::report(&state.pool, &p, production_row).await?),
        None => None,
    };
    let features: Vec<String> = versions
        .iter()
        .find(|v| Some(v.version) == production)
        .map(|v| {
            crate::registry::card_of(v)
                .features
                .iter()
                .map(|f| f.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let shadows =
        crate::registry::traffic::shadow_reports(&state.pool, model.id, &features).await?;
    let rules = db::automation::of_model(&state.pool, model.id).await?;
    let rule = |kind: &str| {
        rules
            .iter()
            .find(|r| r.kind == kind)
            .map(crate::automation::views::RuleView::from)
    };
    let classifier = is_classifier(state, model).await?;
    let dataset_choices = db::datasets::all_versions(&state.pool)
        .await?
        .into_iter()
        .map(|(name, v, rows)| (format!("{name}@{v}"), format!("{name} v{v} ({rows} rows)")))
        .collect();
    let newest = versions.iter().map(|v| v.version).max().unwrap_or(1);
    let compare_pick = match production {
        Some(p) if p != newest => (p, newest),
        _ => ((newest - 1).max(1), newest),
    };
    let page = ModelAdmin {
        dataset_choices,
        compare_pick,
        promote: rule("promote"),
        rollback: rule("rollback"),
        rules: rules
            .iter()
            .map(crate::automation::views::RuleView::from)
            .collect(),
        automation_seconds: state.settings.automation_interval.as_secs(),
        classifier,
        ctx,
        name: model.name.clone(),
        title,
        versions: views,
        events,
        production,
        rollback_to,
        error,
        streams,
        kafka: state.settings.kafka_brokers.is_some(),
        canary,
        candidates: versions
            .iter()
            .map(|v| v.version)
            .filter(|v| Some(*v) != production)
            .collect(),
        shadows,
        shadow_dropped: state.shadow.dropped(),
    };
    render(&page, status)
}

/// Where a model admin form lands: the model's page (at `anchor`) with `message` flashed, or
/// the page again saying why the change was refused.
pub(super) async fn form_done(
    ctx: PageCtx,
    state: &AppState,
    model: &ModelRow,
    outcome: Result<String, ImportError>,
    anchor: &str,
) -> Result<HttpResponse, AppError> {
    match outcome {
        Ok(message) => {
            if let Some(session) = ctx.session() {
                flash(session, "success", message);
            }
            Ok(see_other(&format!("/admin/models/{}{anchor}", model.name)))
        }
        Err(ImportError::Invalid(e)) => model_admin_page(ctx, state, model, Some(e)).await,
        Err(e) => Err(AppError::import(e)),
    }
}

pub async fn model_admin(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = find_model(&state, &name).await?;
    model_admin_page(ctx, &state, &model, None).await
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
        Err(e) => return Err(AppError::import(e)),
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
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let role = form.field("role").trim().to_string();
    let spec = form.field("dataset").trim().to_string();
    let outcome = async {
        let Ok(number) = form.field("version").trim().parse::<i32>() else {
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

pub async fn set_alias(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let alias = form.field("alias").trim().to_lowercase();
    let Ok(version) = form.field("version").trim().parse::<i32>() else {
        return model_admin_page(ctx, &state, &model, Some("Choose a version number.".into()))
            .await;
    };
    let outcome = state
        .registry
        .move_alias(&model, &alias, version, Some(user.id))
        .await;
    if let Ok(previous) = &outcome {
        let pool = &state.pool;
        crate::audit::alias_moved(pool, &req, &user, &model.name, &alias, *previous, version)
            .await?;
    }
    let outcome = outcome.map(|_| format!("{alias} now points at version {version}."));
    form_done(ctx, &state, &model, outcome, "").await
}

pub async fn rollback(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let target = db::models::previous_target(&state.pool, model.id, PRODUCTION).await?;
    let version = match target {
        Some(id) => db::models::version_by_id(&state.pool, id).await?,
        None => None,
    };
    let Some(version) = version else {
        return model_admin_page(
            ctx,
            &state,
            &model,
            Some("There is no earlier production version to go back to.".into()),
        )
        .await;
    };
    let number = version.version;
    let outcome = state
        .registry
        .move_alias(&model, PRODUCTION, number, Some(user.id))
        .await;
    if let Ok(previous) = &outcome {
        let pool = &state.pool;
        crate::audit::alias_moved(
            pool,
            &req,
            &user,
            &model.name,
            PRODUCTION,
            *previous,
            number,
        )
        .await?;
    }
    let outcome = outcome.map(|_| format!("Rolled back: production is version {number} again."));
    form_done(ctx, &state, &model, outcome, "").await
}

/// Starts or changes the canary: `candidate` answers `share` percent of production's callers.
pub async fn set_canary(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let Ok(candidate) = form.field("candidate").trim().parse::<i32>() else {
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
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
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
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let Ok(version) = form.field("version").trim().parse::<i32>() else {
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
    read_form(&req, payload, state.settings.max_body_bytes).await?;
    let (name, version) = path.into_inner();
    let model = find_model(&state, &name).await?;
    let outcome = state.registry.stop_shadow(&model, version).await;
    if let Ok(true) = outcome {
        crate::audit::shadow_changed(&state.pool, &req, &user, &model.name, version, false).await?;
    }
    let outcome = outcome
        .map(|_| format!("Version {version} no longer receives copies; its answers stay stored."));
    form_done(ctx, &state, &model, outcome, "#shadows").await
}

/// A topic name as Kafka allows it: letters, digits, `.`, `_`, `-`, at most 249.
fn check_topic(field: &str, topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "The {field} topic must be 1 to 249 letters, digits, dots, underscores or hyphens."
        ))
    }
}

/// Adds a Kafka stream to a model: every instance with a broker starts consuming it.
pub async fn create_stream(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let model = find_model(&state, &name).await?;
    let input = form.field("input_topic").trim().to_string();
    let output = form.field("output_topic").trim().to_string();
    let dead = match form.field("dead_letter_topic").trim() {
        "" => format!("{input}.dead-letters"),
        t => t.to_string(),
    };
    let group = match form.field("group_id").trim() {
        "" => format!("plinth-{}", model.name),
        g => g.to_string(),
    };
    let alias = match form.field("alias").trim() {
        "" => PRODUCTION.to_string(),
        a => a.to_string(),
    };
    let checked = check_topic("input", &input)
        .and_then(|()| check_topic("output", &output))
        .and_then(|()| check_topic("dead-letter", &dead))
        .and_then(|()| {
            if input == output || input == dead {
                Err("The output and dead-letter topics must differ from the input topic.".into())
            } else if group.is_empty() || group.len() > 249 {
                Err("The consumer group must be 1 to 249 characters.".into())
            } else {
                Ok(())
            }
        });
    if let Err(e) = checked {
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    }
    let Some(id) = db::streams::create(
        &state.pool,
        model.id,
        (&input, &output, &dead),
        &group,
        &alias,
        user.id,
    )
    .await?
    else {
        return model_admin_page(
            ctx,
            &state,
            &model,
            Some(format!("{} already reads the topic {input}.", model.name)),
        )
        .await;
    };
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "stream.create",
        Some(model.name.clone()),
        serde_json::json!({"stream": id, "input_topic": input, "output_topic": output,
                           "dead_letter_topic": dead, "group_id": group, "alias": alias}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!("The stream from {input} to {output} is running."),
        );
    }
    Ok(see_other(&format!("/admin/models/{}", model.name)))
}

/// Pauses or resumes a stream (`state=paused|running`), recorded in the audit log.
pub async fn set_stream_state(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let wanted = match form.field("state") {
        "paused" => "paused",
        "running" => "running",
        other => {
            return Err(AppError::BadRequest(format!(
                "state must be paused or running, not {other:?}."
            )))
        }
    };
    let stream = db::streams::get(&state.pool, *id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no stream {id}.")))?;
    db::streams::set_state(&state.pool, stream.id, wanted).await?;
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        if wanted == "paused" {
            "stream.pause"
        } else {
            "stream.resume"
        },
        Some(stream.model.clone()),
        serde_json::json!({"stream": stream.id, "input_topic": stream.input_topic,
                           "from": stream.state, "to": wanted}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!(
                "The stream from {} is {}.",
                stream.input_topic,
                if wanted == "paused" {
                    "paused"
                } else {
                    "running again"
                }
            ),
        );
    }
    Ok(see_other(&format!("/admin/models/{}", stream.model)))
}
