//! Prometheus metrics, kept in memory per process and rendered in the text exposition format.
//! Names follow Triton's spirit: per model and version, counters and latency histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BOUNDS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BOUNDS.iter().zip(self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The stages of a prediction's latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Waiting for a thread to run the model on.
    Queue,
    /// Running the model.
    Compute,
    /// From the validated request to the committed prediction row.
    Total,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Compute => "compute",
            Stage::Total => "total",
        }
    }
}

type ModelKey = (String, String);

#[derive(Default)]
struct Inner {
    success: BTreeMap<ModelKey, u64>,
    failure: BTreeMap<(String, String, &'static str), u64>,
    latency: BTreeMap<(String, String, Stage), Histogram>,
    http: BTreeMap<(String, String, u16), u64>,
    flush: Histogram,
}

/// The process's metrics, shared by the handlers, the prediction log and `/metrics`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Prediction rows handed to the log and not yet committed.
    log_pending: AtomicU64,
    log_rows: AtomicU64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
        self.inner.lock().ok().map(|mut inner| f(&mut inner))
    }

    /// Predictions answered (and stored) for a model version, `rows` of them.
    pub fn success(&self, model: &str, version: i32, rows: usize) {
        self.with(|m| {
            *m.success
                .entry((model.into(), version.to_string()))
                .or_default() += rows as u64
        });
    }

    /// A request for a model version that failed, by reason.
    pub fn failure(&self, model: &str, version: i32, reason: &'static str) {
        self.with(|m| {
            *m.failure
                .entry((model.into(), version.to_string(), reason))
                .or_default() += 1
        });
    }

    pub fn latency(&self, model: &str, version: i32, stage: Stage, d: Duration) {
        self.with(|m| {
            m.latency
                .entry((model.into(), version.to_string(), stage))
                .or_default()
                .observe(d)
        });
    }

    /// One HTTP request, by method, route pattern and status. Every label comes from a bounded
    /// set: a method outside the standard ones counts as `other` (anyone can send any token as a
    /// method), a path that matched no route as `unmatched`.
    pub fn http(&self, method: &str, route: &str, status: u16) {
        let method = known_method(method);
        self.with(|m| {
            *m.http
                .entry((method.into(), route.into(), status))
                .or_default() += 1
        });
    }

    pub fn log_enqueued(&self, rows: usize) {
        self.log_pending.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn log_flushed(&self, rows: usize, took: Duration) {
        self.log_pending.fetch_sub(rows as u64, Ordering::Relaxed);
        self.log_rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.with(|m| m.flush.observe(took));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP plinth_build_info The running build.\n# TYPE plinth_build_info gauge"
        );
        let _ = writeln!(
            out,
            "plinth_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let Some(()) = self.with(|m| {
            let _ = writeln!(out, "# HELP plinth_inference_success_total Predictions answered and stored.\n# TYPE plinth_inference_success_total counter");
            for ((model, version), n) in &m.success {
                let _ = writeln!(out, "plinth_inference_success_total{{model=\"{}\",version=\"{version}\"}} {n}", escape(model));
            }
            let _ = writeln!(out, "# HELP plinth_inference_failure_total Requests for a model that failed, by reason.\n# TYPE plinth_inference_failure_total counter");
            for ((model, version, reason), n) in &m.failure {
                let _ = writeln!(out, "plinth_inference_failure_total{{model=\"{}\",version=\"{version}\",reason=\"{reason}\"}} {n}", escape(model));
            }
            let _ = writeln!(out, "# HELP plinth_inference_duration_seconds Prediction latency by stage (queue, compute, total).\n# TYPE plinth_inference_duration_seconds histogram");
            for ((model, version, stage), h) in &m.latency {
                let labels = format!("model=\"{}\",version=\"{version}\",stage=\"{}\"", escape(model), stage.as_str());
                h.render(&mut out, "plinth_inference_duration_seconds", &labels);
            }
            let _ = writeln!(out, "# HELP plinth_http_requests_total HTTP requests by method, route and status.\n# TYPE plinth_http_requests_total counter");
            for ((method, route, status), n) in &m.http {
                let _ = writeln!(out, "plinth_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}", escape(route));
            }
            let _ = writeln!(out, "# HELP plinth_prediction_log_flush_seconds Time to write and commit one batch of prediction rows.\n# TYPE plinth_prediction_log_flush_seconds histogram");
            m.flush.render(&mut out, "plinth_prediction_log_flush_seconds", "");
        }) else {
            return out;
        };
        let _ = writeln!(out, "# HELP plinth_prediction_log_pending_rows Prediction rows waiting to be committed.\n# TYPE plinth_prediction_log_pending_rows gauge");
        let _ = writeln!(
            out,
            "plinth_prediction_log_pending_rows {}",
            self.log_pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP plinth_prediction_log_rows_total Prediction rows committed.\n# TYPE plinth_prediction_log_rows_total counter");
        let _ = writeln!(
            out,
            "plinth_prediction_log_rows_total {}",
            self.log_rows.load(Ordering::Relaxed)
        );
        out
    }
}

/// The method label: one of the standard methods, or `other`.
fn known_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let m = Metrics::default();
        m.success("iris", 1, 3);
        m.failure("iris", 1, "invalid_input");
        m.latency("iris", 1, Stage::Compute, Duration::from_micros(300));
        m.http("GET", "/models/{name}", 200);
        m.log_enqueued(3);
        m.log_flushed(3, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("plinth_inference_success_total{model=\"iris\",version=\"1\"} 3"));
        assert!(text.contains("reason=\"invalid_input\"} 1"));
        assert!(text.contains("plinth_inference_duration_seconds_bucket{model=\"iris\",version=\"1\",stage=\"compute\",le=\"0.0005\"} 1"));
        assert!(text.contains("plinth_inference_duration_seconds_bucket{model=\"iris\",version=\"1\",stage=\"compute\",le=\"0.00025\"} 0"));
        assert!(text.contains(
            "plinth_http_requests_total{method=\"GET\",route=\"/models/{name}\",status=\"200\"} 1"
        ));
        assert!(text.contains("plinth_prediction_log_pending_rows 0"));
        assert!(text.contains("plinth_prediction_log_flush_seconds_count 1"));
    }
}
