//! A model's page (`/models/{name}`): its card, the form generated from it, and the POST that
//! runs the prediction and stores it.

use crate::auth::{LoggedIn, PageCtx};
use crate::error::AppError;
use crate::registry::card::{fmt_num, Card, Feature, FeatureKind};
use crate::registry::{picture, Selector, Served};
use crate::serving::{self, Caller};
use crate::state::AppState;
use crate::web::forms::{read_form, Submitted};
use crate::web::{render, see_other};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use base64::Engine;
use plinth_store as db;
use serde::Deserialize;
use std::collections::HashMap;

// --- the form -----------------------------------------------------------------------------

/// One field of the generated form.
pub struct Field {
    pub name: String,
    pub label: String,
    pub unit: String,
    pub kind: FeatureKind,
    pub min: String,
    pub max: String,
    pub step: String,
    pub value: String,
    pub error: Option<String>,
    pub choices: Vec<(String, String)>,
    pub help: String,
    /// The feature may be left blank (missing).
    pub optional: bool,
    /// Free text: a text area.
    pub text: bool,
}

#[derive(Template)]
#[template(path = "models/detail.html")]
struct ModelPage {
    ctx: PageCtx,
    name: String,
    title: String,
    description_html: String,
    task: &'static str,
    version: i32,
    /// `Some(n)` when staff are trying a version other than production.
    trying: Option<i32>,
    fields: Vec<Field>,
    image: bool,
    image_error: Option<String>,
    form_error: Option<String>,
    training: Vec<(String, String)>,
    metrics: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ModelQuery {
    version: Option<String>,
    from: Option<i64>,
}

/// Markdown to HTML, with raw HTML in the source dropped and the result sanitised by ammonia:
/// only http, https and mailto links survive (a `javascript:` link in a card is removed, not
/// left for the CSP to stop).
pub fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    let parser = Parser::new(text).filter(|e| !matches!(e, Event::Html(_) | Event::InlineHtml(_)));
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    ammonia::Builder::default()
        .url_schemes(std::collections::HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&html)
        .to_string()
}

fn step_text(f: &Feature) -> String {
    match (f.kind, f.step) {
        (_, Some(step)) => fmt_num(step),
        (FeatureKind::Integer, None) => "1".into(),
        _ => "any".into(),
    }
}

fn fields_for(card: &Card, values: &[String], errors: &HashMap<String, String>) -> Vec<Field> {
    card.features
        .iter()
        .filter(|f| f.kind != FeatureKind::Image)
        .enumerate()
        .map(|(i, f)| Field {
            name: f.name.clone(),
            label: f.display_label().to_string(),
            unit: f.unit.clone().unwrap_or_default(),
            kind: f.kind,
            min: f.min.map(fmt_num).unwrap_or_default(),
            max: f.max.map(fmt_num).unwrap_or_default(),
            step: step_text(f),
            value: values.get(i).cloned().unwrap_or_default(),
            error: errors.get(&f.name).cloned(),
            choices: f
                .choices
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c.clone()))
                .collect(),
            help: f.help.clone().unwrap_or_default(),
            optional: f.allows_missing(),
            text: f.kind == FeatureKind::Text,
        })
        .collect()
}

struct FormState {
    values: Vec<String>,
    errors: HashMap<String, String>,
    image_error: Option<String>,
    form_error: Option<String>,
}

