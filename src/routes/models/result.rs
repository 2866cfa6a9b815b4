//! One prediction's page (`/predictions/{id}`): the answer, the inputs, the feedback form.

use crate::auth::{LoggedIn, PageCtx};
use crate::db;
use crate::error::AppError;
use crate::registry::card::{fmt_num, FeatureKind, Task};
use crate::registry::decode::Outcome;
use crate::state::AppState;
use crate::web::render;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

// --- the result ---------------------------------------------------------------------------

/// One bar of the probability chart, in SVG units.
pub struct Bar {
    pub label: String,
    pub percent: String,
    pub width: f64,
    pub y: usize,
    pub top: bool,
}

pub struct InputRow {
    pub label: String,
    pub value: String,
    pub unit: String,
}

#[derive(Template)]
#[template(path = "models/prediction.html")]
struct PredictionPage {
    ctx: PageCtx,
    id: i64,
    model: String,
    title: String,
    version: i32,
    headline: String,
    is_regression: bool,
    bars: Vec<Bar>,
    chart_height: usize,
    inputs: Vec<InputRow>,
    /// For image models: the 8×8 grid as (x, y, opacity).
    pixels: Vec<(u32, u32, String)>,
    grid: u32,
    latency_ms: String,
    created_at: String,
    source: String,
    owner: String,
    mine: bool,
}

pub async fn prediction_page(
    LoggedIn(ctx, user): LoggedIn,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let not_found =
        || AppError::NotFound("There is no prediction with that number in your history.".into());
    let p = db::predictions::find(&state.pool, *id)
        .await?
        .ok_or_else(not_found)?;
    let mine = p.user_id == Some(user.id);
    // Another user's prediction does not exist, as far as this user can tell. Staff see all.
    if !mine && !user.is_staff {
        return Err(not_found());
    }
    let card = state
        .registry
        .card_by_version_id(p.version_id)
        .await?
        .ok_or_else(not_found)?;
    let outcome = Outcome::from_json(&p.outputs.0, &card);
    let bars = outcome
        .probabilities
        .iter()
        .enumerate()
        .map(|(i, (label, prob))| Bar {
            label: label.clone(),
            percent: format!("{:.1}%", prob * 100.0),
            width: (prob.clamp(0.0, 1.0) * 300.0 * 10.0).round() / 10.0,
            y: i * 28,
            top: Some(label) == outcome.label.as_ref(),
        })
        .collect::<Vec<_>>();
    let (pixels, grid) = match &card.image {
        Some(image) => {
            let px = card
                .features
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let v = p
                        .inputs
                        .0
                        .get(&f.name)
                        .and_then(|v| v.as_f64())
                        .unwrap_or(0.0);
                    let opacity = (v / image.max_value).clamp(0.0, 1.0);
                    (
                        (i as u32 % image.width) * 10,
                        (i as u32 / image.width) * 10,
                        format!("{opacity:.3}"),
                    )
                })
                .collect();
            (px, image.width * 10)
        }
        None => (Vec::new(), 0),
    };
    let inputs = if card.image.is_some() {
        Vec::new()
    } else {
        card.features
            .iter()
            .map(|f| InputRow {
                label: f.display_label().to_string(),
                value: p
                    .inputs
                    .0
                    .get(&f.name)
                    .map_or_else(String::new, |v| match v.as_f64() {
                        Some(x) if f.kind == FeatureKind::Category => {
                            f.choice_text(x).map_or_else(|| fmt_num(x), str::to_string)
                        }
                        Some(x) => fmt_num(x),
                        // A missing value is stored as NaN and read back as null.
                        None if v.is_null() => "missing".to_string(),
                        None => v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    }),
                unit: f.unit.clone().unwrap_or_default(),
            })
            .collect()
    };
    let page = PredictionPage {
        ctx,
        id: p.id,
        title: card.display_title(&p.model).to_string(),
        model: p.model.clone(),
        version: p.version,
        headline: outcome.headline(),
        is_regression: card.task == Task::Regression,
        chart_height: bars.len() * 28,
        bars,
        inputs,
        pixels,
        grid,
        latency_ms: format!("{:.2}", p.latency_us as f64 / 1000.0),
        created_at: crate::web::fmt_time(&Some(p.created_at)),
        source: p.source.clone(),
        owner: p.username.clone().unwrap_or_else(|| "—".into()),
        mine,
    };
    render(&page, StatusCode::OK)
}
