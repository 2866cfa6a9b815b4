//! A card's features: kinds, bounds, choices, missing values, units, and how each reads and
//! shows a value.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    #[default]
    Number,
    Integer,
    Boolean,
    /// A choice among `choices`; the model receives the index of the choice.
    Category,
    /// One pixel of the card's image; the form takes a picture instead.
    Image,
    /// Free text, for a text input the model tokenizes itself (a TF-IDF pipeline): a text area
    /// on the form, a string in JSON.
    Text,
}

/// Whether a feature may arrive without a value (`missing = "allowed"` in the card): for models
/// that handle gaps themselves (an `Imputer` on the column, trees with missing-value tracks).
/// A missing value reaches the model as NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    #[default]
    Refused,
    Allowed,
}

impl Missing {
    pub(super) fn is_refused(&self) -> bool {
        *self == Missing::Refused
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: FeatureKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default, skip_serializing_if = "Missing::is_refused")]
    pub missing: Missing,
    /// The value a request that leaves the feature out gives it (a JSON v1 object without the
    /// key; the form starts with it). Features of a map input (`DictVectorizer`) are 0 when
    /// absent, as the operator makes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<f64>,
}

impl Feature {
    /// True when the feature may be left missing.
    pub fn allows_missing(&self) -> bool {
        self.missing == Missing::Allowed
    }

    pub fn display_label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }

    /// The position of a category's text among its choices.
    pub fn choice_index(&self, text: &str) -> Option<usize> {
        self.choices.as_ref()?.iter().position(|c| c == text)
    }

    /// The text of choice `index` of a category.
    pub fn choice_text(&self, index: f64) -> Option<&str> {
        if index < 0.0 || index.fract() != 0.0 {
            return None;
        }
        self.choices
            .as_ref()?
            .get(index as usize)
            .map(String::as_str)
    }

    /// Checks one value against the feature's type and bounds; the message names the problem.
    /// NaN is a missing value: taken when the feature allows one.
    pub fn check(&self, value: f64) -> Result<f64, String> {
        if value.is_nan() && self.allows_missing() {
            return Ok(value);
        }
        if !value.is_finite() {
            return Err("Enter a finite number (not NaN or infinity).".into());
        }
        match self.kind {
            FeatureKind::Integer if value.fract() != 0.0 => {
                return Err("Enter a whole number.".into())
            }
            FeatureKind::Boolean if value != 0.0 && value != 1.0 => {
                return Err("Choose yes or no.".into())
            }
            // A text's place in the row holds nothing; the text travels beside the row.
            FeatureKind::Text => return Ok(0.0),
            FeatureKind::Category => {
                let n = self.choices.as_ref().map_or(0, Vec::len);
                if value.fract() != 0.0 || value < 0.0 || value as usize >= n {
                    return Err("Choose one of the listed values.".into());
                }
            }
            _ => {}
        }
        match (self.min, self.max) {
            (Some(min), Some(max)) if value < min || value > max => Err(format!(
                "Enter a value between {} and {} (the range seen in training).",
                fmt_num(min),
                fmt_num(max)
            )),
            (Some(min), None) if value < min => {
                Err(format!("Enter a value of at least {}.", fmt_num(min)))
            }
            (None, Some(max)) if value > max => {
                Err(format!("Enter a value of at most {}.", fmt_num(max)))
            }
            _ => Ok(value),
        }
    }
}

/// A number without trailing zeros.
pub fn fmt_num(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}
