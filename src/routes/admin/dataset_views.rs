//! Data set figures as the pages show them.

use serde_json::Value;

use super::drift::{bins, num, threshold_text, BinBars};
use crate::datasets::diff::Shift;
use crate::datasets::Kind;

/// One bar of a single histogram, in SVG units (240 × 60).
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub label: String,
}

/// Bars for `counts` (numbers) over `edges`.
pub fn bars(edges: &[f64], counts: &[u64]) -> Vec<Bar> {
    let peak = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = 240.0 / counts.len().max(1) as f64;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let h = *c as f64 / peak * 60.0;
            let label = match (edges.get(i), edges.get(i + 1)) {
                (Some(lo), Some(hi)) => format!("{}–{}: {c}", short(*lo), short(*hi)),
                _ => c.to_string(),
            };
            Bar {
                x: round(i as f64 * slot),
                y: round(60.0 - h),
                width: round((slot - 1.0).max(0.5)),
                height: round(h),
                label,
            }
        })
        .collect()
}

/// Bars for a stored histogram, `{"edges": [...], "counts": [...]}`.
pub fn histogram_bars(h: &Value) -> Vec<Bar> {
    let edges: Vec<f64> = h["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    let counts: Vec<u64> = h["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    bars(&edges, &counts)
}

/// A number in a few digits.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-3) {
        return format!("{v:.3e}");
    }
    crate::registry::card::fmt_num((v * 1e4).round() / 1e4)
}

/// A column of a data set version.
pub struct ColumnView {
    pub name: String,
    pub kind: &'static str,
    pub key: bool,
    /// Label and value, in reading order.
    pub figures: Vec<(String, String)>,
    /// Number columns: the histogram.
    pub bars: Vec<Bar>,
    /// Text columns: the most frequent values and their counts.
    pub top: Vec<(String, u64)>,
}

fn f(p: &Value, k: &str) -> String {
    p.get(k)
        .and_then(Value::as_f64)
        .map(short)
        .unwrap_or_else(|| "—".into())
}

fn n(p: &Value, k: &str) -> String {
    p.get(k)
        .and_then(Value::as_u64)
        .map(|v| v.to_string())
        .unwrap_or_else(|| "—".into())
}

/// The columns of a profile, in the schema's order.
pub fn columns(
    schema: &[crate::datasets::Column],
    profile: &Value,
    key: Option<&str>,
) -> Vec<ColumnView> {
    schema
        .iter()
        .map(|c| {
            let p = &profile["columns"][&c.name];
            let mut figures = vec![
                ("Values".to_string(), n(p, "count")),
                ("Missing".to_string(), n(p, "missing")),
                ("Distinct".to_string(), n(p, "distinct")),
            ];
            let (bars, top) = match c.kind {
                Kind::Number => {
                    for (label, k) in [
                        ("Mean", "mean"),
                        ("Std", "std"),
                        ("Min", "min"),
                        ("Median", "p50"),
                        ("Max", "max"),
                    ] {
                        figures.push((label.to_string(), f(p, k)));
                    }
                    (histogram_bars(&p["histogram"]), Vec::new())
                }
                Kind::Text => (
                    Vec::new(),
                    p["top"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|pair| {
                            (
                                pair[0].as_str().unwrap_or("").to_string(),
                                pair[1].as_u64().unwrap_or(0),
                            )
                        })
                        .collect(),
                ),
            };
            ColumnView {
                name: c.name.clone(),
                kind: c.kind.as_str(),
                key: Some(c.name.as_str()) == key,
                figures,
                bars,
                top,
            }
        })
        .collect()
}

/// One column compared between two versions (data set versions, or two model versions'
/// training data).
pub struct ShiftView {
    pub column: String,
    pub method: String,
    pub statistic: String,
    pub p_value: String,
    pub threshold: String,
    pub psi: String,
    pub drifted: bool,
    pub bins: Vec<BinBars>,
    pub a_missing: String,
    pub b_missing: String,
}

pub fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

impl From<&Shift> for ShiftView {
    fn from(s: &Shift) -> Self {
        ShiftView {
            column: s.column.clone(),
            method: s.method.clone(),
            statistic: num(s.statistic),
            p_value: s.p_value.map(num).unwrap_or_else(|| "—".into()),
            threshold: threshold_text(s.p_value, s.threshold),
            psi: num(s.psi),
            drifted: s.drifted,
            bins: bins(&s.histogram),
            a_missing: pct(s.a_missing),
            b_missing: pct(s.b_missing),
        }
    }
}
