//! Canary routing: which arm of a model's traffic policy a caller falls in.
//!
//! A caller that can be named (a signed-in user, a token) always lands in the same arm: the arm
//! is a hash of the model's name and the caller, so it holds across requests, instances and
//! restarts, and a caller can be in the candidate arm of one model and not of another. Anonymous
//! callers are assigned at random, request by request.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;

use plinth_store::traffic::{ArmFigures, PolicyRow};

/// Who is asking, as far as routing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky {
    User(i64),
    Token(i64),
    Anonymous,
}

/// Whether the caller is answered by the candidate, given the candidate's share (0 to 1).
pub fn candidate_arm(model: &str, caller: Sticky, share: f64) -> bool {
    let draw = match caller {
        Sticky::User(id) => unit_hash(model, 'u', id),
        Sticky::Token(id) => unit_hash(model, 't', id),
        Sticky::Anonymous => rand::random::<f64>(),
    };
    draw < share
}

/// A number in [0, 1) from the model and the caller, the same everywhere.
fn unit_hash(model: &str, kind: char, id: i64) -> f64 {
    let digest = Sha256::new()
        .chain_update(model.as_bytes())
        .chain_update([0, kind as u8])
        .chain_update(id.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits, as a double's mantissa holds them.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

impl super::Registry {
    /// Starts (or changes) a model's canary: version `number` answers `share` of the callers of
    /// `production`. Refused, saying why, for a share outside (0, 1), an unknown version, the
    /// version already in production, or one that does not load.
    pub async fn set_canary(
        &self,
        model: &plinth_store::models::ModelRow,
        number: i32,
        share: f64,
        actor: Option<i64>,
    ) -> Result<(), super::ImportError> {
        use super::ImportError::Invalid;
        if !(share > 0.0 && share < 1.0) {
            return Err(Invalid(
                "The candidate's share is a percentage above 0 and below 100.".into(),
            ));
        }
        let (_, version) = plinth_store::models::by_number(&self.pool, &model.name, number)
            .await?
            .ok_or_else(|| Invalid(format!("{} has no version {number}.", model.name)))?;
        match self.production_number(model).await? {
            None => {
                return Err(Invalid(format!(
                    "{} has no production version for a canary to share with.",
                    model.name
                )))
            }
            Some(p) if p == number => {
                return Err(Invalid(format!(
                    "Version {number} is production already; choose another candidate."
                )))
            }
            Some(_) => {}
        }
        self.load(&version)
            .await
            .map_err(|e| Invalid(format!("version {number} cannot be loaded: {e}")))?;
        plinth_store::traffic::set_policy(&self.pool, model.id, version.id, share, actor).await?;
        self.resolved.changed();
        tracing::info!(model = %model.name, candidate = number, share, "canary set");
        Ok(())
    }

    /// The version number `production` points at, if any.
    async fn production_number(
        &self,
        model: &plinth_store::models::ModelRow,
    ) -> sqlx::Result<Option<i32>> {
        Ok(plinth_store::models::aliases(&self.pool, model.id)
            .await?
            .into_iter()
            .find(|(a, _)| a == super::PRODUCTION)
            .map(|(_, v)| v))
    }

    /// Ends a model's canary: everyone gets production again. The candidate it had, if any.
    pub async fn end_canary(
        &self,
        model: &plinth_store::models::ModelRow,
    ) -> sqlx::Result<Option<i32>> {
        let ended = plinth_store::traffic::clear_policy(&self.pool, model.id).await?;
        self.resolved.changed();
        Ok(ended)
    }
}

impl super::Registry {
    /// Starts sending a copy of the model's live requests to version `number`. Refused, saying
    /// why, for an unknown version, the production version, or one that does not load. False
    /// when it was a shadow already.
    pub async fn start_shadow(
        &self,
        model: &plinth_store::models::ModelRow,
        number: i32,
        actor: Option<i64>,
    ) -> Result<bool, super::ImportError> {
        use super::ImportError::Invalid;
        let (_, version) = plinth_store::models::by_number(&self.pool, &model.name, number)
            .await?
            .ok_or_else(|| Invalid(format!("{} has no version {number}.", model.name)))?;
        if self.production_number(model).await? == Some(number) {
            return Err(Invalid(format!(
                "Version {number} is production: it answers the live traffic a shadow copies."
            )));
        }
        self.load(&version)
            .await
            .map_err(|e| Invalid(format!("version {number} cannot be loaded: {e}")))?;
        let started = plinth_store::shadow::start(&self.pool, model.id, version.id, actor).await?;
        self.resolved.changed();
        Ok(started)
    }

    /// Stops shadowing version `number`; false when it was not a shadow.
    pub async fn stop_shadow(
        &self,
        model: &plinth_store::models::ModelRow,
        number: i32,
    ) -> Result<bool, super::ImportError> {
        let (_, version) = plinth_store::models::by_number(&self.pool, &model.name, number)
            .await?
            .ok_or_else(|| {
                super::ImportError::Invalid(format!("{} has no version {number}.", model.name))
            })?;
        let stopped = plinth_store::shadow::stop(&self.pool, model.id, version.id).await?;
        self.resolved.changed();
        Ok(stopped)
    }
}

/// A live prediction a shadow answered differently.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Disagreement {
    pub prediction_id: i64,
    pub live: Option<String>,
    pub shadow: Option<String>,
    /// The row's features by name (or as stored).
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// Classifiers: the shadow's probability for its own label; regressors: |shadow − live|.
    pub gap: Option<f64>,
}

/// A shadow version and how its answers compare with the live ones since it started.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ShadowReport {
    pub version: i32,
    /// RFC 3339.
    pub started_at: String,
    /// Classifiers: live predictions the shadow answered, and the share where the labels agree.
    pub label_pairs: i64,
    pub agreement: Option<f64>,
    /// Regressors: pairs of values and the absolute differences.
    pub value_pairs: i64,
    pub mean_abs_difference: Option<f64>,
    pub p50_abs_difference: Option<f64>,
    pub p95_abs_difference: Option<f64>,
    pub max_abs_difference: Option<f64>,
    /// The inputs where they disagree most (latest 5,000 pairs, at most 10).
    pub disagreements: Vec<Disagreement>,
}

