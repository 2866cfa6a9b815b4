//! The two versions' training data compared feature by feature, cached per pair of data set
//! versions.

use std::sync::Arc;

use serde_json::Value;

use super::super::dataset_views::ShiftView;
use super::super::drift::{bins, num, threshold_text};
use crate::error::AppError;
use crate::monitoring::drift::{self, FeatureDrift};
use crate::registry::card::{Card, FeatureKind};
use crate::registry::reference;
use crate::state::AppState;
use plinth_store::models::VersionRow;

/// A feature's training distributions in a and b, named by choice for categories.
pub(super) fn training_view(card: &Card, d: &FeatureDrift) -> ShiftView {
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
pub(super) type TrainingCache =
    std::sync::Mutex<std::collections::HashMap<(i64, i64), Arc<Vec<FeatureDrift>>>>;

pub(super) static TRAINING: std::sync::OnceLock<TrainingCache> = std::sync::OnceLock::new();

/// Pairs kept (the cache is emptied when it is full: pages compare few pairs at a time).
pub(super) const TRAINING_PAIRS: usize = 32;

pub(super) fn cached_training(a: i64, b: i64) -> Option<Arc<Vec<FeatureDrift>>> {
    let cache = TRAINING.get_or_init(Default::default).lock().ok()?;
    cache.get(&(a, b)).cloned()
}

pub(super) fn keep_training(a: i64, b: i64, found: Arc<Vec<FeatureDrift>>) {
    if let Ok(mut cache) = TRAINING.get_or_init(Default::default).lock() {
        if cache.len() >= TRAINING_PAIRS {
            cache.clear();
        }
        cache.insert((a, b), found);
    }
}

pub(super) async fn training(
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