fn model_page_for(
    ctx: PageCtx,
    served: &Served,
    trying: Option<i32>,
    state: FormState,
) -> ModelPage {
    let card = &served.card;
    let training = card
        .training
        .as_ref()
        .map(|t| {
            [
                ("Data set", t.dataset.clone()),
                ("Algorithm", t.algorithm.clone()),
                ("Training rows", t.rows.map(|r| r.to_string())),
                ("Library", t.library.clone()),
                ("Data SHA-256", t.data_sha256.clone()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect()
        })
        .unwrap_or_default();
    let metrics = card
        .training
        .as_ref()
        .map(|t| {
            t.metrics
                .iter()
                .map(|(k, v)| (k.to_uppercase(), fmt_num((v * 10_000.0).round() / 10_000.0)))
                .collect()
        })
        .unwrap_or_default();
    ModelPage {
        ctx,
        name: served.model.name.clone(),
        title: card.display_title(&served.model.name).to_string(),
        description_html: markdown(&card.description),
        task: card.task.as_str(),
        version: served.version.version,
        trying,
        fields: fields_for(card, &state.values, &state.errors),
        image: card.image.is_some(),
        image_error: state.image_error,
        form_error: state.form_error,
        training,
        metrics,
    }
}

/// `?version=N` for staff; everyone else gets production.
fn selector_for(ctx: &PageCtx, version: Option<&str>) -> Result<(Selector, Option<i32>), AppError> {
    match version.filter(|v| !v.is_empty()) {
        None => Ok((Selector::default(), None)),
        Some(_) if !ctx.is_staff() => Err(AppError::Forbidden(
            "Only staff can try versions other than the one in production.".into(),
        )),
        Some(v) => {
            let n = v
                .parse::<i32>()
                .map_err(|_| AppError::BadRequest(format!("{v:?} is not a version number.")))?;
            Ok((Selector::Number(n), Some(n)))
        }
    }
}

pub async fn model_page(
    req: HttpRequest,
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<ModelQuery>,
) -> Result<HttpResponse, AppError> {
    let (selector, trying) = selector_for(&ctx, query.version.as_deref())?;
    // The version this user's predictions go to (a canary's candidate, for its share).
    let served = serving::routed(&state, &name, &selector, Caller::user(user.id)).await?;
    // "Predict again" fills the form with an earlier prediction's inputs.
    let previous = match query.from {
        Some(id) => db::predictions::find(&state.pool, id)
            .await?
            .filter(|p| p.user_id == Some(user.id) && p.model == served.model.name),
        None => None,
    };
    let values: Vec<String> = match previous {
        Some(p) => served
            .card
            .features
            .iter()
            .map(|f| match p.inputs.0.get(&f.name) {
                Some(serde_json::Value::String(text)) if f.kind == FeatureKind::Text => {
                    text.clone()
                }
                Some(serde_json::Value::String(text)) => f
                    .choice_index(text)
                    .map(|i| i.to_string())
                    .unwrap_or_default(),
                Some(v) => v.as_f64().map(fmt_num).unwrap_or_default(),
                None => String::new(),
            })
            .collect(),
        None => {
            // Values given in the address (`?sepal_length=5.1`, as the compare page links
            // rows) fill their fields; the card's example fills the rest.
            let given: HashMap<String, String> =
                serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
            let example = served.card.example_row();
            served
                .card
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| match given.get(&f.name).map(|v| v.trim()) {
                    Some(text) if f.kind == FeatureKind::Text => text.to_string(),
                    _ if f.kind == FeatureKind::Text => String::new(),
                    Some(text) if !text.is_empty() => f
                        .choice_index(text)
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| text.chars().take(64).collect()),
                    _ => example.get(i).copied().map(fmt_num).unwrap_or_default(),
                })
                .collect()
        }
    };
    let page = model_page_for(
        ctx,
        &served,
        trying,
        FormState {
            values,
            errors: HashMap::new(),
            image_error: None,
            form_error: None,
        },
    );
    render(&page, StatusCode::OK)
}

/// Errors by field, and the image field's error.
type RowErrors = (HashMap<String, String>, Option<String>);

/// The picture a form carries (an uploaded file or the canvas's drawing), at most `limit`
/// bytes once decoded.
fn picture_bytes(form: &Submitted, limit: usize) -> Result<Vec<u8>, String> {
    let too_large = || {
        format!(
            "The picture is larger than {} KiB; choose a smaller one.",
            limit.div_ceil(1024)
        )
    };
    match (form.file("image"), form.field("image_data")) {
        (Some(bytes), _) if bytes.len() > limit => Err(too_large()),
        (Some(bytes), _) => Ok(bytes.to_vec()),
        (None, data) if !data.is_empty() => {
            let encoded = data.split_once("base64,").map_or(data, |(_, b)| b).trim();
            // Four base64 characters carry three bytes: check before decoding anything.
            if encoded.len() / 4 * 3 > limit.saturating_add(3) {
                return Err(too_large());
            }
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "The drawing could not be read.".to_string())
        }
        _ => Err("Draw a digit in the box or choose a picture to upload.".to_string()),
    }
}

