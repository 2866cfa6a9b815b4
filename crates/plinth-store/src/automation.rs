//! `automation_rule` and the figures its rules are judged on: SQL over the prediction log, the
//! failures, feedback and drift checks.

use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

/// A promotion or rollback rule of one model, with its last evaluation.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RuleRow {
    pub model_id: i64,
    pub model: String,
    pub kind: String,
    pub mode: String,
    pub min_predictions: i32,
    pub min_agreement: Option<f64>,
    pub max_mean_abs_difference: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_quality_drop: Option<f64>,
    pub window_minutes: Option<i32>,
    pub drift_checks: Option<i32>,
    pub last_evaluated_at: Option<OffsetDateTime>,
    pub last_outcome: Option<String>,
    pub last_figures: Option<Json<serde_json::Value>>,
    pub fired_key: Option<String>,
}

/// What a rule asks for, as set from the admin page or the API.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSpec {
    pub mode: String,
    pub min_predictions: i32,
    pub min_agreement: Option<f64>,
    pub max_mean_abs_difference: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_quality_drop: Option<f64>,
    pub window_minutes: Option<i32>,
    pub drift_checks: Option<i32>,
}

const RULE_COLUMNS: &str = "r.model_id, m.name as model, r.kind, r.mode, r.min_predictions,
    r.min_agreement, r.max_mean_abs_difference, r.max_error_rate, r.max_quality_drop,
    r.window_minutes, r.drift_checks, r.last_evaluated_at, r.last_outcome, r.last_figures,
    r.fired_key";

/// The rules of one model (promote first).
pub async fn of_model(pool: &PgPool, model_id: i64) -> sqlx::Result<Vec<RuleRow>> {
    sqlx::query_as(&format!(
        "select {RULE_COLUMNS} from automation_rule r join model m on m.id = r.model_id
         where r.model_id = $1 order by r.kind"
    ))
    .bind(model_id)
    .fetch_all(pool)
    .await
}

/// Every rule, for the scheduled evaluation.
pub async fn all(pool: &PgPool) -> sqlx::Result<Vec<RuleRow>> {
    sqlx::query_as(&format!(
        "select {RULE_COLUMNS} from automation_rule r join model m on m.id = r.model_id
         order by m.name, r.kind"
    ))
    .fetch_all(pool)
    .await
}

/// Sets (or replaces) a model's rule of `kind`; its evaluation starts again.
pub async fn set(
    pool: &PgPool,
    model_id: i64,
    kind: &str,
    spec: &RuleSpec,
    actor: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into automation_rule (model_id, kind, mode, min_predictions, min_agreement,
             max_mean_abs_difference, max_error_rate, max_quality_drop, window_minutes,
             drift_checks, updated_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (model_id, kind) do update set
             mode = excluded.mode, min_predictions = excluded.min_predictions,
             min_agreement = excluded.min_agreement,
             max_mean_abs_difference = excluded.max_mean_abs_difference,
             max_error_rate = excluded.max_error_rate, max_quality_drop = excluded.max_quality_drop,
             window_minutes = excluded.window_minutes, drift_checks = excluded.drift_checks,
             updated_by = excluded.updated_by, updated_at = now(),
             last_evaluated_at = null, last_outcome = null, last_figures = null, fired_key = null",
    )
    .bind(model_id)
    .bind(kind)
    .bind(&spec.mode)
    .bind(spec.min_predictions)
    .bind(spec.min_agreement)
    .bind(spec.max_mean_abs_difference)
    .bind(spec.max_error_rate)
    .bind(spec.max_quality_drop)
    .bind(spec.window_minutes)
    .bind(spec.drift_checks)
    .bind(actor)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a model's rule of `kind`; false when there was none.
pub async fn remove(pool: &PgPool, model_id: i64, kind: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("delete from automation_rule where model_id = $1 and kind = $2")
        .bind(model_id)
        .bind(kind)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores a rule's evaluation: what it found and what last fired.
pub async fn evaluated(
    pool: &PgPool,
    model_id: i64,
    kind: &str,
    outcome: &str,
    figures: &serde_json::Value,
    fired_key: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "update automation_rule set last_evaluated_at = now(), last_outcome = $3,
             last_figures = $4, fired_key = $5
         where model_id = $1 and kind = $2",
    )
    .bind(model_id)
    .bind(kind)
    .bind(outcome)
    .bind(Json(figures))
    .bind(fired_key)
    .execute(pool)
    .await?;
    Ok(())
}

/// A candidate version's answers as a shadow since `since`: requests answered, model errors, and
/// over the live predictions with feedback, how often the shadow and the live answer were right
/// (classifiers) or how far off they were (regressors).
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct ShadowRecord {
    pub requests: i64,
    pub predictions: i64,
    pub model_errors: i64,
    pub judged: i64,
    pub shadow_correct: i64,
    pub live_correct: i64,
    pub shadow_mae: Option<f64>,
    pub live_mae: Option<f64>,
}

pub async fn shadow_record(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
) -> sqlx::Result<ShadowRecord> {
    sqlx::query_as(
        "with shadow_rows as (
             select label, value, n, shadow_of from prediction
             where version_id = $1 and source = 'shadow' and shadow_of is not null
               and created_at >= $2),
         judged as (
             select f.label, f.value, f.predicted_label, f.predicted_value,
                    s.label[f.prediction_id - s.shadow_of + 1] as s_label,
                    s.value[f.prediction_id - s.shadow_of + 1] as s_value
             from shadow_rows s
             join feedback f on f.prediction_id >= s.shadow_of
                            and f.prediction_id < s.shadow_of + s.n)
         select (select count(*) from shadow_rows) as requests,
                (select coalesce(sum(n), 0)::bigint from shadow_rows) as predictions,
                (select count(*) from prediction_failure
                  where version_id = $1 and source = 'shadow' and reason = 'model_error'
                    and created_at >= $2) as model_errors,
                (select count(*) from judged) as judged,
                (select count(*) from judged where label is not null and s_label = label) as shadow_correct,
                (select count(*) from judged where label is not null and predicted_label = label) as live_correct,
                (select avg(abs(s_value - value)) from judged where value is not null) as shadow_mae,
                (select avg(abs(predicted_value - value)) from judged where value is not null) as live_mae",
    )
    .bind(version_id)
    .bind(since)
    .fetch_one(pool)
    .await
}

