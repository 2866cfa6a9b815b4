//! Alerts: events queued as webhook deliveries in Postgres, sent by every instance's worker,
//! retried with exponential backoff, and kept with every attempt and what came back.
//!
//! The body is JSON with a Slack-compatible `text` line, the event's name, the model and the
//! event's own detail; a Slack (or Mattermost, Teams workflow) incoming webhook shows the text.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

use plinth_store::webhooks::{self as db, AttemptResult, Due};

/// The events a webhook can ask for, with what each means.
pub const EVENTS: [(&str, &str); 6] = [
    ("drift.flagged", "drift flagged on a production version"),
    (
        "error_rate.crossed",
        "production's error rate over a rollback rule's threshold",
    ),
    (
        "promotion",
        "a promotion rule fired (moved production, or would have)",
    ),
    (
        "rollback",
        "a rollback rule fired (moved production back, or would have)",
    ),
    ("job.failed", "a batch job failed"),
    ("stream.failed", "a Kafka stream failed"),
];

/// Whether `event` is one a webhook can ask for.
pub fn is_event(event: &str) -> bool {
    EVENTS.iter().any(|(e, _)| *e == event)
}

/// The body every webhook receives.
pub fn body(
    event: &str,
    model: Option<&str>,
    text: &str,
    extra: serde_json::Value,
) -> serde_json::Value {
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut body = json!({"text": text, "event": event, "model": model, "at": at});
    if let (Some(map), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        for (k, v) in extra {
            map.entry(k).or_insert(v);
        }
    }
    body
}

/// Queues `event` for the webhooks that want it (the global ones and the model's). Never fails
/// its caller: an alert that cannot be queued is logged.
pub async fn alert(
    pool: &PgPool,
    event: &str,
    model: Option<(i64, &str)>,
    text: String,
    extra: serde_json::Value,
) {
    let body = body(event, model.map(|(_, name)| name), &text, extra);
    let traceparent = crate::telemetry::traceparent();
    let model_id = model.map(|(id, _)| id);
    match db::enqueue(pool, event, model_id, &body, traceparent.as_deref()).await {
        Ok(n) => tracing::info!(event, deliveries = n, %text, "alert"),
        Err(e) => tracing::warn!(event, error = %e, %text, "could not queue the alert"),
    }
}

/// How deliveries are sent and retried.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// The wait before the first retry; each later one waits twice the one before (at most an
    /// hour).
    pub first_retry: Duration,
    /// Attempts before a delivery is given up as failed.
    pub attempts: i32,
    /// One attempt's time limit.
    pub timeout: Duration,
}

impl Policy {
    /// The wait after attempt `n` failed, or None when it was the last.
    pub fn retry_after(&self, n: i32) -> Option<Duration> {
        if n >= self.attempts {
            return None;
        }
        let doubled = self
            .first_retry
            .saturating_mul(1u32 << (n.clamp(1, 20) - 1) as u32);
        Some(doubled.min(Duration::from_secs(3600)))
    }
}

/// The start of a response body the page keeps.
const KEPT_RESPONSE: usize = 2000;

/// One attempt: POST the body, keep the status and the start of the answer.
async fn send(client: &http_client::Client, due: &Due) -> AttemptResult {
    let started = Instant::now();
    let mut request = client
        .post(&due.url)
        .header("content-type", "application/json")
        .header("x-plinth-event", &due.event)
        .header("x-plinth-delivery", due.id.to_string());
    if let Some(traceparent) = &due.traceparent {
        request = request.header("traceparent", traceparent);
    }
    let sent = request.body(due.body.0.to_string()).send().await;
    let mut result = AttemptResult::default();
    match sent {
        Ok(mut response) => {
            result.status = Some(i32::from(response.status().as_u16()));
            let mut kept = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        kept.extend_from_slice(
                            &chunk[..chunk.len().min(KEPT_RESPONSE - kept.len())],
                        );
                        if kept.len() >= KEPT_RESPONSE {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        result.error = Some(format!("reading the response: {e}"));
                        break;
                    }
                }
            }
            result.response = Some(String::from_utf8_lossy(&kept).into_owned());
        }
        Err(e) => {
            // The cause chain says what failed (refused, timed out, name not found).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            result.error = Some(text);
        }
    }
    result.duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
    result
}

/// Sends due deliveries until the task is aborted: up to eight at once, looking again every
/// second when none are due (alerts are not latency-critical; many instances poll).
pub async fn deliver(pool: PgPool, policy: Policy) {
    use futures_util::stream::{self, StreamExt};
    let client = match http_client::Client::builder()
        .timeout(policy.timeout)
        .redirect(http_client::redirect::Policy::none())
        .user_agent(concat!("Plinth/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the webhooks");
            return;
        }
    };
    // A claim outlives an attempt, so no two instances send one delivery at once.
    let lease = policy.timeout + Duration::from_secs(30);
    loop {
        let due = match db::claim_due(&pool, 8, lease).await {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %e, "could not claim webhook deliveries");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        stream::iter(due)
            .for_each_concurrent(8, |due| {
                let (client, pool) = (&client, &pool);
                async move {
                    let result = send(client, &due).await;
                    let retry = if result.succeeded() {
                        None
                    } else {
                        policy.retry_after(due.attempts)
                    };
                    if !result.succeeded() {
                        tracing::warn!(url = %due.url, event = %due.event, attempt = due.attempts,
                            status = ?result.status, error = ?result.error, retry_in = ?retry,
                            "a webhook delivery failed");
                    }
                    if let Err(e) = db::record_attempt(pool, &due, &result, retry).await {
                        tracing::warn!(error = %e, "could not record a webhook attempt");
                    }
                }
            })
            .await;
    }
}

/// A URL a webhook may be sent to: http or https, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("The webhook URL must start with http:// or https://.")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || url.len() > 2000 {
        return Err(
            "The webhook URL needs a host, no spaces, and at most 2,000 characters.".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_and_stop_at_the_last_attempt() {
        let p = Policy {
            first_retry: Duration::from_secs(10),
            attempts: 4,
            timeout: Duration::from_secs(5),
        };
        assert_eq!(p.retry_after(1), Some(Duration::from_secs(10)));
        assert_eq!(p.retry_after(2), Some(Duration::from_secs(20)));
        assert_eq!(p.retry_after(3), Some(Duration::from_secs(40)));
        assert_eq!(p.retry_after(4), None);
        let long = Policy { attempts: 30, ..p };
        assert_eq!(long.retry_after(25), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn the_body_has_slack_s_text_and_the_event() {
        let b = body(
            "rollback",
            Some("iris"),
            "rolled back",
            json!({"acted": true, "text": "x"}),
        );
        assert_eq!(b["text"], "rolled back");
        assert_eq!(b["event"], "rollback");
        assert_eq!(b["model"], "iris");
        assert_eq!(b["acted"], true);
        assert!(b["at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn webhook_urls_are_http_with_a_host() {
        assert!(check_url("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("ftp://x/").is_err());
        assert!(check_url("http:///path").is_err());
        assert!(check_url("https://a b/").is_err());
    }
}
