//! Guarded promotion and rollback: rules per model, evaluated on a schedule by one instance.
//!
//! A promotion rule moves `production` to a shadow or canary candidate once it has answered
//! enough predictions and meets every criterion the rule sets; a rollback rule moves it back to
//! the version it pointed at before when production's model errors over a window, or drift on
//! several checks in a row, cross the rule's thresholds. Every automatic move is an alias move
//! like a person's (alias history, audit log), with the rule and the figures that fired it. A rule
//! in `notify` mode records and alerts once per firing instead of moving anything.

pub mod views;
pub mod webhooks;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::registry::PRODUCTION;
use crate::state::AppState;
use plinth_store as db;
use plinth_store::automation::{LiveRecord, RuleRow, ShadowRecord};
use plinth_store::models::ModelRow;

mod actions;

use actions::{audit, promote, rollback};

/// A candidate's figures, as the rule judges them and the audit entry keeps them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, ToSchema)]
pub struct CandidateFigures {
    pub version: i32,
    /// How it answered: `shadow`, `canary`, or `shadow+canary`.
    pub observed_as: String,
    /// Predictions the candidate answered as a shadow or in the canary's arm.
    pub predictions: i64,
    /// Classifier shadows: label pairs and the share equal to production's.
    pub label_pairs: i64,
    pub agreement: Option<f64>,
    /// Regressor shadows: mean |shadow − live|.
    pub mean_abs_difference: Option<f64>,
    /// Model errors per attempt (invalid inputs are the caller's and do not count).
    pub error_rate: Option<f64>,
    /// Predictions with feedback, and how much worse than production the candidate did on them:
    /// accuracy (as a share) for classifiers, mean absolute error for regressors. Negative is
    /// better.
    pub judged: i64,
    pub quality_drop: Option<f64>,
}

fn ratio(k: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| k as f64 / n as f64)
}

