//! `/admin/models/{name}/compare?a=1&b=2`: two versions side by side — their cards, their
//! training data feature by feature, and (as a job) both run over both versions' reference
//! rows, with the rows where they disagree most.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use super::dataset_views::{short, ShiftView};
use super::datasets::PairQuery;
use super::models::find_model;
use crate::auth::context::flash;
use crate::auth::{CsrfForm, PageCtx, StaffOnly};
use crate::error::AppError;
use crate::registry::card::Card;
use crate::registry::card_of;
use crate::state::AppState;
use crate::web::{render, see_other};
use plinth_store as db;
use plinth_store::models::VersionRow;

mod answers;
mod training;

use answers::{answers, pair};
pub use answers::{AnswersView, DisagreementView};
use training::training;

/// One line of the side-by-side cards.
pub struct CardRow {
    pub label: String,
    pub a: String,
    pub b: String,
    pub differ: bool,
    /// Metrics: b − a.
    pub delta: String,
    pub a_links: Vec<(String, String)>,
    pub b_links: Vec<(String, String)>,
}

fn row(label: &str, a: String, b: String) -> CardRow {
    CardRow {
        label: label.to_string(),
        differ: a != b,
        a,
        b,
        delta: String::new(),
        a_links: Vec::new(),
        b_links: Vec::new(),
    }
}

#[derive(Template)]
#[template(path = "admin/compare.html")]
struct ComparePage {
    ctx: PageCtx,
    name: String,
    a: i32,
    b: i32,
    versions: Vec<i32>,
    production: Option<i32>,
    cards: Vec<CardRow>,
    metrics: Vec<CardRow>,
    parameters: Vec<CardRow>,
    features_only_a: Vec<String>,
    features_only_b: Vec<String>,
    training: Vec<ShiftView>,
    training_note: String,
    answers: Option<AnswersView>,
    /// Whether either version has reference rows to run over.
    runnable: bool,
}

