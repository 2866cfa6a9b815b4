//! One prediction's page (`/predictions/{id}`): the answer, the inputs, the feedback form.

use crate::auth::{LoggedIn, PageCtx};
use crate::error::AppError;
use crate::registry::card::{fmt_num, Card, FeatureKind, Task};
use crate::registry::decode::Outcome;
use crate::state::AppState;
use crate::web::render;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use plinth_store as db;

// --- the result ---------------------------------------------------------------------------

/// One bar of the probability chart, in SVG units.
pub struct Bar {
    pub label: String,
    pub percent: String,
    pub width: f64,
    pub y: usize,
    pub top: bool,
}

/// One step of the explanation's waterfall, in SVG units.
pub struct Step {
    /// `feature = value`, or the other features together.
    pub label: String,
    pub amount: String,
    pub x: f64,
    pub width: f64,
    pub y: usize,
    pub up: bool,
}

/// The waterfall chart of one prediction's explanation: from what the model gives on average,
/// the largest contributions in order, to this prediction's score.
pub struct Waterfall {
    pub steps: Vec<Step>,
    pub height: usize,
    pub base: String,
    pub base_x: f64,
    pub output: String,
    pub output_x: f64,
    pub scale: String,
    pub method: String,
    pub target: Option<String>,
}

/// Contributions shown one by one; the rest are one step.
const WATERFALL_STEPS: usize = 8;
/// Where the chart's bars go (SVG units): after the labels, before the amounts.
const CHART_LEFT: f64 = 190.0;
const CHART_WIDTH: f64 = 250.0;

impl Waterfall {
    pub fn new(e: &crate::serving::explain::ExplanationOut, card: &Card) -> Waterfall {
        let mut parts: Vec<(String, f64)> = e
            .contributions
            .iter()
            .take(WATERFALL_STEPS)
            .map(|c| {
                let value = match &c.value {
                    serde_json::Value::Null => "missing".to_string(),
                    serde_json::Value::Number(n) => n.as_f64().map_or_else(String::new, fmt_num),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let label = card
                    .features
                    .iter()
                    .find(|f| f.name == c.feature)
                    .map_or(c.feature.as_str(), |f| f.display_label());
                (format!("{label} = {value}"), c.contribution)
            })
            .collect();
        let rest = &e.contributions[parts.len()..];
        if !rest.is_empty() {
            let sum: f64 = rest.iter().map(|c| c.contribution).sum();
            parts.push((format!("{} other features", rest.len()), sum));
        }
        // The running total after each step, and the range the chart spans.
        let mut at = e.base;
        let (mut lo, mut hi) = (e.base.min(e.output), e.base.max(e.output));
        for (_, c) in &parts {
            at += c;
            lo = lo.min(at);
            hi = hi.max(at);
        }
        let span = if hi > lo { hi - lo } else { 1.0 };
        let x = |v: f64| CHART_LEFT + (v - lo) / span * CHART_WIDTH;
        let mut at = e.base;
        let steps = parts
            .into_iter()
            .enumerate()
            .map(|(i, (label, c))| {
                let (from, to) = (x(at), x(at + c));
                at += c;
                Step {
                    label,
                    amount: format!("{}{}", if c >= 0.0 { "+" } else { "−" }, fmt_num(c.abs())),
                    x: (from.min(to) * 10.0).round() / 10.0,
                    width: (((from - to).abs().max(1.0)) * 10.0).round() / 10.0,
                    y: 26 + i * 26,
                    up: c >= 0.0,
                }
            })
            .collect::<Vec<_>>();
        Waterfall {
            height: 26 + steps.len() * 26 + 30,
            steps,
            base: fmt_num(e.base),
            base_x: (x(e.base) * 10.0).round() / 10.0,
            output: fmt_num(e.output),
            output_x: (x(e.output) * 10.0).round() / 10.0,
            scale: e.scale.clone(),
            method: e.method.clone(),
            target: e.target.clone(),
        }
    }
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
    /// Why the model answered this, or why that cannot be said.
    waterfall: Option<Waterfall>,
    no_explanation: String,
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
            // A missing value has no unit.
            .map(|mut row| {
                if row.value == "missing" {
                    row.unit.clear();
                }
                row
            })
            .collect()
    };
    let (waterfall, no_explanation) = match explanation(&state, &p, &card, &outcome).await {
        Ok(e) => (Some(Waterfall::new(&e, &card)), String::new()),
        Err(why) => (None, why),
    };
    let page = PredictionPage {
        waterfall,
        no_explanation,
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

/// The stored prediction's explanation, from the version that made it and the inputs it got.
async fn explanation(
    state: &AppState,
    p: &db::predictions::PredictionRow,
    card: &Card,
    outcome: &Outcome,
) -> Result<crate::serving::explain::ExplanationOut, String> {
    let served = crate::serving::served(
        state,
        &p.model,
        &crate::registry::Selector::Number(p.version),
    )
    .await
    .map_err(|e| e.to_string())?;
    let row: Vec<f64> = card
        .features
        .iter()
        .map(|f| match p.inputs.0.get(&f.name) {
            Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(serde_json::Value::String(s)) => f.choice_index(s).map_or(f64::NAN, |i| i as f64),
            _ => f64::NAN,
        })
        .collect();
    crate::serving::explain::explain_rows(state, &served, &[row], std::slice::from_ref(outcome))
        .await?
        .pop()
        .ok_or_else(|| "no explanation was made".to_string())
}
