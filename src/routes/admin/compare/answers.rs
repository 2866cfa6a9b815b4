//! Both versions run over both versions' reference rows: agreement and confusion, or the
//! distribution of b - a, and the rows where they disagree most.

use serde_json::Value;

use super::super::dataset_views::{histogram_bars, pct, short, Bar};
use super::super::datasets::PairQuery;
use crate::error::AppError;
use crate::registry::PRODUCTION;
use crate::state::AppState;
use plinth_store as db;
use plinth_store::comparisons::ComparisonRow;
use plinth_store::models::{ModelRow, VersionRow};

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

pub(super) fn outcome_text(o: &Value) -> String {
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

pub(super) fn try_link(name: &str, version: i32, inputs: &[(String, String)]) -> String {
    let mut query = vec![("version".to_string(), version.to_string())];
    query.extend(inputs.iter().cloned());
    format!(
        "/models/{name}?{}",
        serde_urlencoded::to_string(&query).unwrap_or_default()
    )
}

pub(super) fn answers(name: &str, c: &ComparisonRow) -> AnswersView {
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
pub(super) async fn pair(
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
