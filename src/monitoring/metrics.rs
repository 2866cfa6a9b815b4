//! Prometheus metrics, kept in memory per process and rendered by the `prometheus-client` crate
//! (the Prometheus project's own) in the OpenMetrics text format, which Prometheus scrapes.
//! Names follow Triton's spirit: per model and version, counters and latency histograms.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const BOUNDS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    model: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    model: String,
    version: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    model: String,
    version: String,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BOUNDS)
}

/// The process's metrics, shared by the handlers, the prediction log and `/metrics`.
pub struct Metrics {
    registry: Registry,
    success: Family<VersionLabels, Counter>,
    failure: Family<FailureLabels, Counter>,
    latency: Family<StageLabels, Histogram, fn() -> Histogram>,
    http: Family<HttpLabels, Counter>,
    flush: Histogram,
    /// Prediction rows handed to the log and not yet committed.
    log_pending: Gauge<i64, AtomicI64>,
    log_rows: Counter<u64, AtomicU64>,
    /// Batch-job rows scored and refused, by model.
    batch_scored: Family<ModelLabels, Counter>,
    batch_refused: Family<ModelLabels, Counter>,
    /// Kafka streams: records scored, dead letters, consumer lag.
    stream_records: Family<StreamLabels, Counter>,
    stream_dead_letters: Family<StreamLabels, Counter>,
    stream_lag: Family<StreamLabels, Gauge>,
    /// Live requests whose copy for the shadow versions was dropped (the queue was full).
    shadow_dropped: Family<ModelLabels, Counter>,
    /// Production versions whose latest drift check flagged them (1) or not (0).
    drift_flagged: Family<VersionLabels, Gauge>,
    /// Each served version's series, looked up once: the prediction path then counts and times
    /// without building label strings or taking the families' locks.
    versions: std::sync::RwLock<std::collections::HashMap<i64, std::sync::Arc<VersionMetrics>>>,
}

/// One model version's prediction series (clones share their values with the families).
pub struct VersionMetrics {
    success: Counter,
    queue: Histogram,
    compute: Histogram,
    total: Histogram,
}

impl VersionMetrics {
    pub fn latency(&self, stage: Stage, d: Duration) {
        let h = match stage {
            Stage::Queue => &self.queue,
            Stage::Compute => &self.compute,
            Stage::Total => &self.total,
        };
        h.observe(d.as_secs_f64());
    }

