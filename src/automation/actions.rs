//! What a met rule does: promote the candidate or roll back to the previous version, audited and announced by webhook.

use serde_json::json;
use time::OffsetDateTime;

use super::{
    candidate_figures, describe, fire, pct, ratio, unmet, webhooks, CandidateFigures, Evaluation,
    DEFAULT_WINDOW_MINUTES,
};
use crate::registry::PRODUCTION;
use crate::state::AppState;
use plinth_store as db;
use plinth_store::automation::RuleRow;
use plinth_store::models::ModelRow;

/// Records an automatic decision in the audit log (no actor: the rule acted).
pub(super) async fn audit(
    state: &AppState,
    action: &str,
    model: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    db::audit::record(
        &state.pool,
        db::audit::NewEvent {
            actor_id: None,
            actor: Some("automation"),
            action,
            target: Some(model.to_string()),
            detail,
            client_ip: None,
        },
    )
    .await?;
    Ok(())
}

pub(super) async fn promote(
    state: &AppState,
    model: &ModelRow,
    rule: &RuleRow,
) -> anyhow::Result<Evaluation> {
    let pool = &state.pool;
    let Some((_, production)) = db::models::by_alias(pool, &model.name, PRODUCTION).await? else {
        return Ok(Evaluation::quiet("no production version", json!({})));
    };
    let classifier =
        crate::registry::card_of(&production).task == crate::registry::card::Task::Classification;
    // Candidates: every shadow and the canary's candidate (which may be both).
    let shadows = db::shadow::of_model(pool, model.id).await?;
    let canary = db::traffic::policy(pool, &model.name).await?;
    let mut versions: Vec<(i64, i32)> = shadows.iter().map(|s| (s.version_id, s.version)).collect();
    if let Some(c) = &canary {
        if !versions.iter().any(|(id, _)| *id == c.candidate_version_id) {
            versions.push((c.candidate_version_id, c.candidate));
        }
    }
    versions.retain(|(id, _)| *id != production.id);
    if versions.is_empty() {
        return Ok(Evaluation::quiet(
            "no candidate: start a shadow or a canary",
            json!({"candidates": []}),
        ));
    }
    let mut judged = Vec::new();
    for (version_id, number) in versions {
        let shadow = match shadows.iter().find(|s| s.version_id == version_id) {
            Some(s) => Some((
                db::automation::shadow_record(pool, version_id, s.started_at).await?,
                db::shadow::agreement(pool, version_id, s.started_at).await?,
            )),
            None => None,
        };
        let arms = match canary
            .as_ref()
            .filter(|c| c.candidate_version_id == version_id)
        {
            Some(c) => Some((
                db::automation::live_record(pool, version_id, c.started_at).await?,
                db::automation::live_record(pool, production.id, c.started_at).await?,
            )),
            None => None,
        };
        let figures = candidate_figures(
            number,
            classifier,
            shadow.as_ref().map(|(r, a)| (r, a)),
            arms.as_ref().map(|(c, p)| (c, p)),
        );
        let missing = unmet(rule, &figures, classifier);
        judged.push((figures, missing));
    }
    let figures = json!({
        "production": production.version,
        "candidates": judged.iter().map(|(f, missing)| json!({"figures": f, "unmet": missing})).collect::<Vec<_>>(),
    });
    // The newest candidate that meets every criterion.
    let ready = judged
        .iter()
        .filter(|(_, missing)| missing.is_empty())
        .map(|(f, _)| f)
        .max_by_key(|f| f.version);
    let Some(ready) = ready else {
        let waiting = judged
            .iter()
            .map(|(f, missing)| format!("version {}: {}", f.version, missing.join("; ")))
            .collect::<Vec<_>>()
            .join(" — ");
        return Ok(Evaluation::quiet(format!("waiting: {waiting}"), figures));
    };
    let rule_text = describe(rule);
    let detail = json!({
        "model": model.name, "rule": rule_text, "from": production.version,
        "to": ready.version, "figures": ready,
    });
    let summary = summary(ready);
    if rule.mode == "notify" {
        let text = format!(
            "{}: version {} meets the promotion rule ({summary}); notify only, production stays version {}.",
            model.name, ready.version, production.version
        );
        let notice = Notice {
            key: format!("promote:{}", ready.version),
            action: ("automation.would_promote", "promotion"),
            text,
            detail,
        };
        let outcome = format!(
            "version {} is ready ({summary}); notify only",
            ready.version
        );
        return hold(state, model, rule, notice, outcome, figures).await;
    }
    let text = format!(
        "{}: version {} promoted to production automatically ({summary}); it was version {}.",
        model.name, ready.version, production.version
    );
    let reason = format!("rule: {rule_text} — {summary}");
    let action = ("automation.promoted", "promotion");
    fire(
        state,
        model,
        action,
        text,
        detail,
        Some((ready.version, reason)),
    )
    .await?;
    // Production answers live traffic; it no longer shadows it.
    if ready.observed_as.contains("shadow") {
        state
            .registry
            .stop_shadow(model, ready.version)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    tracing::info!(model = %model.name, from = production.version, to = ready.version, "promoted by rule");
    Ok(Evaluation {
        fired: true,
        outcome: format!(
            "promoted version {} (was {}): {summary}",
            ready.version, production.version
        ),
        figures,
        fired_key: None,
    })
}

/// A candidate's figures in a line.
pub(super) fn summary(f: &CandidateFigures) -> String {
    let mut parts = vec![format!(
        "{} predictions as {}",
        f.predictions, f.observed_as
    )];
    if let Some(a) = f.agreement {
        parts.push(format!("agreement {}", pct(a)));
    }
    if let Some(d) = f.mean_abs_difference {
        parts.push(format!("mean |difference| {d:.4}"));
    }
    if let Some(e) = f.error_rate {
        parts.push(format!("error rate {}", pct(e)));
    }
    if let Some(q) = f.quality_drop {
        parts.push(format!("quality drop {q:.4} over {} judged", f.judged));
    }
    parts.join(", ")
}

pub(super) async fn rollback(
    state: &AppState,
    model: &ModelRow,
    rule: &RuleRow,
) -> anyhow::Result<Evaluation> {
    let pool = &state.pool;
    let Some((_, production)) = db::models::by_alias(pool, &model.name, PRODUCTION).await? else {
        return Ok(Evaluation::quiet("no production version", json!({})));
    };
    let now = OffsetDateTime::now_utc();
    let since_move = db::automation::alias_since(pool, model.id, PRODUCTION)
        .await?
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let window = rule.window_minutes.unwrap_or(DEFAULT_WINDOW_MINUTES);
    // Production's own record: the window, but not before it became production.
    let since = (now - time::Duration::minutes(window.into())).max(since_move);
    let record = db::automation::live_record(pool, production.id, since).await?;
    let attempts = record.requests + record.model_errors;
    let error_rate = ratio(record.model_errors, attempts);
    let error_hit = match (rule.max_error_rate, error_rate) {
        (Some(max), Some(rate)) => attempts >= i64::from(rule.min_predictions) && rate > max,
        _ => false,
    };
    let verdicts = match rule.drift_checks {
        Some(k) => db::automation::drift_verdicts(pool, production.id, since_move, k).await?,
        None => Vec::new(),
    };
    let drift_hit = rule
        .drift_checks
        .is_some_and(|k| verdicts.len() == k as usize && verdicts.iter().all(|d| *d));
    let target = match db::models::previous_target(pool, model.id, PRODUCTION).await? {
        Some(id) => db::models::version_by_id(pool, id).await?,
        None => None,
    };
    let figures = json!({
        "production": production.version,
        "window_minutes": window,
        "requests": record.requests,
        "model_errors": record.model_errors,
        "error_rate": error_rate,
        "drift_verdicts": verdicts,
        "rollback_to": target.as_ref().map(|v| v.version),
    });
    let mut why = Vec::new();
    if error_hit {
        why.push(format!(
            "error rate {} over {attempts} requests in the last {window} minutes",
            pct(error_rate.unwrap_or(0.0))
        ));
    }
    if drift_hit {
        why.push(format!(
            "drift flagged on {} checks in a row",
            verdicts.len()
        ));
    }
    if why.is_empty() {
        let mut health = match error_rate {
            Some(rate) => format!(
                "error rate {} over {attempts} requests in the last {window} minutes",
                pct(rate)
            ),
            None => format!("no requests in the last {window} minutes"),
        };
        if rule.drift_checks.is_some() {
            let flagged = verdicts.iter().filter(|d| **d).count();
            health.push_str(&format!(
                "; drift flagged on {flagged} of its last {} checks",
                verdicts.len()
            ));
        }
        return Ok(Evaluation::quiet(
            format!("version {} is healthy: {health}", production.version),
            figures,
        ));
    }
    let why = why.join(" and ");
    let key = format!("rollback:{}", production.version);
    let first_time = rule.fired_key.as_deref() != Some(&key);
    let rule_text = describe(rule);
    let detail = json!({
        "model": model.name, "rule": rule_text, "from": production.version,
        "to": target.as_ref().map(|v| v.version), "figures": figures,
    });
    if error_hit && first_time {
        webhooks::alert(
            pool,
            "error_rate.crossed",
            Some((model.id, &model.name)),
            format!(
                "{}: version {} (production) has an {why}, over the rule's {}.",
                model.name,
                production.version,
                pct(rule.max_error_rate.unwrap_or(0.0))
            ),
            json!({"detail": detail}),
        )
        .await;
    }
    let Some(target) = target.filter(|_| rule.mode == "act") else {
        let text = match rule.mode.as_str() {
            "notify" => format!(
                "{}: the rollback rule fired for version {} ({why}); notify only, nothing moved.",
                model.name, production.version
            ),
            _ => format!(
                "{}: the rollback rule fired for version {} ({why}), but there is no earlier production version to go back to.",
                model.name, production.version
            ),
        };
        let notice = Notice {
            key,
            action: ("automation.would_roll_back", "rollback"),
            text,
            detail,
        };
        let outcome = format!(
            "fired for version {} ({why}); nothing moved",
            production.version
        );
        return hold(state, model, rule, notice, outcome, figures).await;
    };
    let text = format!(
        "{}: production rolled back automatically from version {} to version {} ({why}).",
        model.name, production.version, target.version
    );
    let reason = format!("rule: {rule_text} — {why}");
    let action = ("automation.rolled_back", "rollback");
    fire(
        state,
        model,
        action,
        text,
        detail,
        Some((target.version, reason)),
    )
    .await?;
    tracing::warn!(model = %model.name, from = production.version, to = target.version, %why, "rolled back by rule");
    Ok(Evaluation {
        fired: true,
        outcome: format!(
            "rolled back from version {} to {} ({why})",
            production.version, target.version
        ),
        figures,
        fired_key: None,
    })
}

/// What a rule that fired without moving production announces.
struct Notice {
    /// The decision, remembered so that the next evaluations of it stay quiet.
    key: String,
    action: (&'static str, &'static str),
    text: String,
    detail: serde_json::Value,
}

/// A decision that moves nothing (notify only, or nowhere to go back to): announced the first
/// time the rule reaches it, reported every time.
async fn hold(
    state: &AppState,
    model: &ModelRow,
    rule: &RuleRow,
    notice: Notice,
    outcome: String,
    figures: serde_json::Value,
) -> anyhow::Result<Evaluation> {
    let first_time = rule.fired_key.as_deref() != Some(&notice.key);
    if first_time {
        fire(
            state,
            model,
            notice.action,
            notice.text,
            notice.detail,
            None,
        )
        .await?;
    }
    Ok(Evaluation {
        fired: first_time,
        outcome,
        figures,
        fired_key: Some(notice.key),
    })
}
