//! The admin dashboard's figures, computed from the rollups: traffic, errors, latency
//! percentiles, sources, feedback coverage and live quality, per model version and window.

use std::collections::BTreeMap;

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use plinth_store::dashboard::{self, LATENCY_BOUNDS_US};

/// The windows the dashboard offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Week,
}

impl Window {
    pub fn parse(s: &str) -> Window {
        match s {
            "1h" => Window::Hour,
            "7d" => Window::Week,
            _ => Window::Day,
        }
    }
    pub fn key(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Window::Hour => "last hour",
            Window::Day => "last 24 hours",
            Window::Week => "last 7 days",
        }
    }
    fn span(self) -> Duration {
        match self {
            Window::Hour => Duration::hours(1),
            Window::Day => Duration::hours(24),
            Window::Week => Duration::days(7),
        }
    }
    /// Chart bar width, in seconds.
    fn bucket_secs(self) -> i64 {
        match self {
            Window::Hour => 120,
            Window::Day => 3600,
            Window::Week => 6 * 3600,
        }
    }
}

/// One model version's figures over the window.
#[derive(Debug)]
pub struct VersionStats {
    pub model: String,
    pub version_id: i64,
    /// The latest drift check says the inputs have drifted.
    pub drifting: bool,
    pub version: i32,
    pub predictions: i64,
    pub failures: i64,
    pub error_rate: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Predictions by source.
    pub sources: Vec<(String, i64)>,
    pub with_feedback: i64,
    /// Share of predictions that have feedback.
    pub coverage: f64,
    /// Accuracy (classification) where feedback has arrived.
    pub accuracy: Option<f64>,
    /// MAE and RMSE (regression) where feedback has arrived.
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    /// Predictions per bar, oldest first.
    pub series: Vec<i64>,
}

/// The `q` quantile of a bucketed histogram, interpolated within its bucket, in milliseconds.
pub fn quantile_ms(hist: &[i64], q: f64) -> f64 {
    let total: i64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let target = q * total as f64;
    let mut seen = 0.0;
    for (i, count) in hist.iter().enumerate() {
        let next = seen + *count as f64;
        if next >= target && *count > 0 {
            let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] } as f64;
            let upper = LATENCY_BOUNDS_US
                .get(i)
                .copied()
                .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] * 2)
                as f64;
            let within = (target - seen) / *count as f64;
            return (lower + (upper - lower) * within) / 1000.0;
        }
        seen = next;
    }
    LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] as f64 / 1000.0
}

pub async fn stats(
    pool: &PgPool,
    window: Window,
    now: OffsetDateTime,
) -> sqlx::Result<Vec<VersionStats>> {
    let since = now - window.span();
    let totals = dashboard::totals(pool, since).await?;
    let failures: BTreeMap<i64, i64> = dashboard::failures(pool, since)
        .await?
        .into_iter()
        .collect();
    let drifting = plinth_store::drift::drifting_versions(pool).await?;
    let quality: BTreeMap<i64, dashboard::Quality> = dashboard::quality(pool, since)
        .await?
        .into_iter()
        .map(|q| (q.version_id, q))
        .collect();

    // Group the per-source rows by version, keeping the query's order.
    let mut versions: Vec<(i64, Vec<&dashboard::SourceTotals>)> = Vec::new();
    for row in &totals {
        match versions.iter_mut().find(|(id, _)| *id == row.version_id) {
            Some((_, rows)) => rows.push(row),
            None => versions.push((row.version_id, vec![row])),
        }
    }
    let bucket = window.bucket_secs();
    let bars = window.span().whole_seconds() / bucket;
    let start = (now - window.span()).unix_timestamp() / bucket * bucket;
    let mut out = Vec::new();
    for (version_id, rows) in versions {
        let n: i64 = rows.iter().map(|r| r.n).sum();
        let latency_sum: i64 = rows.iter().map(|r| r.latency_sum_us).sum();
        let mut hist = vec![0i64; LATENCY_BOUNDS_US.len() + 1];
        for r in &rows {
            for (h, v) in hist.iter_mut().zip(&r.latency_hist) {
                *h += v;
            }
        }
        let failed = failures.get(&version_id).copied().unwrap_or(0);
        let q = quality.get(&version_id);
        let with_feedback = q.map_or(0, |q| q.with_feedback);
        let regression = q.is_some_and(|q| q.abs_error_sum.is_some());
        let mut series = vec![0i64; bars.max(1) as usize];
        for (t, count) in dashboard::series(pool, version_id, since, bucket).await? {
            let index = (t.unix_timestamp() - start) / bucket;
            if let Some(slot) = usize::try_from(index).ok().and_then(|i| series.get_mut(i)) {
                *slot += count;
            } else if let Some(last) = series.last_mut() {
                *last += count;
            }
        }
        out.push(VersionStats {
            model: rows[0].model.clone(),
            version_id,
            drifting: drifting.contains(&version_id),
            version: rows[0].version,
            predictions: n,
            failures: failed,
            error_rate: if n + failed > 0 {
                failed as f64 / (n + failed) as f64
            } else {
                0.0
            },
            mean_ms: if n > 0 {
                latency_sum as f64 / n as f64 / 1000.0
            } else {
                0.0
            },
            p50_ms: quantile_ms(&hist, 0.50),
            p95_ms: quantile_ms(&hist, 0.95),
            p99_ms: quantile_ms(&hist, 0.99),
            sources: rows.iter().map(|r| (r.source.clone(), r.n)).collect(),
            with_feedback,
            coverage: if n > 0 {
                with_feedback as f64 / n as f64
            } else {
                0.0
            },
            accuracy: q
                .filter(|q| !regression && q.with_feedback > 0)
                .map(|q| q.correct as f64 / q.with_feedback as f64),
            mae: q.and_then(|q| q.abs_error_sum.map(|s| s / q.with_feedback.max(1) as f64)),
            rmse: q.and_then(|q| {
                q.sq_error_sum
                    .map(|s| (s / q.with_feedback.max(1) as f64).sqrt())
            }),
            series,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 100 predictions: 50 in (100, 200] µs, 50 in (500, 1000] µs.
        let mut hist = vec![0i64; LATENCY_BOUNDS_US.len() + 1];
        hist[2] = 50;
        hist[4] = 50;
        assert!((quantile_ms(&hist, 0.5) - 0.2).abs() < 1e-9);
        assert!((quantile_ms(&hist, 0.99) - 0.99).abs() < 1e-9);
        assert_eq!(quantile_ms(&[0; 15], 0.5), 0.0);
    }
}
