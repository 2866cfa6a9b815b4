//! OpenTelemetry traces: a real `plinth serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set sends its
//! spans to an OTLP/HTTP receiver (tests/otlp/receiver.py), which decodes them with the official
//! protobuf definitions; the test reads back one request's tree.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::setosa;
use crate::instances::Instance;

/// The receiver, stopped with the test.
struct Receiver {
    child: Child,
    port: u16,
    spans: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &std::path::Path) -> Receiver {
        let python =
            std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "target/ci-venv/bin/python".into());
        let spans = dir.join("spans.jsonl");
        let mut child = Command::new(&python)
            .arg("tests/otlp/receiver.py")
            .arg(&spans)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python}: {e} (tests/requirements.txt)"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver did not start: {line:?}"));
        Receiver { child, port, spans }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace`, once `wanted` of them have arrived (or what came in 15 s).
    async fn trace(&self, trace: &str, wanted: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            if spans.len() >= wanted || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[sqlx::test]
#[ignore = "needs the tests' Python with opentelemetry-proto (tests/requirements.txt; scripts/test installs it)"]
async fn a_requests_spans_reach_an_otlp_receiver_as_one_tree_in_the_callers_trace(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(scratch.path());
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    let instance = Instance::start(
        &pool,
        scratch.path(),
        &[
            ("PLINTH_MODELS", "models".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20otlp-key".into(),
            ),
            ("OTEL_SERVICE_NAME", "plinth-under-test".into()),
        ],
    )
    .await;
    let token = instance.app.token_for("ada", false).await;
    let predict = |traceparent: Option<String>| {
        let mut request = instance
            .app
            .client
            .post(instance.app.url("/api/v1/models/iris/predict"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "inputs": setosa() }));
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        request.send()
    };

    // A caller's trace, sampled by the caller: Plinth's spans join it.
    let (trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let res = predict(Some(format!("00-{trace}-{caller_span}-01")))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // A caller's trace it did not sample: under the default parent-based sampler, nothing of it
    // is recorded.
    let unsampled = "5bf92f3577b34da6a3ce929d0e0e4736";
    let res = predict(Some(format!("00-{unsampled}-{caller_span}-00")))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // No traceparent: a trace of its own.
    let res = predict(None).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let spans = receiver.trace(trace, 4).await;
    let server = named(&spans, "POST /api/v1/models/{name}/predict");
    assert_eq!(server["kind"], 2, "a server span");
    assert_eq!(
        server["parent_span_id"], caller_span,
        "the caller's span is its parent"
    );
    assert_eq!(
        server["flags"].as_u64().unwrap() & 0x301,
        0x301,
        "sampled, remote parent"
    );
    let attributes = &server["attributes"];
    assert_eq!(attributes["http.request.method"], "POST");
    assert_eq!(attributes["http.route"], "/api/v1/models/{name}/predict");
    assert_eq!(attributes["url.path"], "/api/v1/models/iris/predict");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["plinth.model"], "iris");
    assert_eq!(attributes["plinth.version"], 1);
    assert_eq!(server["status"], 0, "not an error");
    assert_eq!(server["resource"]["service.name"], "plinth-under-test");
    assert_eq!(
        server["authorization"], "Bearer otlp-key",
        "OTEL_EXPORTER_OTLP_HEADERS sent"
    );
    let server_id = server["span_id"].as_str().unwrap();
    for child in ["authenticate", "inference", "prediction_log.commit"] {
        let span = named(&spans, child);
        assert_eq!(
            span["parent_span_id"], server_id,
            "{child} is the request's child"
        );
        assert!(
            span["start"].as_u64() >= server["start"].as_u64()
                && span["end"].as_u64() <= server["end"].as_u64(),
            "{child} lies within the request"
        );
    }
    assert_eq!(named(&spans, "inference")["attributes"]["rows"], 1);
    assert_eq!(
        named(&spans, "authenticate")["attributes"]["credential"],
        "token"
    );

    // The unsampled trace left nothing; the request without a caller's trace began its own.
    let deadline = Instant::now() + Duration::from_secs(15);
    let own = loop {
        let own: Vec<Value> = receiver
            .spans()
            .into_iter()
            .filter(|s| s["trace_id"] != trace && s["name"] == "POST /api/v1/models/{name}/predict")
            .collect();
        if !own.is_empty() || Instant::now() > deadline {
            break own;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(own.len(), 1, "{own:#?}");
    assert_eq!(own[0]["parent_span_id"], "", "a root span");
    assert!(receiver.spans().iter().all(|s| s["trace_id"] != unsampled));
}
