//! What two versions answered, tallied: agreement, confusion or the distribution of b - a, and
//! the rows where they disagree most.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{REFUSALS, TOP_ROWS};
use crate::monitoring::stats;
use crate::registry::decode::Outcome;

/// A row the two versions answered differently.
pub(super) struct Disagreement {
    pub(super) source: &'static str,
    pub(super) line: i64,
    pub(super) inputs: BTreeMap<String, String>,
    pub(super) a: Outcome,
    pub(super) b: Outcome,
    pub(super) score: f64,
    pub(super) differ: bool,
}

#[derive(Default)]
pub(super) struct SourceFigures {
    pub(super) rows: u64,
    pub(super) compared: u64,
    pub(super) agreeing: u64,
    pub(super) sum_difference: f64,
}

/// Everything counted while the rows go by.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) rows: u64,
    pub(super) compared: u64,
    pub(super) refused_a: u64,
    pub(super) refused_b: u64,
    pub(super) classifier: Option<bool>,
    pub(super) agreeing: u64,
    pub(super) confusion: BTreeMap<(String, String), u64>,
    pub(super) differences: Vec<f64>,
    pub(super) top: Vec<Disagreement>,
    pub(super) refusals: Vec<Value>,
    pub(super) sources: Vec<(&'static str, i32, SourceFigures)>,
}

pub(super) fn probability(o: &Outcome, label: &str) -> Option<f64> {
    o.probabilities
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, p)| *p)
}

impl Tally {
    pub(super) fn refuse(&mut self, source: &'static str, line: i64, version: i32, reason: &str) {
        if self.refusals.len() < REFUSALS {
            self.refusals.push(json!({
                "source": source, "line": line, "version": version, "reason": reason,
            }));
        }
    }

    pub(super) fn keep(&mut self, d: Disagreement) {
        if d.score <= 0.0 {
            return;
        }
        self.top.push(d);
        if self.top.len() >= TOP_ROWS * 4 {
            self.trim();
        }
    }

    pub(super) fn trim(&mut self) {
        self.top.sort_by(|x, y| {
            y.score
                .total_cmp(&x.score)
                .then(x.source.cmp(y.source))
                .then(x.line.cmp(&y.line))
        });
        self.top.truncate(TOP_ROWS);
    }

    /// Counts one row both versions answered.
    pub(super) fn compare(&mut self, s: usize, a: Outcome, b: Outcome) -> Option<Disagreement> {
        let figures = &mut self.sources[s].2;
        figures.compared += 1;
        self.compared += 1;
        match (&a.label, &b.label, a.value, b.value) {
            (Some(la), Some(lb), _, _) => {
                self.classifier.get_or_insert(true);
                let differ = la != lb;
                if !differ {
                    self.agreeing += 1;
                    figures.agreeing += 1;
                }
                *self.confusion.entry((la.clone(), lb.clone())).or_default() += 1;
                // Disagreements first, then by how far b moved a's answer's probability.
                let swing = match (probability(&a, la), probability(&b, la)) {
                    (Some(p), Some(q)) => (p - q).abs(),
                    _ => 0.0,
                };
                let score = if differ { 1.0 + swing } else { swing };
                Some(Disagreement {
                    source: "",
                    line: 0,
                    inputs: BTreeMap::new(),
                    a,
                    b,
                    score,
                    differ,
                })
            }
            (_, _, Some(va), Some(vb)) => {
                self.classifier.get_or_insert(false);
                let d = vb - va;
                self.differences.push(d);
                figures.sum_difference += d;
                if d == 0.0 {
                    self.agreeing += 1;
                    figures.agreeing += 1;
                }
                Some(Disagreement {
                    source: "",
                    line: 0,
                    inputs: BTreeMap::new(),
                    a,
                    b,
                    score: d.abs(),
                    differ: d != 0.0,
                })
            }
            _ => None,
        }
    }

    pub(super) fn result(mut self, a_version: i32, b_version: i32) -> Value {
        self.trim();
        let classifier = self.classifier.unwrap_or(true);
        let share = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        let sources: Vec<Value> = self
            .sources
            .iter()
            .map(|(label, version, f)| {
                let mut s = json!({
                    "source": label, "version": version, "rows": f.rows, "compared": f.compared,
                });
                if classifier {
                    s["agreement"] = json!(share(f.agreeing, f.compared));
                } else {
                    s["mean_difference"] =
                        json!((f.compared > 0).then(|| f.sum_difference / f.compared as f64));
                }
                s
            })
            .collect();
        let mut out = json!({
            "a_version": a_version,
            "b_version": b_version,
            "kind": if classifier { "classification" } else { "regression" },
            "rows": self.rows,
            "compared": self.compared,
            "refused_a": self.refused_a,
            "refused_b": self.refused_b,
            "agreeing": self.agreeing,
            "agreement": share(self.agreeing, self.compared),
            "sources": sources,
            "refusals": self.refusals,
        });
        if classifier {
            let a_labels: Vec<String> = self
                .confusion
                .keys()
                .map(|(a, _)| a.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let b_labels: Vec<String> = self
                .confusion
                .keys()
                .map(|(_, b)| b.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let counts: Vec<Vec<u64>> = a_labels
                .iter()
                .map(|la| {
                    b_labels
                        .iter()
                        .map(|lb| {
                            self.confusion
                                .get(&(la.clone(), lb.clone()))
                                .copied()
                                .unwrap_or(0)
                        })
                        .collect()
                })
                .collect();
            out["confusion"] =
                json!({"a_labels": a_labels, "b_labels": b_labels, "counts": counts});
        } else if !self.differences.is_empty() {
            let mut d = std::mem::take(&mut self.differences);
            let n = d.len() as f64;
            let mean = d.iter().sum::<f64>() / n;
            let mean_abs = d.iter().map(|x| x.abs()).sum::<f64>() / n;
            let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            d.sort_by(f64::total_cmp);
            let edges = if d[0] == d[d.len() - 1] {
                vec![d[0] - 0.5, d[0] + 0.5]
            } else {
                (0..=20)
                    .map(|k| d[0] + (d[d.len() - 1] - d[0]) * k as f64 / 20.0)
                    .collect()
            };
            let q = |p: f64| super::super::quantile(&d, p);
            out["differences"] = json!({
                "mean": mean, "mean_abs": mean_abs, "std": std,
                "min": d[0], "p05": q(0.05), "p25": q(0.25), "p50": q(0.5), "p75": q(0.75),
                "p95": q(0.95), "max": d[d.len() - 1],
                "max_abs": d[0].abs().max(d[d.len() - 1].abs()),
                "histogram": {"edges": edges, "counts": stats::histogram(&d, &edges)},
            });
        }
        out["disagreements"] = self
            .top
            .iter()
            .map(|d| {
                json!({
                    "source": d.source, "line": d.line, "inputs": d.inputs,
                    "a": d.a.to_json(), "b": d.b.to_json(), "score": d.score, "differ": d.differ,
                })
            })
            .collect();
        out
    }
}