    /// Predictions answered (and stored), `rows` of them.
    pub fn success(&self, rows: usize) {
        self.success.inc_by(rows as u64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            success: Family::default(),
            failure: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            http: Family::default(),
            flush: latency_histogram(),
            log_pending: Gauge::default(),
            log_rows: Counter::default(),
            batch_scored: Family::default(),
            batch_refused: Family::default(),
            stream_records: Family::default(),
            stream_dead_letters: Family::default(),
            stream_lag: Family::default(),
            drift_flagged: Family::default(),
            shadow_dropped: Family::default(),
            versions: Default::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// Registers every metric (clones share their values) in the registry `render` encodes.
    fn registered(mut self) -> Self {
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let r = &mut self.registry;
        r.register("plinth_build_info", "The running build", build);
        r.register(
            "plinth_inference_success",
            "Predictions answered and stored",
            self.success.clone(),
        );
        r.register(
            "plinth_inference_failure",
            "Requests for a model that failed, by reason",
            self.failure.clone(),
        );
        r.register(
            "plinth_inference_duration_seconds",
            "Prediction latency by stage (queue, compute, total)",
            self.latency.clone(),
        );
        r.register(
            "plinth_http_requests",
            "HTTP requests by method, route and status",
            self.http.clone(),
        );
        r.register(
            "plinth_prediction_log_flush_seconds",
            "Time to write and commit one batch of prediction rows",
            self.flush.clone(),
        );
        r.register(
            "plinth_prediction_log_pending_rows",
            "Prediction rows waiting to be committed",
            self.log_pending.clone(),
        );
        r.register(
            "plinth_prediction_log_rows",
            "Prediction rows committed",
            self.log_rows.clone(),
        );
        r.register(
            "plinth_batch_rows_scored",
            "Rows of batch jobs scored and stored, by model",
            self.batch_scored.clone(),
        );
        r.register(
            "plinth_batch_rows_refused",
            "Rows of batch jobs refused (reported in the job), by model",
            self.batch_refused.clone(),
        );
        r.register(
            "plinth_stream_records",
            "Kafka records scored and stored, by model and input topic",
            self.stream_records.clone(),
        );
        r.register(
            "plinth_stream_dead_letters",
            "Kafka records sent to the dead-letter topic, by model and input topic",
            self.stream_dead_letters.clone(),
        );
        r.register(
            "plinth_stream_consumer_lag",
            "Records behind on the partitions this instance consumes, by model and input topic",
            self.stream_lag.clone(),
        );
        r.register(
            "plinth_shadow_dropped",
            "Live requests not copied to the shadow versions because their queue was full",
            self.shadow_dropped.clone(),
        );
        r.register(
            "plinth_drift_flagged",
            "1 when the latest drift check of a production version flagged it, else 0",
            self.drift_flagged.clone(),
        );
        self
    }
}

fn version_labels(model: &str, version: i32) -> VersionLabels {
    VersionLabels {
        model: model.to_string(),
        version: version.to_string(),
    }
}

impl Metrics {
    /// The series of the version with id `version_id` (`model` `version`).
    pub fn version(
        &self,
        version_id: i64,
        model: &str,
        version: i32,
    ) -> std::sync::Arc<VersionMetrics> {
        if let Some(found) = self
            .versions
            .read()
            .ok()
            .and_then(|v| v.get(&version_id).cloned())
        {
            return found;
        }
        let stage = |stage: Stage| {
            self.latency
                .get_or_create(&StageLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    stage: stage.as_str(),
                })
                .clone()
        };
        let made = std::sync::Arc::new(VersionMetrics {
            success: self
                .success
                .get_or_create(&version_labels(model, version))
                .clone(),
            queue: stage(Stage::Queue),
            compute: stage(Stage::Compute),
            total: stage(Stage::Total),
        });
        if let Ok(mut versions) = self.versions.write() {
            versions.insert(version_id, made.clone());
        }
        made
    }

    /// A request for a model version that failed, by reason.
    /// A batch of stream records: rows scored and records dead-lettered.
    pub fn stream_records(&self, model: &str, topic: &str, scored: u64, dead: u64) {
        let labels = StreamLabels {
            model: model.to_string(),
            topic: topic.to_string(),
        };
        self.stream_records.get_or_create(&labels).inc_by(scored);
        self.stream_dead_letters.get_or_create(&labels).inc_by(dead);
    }

    pub fn shadow_dropped(&self, model: &str) {
        self.shadow_dropped
            .get_or_create(&ModelLabels {
                model: model.to_string(),
            })
            .inc();
    }

    /// The latest drift verdicts of the production versions (model, version, flagged); versions
    /// no longer listed leave the family.
    pub fn drift_verdicts(&self, verdicts: &[(String, i32, bool)]) {
        self.drift_flagged.clear();
        for (model, version, flagged) in verdicts {
            self.drift_flagged
                .get_or_create(&version_labels(model, *version))
                .set(i64::from(*flagged));
        }
    }

    pub fn stream_lag(&self, model: &str, topic: &str, lag: i64) {
        let labels = StreamLabels {
            model: model.to_string(),
            topic: topic.to_string(),
        };
        self.stream_lag.get_or_create(&labels).set(lag);
    }

    /// A batch chunk's rows, scored and refused.
    pub fn batch_rows(&self, model: &str, scored: usize, refused: usize) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        self.batch_scored
            .get_or_create(&labels)
            .inc_by(scored as u64);
        self.batch_refused
            .get_or_create(&labels)
            .inc_by(refused as u64);
    }

    pub fn failure(&self, model: &str, version: i32, reason: &'static str) {
        let labels = FailureLabels {
            model: model.to_string(),
            version: version.to_string(),
            reason,
        };
        self.failure.get_or_create(&labels).inc();
    }

    /// One HTTP request, by method, route pattern and status. Every label comes from a bounded
    /// set: a method outside the standard ones counts as `other` (anyone can send any token as a
    /// method), a path that matched no route as `unmatched`.
    pub fn http(&self, method: &str, route: &str, status: u16) {
        let labels = HttpLabels {
            method: known_method(method),
            route: route.to_string(),
            status,
        };
        self.http.get_or_create(&labels).inc();
    }

    pub fn log_enqueued(&self, rows: usize) {
        self.log_pending.inc_by(rows as i64);
    }

    pub fn log_flushed(&self, rows: usize, took: Duration) {
        self.log_pending.dec_by(rows as i64);
        self.log_rows.inc_by(rows as u64);
        self.flush.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "the metrics could not be encoded");
        }
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
        let iris = m.version(7, "iris", 1);
        iris.success(3);
        m.failure("iris", 1, "invalid_input");
        iris.latency(Stage::Compute, Duration::from_micros(300));
        assert!(std::sync::Arc::ptr_eq(&iris, &m.version(7, "iris", 1)));
        m.http("GET", "/models/{name}", 200);
        m.log_enqueued(3);
        m.log_flushed(3, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("plinth_inference_success_total{model=\"iris\",version=\"1\"} 3"));
        assert!(text.contains("reason=\"invalid_input\"} 1"));
        assert!(text.contains("plinth_inference_duration_seconds_bucket{le=\"0.0005\",model=\"iris\",version=\"1\",stage=\"compute\"} 1"));
        assert!(text.contains("plinth_inference_duration_seconds_bucket{le=\"0.00025\",model=\"iris\",version=\"1\",stage=\"compute\"} 0"));
        assert!(text.contains(
            "plinth_http_requests_total{method=\"GET\",route=\"/models/{name}\",status=\"200\"} 1"
        ));
        assert!(text.contains("plinth_prediction_log_pending_rows 0"));
        assert!(text.contains("plinth_prediction_log_flush_seconds_count 1"));
        assert!(text.contains("plinth_prediction_log_rows_total 3"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }
}
