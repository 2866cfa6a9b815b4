//! The `stream` and `stream_partition` tables: Kafka streams and how far each partition is
//! stored.

use std::collections::HashMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use super::predictions::{copy_in_on, NewPredictions};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StreamRow {
    pub id: i64,
    pub model_id: i64,
    pub model: String,
    pub alias: String,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub state: String,
    pub records: i64,
    pub dead_letters: i64,
    pub lag: Option<i64>,
    pub lag_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// Why the stream is not flowing, in words for an operator; `None` once records flow.
    pub last_error: Option<String>,
    pub last_error_at: Option<OffsetDateTime>,
}

const SELECT: &str = "select s.id, s.model_id, m.name as model, s.alias, s.input_topic,
        s.output_topic, s.dead_letter_topic, s.group_id, s.state, s.records, s.dead_letters,
        s.lag, s.lag_at, s.created_at, s.last_error, s.last_error_at
    from stream s join model m on m.id = s.model_id";

pub async fn all(pool: &PgPool) -> sqlx::Result<Vec<StreamRow>> {
    sqlx::query_as(&format!("{SELECT} order by m.name, s.id"))
        .fetch_all(pool)
        .await
}

pub async fn of_model(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<StreamRow>> {
    sqlx::query_as(&format!("{SELECT} where s.model_id = $1 order by s.id"))
        .bind(model_id)
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<StreamRow>> {
    sqlx::query_as(&format!("{SELECT} where s.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A new stream; `None` when the model already reads that topic.
pub async fn create(
    pool: &PgPool,
    model_id: i64,
    topics: (&str, &str, &str),
    group_id: &str,
    alias: &str,
    by: i64,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "insert into stream (model_id, input_topic, output_topic, dead_letter_topic, group_id, alias, created_by)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (model_id, input_topic) do nothing returning id",
    )
    .bind(model_id)
    .bind(topics.0)
    .bind(topics.1)
    .bind(topics.2)
    .bind(group_id)
    .bind(alias)
    .bind(by)
    .fetch_optional(pool)
    .await
}

/// Pauses or resumes; the state it had before, `None` for no such stream.
pub async fn set_state(pool: &PgPool, id: i64, state: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "update stream s set state = $2 from (select id, state from stream where id = $1 for update) old
         where s.id = old.id returning old.state",
    )
    .bind(id)
    .bind(state)
    .fetch_optional(pool)
    .await
}

/// Each partition's next offset to store.
pub async fn watermarks(pool: &PgPool, stream_id: i64) -> sqlx::Result<HashMap<i32, i64>> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("select partition, next_offset from stream_partition where stream_id = $1")
            .bind(stream_id)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A batch of records scored, to commit.
pub struct Batch<'a> {
    pub stream_id: i64,
    /// Per partition: the next offset it had when the batch was read, and the one after the
    /// batch's last record.
    pub partitions: &'a [(i32, Option<i64>, i64)],
    pub predictions: &'a [(i64, &'a NewPredictions)],
    pub records: i64,
    pub dead_letters: i64,
}

/// Stores a batch: the predictions and the partitions' new next offsets, in one transaction.
/// False (nothing stored) when a partition moved meanwhile (another consumer stored these
/// records first).
pub async fn commit(pool: &PgPool, b: &Batch<'_>) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    for (partition, seen, next) in b.partitions {
        let moved = match seen {
            Some(seen) => sqlx::query(
                "update stream_partition set next_offset = $4
                 where stream_id = $1 and partition = $2 and next_offset = $3",
            )
            .bind(b.stream_id)
            .bind(partition)
            .bind(seen)
            .bind(next)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => sqlx::query(
                "insert into stream_partition (stream_id, partition, next_offset) values ($1, $2, $3)
                 on conflict do nothing",
            )
            .bind(b.stream_id)
            .bind(partition)
            .bind(next)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if moved != 1 {
            return Ok(false);
        }
    }
    if !b.predictions.is_empty() {
        copy_in_on(&mut tx, b.predictions).await?;
    }
    sqlx::query(
        "update stream set records = records + $2, dead_letters = dead_letters + $3,
         last_error = null, last_error_at = null where id = $1",
    )
    .bind(b.stream_id)
    .bind(b.records)
    .bind(b.dead_letters)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn set_lag(pool: &PgPool, id: i64, lag: i64) -> sqlx::Result<()> {
    sqlx::query("update stream set lag = $2, lag_at = now() where id = $1")
        .bind(id)
        .bind(lag)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records why a stream is not flowing (`Some`), or that it flows again (`None`).
pub async fn set_error(pool: &PgPool, id: i64, error: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "update stream set last_error = $2,
             last_error_at = case when $2::text is null then null else now() end
         where id = $1 and last_error is distinct from $2",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
