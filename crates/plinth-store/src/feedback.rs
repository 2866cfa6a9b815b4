//! The `feedback` table: the true label or value of a prediction.

use sqlx::PgPool;

/// Records feedback; true when it replaced earlier feedback for the same prediction, `None`
/// when there is no such prediction (or it is past retention).
pub async fn upsert(
    pool: &PgPool,
    prediction_id: i64,
    label: Option<&str>,
    value: Option<f64>,
    user_id: Option<i64>,
) -> sqlx::Result<Option<bool>> {
    let Some((version_id, predicted_at, predicted_label, predicted_value)) =
        super::predictions::predicted(pool, prediction_id).await?
    else {
        return Ok(None);
    };
    // `xmax <> 0` tells an update (conflict) from a fresh insert.
    sqlx::query_scalar(
        "insert into feedback (prediction_id, label, value, user_id,
                               version_id, predicted_at, predicted_label, predicted_value)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (prediction_id) do update
           set label = excluded.label, value = excluded.value, user_id = excluded.user_id, updated_at = now()
         returning (xmax <> 0)",
    )
    .bind(prediction_id)
    .bind(label)
    .bind(value)
    .bind(user_id)
    .bind(version_id)
    .bind(predicted_at)
    .bind(predicted_label)
    .bind(predicted_value)
    .fetch_one(pool)
    .await
    .map(Some)
}

/// The feedback of a prediction: (label, value).
pub async fn find(
    pool: &PgPool,
    prediction_id: i64,
) -> sqlx::Result<Option<(Option<String>, Option<f64>)>> {
    sqlx::query_as("select label, value from feedback where prediction_id = $1")
        .bind(prediction_id)
        .fetch_optional(pool)
        .await
}