impl ShadowReport {
    pub fn agreement_text(&self) -> String {
        match self.agreement {
            Some(a) => format!("{} of {} labels", percent(Some(a)), self.label_pairs),
            None if self.value_pairs > 0 => format!(
                "mean |difference| {:.4}, p95 {:.4}, max {:.4} over {} values",
                self.mean_abs_difference.unwrap_or(0.0),
                self.p95_abs_difference.unwrap_or(0.0),
                self.max_abs_difference.unwrap_or(0.0),
                self.value_pairs
            ),
            None => "no copies answered yet".into(),
        }
    }
}

impl Disagreement {
    /// `feature = value, …`, numbers to at most four decimals.
    pub fn inputs_text(&self) -> String {
        fn short(v: &serde_json::Value) -> String {
            match v.as_f64() {
                Some(x) if v.is_f64() => {
                    let t = format!("{x:.4}");
                    t.trim_end_matches('0').trim_end_matches('.').to_string()
                }
                _ => v.to_string(),
            }
        }
        match &self.inputs {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| format!("{k} = {}", short(v)))
                .collect::<Vec<_>>()
                .join(", "),
            other => other.to_string(),
        }
    }
}

/// "2026-12-02 12:20 UTC" from an RFC 3339 time, for the pages.
fn minute_text(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(minute) => format!("{} UTC", minute.replace('T', " ")),
        None => rfc3339.to_string(),
    }
}

impl ShadowReport {
    pub fn started_text(&self) -> String {
        minute_text(&self.started_at)
    }
}

/// Every shadow of a model with its figures; `features` names the columns of stored rows.
pub async fn shadow_reports(
    pool: &PgPool,
    model_id: i64,
    features: &[String],
) -> sqlx::Result<Vec<ShadowReport>> {
    let mut reports = Vec::new();
    for row in plinth_store::shadow::of_model(pool, model_id).await? {
        let a = plinth_store::shadow::agreement(pool, row.version_id, row.started_at).await?;
        let disagreements =
            plinth_store::shadow::disagreements(pool, row.version_id, row.started_at, 10)
                .await?
                .into_iter()
                .map(|d| Disagreement {
                    prediction_id: d.prediction_id,
                    live: d.live,
                    shadow: d.shadow,
                    inputs: named(d.inputs.unwrap_or_default(), features),
                    gap: d.gap,
                })
                .collect();
        reports.push(ShadowReport {
            version: row.version,
            started_at: row
                .started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            label_pairs: a.label_pairs,
            agreement: (a.label_pairs > 0).then(|| a.agree as f64 / a.label_pairs as f64),
            value_pairs: a.value_pairs,
            mean_abs_difference: a.mean_abs_difference,
            p50_abs_difference: a.p50_abs_difference,
            p95_abs_difference: a.p95_abs_difference,
            max_abs_difference: a.max_abs_difference,
            disagreements,
        });
    }
    Ok(reports)
}

/// A stored row of numbers as an object of the card's features, when the widths match.
fn named(inputs: serde_json::Value, features: &[String]) -> serde_json::Value {
    match inputs {
        serde_json::Value::Array(values) if values.len() == features.len() => features
            .iter()
            .cloned()
            .zip(values)
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other,
    }
}

