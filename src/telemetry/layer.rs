//! Plinth's `tracing` spans as OpenTelemetry spans: each span gets a trace and span id (its
//! parent's trace, a caller's `traceparent`, or a new one), the sampler decides once per trace,
//! and a sampled span's fields become its attributes and are exported when it closes.
//!
//! Fields with a meaning of their own: `otel.name` (the span's name), `otel.kind` (`server`,
//! `client`, `producer`, `consumer`), `otel.status_code` (`error`), `otel.status_message`, and
//! `traceparent` (a caller's W3C header: the span continues that trace; not an attribute).
//! The request span keeps the short field names its log lines have (`method`, `path`, `route`,
//! `status`, `model`, `version`); here they get their semantic-convention names
//! (`http.request.method`, `url.path`, `http.route`, `http.response.status_code`,
//! `plinth.model`, `plinth.version`), and a span with a method and a route is a server span
//! named `METHOD route`, an error when its status is 5xx.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::otlp::{Exporter, KeyValue, Span, Status, Value};

/// A span's place in its trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanContext {
    /// The W3C `traceparent` header of this span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }

    /// A `traceparent` header: version 00 (or a later one, read as 00), ids not all zero.
    pub fn parse(header: &str) -> Option<SpanContext> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        Some(SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// Which traces are recorded: `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// Follow a caller's sampled flag (the `parentbased_` samplers).
    pub parent_based: bool,
    /// The share of new traces recorded.
    pub ratio: f64,
}

impl Sampler {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Sampler, String> {
        let name = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
        let arg = || -> Result<f64, String> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        format!("OTEL_TRACES_SAMPLER_ARG is {v}, not a ratio from 0 to 1")
                    }),
            }
        };
        let (parent_based, ratio) = match name.trim() {
            "always_on" => (false, 1.0),
            "always_off" => (false, 0.0),
            "traceidratio" => (false, arg()?),
            "parentbased_always_on" => (true, 1.0),
            "parentbased_always_off" => (true, 0.0),
            "parentbased_traceidratio" => (true, arg()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER is {other}: use always_on, always_off, traceidratio or \
                     their parentbased_ forms"
                ))
            }
        };
        Ok(Sampler {
            parent_based,
            ratio,
        })
    }

    /// Whether a new trace (or one a caller continues) is recorded. The ratio looks at the
    /// trace id's last 8 bytes, so every instance decides alike for one trace.
    pub fn sample(&self, trace_id: &[u8; 16], remote: Option<bool>) -> bool {
        if let (true, Some(sampled)) = (self.parent_based, remote) {
            return sampled;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        let x = u64::from_be_bytes(low) >> 1;
        (x as f64) < self.ratio * (1u64 << 63) as f64
    }
}

/// A sampled span while it is open.
struct Recording {
    name: String,
    kind: i32,
    parent: Option<[u8; 8]>,
    remote_parent: bool,
    start: u64,
    attributes: Vec<KeyValue>,
    error: bool,
    status_message: String,
}

