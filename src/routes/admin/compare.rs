//! `/admin/models/{name}/compare?a=1&b=2`: two versions side by side — their cards, their
//! training data feature by feature, and (as a job) both run over both versions' reference
//! rows, with the rows where they disagree most.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use serde_json::Value;

use super::dataset_views::{histogram_bars, pct, short, Bar, ShiftView};
use super::datasets::PairQuery;
use super::drift::{bins, num, threshold_text};
use super::models::find_model;
use crate::auth::context::flash;
use crate::auth::{CsrfForm, PageCtx, StaffOnly};
use crate::db;
use crate::db::comparisons::ComparisonRow;
use crate::db::models::{ModelRow, VersionRow};
use crate::error::AppError;
use crate::monitoring::drift::{self, FeatureDrift};
use crate::registry::card::{Card, FeatureKind};
use crate::registry::{card_of, reference, PRODUCTION};
use crate::state::AppState;
use crate::web::{render, see_other};

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

/// A row the versions answered differently.
pub struct DisagreementView {
    pub place: String,
    pub inputs: Vec<(String, String)>,
    pub a: String,
    pub b: String,
    pub differ: bool,
    pub score: String,
    pub try_a: String,
    pub try_b: String,
}

/// The comparison job and what it found.
pub struct AnswersView {
    pub id: i64,
    pub state: String,
    pub rows_done: i64,
    pub total_rows: i64,
    pub percent: String,
    pub message: String,
    pub started: String,
    pub finished: String,
    pub classifier: bool,
    pub compared: u64,
    pub refused_a: u64,
    pub refused_b: u64,
    pub agreement: String,
    pub agreeing: u64,
    pub a_labels: Vec<String>,
    /// b's labels and, per a label, the counts (marked on the diagonal).
    pub b_labels: Vec<String>,
    pub confusion: Vec<(String, Vec<(u64, bool)>)>,
    pub differences: Vec<(String, String)>,
    pub difference_bars: Vec<Bar>,
    pub sources: Vec<(String, u64, u64, String)>,
    pub disagreements: Vec<DisagreementView>,
    pub refusals: Vec<String>,
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

/// A feature's training distributions in a and b, named by choice for categories.
fn training_view(card: &Card, d: &FeatureDrift) -> ShiftView {
    let mut histogram = d.histogram.clone();
    if let Some(feature) = card.features.iter().find(|f| f.name == d.feature) {
        if feature.kind == FeatureKind::Category {
            if let Some(cats) = histogram
                .get_mut("categories")
                .and_then(Value::as_array_mut)
            {
                for c in cats.iter_mut() {
                    let text = c
                        .as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .and_then(|i| feature.choice_text(i))
                        .map(str::to_string);
                    if let Some(text) = text {
                        *c = Value::String(text);
                    }
                }
            }
        }
    }
    ShiftView {
        column: d.feature.clone(),
        method: d.method.to_string(),
        statistic: num(d.statistic),
        p_value: d.p_value.map(num).unwrap_or_else(|| "—".into()),
        threshold: threshold_text(d.p_value, d.threshold),
        psi: num(d.psi),
        drifted: d.drifted,
        bins: bins(&histogram),
        a_missing: "—".into(),
        b_missing: "—".into(),
    }
}

/// The two versions' training distributions, from their reference data (on the heavy pool).
/// Two versions' training distributions compared, by the versions' ids. Versions never change,
/// so an entry never goes stale; a page that refreshes while a comparison runs, or comes back
/// to the pair, does not read and compare both reference sets again.
type TrainingCache =
    std::sync::Mutex<std::collections::HashMap<(i64, i64), Arc<Vec<FeatureDrift>>>>;
static TRAINING: std::sync::OnceLock<TrainingCache> = std::sync::OnceLock::new();
/// Pairs kept (the cache is emptied when it is full: pages compare few pairs at a time).
const TRAINING_PAIRS: usize = 32;

fn cached_training(a: i64, b: i64) -> Option<Arc<Vec<FeatureDrift>>> {
    let cache = TRAINING.get_or_init(Default::default).lock().ok()?;
    cache.get(&(a, b)).cloned()
}

fn keep_training(a: i64, b: i64, found: Arc<Vec<FeatureDrift>>) {
    if let Ok(mut cache) = TRAINING.get_or_init(Default::default).lock() {
        if cache.len() >= TRAINING_PAIRS {
            cache.clear();
        }
        cache.insert((a, b), found);
    }
}

async fn training(
    state: &AppState,
    a: &VersionRow,
    b: &VersionRow,
    ca: &Card,
) -> Result<(Vec<ShiftView>, String), AppError> {
    if let Some(found) = cached_training(a.id, b.id) {
        return Ok((
            found.iter().map(|d| training_view(ca, d)).collect(),
            String::new(),
        ));
    }
    let read = |v: &VersionRow| {
        let v = v.clone();
        async move { state.registry.reference_csv(&v).await }
    };
    let (ra, rb) = match (read(a).await, read(b).await) {
        (Ok(Some(x)), Ok(Some(y))) => (x, y),
        (Ok(_), Ok(_)) => {
            let missing: Vec<String> = [a, b]
                .iter()
                .filter(|v| v.reference_sha256.is_none())
                .map(|v| format!("version {}", v.version))
                .collect();
            return Ok((
                Vec::new(),
                format!(
                    "No training distributions to compare: {} came without reference data (reference.csv).",
                    missing.join(" and ")
                ),
            ));
        }
        (Err(e), _) | (_, Err(e)) => {
            return Ok((
                Vec::new(),
                format!("The reference data cannot be read just now: {e}"),
            ))
        }
    };
    let card = ca.clone();
    let found = state
        .heavy
        .run(move || {
            let (xa, xb) = (
                reference::columns(&ra, &card),
                reference::columns(&rb, &card),
            );
            drift::compare(&card, &xa, &xb)
        })
        .await?;
    let found = Arc::new(found);
    keep_training(a.id, b.id, found.clone());
    Ok((
        found.iter().map(|d| training_view(ca, d)).collect(),
        String::new(),
    ))
}

fn outcome_text(o: &Value) -> String {
    if let Some(label) = o.get("label").and_then(Value::as_str) {
        let p = o
            .get("probabilities")
            .and_then(|p| p.get(label))
            .and_then(Value::as_f64);
        return match p {
            Some(p) => format!("{label} ({})", pct(p)),
            None => label.to_string(),
        };
    }
    o.get("value")
        .and_then(Value::as_f64)
        .map(short)
        .unwrap_or_else(|| "—".into())
}

fn try_link(name: &str, version: i32, inputs: &[(String, String)]) -> String {
    let mut query = vec![("version".to_string(), version.to_string())];
    query.extend(inputs.iter().cloned());
    format!(
        "/models/{name}?{}",
        serde_urlencoded::to_string(&query).unwrap_or_default()
    )
}

fn answers(name: &str, c: &ComparisonRow) -> AnswersView {
    let empty = Value::Null;
    let r = c.result.as_ref().map_or(&empty, |j| &j.0);
    let u = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().unwrap_or("").to_string())
            .collect()
    };
    let classifier = r.get("kind").and_then(Value::as_str) != Some("regression");
    let a_labels = strings(&r["confusion"]["a_labels"]);
    let b_labels = strings(&r["confusion"]["b_labels"]);
    let confusion = a_labels
        .iter()
        .enumerate()
        .map(|(i, la)| {
            let counts: Vec<(u64, bool)> = b_labels
                .iter()
                .enumerate()
                .map(|(j, lb)| {
                    (
                        r["confusion"]["counts"][i][j].as_u64().unwrap_or(0),
                        la == lb,
                    )
                })
                .collect();
            (la.clone(), counts)
        })
        .collect();
    let d = &r["differences"];
    let differences = if d.is_object() {
        [
            ("Mean of b − a", "mean"),
            ("Mean |b − a|", "mean_abs"),
            ("Std", "std"),
            ("Min", "min"),
            ("5th percentile", "p05"),
            ("Median", "p50"),
            ("95th percentile", "p95"),
            ("Max", "max"),
        ]
        .iter()
        .map(|(label, k)| {
            (
                label.to_string(),
                d[*k].as_f64().map(short).unwrap_or_else(|| "—".into()),
            )
        })
        .collect()
    } else {
        Vec::new()
    };
    let version_of = |source: &str| {
        if source == "a" {
            c.a_version
        } else {
            c.b_version
        }
    };
    let disagreements = r["disagreements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let inputs: Vec<(String, String)> = x["inputs"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let source = x["source"].as_str().unwrap_or("a");
            DisagreementView {
                place: format!(
                    "v{} reference, line {}",
                    version_of(source),
                    x["line"].as_i64().unwrap_or(0)
                ),
                a: outcome_text(&x["a"]),
                b: outcome_text(&x["b"]),
                differ: x["differ"].as_bool().unwrap_or(false),
                score: x["score"].as_f64().map(short).unwrap_or_default(),
                try_a: try_link(name, c.a_version, &inputs),
                try_b: try_link(name, c.b_version, &inputs),
                inputs,
            }
        })
        .collect();
    let sources = r["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let figure = if classifier {
                s["agreement"].as_f64().map(pct)
            } else {
                s["mean_difference"].as_f64().map(short)
            };
            (
                format!("version {} reference", s["version"]),
                s["rows"].as_u64().unwrap_or(0),
                s["compared"].as_u64().unwrap_or(0),
                figure.unwrap_or_else(|| "—".into()),
            )
        })
        .collect();
    let refusals = r["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            format!(
                "v{} reference line {}: version {} refused it — {}",
                version_of(x["source"].as_str().unwrap_or("a")),
                x["line"],
                x["version"],
                x["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    AnswersView {
        id: c.id,
        state: c.state.clone(),
        rows_done: c.rows_done,
        total_rows: c.total_rows,
        percent: if c.total_rows > 0 {
            format!("{:.0}", c.rows_done as f64 * 100.0 / c.total_rows as f64)
        } else {
            "0".into()
        },
        message: c.message.clone().unwrap_or_default(),
        started: crate::web::fmt_time(&c.started_at),
        finished: crate::web::fmt_time(&c.finished_at),
        classifier,
        compared: u("compared"),
        refused_a: u("refused_a"),
        refused_b: u("refused_b"),
        agreement: r["agreement"]
            .as_f64()
            .map(pct)
            .unwrap_or_else(|| "—".into()),
        agreeing: u("agreeing"),
        a_labels,
        b_labels,
        confusion,
        differences,
        difference_bars: histogram_bars(&d["histogram"]),
        sources,
        disagreements,
        refusals,
    }
}

/// The pair the page shows: the query's, else the newest version against production (or the
/// one before it).
async fn pair(
    state: &AppState,
    model: &ModelRow,
    query: &PairQuery,
) -> Result<(Vec<VersionRow>, Option<i32>, i32, i32), AppError> {
    let versions = db::models::versions(&state.pool, model.id).await?;
    let production = db::models::aliases(&state.pool, model.id)
        .await?
        .into_iter()
        .find(|(a, _)| a == PRODUCTION)
        .map(|(_, v)| v);
    let latest = versions.iter().map(|v| v.version).max().unwrap_or(1);
    let b = query.b.unwrap_or(latest);
    let a = query.a.unwrap_or(match production {
        Some(p) if p != b => p,
        _ => (b - 1).max(1),
    });
    for v in [a, b] {
        if !versions.iter().any(|x| x.version == v) {
            return Err(AppError::NotFound(format!(
                "{} has no version {v}.",
                model.name
            )));
        }
    }
    Ok((versions, production, a, b))
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
