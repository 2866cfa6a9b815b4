//! Drift: how far live inputs have moved from the training data.
//!
//! A check compares a recent window of live inputs with the reference, feature by feature, using the
//! test Evidently would pick: for a reference of up to 1,000 rows, Kolmogorov-Smirnov for
//! numeric features (more than 5 distinct values) and chi-squared for categorical ones, drifting
//! at p < 0.05; for larger references, the Wasserstein distance over the reference's standard
//! deviation, or the Jensen-Shannon distance, drifting at ≥ 0.1. PSI against the reference
//! deciles is reported beside. The data set drifts when at least half its features do; below
//! [`MIN_ROWS`] predictions there is no verdict.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::stats;
use crate::registry::card::{Card, FeatureKind};
use crate::registry::reference::columns as reference_columns;

/// Fewer live rows than this give no verdict.
pub const MIN_ROWS: usize = 100;
/// References up to this size use the statistical tests; larger ones the distances.
const SMALL_REFERENCE: usize = 1000;

fn distinct(values: &[f64]) -> usize {
    let mut v: Vec<u64> = values.iter().map(|x| x.to_bits()).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Whether a feature is compared as categories.
fn categorical(kind: FeatureKind, reference: &[f64]) -> bool {
    matches!(kind, FeatureKind::Category | FeatureKind::Boolean) || distinct(reference) <= 5
}

fn frequencies(values: &[f64]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for v in values {
        *counts.entry(stats_key(*v)).or_default() += 1.0;
    }
    let n = values.len().max(1) as f64;
    counts.values_mut().for_each(|c| *c /= n);
    counts
}

fn stats_key(v: f64) -> String {
    if v.is_nan() {
        MISSING.to_string()
    } else {
        crate::registry::card::fmt_num(v)
    }
}

/// The category a missing value counts as, and the name of a numeric histogram's extra bar.
pub const MISSING: &str = "missing";

/// The values present and how many are missing (NaN).
fn present(values: &[f64]) -> (Vec<f64>, usize) {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let missing = values.len() - kept.len();
    (kept, missing)
}

/// The share of missing values compared, as a category of its own: chi-squared over
/// (missing, present) for small references (a reference without missing values against a
/// window with some is drift, as an unseen category is), the change in share (≥ 0.1)
/// otherwise. Returns the shares, the words for the method and whether it drifted.
fn missing_share(
    r_missing: usize,
    r_n: usize,
    c_missing: usize,
    c_n: usize,
    small: bool,
) -> ((f64, f64), String, bool) {
    let (rs, cs) = (
        r_missing as f64 / r_n.max(1) as f64,
        c_missing as f64 / c_n.max(1) as f64,
    );
    if small {
        let n = c_n as f64;
        let observed = [c_missing as f64, n - c_missing as f64];
        let expected = [rs * n, (1.0 - rs) * n];
        let unseen = observed
            .iter()
            .zip(&expected)
            .any(|(o, e)| *e == 0.0 && *o > 0.0);
        let p = if unseen {
            0.0
        } else {
            stats::chisquare(&observed, &expected).p_value
        };
        (
            (rs, cs),
            format!(
                "missing share chi-squared p = {}",
                crate::registry::card::fmt_num((p * 1e4).round() / 1e4)
            ),
            p < 0.05,
        )
    } else {
        let d = (cs - rs).abs();
        (
            (rs, cs),
            format!("missing share {:.1}% → {:.1}%", rs * 100.0, cs * 100.0),
            d >= 0.1,
        )
    }
}

/// One feature compared.
#[derive(Clone, Debug)]
pub struct FeatureDrift {
    pub feature: String,
    pub method: std::borrow::Cow<'static, str>,
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    pub psi: f64,
    /// `{"edges" or "categories", "reference": shares, "current": shares}`.
    pub histogram: Value,
}

/// Compares the live window with the reference, feature by feature.
pub fn compare(
    card: &Card,
    reference: &BTreeMap<String, Vec<f64>>,
    current: &BTreeMap<String, Vec<f64>>,
) -> Vec<FeatureDrift> {
    let mut out = Vec::new();
    for f in &card.features {
        let (Some(r_all), Some(c_all)) = (reference.get(&f.name), current.get(&f.name)) else {
            continue;
        };
        if r_all.is_empty() || c_all.is_empty() {
            continue;
        }
        let small = r_all.len() <= SMALL_REFERENCE;
        let (r_present, r_missing) = present(r_all);
        let (c_present, c_missing) = present(c_all);
        let any_missing = r_missing + c_missing > 0;
        // Categories count a missing value as a category of its own.
        let is_categorical =
            categorical(f.kind, &r_present) || r_present.is_empty() || c_present.is_empty();
        let (r, c) = if is_categorical {
            (r_all.as_slice(), c_all.as_slice())
        } else {
            (r_present.as_slice(), c_present.as_slice())
        };
        let mut result = if is_categorical {
            let (rf, cf) = (frequencies(r), frequencies(c));
            let keys: Vec<String> = rf
                .keys()
                .chain(cf.keys())
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let ref_shares: Vec<f64> = keys
                .iter()
                .map(|k| rf.get(k).copied().unwrap_or(0.0))
                .collect();
            let cur_shares: Vec<f64> = keys
                .iter()
                .map(|k| cf.get(k).copied().unwrap_or(0.0))
                .collect();
            let psi = stats::psi(&ref_shares, &cur_shares);
            let histogram =
                json!({"categories": keys, "reference": ref_shares, "current": cur_shares});
            if small {
                let n = c.len() as f64;
                let observed: Vec<f64> = cur_shares.iter().map(|s| s * n).collect();
                let expected: Vec<f64> = ref_shares.iter().map(|s| s * n).collect();
                // A category the reference never saw cannot be expected: that is drift.
                let unseen = observed
                    .iter()
                    .zip(&expected)
                    .any(|(o, e)| *e == 0.0 && *o > 0.0);
                let t = stats::chisquare(&observed, &expected);
                let p = if unseen { 0.0 } else { t.p_value };
                FeatureDrift {
                    feature: f.name.clone(),
                    method: "chi-squared".into(),
                    statistic: t.statistic,
                    p_value: Some(p),
                    threshold: 0.05,
                    drifted: p < 0.05,
                    psi,
                    histogram,
                }
            } else {
                let fill = |v: &[f64]| {
                    v.iter()
                        .map(|x| if *x == 0.0 { 0.0001 } else { *x })
                        .collect::<Vec<_>>()
                };
                let d = stats::jensen_shannon(&fill(&ref_shares), &fill(&cur_shares));
                FeatureDrift {
                    feature: f.name.clone(),
                    method: "Jensen-Shannon".into(),
                    statistic: d,
                    p_value: None,
                    threshold: 0.1,
                    drifted: d >= 0.1,
                    psi,
                    histogram,
                }
            }
        } else {
            let deciles = stats::decile_edges(r);
            let psi = stats::psi(
                &stats::shares(&stats::histogram(r, &deciles), r.len()),
                &stats::shares(&stats::histogram(c, &deciles), c.len()),
            );
            let all: Vec<f64> = r.iter().chain(c).copied().collect();
            let edges = stats::sturges_edges(&all);
            let histogram = json!({
                "edges": edges,
                "reference": stats::shares(&stats::histogram(r, &edges), r.len()),
                "current": stats::shares(&stats::histogram(c, &edges), c.len()),
            });
            if small {
                let t = stats::ks_2samp(r, c);
                FeatureDrift {
                    feature: f.name.clone(),
                    method: "Kolmogorov-Smirnov".into(),
                    statistic: t.statistic,
                    p_value: Some(t.p_value),
                    threshold: 0.05,
                    drifted: t.p_value < 0.05,
                    psi,
                    histogram,
                }
            } else {
                let sd = stats::std_dev(r);
                let w = if sd > 0.0 {
                    stats::wasserstein(r, c) / sd
                } else {
                    stats::wasserstein(r, c)
                };
                FeatureDrift {
                    feature: f.name.clone(),
                    method: "Wasserstein (normed)".into(),
                    statistic: w,
                    p_value: None,
                    threshold: 0.1,
                    drifted: w >= 0.1,
                    psi,
                    histogram,
                }
            }
        };
        if any_missing && !is_categorical {
            // Numbers compared where present, and the share of missing values beside them: the
            // bars are shares of all rows, the missing ones an extra bar.
            let ((rs, cs), words, drifted) =
                missing_share(r_missing, r_all.len(), c_missing, c_all.len(), small);
            for (key, keep) in [("reference", 1.0 - rs), ("current", 1.0 - cs)] {
                if let Some(bars) = result.histogram[key].as_array_mut() {
                    for b in bars.iter_mut() {
                        *b = json!(b.as_f64().unwrap_or(0.0) * keep);
                    }
                }
            }
            result.histogram["missing"] = json!([rs, cs]);
            result.method = format!("{} + {words}", result.method).into();
            result.drifted |= drifted;
        }
        out.push(result);
    }
    out
}

/// The data set drifts when at least half of its features do.
pub fn dataset_drifted(features: &[FeatureDrift]) -> bool {
    !features.is_empty() && features.iter().filter(|f| f.drifted).count() * 2 >= features.len()
}

/// Live inputs as columns, from the stored `inputs` objects.
pub fn current_columns(card: &Card, inputs: &[Value]) -> BTreeMap<String, Vec<f64>> {
    let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in inputs {
        for f in &card.features {
            let value = match row.get(&f.name) {
                // A category given as its text (the values of text inputs) counts as its choice.
                Some(Value::String(text)) => f.choice_index(text).map(|i| i as f64),
                // A missing value (stored as NaN, read back as null).
                Some(Value::Null) if f.allows_missing() => Some(f64::NAN),
                Some(v) => v.as_f64(),
                None => None,
            };
            if let Some(v) = value {
                columns.entry(f.name.clone()).or_default().push(v);
            }
        }
    }
    columns
}

#[cfg(test)]
mod tests;

/// What a check found.
#[derive(Debug)]
pub struct CheckOutcome {
    pub run_id: i64,
    pub rows: usize,
    /// `None`: too few rows for a verdict.
    pub drifted: Option<bool>,
}

/// Checks one version's recent window against its reference and records the result. `None`
/// when the version has no reference data.
/// The statistics run on the blocking pool through `heavy`, never on an async worker.
pub async fn check(
    registry: &crate::registry::Registry,
    heavy: &crate::heavy::Heavy,
    version: &plinth_store::models::VersionRow,
    hours: i64,
    max_rows: i64,
) -> anyhow::Result<Option<CheckOutcome>> {
    let Some(csv) = registry.reference_csv(version).await? else {
        return Ok(None);
    };
    let pool = registry.pool();
    let card = crate::registry::card_of(version);
    let since = time::OffsetDateTime::now_utc() - time::Duration::hours(hours);
    let inputs: Vec<Value> =
        plinth_store::predictions::recent_inputs(pool, version.id, since, max_rows).await?;
    let label = format!("last {} predictions, {hours} h", inputs.len());
    let rows_seen = inputs.len();
    let (results, drifted) = if rows_seen < MIN_ROWS {
        (Vec::new(), None)
    } else {
        heavy
            .run(move || {
                let reference = reference_columns(&csv, &card);
                let found = compare(&card, &reference, &current_columns(&card, &inputs));
                let drifted = dataset_drifted(&found);
                (found, Some(drifted))
            })
            .await
            .map_err(|e| anyhow::anyhow!("the drift statistics failed: {e}"))?
    };
    let rows: Vec<plinth_store::drift::FeatureResult> = results
        .into_iter()
        .map(|f| plinth_store::drift::FeatureResult {
            feature: f.feature,
            method: f.method.to_string(),
            statistic: f.statistic,
            p_value: f.p_value,
            threshold: f.threshold,
            drifted: f.drifted,
            psi: f.psi,
            histogram: sqlx::types::Json(f.histogram),
        })
        .collect();
    let run_id = plinth_store::drift::record_run(
        pool,
        version.model_id,
        version.id,
        &label,
        rows_seen as i32,
        drifted,
        &rows,
    )
    .await?;
    if drifted == Some(true) {
        // The check is recorded either way; an alert that cannot be sent is only logged.
        if let Err(e) = alert_drift(pool, version, &rows, &label).await {
            tracing::warn!(error = %e, "could not alert on drift");
        }
    }
    Ok(Some(CheckOutcome {
        run_id,
        rows: rows_seen,
        drifted,
    }))
}

/// Tells the webhooks that a version's inputs drifted, when its previous check did not say so.
async fn alert_drift(
    pool: &sqlx::PgPool,
    version: &plinth_store::models::VersionRow,
    rows: &[plinth_store::drift::FeatureResult],
    window: &str,
) -> anyhow::Result<()> {
    let latest = plinth_store::automation::drift_verdicts(
        pool,
        version.id,
        time::OffsetDateTime::UNIX_EPOCH,
        2,
    )
    .await?;
    if latest.get(1) == Some(&true) {
        return Ok(());
    }
    let model = plinth_store::models::model_name(pool, version.model_id)
        .await?
        .unwrap_or_default();
    let drifted: Vec<&str> = rows
        .iter()
        .filter(|r| r.drifted)
        .map(|r| r.feature.as_str())
        .collect();
    crate::automation::webhooks::alert(
        pool,
        "drift.flagged",
        Some((version.model_id, &model)),
        format!(
            "{model}: drift flagged on version {} ({} of {} features over the {window}: {}).",
            version.version,
            drifted.len(),
            rows.len(),
            drifted.join(", ")
        ),
        serde_json::json!({"version": version.version, "features": drifted, "window": window}),
    )
    .await;
    Ok(())
}

/// Checks every model's production version (the scheduled job).
pub async fn check_all(
    registry: &crate::registry::Registry,
    heavy: &crate::heavy::Heavy,
    hours: i64,
    max_rows: i64,
) -> anyhow::Result<usize> {
    let mut checked = 0;
    for row in plinth_store::models::catalogue(registry.pool()).await? {
        if row.version.is_none() {
            continue;
        }
        if let Some((_, version)) =
            plinth_store::models::by_alias(registry.pool(), &row.name, crate::registry::PRODUCTION)
                .await?
        {
            if check(registry, heavy, &version, hours, max_rows)
                .await?
                .is_some()
            {
                checked += 1;
            }
        }
    }
    Ok(checked)
}
