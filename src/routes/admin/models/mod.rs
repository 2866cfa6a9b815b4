//! Staff pages of the registry: models, versions, uploads, aliases and rollback.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use crate::auth::context::flash;
use crate::auth::{PageCtx, StaffOnly};
use crate::error::AppError;
use crate::registry::card::Card;
use crate::registry::{ImportError, PRODUCTION};
use crate::state::AppState;
use crate::web::forms::{read_form, Submitted};
use crate::web::{render, see_other};
use plinth_store as db;
use plinth_store::models::ModelRow;

mod releases;
mod streams;
mod uploads;

pub use releases::{end_canary, rollback, set_alias, set_canary, start_shadow, stop_shadow};
pub use streams::{create_stream, set_stream_state, StreamView};
pub use uploads::{create_model, link_dataset, upload_version};

async fn audit(
    state: &AppState,
    req: &HttpRequest,
    user: &plinth_store::users::User,
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

/// A model admin form's start: the posted form (its CSRF token checked first), then the model the
/// URL names.
pub(super) async fn posted(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    name: &str,
) -> Result<(Submitted, ModelRow), AppError> {
    let form = read_form(req, payload, state.settings.max_body_bytes).await?;
    Ok((form, find_model(state, name).await?))
}

/// A version number from a form field, `None` when it is not one.
pub(super) fn number(form: &Submitted, field: &str) -> Option<i32> {
    form.field(field).trim().parse().ok()
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
                                    plinth_inference::shape_text(&i.shape)
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
            error: s
                .last_error
                .map(|e| (e, crate::web::fmt_time(&s.last_error_at))),
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
        Err(e) => Err(AppError::from(e)),
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