fn lineage_links(
    links: &[db::datasets::LinkRow],
    version: i32,
    role: &str,
) -> Vec<(String, String)> {
    links
        .iter()
        .filter(|l| l.model_version == version && l.role == role)
        .map(|l| {
            (
                format!(
                    "{} v{} ({} rows)",
                    l.dataset, l.dataset_version, l.row_count
                ),
                format!(
                    "/admin/datasets/{}/versions/{}",
                    l.dataset, l.dataset_version
                ),
            )
        })
        .collect()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map(short).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn cards(
    a: &VersionRow,
    b: &VersionRow,
    ca: &Card,
    cb: &Card,
    links: &[db::datasets::LinkRow],
) -> (Vec<CardRow>, Vec<CardRow>, Vec<CardRow>) {
    let ta = ca.training.clone().unwrap_or_default();
    let tb = cb.training.clone().unwrap_or_default();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let features = |c: &Card| {
        c.features
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut rows = vec![
        row("Title", ca.title.clone(), cb.title.clone()),
        row("Task", ca.task.as_str().into(), cb.task.as_str().into()),
        row("Algorithm", opt(&ta.algorithm), opt(&tb.algorithm)),
        row("Library", opt(&ta.library), opt(&tb.library)),
        row("Features", features(ca), features(cb)),
        row(
            "Labels",
            ca.labels.clone().unwrap_or_default().join(", "),
            cb.labels.clone().unwrap_or_default().join(", "),
        ),
        row(
            "Uploaded",
            format!(
                "{} by {}",
                crate::web::fmt_time(&Some(a.created_at)),
                a.created_by_name
                    .clone()
                    .unwrap_or_else(|| a.source.clone())
            ),
            format!(
                "{} by {}",
                crate::web::fmt_time(&Some(b.created_at)),
                b.created_by_name
                    .clone()
                    .unwrap_or_else(|| b.source.clone())
            ),
        ),
        row(
            "Model file (SHA-256)",
            a.sha256.chars().take(12).collect(),
            b.sha256.chars().take(12).collect(),
        ),
        row(
            "Reference rows",
            a.reference_rows
                .map_or_else(|| "none".into(), |r| r.to_string()),
            b.reference_rows
                .map_or_else(|| "none".into(), |r| r.to_string()),
        ),
        row("Training data (card)", opt(&ta.dataset), opt(&tb.dataset)),
        row(
            "Training data SHA-256",
            ta.data_sha256
                .as_deref()
                .map_or("—".into(), |s| s.chars().take(12).collect()),
            tb.data_sha256
                .as_deref()
                .map_or("—".into(), |s| s.chars().take(12).collect()),
        ),
        row(
            "Training rows",
            ta.rows.map_or_else(|| "—".into(), |r| r.to_string()),
            tb.rows.map_or_else(|| "—".into(), |r| r.to_string()),
        ),
    ];
    for (label, role) in [("Trained on", "training"), ("Evaluated on", "evaluation")] {
        let (la, lb) = (
            lineage_links(links, a.version, role),
            lineage_links(links, b.version, role),
        );
        let text = |l: &[(String, String)]| {
            l.iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut r = row(label, text(&la), text(&lb));
        r.a_links = la;
        r.b_links = lb;
        rows.push(r);
    }
    let keys: BTreeSet<&String> = ta.metrics.keys().chain(tb.metrics.keys()).collect();
    let metrics = keys
        .into_iter()
        .map(|k| {
            let (x, y) = (ta.metrics.get(k), tb.metrics.get(k));
            let mut r = row(
                k,
                x.map_or("—".into(), |v| short(*v)),
                y.map_or("—".into(), |v| short(*v)),
            );
            if let (Some(x), Some(y)) = (x, y) {
                let d = y - x;
                r.delta = if d > 0.0 {
                    format!("+{}", short(d))
                } else {
                    short(d)
                };
            }
            r
        })
        .collect();
    let keys: BTreeSet<&String> = ta.parameters.keys().chain(tb.parameters.keys()).collect();
    let parameters = keys
        .into_iter()
        .map(|k| {
            row(
                k,
                ta.parameters.get(k).map_or("—".into(), value_text),
                tb.parameters.get(k).map_or("—".into(), value_text),
            )
        })
        .collect();
    (rows, metrics, parameters)
}

pub async fn compare_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PairQuery>,
) -> Result<HttpResponse, AppError> {
    let model = find_model(&state, &name).await?;
    let (versions, production, a, b) = pair(&state, &model, &query).await?;
    let find = |n: i32| versions.iter().find(|v| v.version == n).cloned();
    let (Some(va), Some(vb)) = (find(a), find(b)) else {
        return Err(AppError::NotFound(format!("{name} has no such version.")));
    };
    let (ca, cb) = (card_of(&va), card_of(&vb));
    let links = db::datasets::links_of_model(&state.pool, model.id).await?;
    let (cards, metrics, parameters) = cards(&va, &vb, &ca, &cb, &links);
    let names =
        |c: &Card| -> BTreeSet<String> { c.features.iter().map(|f| f.name.clone()).collect() };
    let (fa, fb) = (names(&ca), names(&cb));
    let (training, training_note) = training(&state, &va, &vb, &ca).await?;
    let latest = db::comparisons::latest(&state.pool, va.id, vb.id).await?;
    let page = ComparePage {
        ctx,
        name: model.name.clone(),
        a,
        b,
        versions: versions.iter().map(|v| v.version).collect(),
        production,
        cards,
        metrics,
        parameters,
        features_only_a: fa.difference(&fb).cloned().collect(),
        features_only_b: fb.difference(&fa).cloned().collect(),
        training,
        training_note,
        answers: latest.as_ref().map(|c| answers(&model.name, c)),
        runnable: va.reference_sha256.is_some() || vb.reference_sha256.is_some(),
    };
    render(&page, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct RunForm {
    pub a: i32,
    pub b: i32,
}

/// Queues both versions' run over the reference rows (one at a time per pair).
pub async fn run_comparison(
    req: HttpRequest,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
    CsrfForm(form): CsrfForm<RunForm>,
) -> Result<HttpResponse, AppError> {
    let model = find_model(&state, &name).await?;
    let (id, created) =
        crate::datasets::compare::request(&state, &model, form.a, form.b, Some(user.id)).await?;
    if created {
        crate::audit::record(
            &state.pool,
            Some(&req),
            Some(&user),
            "model.compared",
            format!("{} v{} and v{}", model.name, form.a, form.b),
            serde_json::json!({"model": model.name, "a": form.a, "b": form.b, "comparison": id}),
        )
        .await?;
    }
    if let Some(session) = ctx.session() {
        flash(
            session,
            "info",
            if created {
                format!(
                    "Comparing versions {} and {}: both run over the reference rows.",
                    form.a, form.b
                )
            } else {
                "That comparison is running already.".to_string()
            },
        );
    }
    Ok(see_other(&format!(
        "/admin/models/{}/compare?a={}&b={}#answers",
        model.name, form.a, form.b
    )))
}