/// A version's live record since `since` over the doors routing decides (not batch jobs,
/// streams or shadows): requests answered, model errors, and feedback (right answers for
/// classifiers, mean absolute error for regressors).
#[derive(Clone, Debug, Default, sqlx::FromRow)]
pub struct LiveRecord {
    pub requests: i64,
    pub predictions: i64,
    pub model_errors: i64,
    pub judged: i64,
    pub correct: i64,
    pub mae: Option<f64>,
}

pub async fn live_record(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
) -> sqlx::Result<LiveRecord> {
    sqlx::query_as(
        "with served as (
             select count(*) as requests, coalesce(sum(n), 0)::bigint as predictions
             from prediction
             where version_id = $1 and created_at >= $2
               and source not in ('batch', 'stream', 'shadow'))
         select (select requests from served) as requests,
                (select predictions from served) as predictions,
                (select count(*) from prediction_failure
                  where version_id = $1 and created_at >= $2 and reason = 'model_error'
                    and source not in ('batch', 'stream', 'shadow')) as model_errors,
                count(*) as judged,
                count(*) filter (where label is not null and label = predicted_label) as correct,
                avg(abs(predicted_value - value)) filter (where value is not null) as mae
         from feedback where version_id = $1 and predicted_at >= $2",
    )
    .bind(version_id)
    .bind(since)
    .fetch_one(pool)
    .await
}

/// When `alias` last moved to its current version (None when it has never moved).
pub async fn alias_since(
    pool: &PgPool,
    model_id: i64,
    alias: &str,
) -> sqlx::Result<Option<OffsetDateTime>> {
    sqlx::query_scalar("select max(created_at) from alias_event where model_id = $1 and alias = $2")
        .bind(model_id)
        .bind(alias)
        .fetch_one(pool)
        .await
}

/// The verdicts of a version's latest `k` drift checks since `since` that reached one, newest
/// first.
pub async fn drift_verdicts(
    pool: &PgPool,
    version_id: i64,
    since: OffsetDateTime,
    k: i32,
) -> sqlx::Result<Vec<bool>> {
    sqlx::query_scalar(
        "select drifted from drift_run
         where version_id = $1 and created_at >= $2 and drifted is not null
         order by created_at desc, id desc limit $3",
    )
    .bind(version_id)
    .bind(since)
    .bind(i64::from(k))
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_rule_is_set_replaced_evaluated_and_removed(pool: PgPool) -> sqlx::Result<()> {
        let model_id: i64 =
            sqlx::query_scalar("insert into model (name) values ('m') returning id")
                .fetch_one(&pool)
                .await?;
        let spec = RuleSpec {
            mode: "act".into(),
            min_predictions: 100,
            min_agreement: Some(0.95),
            ..Default::default()
        };
        set(&pool, model_id, "promote", &spec, None).await?;
        evaluated(
            &pool,
            model_id,
            "promote",
            "waiting",
            &serde_json::json!({"n": 3}),
            Some("k"),
        )
        .await?;
        let rules = of_model(&pool, model_id).await?;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].fired_key.as_deref(), Some("k"));
        assert_eq!(rules[0].min_agreement, Some(0.95));

        // Replacing it starts its evaluation again.
        let notify = RuleSpec {
            mode: "notify".into(),
            ..spec.clone()
        };
        set(&pool, model_id, "promote", &notify, None).await?;
        let rules = all(&pool).await?;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].mode, "notify");
        assert!(rules[0].fired_key.is_none() && rules[0].last_outcome.is_none());

        assert!(remove(&pool, model_id, "promote").await?);
        assert!(!remove(&pool, model_id, "promote").await?);
        assert!(of_model(&pool, model_id).await?.is_empty());
        Ok(())
    }
}
