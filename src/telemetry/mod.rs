//! The log subscriber, request ids and traces. The middleware that assigns the ids, writes one
//! log line per request and opens each request's span is [`crate::web::middleware`].
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or `_TRACES_ENDPOINT`) set, Plinth's spans are
//! exported over OTLP/HTTP ([`otlp`]), sampled by `OTEL_TRACES_SAMPLER` ([`layer`]). Unset,
//! no layer is installed: the spans cost what they cost the log, nothing more.

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub mod layer;
pub mod otlp;

use layer::{OtlpLayer, Sampler, SpanContext};

/// The running exporter, flushed at exit.
static EXPORTER: OnceLock<otlp::Exporter> = OnceLock::new();

/// The trace layer the standard variables ask for: `Ok(None)` when tracing is off.
fn otlp_layer() -> Result<Option<OtlpLayer>, String> {
    let get = |k: &str| std::env::var(k).ok();
    let Some(settings) = otlp::ExportSettings::from_lookup(get)? else {
        return Ok(None);
    };
    let sampler = Sampler::from_lookup(get)?;
    let exporter = otlp::Exporter::start(settings)
        .map_err(|e| format!("the trace exporter cannot start: {e}"))?;
    let _ = EXPORTER.set(exporter.clone());
    Ok(Some(OtlpLayer { sampler, exporter }))
}

/// Sets up the global `tracing` subscriber. `PLINTH_LOG` (or `RUST_LOG`) filters, default `info`;
/// `PLINTH_LOG_FORMAT=json` writes one JSON object per line (for CloudWatch, Cloud Logging and
/// Azure Monitor), anything else the readable text format. Traces as the module says.
pub fn init() {
    let filter = std::env::var("PLINTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn,actix_server=warn".to_string());
    let json = std::env::var("PLINTH_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let fmt = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(tracing_subscriber::EnvFilter::new(filter))
            .boxed()
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(tracing_subscriber::EnvFilter::new(filter))
            .boxed()
    };
    let (traces, refused) = match otlp_layer() {
        Ok(layer) => (layer, None),
        Err(why) => (None, Some(why)),
    };
    // Plinth's own spans (its crates' targets all start with `plinth`), at info and above.
    let traces = traces.map(|layer| {
        layer.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span()
                && meta.target().starts_with("plinth")
                && *meta.level() <= tracing::Level::INFO
        }))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(traces)
        .try_init();
    if let Some(why) = refused {
        tracing::error!("traces are off: {why}");
    } else if let Some(exporter) = EXPORTER.get() {
        tracing::info!(endpoint = %exporter.url(), "exporting traces over OTLP/HTTP");
    }
}

/// Sends the spans still queued (at exit), waiting at most two seconds.
pub fn flush() {
    if let Some(exporter) = EXPORTER.get() {
        exporter.flush(Duration::from_secs(2));
    }
}

/// The W3C `traceparent` of the current span, when traces are on: what an outgoing call
/// (a webhook delivery) sends so that its receiver continues the trace.
pub fn traceparent() -> Option<String> {
    let mut found = None;
    tracing::Span::current().with_subscriber(|(id, dispatch)| {
        use tracing_subscriber::registry::LookupSpan;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(id)?;
        found = span
            .extensions()
            .get::<SpanContext>()
            .map(SpanContext::traceparent);
        Some(())
    });
    found
}

/// The id of one request, shown on error pages and written in its log line.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The request id of `req`, or `-` outside the middleware (unit tests).
pub fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map_or_else(|| "-".to_string(), |id| id.0.clone())
}
