//! The model card: what turns a tensor signature into a form, labels and a description.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use plinth_inference::{DType, Signature};

mod feature;

pub use feature::{fmt_num, Feature, FeatureKind, Missing};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    #[default]
    Classification,
    Regression,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }
}

/// How a picture becomes the model's input (the digits model's 8×8 grid of ink levels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    /// The value of full ink.
    pub max_value: f64,
    /// True when the training images are light ink on dark (so a dark-on-light photo is inverted).
    #[serde(default)]
    pub invert: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The training run's parameters (hyper-parameters), shown beside the metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The data set it was evaluated on (`name` or `name@version`, as `dataset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_dataset: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub task: Task,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    #[serde(default)]
    pub features: Vec<Feature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// True when there was no card.toml and this was derived from the signature.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub derived: bool,
    /// `[batching]`: run concurrent requests as one batch (see `inference::batching`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
}

/// A card's `[batching]` table, as Triton's `dynamic_batching`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// The longest a request waits for others to join its batch, in microseconds (default 300,
    /// at most 10,000).
    #[serde(default = "Batching::default_wait")]
    pub max_wait_us: u64,
    /// The most rows in one batch (default 64, at most 4,096).
    #[serde(default = "Batching::default_rows")]
    pub max_rows: usize,
}

impl Batching {
    fn default_wait() -> u64 {
        300
    }

    fn default_rows() -> usize {
        64
    }

    /// The settings the batcher runs with, within the documented bounds.
    pub fn settings(&self) -> plinth_inference::batching::Settings {
        plinth_inference::batching::Settings {
            max_wait: std::time::Duration::from_micros(self.max_wait_us.min(10_000)),
            max_rows: self.max_rows.clamp(1, 4096),
        }
    }
}

/// Where the label and the probabilities are among a classifier's outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassifierOutputs {
    pub label: Option<usize>,
    pub probabilities: Option<usize>,
}

impl Card {
    /// Parses `card.toml`; the message says what is wrong and where.
    pub fn parse(text: &str) -> Result<Card, String> {
        toml::from_str::<Card>(text).map_err(|e| format!("card.toml is not valid: {}", e.message()))
    }

    /// A card as stored in the registry (JSON); a default card when absent or unreadable.
    pub fn from_stored(json: Option<&serde_json::Value>) -> Card {
        json.and_then(|j| serde_json::from_value(j.clone()).ok())
            .unwrap_or_default()
    }

    /// A card for a model that came without one: generic field names from the signature (the
    /// input's name for a one-column input), choices from the graph for text inputs.
    pub fn derived(name: &str, signature: &Signature) -> Card {
        let outputs = classifier_outputs(signature);
        let task = if outputs.label.is_some() {
            Task::Classification
        } else {
            Task::Regression
        };
        let labels = signature.labels.clone().or_else(|| {
            outputs.probabilities.and_then(|p| {
                signature.outputs[p]
                    .shape
                    .get(1)
                    .copied()
                    .flatten()
                    .map(|c| (0..c).map(|i| i.to_string()).collect())
            })
        });
        let single = signature.inputs.len() == 1;
        let mut features: Vec<Feature> = Vec::new();
        for input in &signature.inputs {
            let width = input.row_width();
            let keys = signature
                .columns
                .get(&input.name)
                .filter(|k| k.len() == width);
            for c in 0..width {
                let (name, label) = if let Some(key) = keys.and_then(|k| k.get(c)) {
                    // A map's key; prefixed by its input when another input has it too.
                    let taken = features.iter().any(|f| &f.name == key)
                        || signature
                            .columns
                            .iter()
                            .any(|(other, keys)| *other != input.name && keys.contains(key));
                    if taken {
                        (
                            format!("{}.{key}", input.name),
                            format!("{} {key}", input.name),
                        )
                    } else {
                        (key.clone(), key.clone())
                    }
                } else if single {
                    (format!("x{c}"), format!("Input {c}"))
                } else if width == 1 {
                    (input.name.clone(), input.name.replace('_', " "))
                } else {
                    (format!("{}{c}", input.name), format!("{} {c}", input.name))
                };
                let (kind, choices) = match input.dtype {
                    // A text input with no encoder's categories takes free text.
                    DType::String => match signature
                        .categories
                        .get(&input.name)
                        .filter(|c| !c.is_empty())
                    {
                        Some(categories) => (FeatureKind::Category, Some(categories.clone())),
                        None => (FeatureKind::Text, None),
                    },
                    DType::Bool => (FeatureKind::Boolean, None),
                    DType::I64 | DType::I32 => (FeatureKind::Integer, None),
                    DType::F32 | DType::F64 => (FeatureKind::Number, None),
                };
                features.push(Feature {
                    name,
                    label: Some(label),
                    unit: None,
                    kind,
                    min: None,
                    max: None,
                    step: None,
                    choices,
                    help: keys.map(|_| format!("0 when the {} map has no such key.", input.name)),
                    default: keys.map(|_| 0.0),
                    missing: if signature
                        .missing
                        .get(&input.name)
                        .is_some_and(|cols| cols.contains(&c))
                    {
                        Missing::Allowed
                    } else {
                        Missing::Refused
                    },
                });
            }
        }
        Card {
            title: name.to_string(),
            description: String::new(),
            task,
            labels,
            features,
            derived: true,
            ..Card::default()
        }
    }