/// One arm of a canary as the admin page and the API show it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Arm {
    /// `production` or `candidate`.
    pub arm: &'static str,
    pub version: i32,
    /// Requests answered and predictions stored (a request may hold several rows).
    pub requests: i64,
    pub predictions: i64,
    /// Requests that failed (invalid input, model error, storage unavailable).
    pub failures: i64,
    /// failures / (requests + failures).
    pub error_rate: Option<f64>,
    /// Latency per request, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Predictions with feedback, and the share of them the model got right (classifiers).
    pub judged: i64,
    pub accuracy: Option<f64>,
}

/// Candidate minus production, with a 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct Difference {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// A canary and how its arms compare since it started.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Report {
    pub candidate: i32,
    /// The candidate's share of the callers (0 to 1).
    pub share: f64,
    /// When the candidate started (RFC 3339); the figures count from then.
    pub started_at: String,
    pub arms: Vec<Arm>,
    /// Error rate, candidate minus production.
    pub error_rate_difference: Option<Difference>,
    /// Live accuracy, candidate minus production, where both arms have feedback.
    pub accuracy_difference: Option<Difference>,
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{:.2}%", v * 100.0))
}

fn millis(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.2} ms"))
}

/// For the admin page.
impl Arm {
    pub fn error_text(&self) -> String {
        percent(self.error_rate)
    }
    pub fn p50_text(&self) -> String {
        millis(self.p50_ms)
    }
    pub fn p99_text(&self) -> String {
        millis(self.p99_ms)
    }
    pub fn accuracy_text(&self) -> String {
        match self.accuracy {
            Some(_) => format!("{} of {}", percent(self.accuracy), self.judged),
            None => "no feedback yet".into(),
        }
    }
}

impl Difference {
    /// In percentage points: "+1.20 points (−0.50 to +2.90)".
    pub fn text(&self) -> String {
        format!(
            "{:+.2} points (95% interval {:+.2} to {:+.2})",
            self.estimate * 100.0,
            self.low * 100.0,
            self.high * 100.0
        )
    }
}

impl Report {
    pub fn started_text(&self) -> String {
        minute_text(&self.started_at)
    }

    pub fn share_text(&self) -> String {
        let p = self.share * 100.0;
        if (p - p.round()).abs() < 1e-9 {
            format!("{p:.0}%")
        } else {
            format!("{p}%")
        }
    }
}

/// The difference of two proportions (`a` minus `b`) with its 95% interval (Wald), when both
/// have observations.
pub fn difference(a: (i64, i64), b: (i64, i64)) -> Option<Difference> {
    let ((ka, na), (kb, nb)) = (a, b);
    if na <= 0 || nb <= 0 {
        return None;
    }
    let (pa, pb) = (ka as f64 / na as f64, kb as f64 / nb as f64);
    let se = (pa * (1.0 - pa) / na as f64 + pb * (1.0 - pb) / nb as f64).sqrt();
    let estimate = pa - pb;
    Some(Difference {
        estimate,
        low: estimate - 1.96 * se,
        high: estimate + 1.96 * se,
    })
}

fn arm(name: &'static str, version: i32, f: &ArmFigures) -> Arm {
    let attempts = f.requests + f.failures;
    Arm {
        arm: name,
        version,
        requests: f.requests,
        predictions: f.predictions,
        failures: f.failures,
        error_rate: (attempts > 0).then(|| f.failures as f64 / attempts as f64),
        p50_ms: f.p50_us.map(|us| us / 1000.0),
        p99_ms: f.p99_us.map(|us| us / 1000.0),
        judged: f.judged,
        accuracy: (f.judged > 0).then(|| f.correct as f64 / f.judged as f64),
    }
}

/// The canary's figures: SQL over the prediction log, failures and feedback since it started.
pub async fn report(
    pool: &PgPool,
    policy: &PolicyRow,
    production: Option<(i64, i32)>,
) -> sqlx::Result<Report> {
    let mut ids = vec![policy.candidate_version_id];
    ids.extend(production.map(|(id, _)| id));
    let figures =
        plinth_store::traffic::arm_figures(pool, policy.model_id, &ids, policy.started_at).await?;
    let of = |id: i64| {
        figures
            .iter()
            .find(|f| f.version_id == id)
            .cloned()
            .unwrap_or_default()
    };
    let candidate = of(policy.candidate_version_id);
    let mut arms = Vec::new();
    let mut error_rate_difference = None;
    let mut accuracy_difference = None;
    if let Some((id, version)) = production {
        let live = of(id);
        arms.push(arm("production", version, &live));
        error_rate_difference = difference(
            (candidate.failures, candidate.requests + candidate.failures),
            (live.failures, live.requests + live.failures),
        );
        accuracy_difference = difference(
            (candidate.correct, candidate.judged),
            (live.correct, live.judged),
        );
    }
    arms.push(arm("candidate", policy.candidate, &candidate));
    Ok(Report {
        candidate: policy.candidate,
        share: policy.share,
        started_at: policy
            .started_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        arms,
        error_rate_difference,
        accuracy_difference,
    })
}

#[cfg(test)]
mod tests;
