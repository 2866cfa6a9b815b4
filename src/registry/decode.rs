//! Model outputs, decoded with the card: a label with probabilities by label, or a value.

use serde::{Deserialize, Serialize};

use super::card::{classifier_outputs, Card, Task};
use plinth_inference::{NamedTensor, Signature, TensorData};

/// What one row's prediction says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Class probabilities in the card's label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probabilities: Vec<(String, f64)>,
}

impl Outcome {
    /// The result in one phrase: the label, or the value.
    pub fn headline(&self) -> String {
        match (&self.label, self.value) {
            (Some(label), _) => label.clone(),
            (None, Some(v)) => super::card::fmt_num((v * 1000.0).round() / 1000.0),
            _ => "—".into(),
        }
    }

    /// JSON as stored in the prediction log and returned by the APIs.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if let Some(label) = &self.label {
            out.insert("label".into(), label.clone().into());
        }
        if let Some(value) = self.value {
            out.insert("value".into(), value.into());
        }
        if !self.probabilities.is_empty() {
            let probs: serde_json::Map<String, serde_json::Value> = self
                .probabilities
                .iter()
                .map(|(l, p)| (l.clone(), (*p).into()))
                .collect();
            out.insert("probabilities".into(), probs.into());
        }
        out.into()
    }

    /// Reads back what [`Outcome::to_json`] stored, in the card's label order.
    pub fn from_json(json: &serde_json::Value, card: &Card) -> Outcome {
        let label = json
            .get("label")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let value = json.get("value").and_then(serde_json::Value::as_f64);
        let mut probabilities: Vec<(String, f64)> = json
            .get("probabilities")
            .and_then(|p| p.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|p| (k.clone(), p)))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(labels) = &card.labels {
            probabilities
                .sort_by_key(|(l, _)| labels.iter().position(|x| x == l).unwrap_or(usize::MAX));
        }
        Outcome {
            label,
            value,
            probabilities,
        }
    }
}

/// Decodes a batch of `n` rows.
pub fn decode(
    card: &Card,
    signature: &Signature,
    outputs: &[NamedTensor],
    n: usize,
) -> Vec<Outcome> {
    match card.task {
        Task::Classification => {
            let which = classifier_outputs(signature);
            (0..n)
                .map(|row| {
                    let probabilities: Vec<(String, f64)> = which
                        .probabilities
                        .and_then(|i| outputs.get(i))
                        .map(|t| {
                            let classes = t.shape.get(1).copied().unwrap_or(0);
                            (0..classes)
                                .map(|c| {
                                    let p = t.data.get_f64(row * classes + c).unwrap_or(f64::NAN);
                                    (card.label_name(c), p)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let label = which
                        .label
                        .and_then(|i| outputs.get(i))
                        .map(|t| match &t.data {
                            TensorData::String(v) => v.get(row).cloned().unwrap_or_default(),
                            data => data
                                .get_f64(row)
                                .map(|x| {
                                    // The class's position among the graph's labels, else the
                                    // value itself taken as the position.
                                    let text = (x as i64).to_string();
                                    let at = signature
                                        .labels
                                        .as_ref()
                                        .and_then(|l| l.iter().position(|l| *l == text));
                                    card.label_name(at.unwrap_or(x as usize))
                                })
                                .unwrap_or_default(),
                        })
                        .or_else(|| {
                            probabilities
                                .iter()
                                .max_by(|a, b| a.1.total_cmp(&b.1))
                                .map(|(l, _)| l.clone())
                        });
                    Outcome {
                        label,
                        value: None,
                        probabilities,
                    }
                })
                .collect()
        }
        Task::Regression => {
            let out = outputs.iter().find(|t| t.data.dtype().is_float());
            (0..n)
                .map(|row| {
                    let value = out.and_then(|t| {
                        let width = t.data.len() / n.max(1);
                        t.data.get_f64(row * width.max(1))
                    });
                    Outcome {
                        label: None,
                        value,
                        probabilities: Vec::new(),
                    }
                })
                .collect()
        }
    }
}
