//! `webhook`, `webhook_delivery` and `webhook_attempt`: where alerts go, and every attempt to
//! deliver them.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: i64,
    /// None for a global webhook.
    pub model: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub delivered: i64,
    pub failed: i64,
    pub pending: i64,
}

/// Webhooks (all of them, or the one with id `only`) with their deliveries' counts.
async fn with_counts(pool: &PgPool, only: Option<i64>) -> sqlx::Result<Vec<WebhookRow>> {
    sqlx::query_as(
        "select w.id, m.name as model, w.url, w.events, w.enabled, w.created_at,
                count(d.id) filter (where d.state = 'delivered') as delivered,
                count(d.id) filter (where d.state = 'failed') as failed,
                count(d.id) filter (where d.state = 'pending') as pending
         from webhook w
         left join model m on m.id = w.model_id
         left join webhook_delivery d on d.webhook_id = w.id
         where $1::bigint is null or w.id = $1
         group by w.id, m.name order by w.id",
    )
    .bind(only)
    .fetch_all(pool)
    .await
}

/// Every webhook with its deliveries' counts.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<WebhookRow>> {
    with_counts(pool, None).await
}

/// One webhook with its deliveries' counts.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<WebhookRow>> {
    Ok(with_counts(pool, Some(id)).await?.pop())
}

/// Adds a webhook (global when `model_id` is None); its id.
pub async fn create(
    pool: &PgPool,
    model_id: Option<i64>,
    url: &str,
    events: &[String],
    actor: Option<i64>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into webhook (model_id, url, events, created_by) values ($1, $2, $3, $4)
         returning id",
    )
    .bind(model_id)
    .bind(url)
    .bind(events)
    .bind(actor)
    .fetch_one(pool)
    .await
}

/// Removes a webhook and its deliveries; its URL, or None when there was none.
pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("delete from webhook where id = $1 returning url")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Queues `event` for every enabled webhook that wants it: the global ones and those of
/// `model_id`. How many deliveries were queued.
pub async fn enqueue(
    pool: &PgPool,
    event: &str,
    model_id: Option<i64>,
    body: &serde_json::Value,
    traceparent: Option<&str>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "insert into webhook_delivery (webhook_id, event, body, traceparent)
         select id, $1, $3, $4 from webhook
         where enabled and (model_id is null or model_id = $2)
           and (cardinality(events) = 0 or $1 = any(events))",
    )
    .bind(event)
    .bind(model_id)
    .bind(Json(body))
    .bind(traceparent)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Queues `event` for one webhook only (a test from the admin page).
pub async fn enqueue_for(
    pool: &PgPool,
    webhook_id: i64,
    event: &str,
    body: &serde_json::Value,
    traceparent: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "insert into webhook_delivery (webhook_id, event, body, traceparent)
         select id, $2, $3, $4 from webhook where id = $1",
    )
    .bind(webhook_id)
    .bind(event)
    .bind(Json(body))
    .bind(traceparent)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A delivery claimed for an attempt.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub url: String,
    pub event: String,
    pub body: Json<serde_json::Value>,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    /// The trace context of what queued it, sent as `traceparent`.
    pub traceparent: Option<String>,
}

