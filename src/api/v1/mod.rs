//! Plinth's own JSON API (`/api/v1`): what the shared pieces of its endpoints are.

pub mod automation;
pub mod datasets;
pub mod jobs;
pub mod models;
pub mod predict;
pub mod predictions;
pub mod registry;

use crate::error::AppError;
use crate::registry::card::{Card, FeatureKind};
use crate::registry::Selector;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in a sentence.
    pub error: String,
    /// Quote it when asking about the request; it is in the server's log line too.
    pub request_id: String,
}

pub(super) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Which version answers: `?version=N` or `?alias=NAME`, `production` by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version number.
    pub version: Option<i32>,
    /// An alias such as `staging`.
    pub alias: Option<String>,
}

impl VersionQuery {
    pub fn selector(&self) -> Result<Selector, AppError> {
        match (&self.version, &self.alias) {
            (Some(_), Some(_)) => Err(AppError::BadRequest(
                "Give version or alias, not both.".into(),
            )),
            (Some(n), None) => Ok(Selector::Number(*n)),
            (None, Some(a)) => Ok(Selector::Alias(a.clone())),
            (None, None) => Ok(Selector::default()),
        }
    }
}

/// The longest free text a feature takes, in characters.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Converts one JSON row of named features into the model's input row, for doors that take no
/// free text (a card with a text feature is refused, naming the doors that take it).
pub fn row_from_json(card: &Card, value: &Value, index: Option<usize>) -> Result<Vec<f64>, String> {
    if let Some(f) = card.features.iter().find(|f| f.kind == FeatureKind::Text) {
        return Err(format!(
            "{} is free text, which this door does not take; send it to /api/v1/models/…/predict, the Open Inference Protocol (V2) or the form",
            f.name
        ));
    }
    row_and_texts_from_json(card, value, index).map(|(row, _)| row)
}

/// Converts one JSON row of named features into the model's input row and the row's free
/// texts (see `registry::encode::Texts`).
pub fn row_and_texts_from_json(
    card: &Card,
    value: &Value,
    index: Option<usize>,
) -> Result<(Vec<f64>, Vec<String>), String> {
    let at = index.map_or_else(String::new, |i| format!("row {i}: "));
    let Value::Object(map) = value else {
        return Err(format!("{at}each row must be an object of named features"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !card.features.iter().any(|f| &f.name == *k))
    {
        return Err(format!("{at}unknown feature {unknown:?}"));
    }
    let mut row = Vec::with_capacity(card.features.len());
    let mut texts = Vec::new();
    for f in &card.features {
        if f.kind == FeatureKind::Text {
            match map.get(&f.name) {
                Some(Value::String(s)) if s.chars().count() <= MAX_TEXT_CHARS => {
                    texts.push(s.clone())
                }
                Some(Value::String(_)) => {
                    return Err(format!(
                        "{at}{}: longer than the {MAX_TEXT_CHARS} characters a text may have",
                        f.name
                    ))
                }
                None => return Err(format!("{at}missing feature {:?}", f.name)),
                Some(other) => {
                    return Err(format!(
                        "{at}{}: expected text (a string), got {other}",
                        f.name
                    ))
                }
            }
            row.push(0.0);
            continue;
        }
        let v = match map.get(&f.name) {
            // null is a missing value, for the features that may be missing; a feature left
            // out is still an error (a misspelt name would otherwise pass as missing).
            Some(Value::Null) if f.allows_missing() => f64::NAN,
            Some(Value::Null) => {
                return Err(format!(
                    "{at}{}: null (missing) is not allowed for this feature; give a value",
                    f.name
                ))
            }
            // A feature with a default (a map input's key) may be left out.
            None => match f.default {
                Some(d) => d,
                None => return Err(format!("{at}missing feature {:?}", f.name)),
            },
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| format!("{at}{}: not a number", f.name))?,
            Some(Value::Bool(b)) if f.kind == FeatureKind::Boolean => f64::from(u8::from(*b)),
            Some(Value::String(s)) if f.kind == FeatureKind::Category => f
                .choice_index(s)
                .map(|i| i as f64)
                .ok_or_else(|| format!("{at}{}: {s:?} is not one of the choices", f.name))?,
            Some(other) => return Err(format!("{at}{}: expected a number, got {other}", f.name)),
        };
        row.push(f.check(v).map_err(|e| format!("{at}{}: {e}", f.name))?);
    }
    Ok((row, texts))
}
