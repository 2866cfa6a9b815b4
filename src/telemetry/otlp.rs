//! OTLP/HTTP trace export: the messages of OpenTelemetry's `trace.proto`, `common.proto` and
//! `resource.proto` that Plinth sends (field numbers as the official definitions give them),
//! the exporter's settings from the standard `OTEL_*` variables, and the thread that sends
//! finished spans in batches.
//!
//! Written here rather than taken from the opentelemetry SDK crates: Plinth needs spans, one
//! exporter and one sampler, and the SDK would bring a second HTTP stack and its own runtime
//! glue for them. tests/api/traces.rs decodes what this sends with the official Python
//! definitions (PyPI `opentelemetry-proto`).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// W3C trace flags (bit 0: sampled) and, from bit 8, whether the parent is remote.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }
}

/// Where and how spans are sent, from the standard variables.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, or `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `/v1/traces` added.
    pub url: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` (and `_TRACES_HEADERS`): `key=value,…`.
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (and `_TRACES_TIMEOUT`), milliseconds; default 10 s.
    pub timeout: Duration,
    pub resource: Vec<KeyValue>,
}

impl ExportSettings {
    /// The settings, `Ok(None)` when tracing is off (no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`), or why the variables cannot be used.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let url = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "the OTLP endpoint {url} is not an http:// or https:// URL"
            ));
        }
        let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|| "http/protobuf".into());
        if protocol != "http/protobuf" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL is {protocol}: Plinth exports http/protobuf only \
                 (point the endpoint at the collector's OTLP/HTTP port, usually 4318)"
            ));
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for pair in get(var).unwrap_or_default().split(',') {
                if let Some((k, v)) = pair.split_once('=') {
                    headers.push((k.trim().to_string(), percent_decode(v.trim())));
                }
            }
        }
        let timeout = get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| get("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map(|ms| {
                ms.parse::<u64>()
                    .map_err(|_| format!("OTEL_EXPORTER_OTLP_TIMEOUT is {ms}, not milliseconds"))
            })
            .transpose()?
            .map_or(Duration::from_secs(10), Duration::from_millis);
        // OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME over its service.name.
        let mut resource = BTreeMap::new();
        resource.insert("service.name".to_string(), "plinth".to_string());
        for pair in get("OTEL_RESOURCE_ATTRIBUTES")
            .unwrap_or_default()
            .split(',')
        {
            if let Some((k, v)) = pair.split_once('=') {
                resource.insert(k.trim().to_string(), percent_decode(v.trim()));
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            resource.insert("service.name".into(), name);
        }
        resource.insert(
            "service.version".into(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        resource.insert("telemetry.sdk.name".into(), "plinth".into());
        resource.insert("telemetry.sdk.language".into(), "rust".into());
        let resource = resource
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, Value::String(v)))
            .collect();
        Ok(Some(ExportSettings {
            url,
            headers,
            timeout,
            resource,
        }))
    }
}

/// `%2C` and the like, as the OTEL variables' values may carry them.
fn percent_decode(v: &str) -> String {
    percent_encoding::percent_decode_str(v)
        .decode_utf8_lossy()
        .into_owned()
}

/// What the exporter thread is sent.
pub enum Message {
    Span(Span),
    /// Send what is queued now, then answer.
    Flush(SyncSender<()>),
}

/// The sending side: spans are queued without waiting; a full queue drops them (and counts).
#[derive(Clone)]
pub struct Exporter {
    url: String,
    queue: SyncSender<Message>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Spans held before the oldest wait for room is a drop.
const QUEUE: usize = 8192;
/// Spans in one export request.
const BATCH: usize = 512;
/// How long a finished span waits for its batch to fill.
const DELAY: Duration = Duration::from_millis(500);

impl Exporter {
    /// Starts the exporter thread.
    pub fn start(settings: ExportSettings) -> std::io::Result<Exporter> {
        let (queue, inbox) = std::sync::mpsc::sync_channel(QUEUE);
        let url = settings.url.clone();
        std::thread::Builder::new()
            .name("plinth-otlp".into())
            .spawn(move || run(settings, inbox))?;
        Ok(Exporter {
            url,
            queue,
            dropped: Default::default(),
        })
    }

    /// Where the spans go.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn send(&self, span: Span) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Message::Span(span)) {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "the trace exporter is behind; spans dropped"
                );
            }
        }
    }

    /// Sends what is queued, waiting at most `wait`.
    pub fn flush(&self, wait: Duration) {
        let (done, answered) = std::sync::mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = answered.recv_timeout(wait);
        }
    }
}

/// The exporter thread: collects spans into batches and posts each.
fn run(settings: ExportSettings, inbox: Receiver<Message>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the trace exporter cannot start");
            return;
        }
    };
    let client = match http_client::Client::builder()
        .timeout(settings.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the trace exporter cannot start");
            return;
        }
    };
    let mut batch: Vec<Span> = Vec::new();
    let mut oldest = Instant::now();
    loop {
        let wait = if batch.is_empty() {
            Duration::from_secs(3600)
        } else {
            DELAY.saturating_sub(oldest.elapsed())
        };
        let mut flushed = None;
        match inbox.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                if batch.is_empty() {
                    oldest = Instant::now();
                }
                batch.push(span);
                if batch.len() < BATCH {
                    continue;
                }
            }
            Ok(Message::Flush(done)) => flushed = Some(done),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                runtime.block_on(post(&client, &settings, std::mem::take(&mut batch)));
                return;
            }
        }
        let spans = std::mem::take(&mut batch);
        runtime.block_on(post(&client, &settings, spans));
        if let Some(done) = flushed {
            let _ = done.try_send(());
        }
    }
}

/// One export request; a failure is logged and the batch dropped, as the OTLP specification
/// allows.
async fn post(client: &http_client::Client, settings: &ExportSettings, spans: Vec<Span>) {
    if spans.is_empty() {
        return;
    }
    let n = spans.len();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: settings.resource.clone(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "plinth".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }),
                spans,
            }],
        }],
    };
    let mut builder = client
        .post(&settings.url)
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&request));
    for (k, v) in &settings.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    match builder.send().await {
        Ok(res) if res.status().is_success() => {}
        Ok(res) => tracing::warn!(
            endpoint = %settings.url,
            status = res.status().as_u16(),
            spans = n,
            "the OTLP endpoint refused spans"
        ),
        Err(e) => tracing::warn!(
            endpoint = %settings.url,
            error = %e,
            spans = n,
            "cannot send spans to the OTLP endpoint"
        ),
    }
}