    /// Checks that the card describes this signature: its features are the inputs' columns, in
    /// order.
    pub fn check_against(&self, signature: &Signature) -> Result<(), String> {
        if signature.inputs.is_empty() {
            return Err("The model has no inputs.".into());
        }
        for input in &signature.inputs {
            if input.shape.len() != 2 {
                return Err(format!(
                    "The input {} must be a matrix [batch, columns]; it is {} {}.",
                    input.name,
                    input.dtype.v2_name(),
                    plinth_inference::shape_text(&input.shape)
                ));
            }
        }
        let width: usize = signature.inputs.iter().map(|i| i.row_width()).sum();
        if self.features.len() != width {
            return Err(match signature.inputs.as_slice() {
                [input] => format!(
                    "The card lists {} features but the model's input {} takes {} columns.",
                    self.features.len(),
                    input.name,
                    width
                ),
                inputs => format!(
                    "The card lists {} features but the model's {} inputs take {} columns.",
                    self.features.len(),
                    inputs.len(),
                    width
                ),
            });
        }
        let mut column = 0;
        for input in &signature.inputs {
            for f in &self.features[column..column + input.row_width()] {
                if input.dtype == DType::String
                    && f.kind != FeatureKind::Text
                    && (f.kind != FeatureKind::Category
                        || f.choices.as_ref().is_none_or(Vec::is_empty))
                {
                    return Err(format!(
                        "The feature {} feeds the text input {}: give it type = \"category\" and the values it can take as choices, or type = \"text\" for free text.",
                        f.name, input.name
                    ));
                }
                if input.dtype != DType::String && f.kind == FeatureKind::Text {
                    return Err(format!(
                        "The feature {} is free text, but it feeds the {} input {}: text goes to text inputs only.",
                        f.name,
                        input.dtype.v2_name(),
                        input.name
                    ));
                }
                if f.allows_missing() && !input.dtype.is_float() {
                    return Err(format!(
                        "The feature {} may be missing, but it feeds the {} input {}, which cannot hold a missing value (NaN): only float inputs can.",
                        f.name,
                        input.dtype.v2_name(),
                        input.name
                    ));
                }
            }
            column += input.row_width();
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.features {
            if f.name.trim().is_empty() {
                return Err("Every feature in the card needs a name.".into());
            }
            if !seen.insert(f.name.as_str()) {
                return Err(format!("The card names the feature {} twice.", f.name));
            }
            if let (Some(min), Some(max)) = (f.min, f.max) {
                if min > max {
                    return Err(format!("The feature {} has min above max.", f.name));
                }
            }
            if f.kind == FeatureKind::Category && f.choices.as_ref().is_none_or(Vec::is_empty) {
                return Err(format!("The category feature {} needs choices.", f.name));
            }
        }
        if let Some(example) = &self.example {
            if example.len() != width {
                return Err(format!(
                    "The card's example has {} values for {} features.",
                    example.len(),
                    width
                ));
            }
        }
        if let Some(image) = &self.image {
            if !(1..=256).contains(&image.width) || !(1..=256).contains(&image.height) {
                return Err(format!(
                    "The card's image is {}×{}; each side must be between 1 and 256.",
                    image.width, image.height
                ));
            }
            if !image.max_value.is_finite() {
                return Err("The card's image needs a finite max_value.".into());
            }
            if u64::from(image.width) * u64::from(image.height) != width as u64 {
                return Err(format!(
                    "The card's image is {}×{} but the model takes {} values.",
                    image.width, image.height, width
                ));
            }
        }
        match self.task {
            Task::Classification => {
                let outputs = classifier_outputs(signature);
                if outputs.label.is_none() && outputs.probabilities.is_none() {
                    return Err("The card says classification, but the model has no label or probability output.".into());
                }
                if let (Some(labels), Some(p)) = (&self.labels, outputs.probabilities) {
                    if let Some(Some(classes)) = signature.outputs[p].shape.get(1) {
                        if labels.len() != *classes {
                            return Err(format!(
                                "The card lists {} labels but the model gives {} class probabilities.",
                                labels.len(),
                                classes
                            ));
                        }
                    }
                }
            }
            Task::Regression => {
                if !signature.outputs.iter().any(|o| o.dtype.is_float()) {
                    return Err(
                        "The card says regression, but the model has no numeric output.".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// A value per feature for the form: the card's example, or the middle of each range.
    pub fn example_row(&self) -> Vec<f64> {
        if let Some(example) = &self.example {
            return example.clone();
        }
        self.features
            .iter()
            .map(|f| match (f.default, f.min, f.max) {
                (Some(d), _, _) => d,
                (None, Some(a), Some(b)) => {
                    let mid = (a + b) / 2.0;
                    match f.step {
                        Some(step) if step > 0.0 => (mid / step).round() * step,
                        _ => mid,
                    }
                }
                (None, Some(a), None) => a,
                (None, None, Some(b)) => b,
                (None, None, None) => 0.0,
            })
            .collect()
    }

    /// The display name of class `index`.
    pub fn label_name(&self, index: usize) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(index).cloned())
            .unwrap_or_else(|| index.to_string())
    }

    pub fn display_title<'a>(&'a self, name: &'a str) -> &'a str {
        if self.title.trim().is_empty() {
            name
        } else {
            &self.title
        }
    }
}

/// Finds a classifier's label output (integers or strings, one per row) and its probability
/// output (floats, one row of classes per row).
pub fn classifier_outputs(signature: &Signature) -> ClassifierOutputs {
    let label = signature.outputs.iter().position(|o| {
        matches!(o.dtype, DType::I64 | DType::I32 | DType::String) && o.shape.len() <= 2
    });
    let probabilities = signature.outputs.iter().position(|o| {
        o.dtype.is_float() && o.shape.len() == 2 && o.shape[1].is_some_and(|c| c > 1)
    });
    ClassifierOutputs {
        label,
        probabilities,
    }
}

#[cfg(test)]
mod tests;