/// Combines a candidate's shadow and canary records (each, when it is one) with production's
/// record over the canary's time.
pub fn candidate_figures(
    version: i32,
    classifier: bool,
    shadow: Option<(&ShadowRecord, &db::shadow::Agreement)>,
    canary: Option<(&LiveRecord, &LiveRecord)>,
) -> CandidateFigures {
    let none = ShadowRecord::default();
    let no_agreement = db::shadow::Agreement::default();
    let (s, a) = shadow.unwrap_or((&none, &no_agreement));
    let quiet = LiveRecord::default();
    let (c, p) = canary.unwrap_or((&quiet, &quiet));
    let observed_as = match (shadow.is_some(), canary.is_some()) {
        (true, true) => "shadow+canary",
        (true, false) => "shadow",
        _ => "canary",
    };
    let attempts = s.requests + s.model_errors + c.requests + c.model_errors;
    let judged = s.judged + c.judged;
    let quality_drop = if classifier {
        match (
            ratio(s.live_correct + p.correct, s.judged + p.judged),
            ratio(s.shadow_correct + c.correct, judged),
        ) {
            (Some(live), Some(candidate)) => Some(live - candidate),
            _ => None,
        }
    } else {
        // Means weighted by how many predictions each comes from.
        let weighted = |parts: &[(Option<f64>, i64)]| {
            let n: i64 = parts
                .iter()
                .filter(|(m, _)| m.is_some())
                .map(|(_, n)| n)
                .sum();
            (n > 0).then(|| {
                parts
                    .iter()
                    .filter_map(|(m, k)| m.map(|m| m * *k as f64))
                    .sum::<f64>()
                    / n as f64
            })
        };
        match (
            weighted(&[(s.shadow_mae, s.judged), (c.mae, c.judged)]),
            weighted(&[(s.live_mae, s.judged), (p.mae, p.judged)]),
        ) {
            (Some(candidate), Some(live)) => Some(candidate - live),
            _ => None,
        }
    };
    CandidateFigures {
        version,
        observed_as: observed_as.into(),
        predictions: s.predictions + c.predictions,
        label_pairs: a.label_pairs,
        agreement: ratio(a.agree, a.label_pairs),
        mean_abs_difference: a.mean_abs_difference,
        error_rate: ratio(s.model_errors + c.model_errors, attempts),
        judged,
        quality_drop,
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The criteria of a promotion rule the figures do not meet yet, in words; empty when the
/// candidate may be promoted.
pub fn unmet(rule: &RuleRow, f: &CandidateFigures, classifier: bool) -> Vec<String> {
    // A figure equal to its bar meets it, whatever the last bit of its division says.
    const SLACK: f64 = 1e-9;
    let mut unmet = Vec::new();
    if f.predictions < i64::from(rule.min_predictions) {
        unmet.push(format!(
            "{} of {} predictions",
            f.predictions, rule.min_predictions
        ));
    }
    if let Some(min) = rule.min_agreement {
        match f.agreement {
            Some(a) if a >= min - SLACK => {}
            Some(a) => unmet.push(format!("agreement {} < {}", pct(a), pct(min))),
            None if !classifier => {
                unmet.push("agreement is for classifiers; use the mean difference".into())
            }
            None => unmet.push("no agreement measured (not a shadow yet)".into()),
        }
    }
    if let Some(max) = rule.max_mean_abs_difference {
        match f.mean_abs_difference {
            Some(d) if d <= max + SLACK => {}
            Some(d) => unmet.push(format!("mean |difference| {d:.4} > {max}")),
            None => unmet.push("no differences measured (not a regressor's shadow)".into()),
        }
    }
    if let Some(max) = rule.max_error_rate {
        let rate = f.error_rate.unwrap_or(0.0);
        if rate > max + SLACK {
            unmet.push(format!("error rate {} > {}", pct(rate), pct(max)));
        }
    }
    if let Some(max) = rule.max_quality_drop {
        match f.quality_drop {
            Some(d) if d <= max + SLACK => {}
            Some(d) if classifier => unmet.push(format!(
                "accuracy {} points below production's (at most {})",
                format_args!("{:.1}", d * 100.0),
                format_args!("{:.1}", max * 100.0)
            )),
            Some(d) => unmet.push(format!("MAE {d:.4} above production's (at most {max})")),
            None => unmet.push("no feedback on the candidate's predictions yet".into()),
        }
    }
    unmet
}

/// A rule in words, for the alias history, the audit log and the pages.
pub fn describe(rule: &RuleRow) -> String {
    let mut parts = Vec::new();
    if rule.kind == "promote" {
        parts.push(format!(
            "promote a candidate after {} predictions",
            rule.min_predictions
        ));
        if let Some(a) = rule.min_agreement {
            parts.push(format!("agreement ≥ {}", pct(a)));
        }
        if let Some(d) = rule.max_mean_abs_difference {
            parts.push(format!("mean |difference| ≤ {d}"));
        }
        if let Some(e) = rule.max_error_rate {
            parts.push(format!("error rate ≤ {}", pct(e)));
        }
        if let Some(q) = rule.max_quality_drop {
            parts.push(format!("live quality not worse by more than {q}"));
        }
    } else {
        let window = rule.window_minutes.unwrap_or(DEFAULT_WINDOW_MINUTES);
        let mut when = Vec::new();
        if let Some(e) = rule.max_error_rate {
            when.push(format!(
                "its error rate over the last {window} minutes exceeds {} (at least {} requests)",
                pct(e),
                rule.min_predictions
            ));
        }
        if let Some(k) = rule.drift_checks {
            when.push(format!("drift is flagged on {k} checks in a row"));
        }
        parts.push(format!(
            "roll production back to the previous version when {}",
            when.join(", or when ")
        ));
    }
    let mut text = parts.join(", ");
    if rule.mode == "notify" {
        text.push_str(" (notify only)");
    }
    text
}

/// Refuses a rule that cannot work, saying why: an unknown kind or mode, a figure out of its
/// range, a criterion of the other kind of rule, or no criterion at all.
pub fn check_rule(kind: &str, spec: &db::automation::RuleSpec) -> Result<(), String> {
    let share = |name: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && (0.0..=1.0).contains(&x)) => Err(format!(
            "{name} is a share from 0 to 1 (a percentage from 0 to 100 on the form)."
        )),
        _ => Ok(()),
    };
    let amount = |name: &str, v: Option<f64>| match v {
        Some(x) if !(x.is_finite() && x >= 0.0) => Err(format!("{name} is a number of 0 or more.")),
        _ => Ok(()),
    };
    if !matches!(spec.mode.as_str(), "act" | "notify") {
        return Err(format!("mode is act or notify, not {:?}.", spec.mode));
    }
    if !(1..=1_000_000_000).contains(&spec.min_predictions) {
        return Err("min_predictions is a whole number from 1 to 1,000,000,000.".into());
    }
    share("min_agreement", spec.min_agreement)?;
    share("max_error_rate", spec.max_error_rate)?;
    amount("max_quality_drop", spec.max_quality_drop)?;
    amount("max_mean_abs_difference", spec.max_mean_abs_difference)?;
    match kind {
        "promote" => {
            if spec.window_minutes.is_some() || spec.drift_checks.is_some() {
                return Err("window_minutes and drift_checks belong to the rollback rule.".into());
            }
            if spec.min_agreement.is_none()
                && spec.max_mean_abs_difference.is_none()
                && spec.max_error_rate.is_none()
                && spec.max_quality_drop.is_none()
            {
                return Err("A promotion rule needs at least one criterion: min_agreement, max_mean_abs_difference, max_error_rate or max_quality_drop.".into());
            }
        }
        "rollback" => {
            if spec.min_agreement.is_some()
                || spec.max_mean_abs_difference.is_some()
                || spec.max_quality_drop.is_some()
            {
                return Err("min_agreement, max_mean_abs_difference and max_quality_drop belong to the promotion rule.".into());
            }
            if spec.max_error_rate.is_none() && spec.drift_checks.is_none() {
                return Err("A rollback rule needs max_error_rate, drift_checks, or both.".into());
            }
            if let Some(w) = spec.window_minutes {
                if !(1..=10_080).contains(&w) {
                    return Err("window_minutes is from 1 to 10080 (a week).".into());
                }
            }
            if let Some(k) = spec.drift_checks {
                if !(1..=100).contains(&k) {
                    return Err("drift_checks is from 1 to 100.".into());
                }
            }
        }
        other => return Err(format!("A rule is promote or rollback, not {other:?}.")),
    }
    Ok(())
}

