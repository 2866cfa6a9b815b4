//! What the pages and the API show of the rules and the webhooks' deliveries.

use serde::Serialize;
use utoipa::ToSchema;

use plinth_store::automation::RuleRow;

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A rule as it is set and as it last found things.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    /// `promote` or `rollback`.
    pub kind: String,
    /// `act` moves the alias; `notify` only records and alerts.
    pub mode: String,
    /// The rule in words.
    pub description: String,
    pub min_predictions: i32,
    pub min_agreement: Option<f64>,
    pub max_mean_abs_difference: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_quality_drop: Option<f64>,
    pub window_minutes: Option<i32>,
    pub drift_checks: Option<i32>,
    /// RFC 3339; null until the first evaluation.
    pub last_evaluated_at: Option<String>,
    pub last_outcome: Option<String>,
    /// The figures the last evaluation judged.
    #[schema(value_type = Option<Object>)]
    pub last_figures: Option<serde_json::Value>,
}

impl From<&RuleRow> for RuleView {
    fn from(r: &RuleRow) -> Self {
        RuleView {
            kind: r.kind.clone(),
            mode: r.mode.clone(),
            description: crate::automation::describe(r),
            min_predictions: r.min_predictions,
            min_agreement: r.min_agreement,
            max_mean_abs_difference: r.max_mean_abs_difference,
            max_error_rate: r.max_error_rate,
            max_quality_drop: r.max_quality_drop,
            window_minutes: r.window_minutes,
            drift_checks: r.drift_checks,
            last_evaluated_at: r.last_evaluated_at.map(rfc3339),
            last_outcome: r.last_outcome.clone(),
            last_figures: r.last_figures.as_ref().map(|j| j.0.clone()),
        }
    }
}

/// For the admin page: the rule as a sentence, when it last looked, and its figures as the form
/// fields show them (percentages for shares).
impl RuleView {
    pub fn sentence(&self) -> String {
        let mut chars = self.description.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// "2026-12-04 03:25:56 UTC".
    pub fn evaluated_text(&self) -> String {
        match self.last_evaluated_at.as_deref().and_then(|t| t.get(..19)) {
            Some(t) => format!("{} UTC", t.replace('T', " ")),
            None => "not yet".into(),
        }
    }

    pub fn is_notify(&self) -> bool {
        self.mode == "notify"
    }

    fn shown(v: Option<f64>, scale: f64) -> String {
        v.map(|x| {
            let t = format!("{:.6}", x * scale);
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        })
        .unwrap_or_default()
    }

    pub fn agreement_field(&self) -> String {
        Self::shown(self.min_agreement, 100.0)
    }
    pub fn error_rate_field(&self) -> String {
        Self::shown(self.max_error_rate, 100.0)
    }
    pub fn difference_field(&self) -> String {
        Self::shown(self.max_mean_abs_difference, 1.0)
    }
    /// Points of accuracy for classifiers, the target's units for regressors.
    pub fn quality_field(&self, classifier: &bool) -> String {
        Self::shown(self.max_quality_drop, if *classifier { 100.0 } else { 1.0 })
    }
    pub fn window_field(&self) -> String {
        self.window_minutes
            .unwrap_or(crate::automation::DEFAULT_WINDOW_MINUTES)
            .to_string()
    }
    pub fn drift_field(&self) -> String {
        self.drift_checks.map(|k| k.to_string()).unwrap_or_default()
    }
}

/// One delivery with every attempt at it.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub tries: Vec<AttemptView>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i32,
    /// The HTTP status received, if any.
    pub status: Option<i32>,
    /// The start of the body received.
    pub response: Option<String>,
    /// Why no answer came (refused, timed out).
    pub error: Option<String>,
    pub duration_ms: i32,
    pub at: String,
}

impl DeliveryView {
    /// "2026-12-04 03:25:56", for the page (UTC).
    pub fn created_text(&self) -> String {
        self.created_at
            .get(..19)
            .map_or_else(|| self.created_at.clone(), |t| t.replace('T', " "))
    }
}

impl AttemptView {
    /// The outcome in a few words, for the page.
    pub fn outcome(&self) -> String {
        match (self.status, &self.error) {
            (Some(s), _) => format!("HTTP {s}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "—".into(),
        }
    }
}

/// The latest deliveries (of one webhook, or of all) with their attempts.
pub async fn delivery_views(
    pool: &sqlx::PgPool,
    webhook: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryView>> {
    let rows = plinth_store::webhooks::deliveries(pool, webhook, limit).await?;
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let attempts = plinth_store::webhooks::attempts(pool, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|d| DeliveryView {
            tries: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| AttemptView {
                    attempt: a.attempt,
                    status: a.status,
                    response: a.response.clone(),
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                    at: rfc3339(a.created_at),
                })
                .collect(),
            id: d.id,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            body: d.body.0,
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
        })
        .collect())
}