/// The layer: give it to the subscriber only when tracing is on.
pub struct OtlpLayer {
    pub sampler: Sampler,
    pub exporter: Exporter,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanContext>().copied());
        let remote = fields.traceparent.as_deref().and_then(SpanContext::parse);
        let (trace_id, parent_id, sampled, remote_parent) = match (parent, remote) {
            (Some(p), _) => (p.trace_id, Some(p.span_id), p.sampled, false),
            (None, Some(r)) => (
                r.trace_id,
                Some(r.span_id),
                self.sampler.sample(&r.trace_id, Some(r.sampled)),
                true,
            ),
            (None, None) => {
                let trace_id: [u8; 16] = rand::random();
                (trace_id, None, self.sampler.sample(&trace_id, None), false)
            }
        };
        let context = SpanContext {
            trace_id,
            span_id: rand::random(),
            sampled,
        };
        let mut extensions = span.extensions_mut();
        extensions.insert(context);
        if sampled {
            let meta = span.metadata();
            extensions.insert(Recording {
                name: fields
                    .name
                    .take()
                    .unwrap_or_else(|| meta.name().to_string()),
                kind: fields.kind.unwrap_or(1),
                parent: parent_id,
                remote_parent,
                start: now_nanos(),
                attributes: std::mem::take(&mut fields.attributes),
                error: fields.error,
                status_message: std::mem::take(&mut fields.status_message),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(recording) = extensions.get_mut::<Recording>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(name) = fields.name {
            recording.name = name;
        }
        if let Some(kind) = fields.kind {
            recording.kind = kind;
        }
        recording.error |= fields.error;
        if !fields.status_message.is_empty() {
            recording.status_message = fields.status_message;
        }
        for kv in fields.attributes {
            match recording.attributes.iter_mut().find(|a| a.key == kv.key) {
                Some(existing) => *existing = kv,
                None => recording.attributes.push(kv),
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let (Some(recording), Some(context)) = (
            extensions.remove::<Recording>(),
            extensions.get_mut::<SpanContext>().map(|c| *c),
        ) else {
            return;
        };
        let flags = 1 | if recording.remote_parent {
            0x300
        } else {
            0x100
        };
        let mut recording = recording;
        let attribute = |key: &str| {
            recording
                .attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.as_ref()?.value.clone())
        };
        if let (Some(Value::String(method)), Some(Value::String(route))) =
            (attribute("http.request.method"), attribute("http.route"))
        {
            recording.name = format!("{method} {route}");
            recording.kind = 2;
        }
        if let Some(Value::Int(status)) = attribute("http.response.status_code") {
            recording.error |= status >= 500;
        }
        self.exporter.send(Span {
            trace_id: context.trace_id.to_vec(),
            span_id: context.span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: recording.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: recording.name,
            kind: recording.kind,
            start_time_unix_nano: recording.start,
            end_time_unix_nano: now_nanos(),
            attributes: recording.attributes,
            status: recording.error.then_some(Status {
                message: recording.status_message,
                code: 2,
            }),
            flags,
        });
    }
}

/// A span's fields, sorted into its name, kind, status, remote parent and attributes.
#[derive(Default)]
struct Fields {
    name: Option<String>,
    kind: Option<i32>,
    error: bool,
    status_message: String,
    traceparent: Option<String>,
    attributes: Vec<KeyValue>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let text = || match &value {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        match field.name() {
            "otel.name" => self.name = Some(text()),
            "otel.kind" => {
                self.kind = Some(match text().as_str() {
                    "server" => 2,
                    "client" => 3,
                    "producer" => 4,
                    "consumer" => 5,
                    _ => 1,
                })
            }
            "otel.status_code" => self.error = text().eq_ignore_ascii_case("error"),
            "otel.status_message" => self.status_message = text(),
            "traceparent" => self.traceparent = Some(text()),
            key => self.attributes.push(KeyValue::new(semantic(key), value)),
        }
    }
}

/// The semantic-convention name of a request span's field.
fn semantic(key: &str) -> &str {
    match key {
        "method" => "http.request.method",
        "path" => "url.path",
        "route" => "http.route",
        "status" => "http.response.status_code",
        "model" => "plinth.model",
        "version" => "plinth.version",
        other => other,
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Int(value.min(i64::MAX as u64) as i64));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Double(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_headers_are_read_and_written_as_w3c_says() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = SpanContext::parse(header).expect("a valid header");
        assert!(context.sampled);
        assert_eq!(context.traceparent(), header);
        let unsampled = SpanContext::parse(&header.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz",
            "",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields: its first four are read.
        assert!(SpanContext::parse(&format!("01{}-more", &header[2..])).is_some());
    }

    #[test]
    fn the_samplers_follow_the_standard_variables() {
        let sampler = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Sampler::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        let default = sampler(&[]).unwrap();
        assert_eq!(
            default,
            Sampler {
                parent_based: true,
                ratio: 1.0
            }
        );
        let tenth = sampler(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ])
        .unwrap();
        let kept = (0..20_000u32)
            .filter(|_| tenth.sample(&rand::random(), None))
            .count();
        assert!((1_600..2_400).contains(&kept), "{kept} of 20000 at 0.1");
        // A caller's decision wins under a parent-based sampler, not under a plain one.
        assert!(tenth.sample(&[0xff; 16], Some(true)));
        assert!(!tenth.sample(&[0; 16], Some(false)));
        let plain = sampler(&[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
        assert!(!plain.sample(&[0; 16], Some(true)));
        assert!(sampler(&[("OTEL_TRACES_SAMPLER", "sometimes")])
            .unwrap_err()
            .contains("sometimes"));
        assert!(sampler(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2")
        ])
        .is_err());
    }
}