/// The default of `min_predictions` per kind of rule.
pub fn default_min_predictions(kind: &str) -> i32 {
    if kind == "rollback" {
        20
    } else {
        100
    }
}

/// Checks a new webhook's fields; the model's id when it names one.
pub async fn check_webhook(
    pool: &sqlx::PgPool,
    url: &str,
    model: Option<&str>,
    events: &[String],
) -> Result<Option<i64>, String> {
    webhooks::check_url(url)?;
    if let Some(e) = events.iter().find(|e| !webhooks::is_event(e)) {
        let known: Vec<&str> = webhooks::EVENTS.iter().map(|(e, _)| *e).collect();
        return Err(format!(
            "There is no event {e:?}; the events are {}.",
            known.join(", ")
        ));
    }
    match model {
        None => Ok(None),
        Some(name) => match plinth_store::models::find_model(pool, name).await {
            Ok(Some(m)) => Ok(Some(m.id)),
            Ok(None) => Err(format!("There is no model called {name}.")),
            Err(e) => Err(format!("The model could not be looked up: {e}")),
        },
    }
}

/// A rollback rule's window when it names none.
pub const DEFAULT_WINDOW_MINUTES: i32 = 10;

/// What one rule's evaluation found.
struct Evaluation {
    outcome: String,
    /// It moved an alias or notified this time.
    fired: bool,
    figures: serde_json::Value,
    fired_key: Option<String>,
}

impl Evaluation {
    /// Nothing fired: what was found, and nothing to remember.
    fn quiet(outcome: impl Into<String>, figures: serde_json::Value) -> Evaluation {
        Evaluation {
            outcome: outcome.into(),
            fired: false,
            figures,
            fired_key: None,
        }
    }
}

/// What a rule that fires does: moves production (when `move_to` says where, with the rule as
/// the reason), records `action` in the audit log and alerts the webhooks with `text`.
async fn fire(
    state: &AppState,
    model: &ModelRow,
    (action, event): (&str, &str),
    text: String,
    detail: serde_json::Value,
    move_to: Option<(i32, String)>,
) -> anyhow::Result<()> {
    if let Some((version, reason)) = &move_to {
        state
            .registry
            .move_alias_because(model, PRODUCTION, *version, None, Some(reason))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    audit(state, action, &model.name, detail.clone()).await?;
    webhooks::alert(
        &state.pool,
        event,
        Some((model.id, &model.name)),
        text,
        json!({"acted": move_to.is_some(), "detail": detail}),
    )
    .await;
    Ok(())
}

/// Evaluates every rule once; how many rules fired (moved an alias or notified).
pub async fn evaluate_all(state: &AppState) -> anyhow::Result<usize> {
    let mut fired = 0;
    for rule in db::automation::all(&state.pool).await? {
        let Some(model) = db::models::find_model(&state.pool, &rule.model).await? else {
            continue;
        };
        let evaluation = match rule.kind.as_str() {
            "promote" => promote(state, &model, &rule).await,
            _ => rollback(state, &model, &rule).await,
        };
        let evaluation = match evaluation {
            Ok(e) => e,
            Err(e) => Evaluation {
                fired: false,
                outcome: format!("could not be evaluated: {e}"),
                figures: json!({}),
                fired_key: rule.fired_key.clone(),
            },
        };
        fired += usize::from(evaluation.fired);
        db::automation::evaluated(
            &state.pool,
            rule.model_id,
            &rule.kind,
            &evaluation.outcome,
            &evaluation.figures,
            evaluation.fired_key.as_deref(),
        )
        .await?;
    }
    Ok(fired)
}

/// Runs the evaluation every `every`, on one instance at a time (whichever claims it first).
pub async fn schedule(
    state: actix_web::web::Data<AppState>,
    every: std::time::Duration,
    instance: String,
) {
    // Each instance looks four times an interval and runs it when a quarter of an interval or
    // less is left of it; so rules are evaluated at most one interval apart.
    let mut ticks = tokio::time::interval(every / 4);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match db::jobs::claim(&state.pool, "automation", every * 3 / 4, &instance).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the automation rules");
                continue;
            }
        }
        match evaluate_all(&state).await {
            Ok(0) => tracing::debug!("automation rules evaluated"),
            Ok(n) => tracing::info!(fired = n, "automation rules fired"),
            Err(e) => tracing::warn!(error = %e, "the automation rules could not be evaluated"),
        }
    }
}

#[cfg(test)]
mod tests;