/// Claims up to `limit` due deliveries for an attempt each. A claim holds for `lease`: an
/// instance that dies while sending leaves the delivery to another after it.
pub async fn claim_due(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as(
        "with due as (
             select id from webhook_delivery
             where state = 'pending' and next_attempt_at <= now()
             order by next_attempt_at, id
             for update skip locked
             limit $1)
         update webhook_delivery d
            set attempts = d.attempts + 1,
                next_attempt_at = now() + make_interval(secs => $2)
           from due, webhook w
          where d.id = due.id and w.id = d.webhook_id
         returning d.id, w.url, d.event, d.body, d.attempts, d.traceparent",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// What one attempt got back.
#[derive(Clone, Debug, Default)]
pub struct AttemptResult {
    pub status: Option<i32>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

impl AttemptResult {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Records an attempt and settles the delivery: delivered on a 2xx; otherwise due again after
/// `retry_in`, or failed for good when that is None.
pub async fn record_attempt(
    pool: &PgPool,
    due: &Due,
    result: &AttemptResult,
    retry_in: Option<Duration>,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into webhook_attempt (delivery_id, attempt, status, response, error, duration_ms)
         values ($1, $2, $3, $4, $5, $6) on conflict do nothing",
    )
    .bind(due.id)
    .bind(due.attempts)
    .bind(result.status)
    .bind(&result.response)
    .bind(&result.error)
    .bind(result.duration_ms)
    .execute(&mut *tx)
    .await?;
    let state = if result.succeeded() {
        "delivered"
    } else if retry_in.is_some() {
        "pending"
    } else {
        "failed"
    };
    sqlx::query(
        "update webhook_delivery
            set state = $2, last_status = $3, last_response = $4, last_error = $5,
                next_attempt_at = now() + make_interval(secs => $6),
                delivered_at = case when $2 = 'delivered' then now() end
          where id = $1",
    )
    .bind(due.id)
    .bind(state)
    .bind(result.status)
    .bind(&result.response)
    .bind(&result.error)
    .bind(retry_in.unwrap_or_default().as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A delivery as the admin page shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: i64,
    pub url: String,
    pub event: String,
    pub body: Json<serde_json::Value>,
    pub state: String,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_response: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
}

/// The latest deliveries, of one webhook or of all.
pub async fn deliveries(
    pool: &PgPool,
    webhook_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as(
        "select d.id, d.webhook_id, w.url, d.event, d.body, d.state, d.attempts, d.last_status,
                d.last_response, d.last_error, d.next_attempt_at, d.created_at, d.delivered_at
         from webhook_delivery d join webhook w on w.id = d.webhook_id
         where $1::bigint is null or d.webhook_id = $1
         order by d.id desc limit $2",
    )
    .bind(webhook_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One attempt at a delivery.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: i64,
    pub attempt: i32,
    pub status: Option<i32>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub created_at: OffsetDateTime,
}

/// The attempts at the given deliveries, in order.
pub async fn attempts(pool: &PgPool, deliveries: &[i64]) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "select delivery_id, attempt, status, response, error, duration_ms, created_at
         from webhook_attempt where delivery_id = any($1) order by delivery_id, attempt",
    )
    .bind(deliveries)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn events_go_to_the_webhooks_that_want_them_and_attempts_settle_them(
        pool: PgPool,
    ) -> sqlx::Result<()> {
        let a: i64 = sqlx::query_scalar("insert into model (name) values ('a') returning id")
            .fetch_one(&pool)
            .await?;
        let b: i64 = sqlx::query_scalar("insert into model (name) values ('b') returning id")
            .fetch_one(&pool)
            .await?;
        let global = create(&pool, None, "http://g/", &[], None).await?;
        let of_a = create(&pool, Some(a), "http://a/", &["rollback".into()], None).await?;
        create(&pool, Some(b), "http://b/", &[], None).await?;

        // A rollback of a: the global webhook and a's; drift of a: only the global one.
        assert_eq!(
            enqueue(&pool, "rollback", Some(a), &serde_json::json!({}), None).await?,
            2
        );
        assert_eq!(
            enqueue(
                &pool,
                "drift.flagged",
                Some(a),
                &serde_json::json!({}),
                None
            )
            .await?,
            1
        );
        assert_eq!(
            enqueue(&pool, "job.failed", None, &serde_json::json!({}), None).await?,
            1
        );

        let hour = Duration::from_secs(3600);
        let due = claim_due(&pool, 10, hour).await?;
        assert_eq!(due.len(), 4);
        assert!(due.iter().all(|d| d.attempts == 1));
        // Claimed: not due again within the lease.
        assert!(claim_due(&pool, 10, hour).await?.is_empty());

        let to_a = due.iter().find(|d| d.url == "http://a/").unwrap();
        let refused = AttemptResult {
            status: Some(500),
            response: Some("down".into()),
            ..Default::default()
        };
        record_attempt(&pool, to_a, &refused, Some(Duration::ZERO)).await?;
        let again = claim_due(&pool, 10, hour).await?;
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id, again[0].attempts), (to_a.id, 2));
        let ok = AttemptResult {
            status: Some(204),
            ..Default::default()
        };
        record_attempt(&pool, &again[0], &ok, Some(Duration::ZERO)).await?;
        let gone = due.iter().find(|d| d.url == "http://g/").unwrap();
        record_attempt(&pool, gone, &refused, None).await?;

        let rows = deliveries(&pool, Some(of_a), 10).await?;
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].state.as_str(), rows[0].attempts), ("delivered", 2));
        let tries = attempts(&pool, &[to_a.id]).await?;
        assert_eq!(
            tries.iter().map(|t| t.status).collect::<Vec<_>>(),
            [Some(500), Some(204)]
        );
        assert_eq!(list(&pool).await?.len(), 3);
        let g = get(&pool, global).await?.unwrap();
        assert_eq!((g.delivered, g.failed, g.pending), (0, 1, 2));
        assert!(delete(&pool, of_a).await?.is_some());
        assert!(deliveries(&pool, Some(of_a), 10).await?.is_empty());
        Ok(())
    }
}
