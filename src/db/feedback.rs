//! The `feedback` table: the true label or value of a prediction.

use sqlx::PgPool;

/// Records feedback; true when it replaced earlier feedback for the same prediction.
pub async fn upsert(
    pool: &PgPool,
    prediction_id: i64,
    label: Option<&str>,
    value: Option<f64>,
    user_id: Option<i64>,
) -> sqlx::Result<bool> {
    // `xmax <> 0` tells an update (conflict) from a fresh insert.
    sqlx::query_scalar(
        "insert into feedback (prediction_id, label, value, user_id,
                               version_id, predicted_at, predicted_label, predicted_value)
         select $1, $2, $3, $4, p.version_id, p.created_at, p.outputs->>'label', (p.outputs->>'value')::float8
         from prediction p where p.id = $1
         on conflict (prediction_id) do update
           set label = excluded.label, value = excluded.value, user_id = excluded.user_id, updated_at = now()
         returning (xmax <> 0)",
    )
    .bind(prediction_id)
    .bind(label)
    .bind(value)
    .bind(user_id)
    .fetch_one(pool)
    .await
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