/// Reads the form into one row of model inputs, or the errors by field. A picture is decoded
/// on the blocking pool, a few at a time.
async fn parse_row(
    state: &AppState,
    card: &Card,
    form: &Submitted,
) -> Result<Result<(Vec<f64>, Vec<String>), RowErrors>, AppError> {
    if let Some(image) = &card.image {
        let bytes = match picture_bytes(form, state.settings.max_picture_bytes) {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Err((HashMap::new(), Some(e)))),
        };
        let spec = image.clone();
        let features = state
            .heavy
            .run(move || picture::to_features(&bytes, &spec))
            .await?;
        return Ok(features
            .map(|row| (row, Vec::new()))
            .map_err(|e| (HashMap::new(), Some(e))));
    }
    Ok(parse_fields(card, form))
}

/// The card's fields, each parsed and checked against its bounds; free texts beside the row.
fn parse_fields(card: &Card, form: &Submitted) -> Result<(Vec<f64>, Vec<String>), RowErrors> {
    let mut errors = HashMap::new();
    let mut row = Vec::with_capacity(card.features.len());
    let mut texts = Vec::new();
    for f in &card.features {
        if f.kind == FeatureKind::Text {
            let text = form.field(&f.name);
            if text.trim().is_empty() {
                errors.insert(f.name.clone(), "Enter some text.".to_string());
            } else if text.chars().count() > crate::api::v1::MAX_TEXT_CHARS {
                errors.insert(
                    f.name.clone(),
                    format!(
                        "At most {} characters, please.",
                        crate::api::v1::MAX_TEXT_CHARS
                    ),
                );
            }
            texts.push(text.to_string());
            row.push(0.0);
            continue;
        }
        let raw = form.field(&f.name).trim();
        let parsed = if raw.is_empty() && f.allows_missing() {
            Ok(f64::NAN)
        } else if raw.is_empty() {
            f.default
                .ok_or_else(|| "This field is required.".to_string())
        } else {
            match raw.parse::<f64>() {
                Ok(v) => f.check(v),
                Err(_) => Err("Enter a number.".to_string()),
            }
        };
        match parsed {
            Ok(v) => row.push(v),
            Err(e) => {
                errors.insert(f.name.clone(), e);
            }
        }
    }
    if errors.is_empty() {
        Ok((row, texts))
    } else {
        Err((errors, None))
    }
}

pub async fn predict(
    req: HttpRequest,
    payload: web::Payload,
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<ModelQuery>,
) -> Result<HttpResponse, AppError> {
    // The form's own limit: a picture (or its base64 drawing) and a few fields.
    let limit = state.settings.max_picture_bytes.saturating_mul(3) / 2 + (64 << 10);
    let form = read_form(&req, payload, limit).await?;
    let (selector, trying) = selector_for(&ctx, query.version.as_deref())?;
    let caller = Caller::user(user.id);
    let served = serving::routed(&state, &name, &selector, caller).await?;
    let (row, texts) = match parse_row(&state, &served.card, &form).await? {
        Ok(parsed) => parsed,
        Err((errors, image_error)) => {
            serving::rejected(&state, &served, "form");
            let values = served
                .card
                .features
                .iter()
                .map(|f| form.field(&f.name).to_string())
                .collect();
            let page = model_page_for(
                ctx,
                &served,
                trying,
                FormState {
                    values,
                    errors,
                    image_error,
                    form_error: Some(
                        "Some of the values need another look; see the marked fields.".into(),
                    ),
                },
            );
            return render(&page, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let answer = serving::predict_rows(&state, &served, &[row], &[texts], caller, "form").await?;
    let id = answer
        .ids
        .first()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("no id returned")))?;
    Ok(see_other(&format!("/predictions/{id}")))
}
