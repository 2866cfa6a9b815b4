//! A card's rows as the model's input tensors and as the prediction log stores them, and the
//! answers as stored: the way in, beside [`super::decode`], the way out. No state: the serving
//! path, batch jobs, streams and `plinth score` all call these.

use crate::registry::card::{Card, FeatureKind};
use crate::registry::decode::Outcome;
use plinth_inference::explain::Explainer;
use plinth_inference::{DType, LoadedModel, NamedTensor, TensorData, TensorSpec};
use plinth_store::predictions::{StoredInputs, StoredOutputs};

/// The free texts of rows ([`FeatureKind::Text`] features): row → the row's texts, in the
/// card's order of those features. A row's own place for a text holds nothing. Empty for a
/// card with no free text.
pub type Texts = [Vec<String>];

/// The text of free-text feature `c` (a position among the card's features) in row `r`.
fn text_of<'a>(card: &Card, texts: &'a Texts, r: usize, c: usize) -> Option<&'a str> {
    let slot = card.features[..c.min(card.features.len())]
        .iter()
        .filter(|f| f.kind == FeatureKind::Text)
        .count();
    texts.get(r)?.get(slot).map(String::as_str)
}

/// Rows of the card's features as the prediction log stores them: numbers when they all are,
/// otherwise per row feature name → value (a number, or the text a text input received).
pub fn stored_inputs(
    card: &Card,
    specs: &[TensorSpec],
    rows: &[Vec<f64>],
    texts: &Texts,
) -> StoredInputs {
    let text = text_columns(specs);
    let width = card.features.len();
    if text.is_empty() && rows.iter().all(|r| r.len() == width) {
        StoredInputs::Numbers(rows.iter().flatten().copied().collect())
    } else {
        StoredInputs::Json(
            rows.iter()
                .enumerate()
                .map(|(r, row)| {
                    card.features
                        .iter()
                        .zip(row)
                        .enumerate()
                        .map(|(c, (f, v))| {
                            let value = if f.kind == FeatureKind::Text {
                                text_of(card, texts, r, c)
                                    .map_or(serde_json::Value::Null, |t| t.to_string().into())
                            } else if text.contains(&c) {
                                f.choice_text(*v)
                                    .map_or(serde_json::Value::Null, |t| t.to_string().into())
                            } else {
                                serde_json::json!(v)
                            };
                            (f.name.clone(), value)
                        })
                        .collect::<serde_json::Map<_, _>>()
                        .into()
                })
                .collect(),
        )
    }
}

/// The feature positions that feed text inputs.
fn text_columns(specs: &[TensorSpec]) -> Vec<usize> {
    let mut offset = 0;
    let mut text = Vec::new();
    for spec in specs {
        let width = spec.row_width();
        if spec.dtype == DType::String {
            text.extend(offset..offset + width);
        }
        offset += width;
    }
    text
}

/// The model's input tensors for rows of the card's features: the features are the inputs'
/// columns in signature order; a text input receives the text of the chosen category, or the
/// row's free text.
pub fn input_tensors(
    card: &Card,
    specs: &[TensorSpec],
    rows: &[Vec<f64>],
    texts: &Texts,
) -> Vec<NamedTensor> {
    let n = rows.len();
    let mut offset = 0;
    specs
        .iter()
        .map(|spec| {
            let width = spec.row_width();
            let columns = offset..offset + width;
            offset += width;
            // Rows have one value per feature (checked against the card); a short one would
            // make a tensor of the wrong size, which the model refuses.
            let values = || {
                rows.iter()
                    .flat_map(|r| r.get(columns.clone()).into_iter().flatten().copied())
            };
            let data = match spec.dtype {
                DType::F64 => TensorData::F64(values().collect()),
                DType::F32 => TensorData::F32(values().map(|v| v as f32).collect()),
                DType::I64 => TensorData::I64(values().map(|v| v as i64).collect()),
                DType::I32 => TensorData::I32(values().map(|v| v as i32).collect()),
                DType::Bool => TensorData::Bool(values().map(|v| v != 0.0).collect()),
                DType::String => TensorData::String(
                    rows.iter()
                        .enumerate()
                        .flat_map(|(i, r)| {
                            columns.clone().map(move |c| match card.features.get(c) {
                                Some(f) if f.kind == FeatureKind::Text => {
                                    text_of(card, texts, i, c).unwrap_or_default().to_string()
                                }
                                f => f
                                    .zip(r.get(c))
                                    .and_then(|(f, v)| f.choice_text(*v))
                                    .unwrap_or_default()
                                    .to_string(),
                            })
                        })
                        .collect(),
                ),
            };
            let mut shape = vec![n];
            shape.extend(spec.shape.iter().skip(1).map(|d| d.unwrap_or(1)));
            NamedTensor {
                name: spec.name.clone(),
                shape,
                data,
            }
        })
        .collect()
}

/// Outcomes as stored: typed arrays when every row has the same shape (probabilities named by
/// the card's labels, in order), otherwise one JSON object per row.
pub fn stored_outputs(card: &Card, outcomes: &[Outcome]) -> StoredOutputs {
    fn all_or_none<T>(items: impl Iterator<Item = Option<T>>) -> Result<Option<Vec<T>>, ()> {
        let mut out = Vec::new();
        let mut missing = 0;
        for item in items {
            match item {
                Some(v) => out.push(v),
                None => missing += 1,
            }
        }
        match (out.is_empty(), missing) {
            (_, 0) if !out.is_empty() => Ok(Some(out)),
            (true, _) => Ok(None),
            _ => Err(()),
        }
    }
    let classes = outcomes.first().map_or(0, |o| o.probabilities.len());
    let proba_named = outcomes.iter().all(|o| {
        o.probabilities.len() == classes
            && o.probabilities
                .iter()
                .enumerate()
                .all(|(i, (name, _))| *name == card.label_name(i))
    });
    let label = all_or_none(outcomes.iter().map(|o| o.label.clone()));
    let value = all_or_none(outcomes.iter().map(|o| o.value));
    match (label, value, proba_named) {
        (Ok(label), Ok(value), true) => StoredOutputs {
            label,
            value,
            proba: (classes > 0).then(|| {
                outcomes
                    .iter()
                    .flat_map(|o| o.probabilities.iter().map(|(_, p)| *p))
                    .collect()
            }),
            json: None,
        },
        _ => StoredOutputs {
            json: Some(outcomes.iter().map(Outcome::to_json).collect()),
            ..StoredOutputs::default()
        },
    }
}

/// The explained input's values for rows of card features, as `f32` rows, and its width.
pub fn explained_input(
    card: &Card,
    loaded: &LoadedModel,
    explainer: &Explainer,
    rows: &[Vec<f64>],
) -> Result<(Vec<f32>, usize), String> {
    let specs = &loaded.signature.inputs;
    let spec = specs
        .iter()
        .find(|s| s.name == explainer.input())
        .ok_or("the explained input is not one of the model's inputs")?;
    // Explained models take numbers only.
    let tensors = input_tensors(card, specs, rows, &[]);
    let tensor = tensors
        .into_iter()
        .find(|t| t.name == spec.name)
        .ok_or("the explained input could not be made")?;
    let x = (0..tensor.data.len())
        .map(|i| tensor.data.get_f64(i).map(|v| v as f32))
        .collect::<Option<Vec<f32>>>()
        .ok_or("the explained input is not numeric")?;
    Ok((x, spec.row_width()))
}
