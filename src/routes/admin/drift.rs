//! `/admin/models/{name}/drift`: the latest drift check of the production version, feature by
//! feature, with reference and live histograms and each statistic's history.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::context::flash;
use crate::auth::{CsrfForm, PageCtx, StaffOnly};
use crate::error::AppError;
use crate::monitoring::drift;
use crate::registry::PRODUCTION;
use crate::state::AppState;
use crate::web::{render, see_other};
use plinth_store as db;

/// A pair of bars (reference, live) for one histogram bin, in SVG units.
pub struct BinBars {
    pub x: f64,
    pub width: f64,
    pub ref_y: f64,
    pub ref_h: f64,
    pub cur_y: f64,
    pub cur_h: f64,
    pub label: String,
}

pub struct FeatureView {
    pub feature: String,
    pub method: String,
    pub statistic: String,
    pub p_value: String,
    pub threshold: String,
    pub psi: String,
    pub drifted: bool,
    pub bins: Vec<BinBars>,
    /// Statistic over recent checks, as an SVG polyline.
    pub history: String,
}

#[derive(Template)]
#[template(path = "admin/drift.html")]
struct DriftPage {
    ctx: PageCtx,
    name: String,
    version: Option<i32>,
    has_reference: bool,
    verdict: Option<Option<bool>>,
    run_label: String,
    run_at: String,
    drifted_features: i32,
    features_total: i32,
    features: Vec<FeatureView>,
}

const W: f64 = 240.0;
const H: f64 = 60.0;

pub fn bins(histogram: &Value) -> Vec<BinBars> {
    let shares = |k: &str| -> Vec<f64> {
        histogram[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect()
    };
    let (mut r, mut c) = (shares("reference"), shares("current"));
    let mut labels: Vec<String> = if let Some(cats) = histogram["categories"].as_array() {
        cats.iter()
            .map(|v| v.as_str().unwrap_or("").to_string())
            .collect()
    } else {
        let edges = shares("edges");
        edges
            .windows(2)
            .map(|w| {
                format!(
                    "{}–{}",
                    crate::registry::card::fmt_num((w[0] * 100.0).round() / 100.0),
                    crate::registry::card::fmt_num((w[1] * 100.0).round() / 100.0)
                )
            })
            .collect()
    };
    // Numbers with missing values: the missing share is a bar of its own, last.
    if let [rm, cm] = shares("missing")[..] {
        r.push(rm);
        c.push(cm);
        labels.push(crate::monitoring::drift::MISSING.to_string());
    }
    let peak = r.iter().chain(&c).copied().fold(0.0f64, f64::max).max(1e-9);
    let n = r.len().max(1) as f64;
    let slot = W / n;
    r.iter()
        .zip(&c)
        .enumerate()
        .map(|(i, (rv, cv))| {
            let (rh, ch) = (rv / peak * H, cv / peak * H);
            let round = |v: f64| (v * 10.0).round() / 10.0;
            BinBars {
                x: round(i as f64 * slot),
                width: round((slot / 2.0 - 0.5).max(0.5)),
                ref_y: round(H - rh),
                ref_h: round(rh),
                cur_y: round(H - ch),
                cur_h: round(ch),
                label: labels.get(i).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

fn polyline(values: &[f64]) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let peak = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    let step = 120.0 / (values.len() - 1) as f64;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, 24.0 - v / peak * 22.0))
        .collect::<Vec<_>>()
        .join(" ")
}

/// When a statistic counts as drift: a p-value under the threshold (tests), or a distance at
/// or over it.
pub fn threshold_text(p_value: Option<f64>, threshold: f64) -> String {
    if p_value.is_some() {
        format!("p < {threshold}")
    } else {
        format!("≥ {threshold}")
    }
}

pub fn num(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

pub async fn drift_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = db::models::find_model(&state.pool, &name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no model called {name}.")))?;
    let version = db::models::by_alias(&state.pool, &model.name, PRODUCTION)
        .await?
        .map(|(_, v)| v);
    let mut page = DriftPage {
        ctx,
        name: model.name.clone(),
        version: version.as_ref().map(|v| v.version),
        has_reference: version
            .as_ref()
            .is_some_and(|v| v.reference_sha256.is_some()),
        verdict: None,
        run_label: String::new(),
        run_at: String::new(),
        drifted_features: 0,
        features_total: 0,
        features: Vec::new(),
    };
    if let Some(version) = &version {
        if let Some(run) = db::drift::latest_run(&state.pool, version.id).await? {
            let history = db::drift::history(&state.pool, version.id, 20).await?;
            page.verdict = Some(run.drifted);
            page.run_label = run.window_label.clone();
            page.run_at = crate::web::fmt_time(&Some(run.created_at));
            page.drifted_features = run.drifted_features;
            page.features_total = run.features;
            page.features = db::drift::features(&state.pool, run.id)
                .await?
                .into_iter()
                .map(|f| {
                    let past: Vec<f64> = history
                        .iter()
                        .filter(|(n, _, _)| *n == f.feature)
                        .map(|(_, s, _)| *s)
                        .collect();
                    FeatureView {
                        bins: bins(&f.histogram.0),
                        history: polyline(&past),
                        statistic: num(f.statistic),
                        p_value: f.p_value.map(num).unwrap_or_else(|| "—".into()),
                        threshold: threshold_text(f.p_value, f.threshold),
                        psi: num(f.psi),
                        feature: f.feature,
                        method: f.method,
                        drifted: f.drifted,
                    }
                })
                .collect();
        }
    }
    render(&page, StatusCode::OK)
}

#[derive(Deserialize, Default)]
pub struct Empty {}

/// Runs a drift check now.
pub async fn run_now(
    req: HttpRequest,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<HttpResponse, AppError> {
    let (_, version) = db::models::by_alias(&state.pool, &name, PRODUCTION)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("{name} has no production version.")))?;
    let outcome = drift::check(
        &state.registry,
        &state.heavy,
        &version,
        state.settings.drift_window_hours,
        state.settings.drift_window_rows,
    )
    .await
    .map_err(AppError::internal)?;
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "drift.checked",
        format!("{name} v{}", version.version),
        serde_json::json!({}),
    )
    .await?;
    let message = match outcome {
        None => {
            "This version has no reference data, so there is nothing to compare with.".to_string()
        }
        Some(o) => match o.drifted {
            None => format!(
                "Not enough data yet: {} predictions in the window, {} needed.",
                o.rows,
                drift::MIN_ROWS
            ),
            Some(true) => format!("Checked {} predictions: the inputs have drifted.", o.rows),
            Some(false) => format!("Checked {} predictions: no drift.", o.rows),
        },
    };
    if let Some(session) = ctx.session() {
        flash(session, "info", message);
    }
    Ok(see_other(&format!("/admin/models/{name}/drift")))
}
