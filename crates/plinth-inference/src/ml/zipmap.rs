//! What Plinth reads from the graph before tract loads it: `ZipMap` and the class labels, and
//! the categories of the encoders that text inputs feed.
//!
//! `ZipMap` turns a `[N, C]` probability tensor into a list of label → probability maps. tract
//! has no sequence or map types, and Plinth serves probabilities by label anyway, so the node
//! becomes an `Identity` and its output a float tensor; the labels it would have used are kept
//! for the model's signature.

use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};
use tract_onnx::pb::type_proto::{Tensor as TensorType, Value};
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorShapeProto, TypeProto};

/// `FLOAT` in ONNX's `TensorProto.DataType`.
const FLOAT: i32 = 1;

fn strings(attr: &AttributeProto) -> Vec<String> {
    attr.strings
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A `[N, columns]` tensor type of `elem` (ONNX's `TensorProto.DataType`), N the batch.
pub(super) fn matrix_type(elem: i32, columns: i64) -> TypeProto {
    let dim = |value| Dimension {
        denotation: String::new(),
        value: Some(value),
    };
    TypeProto {
        denotation: String::new(),
        value: Some(Value::TensorType(TensorType {
            elem_type: elem,
            shape: Some(TensorShapeProto {
                dim: vec![
                    dim(dimension::Value::DimParam("N".into())),
                    dim(dimension::Value::DimValue(columns)),
                ],
            }),
        })),
    }
}

/// The class labels a node declares, by the attribute names its operator uses.
fn node_labels(node: &NodeProto) -> Option<Vec<String>> {
    let (ints, strs) = match node.op_type.as_str() {
        "ZipMap" | "TreeEnsembleClassifier" | "LinearClassifier" => {
            ("classlabels_int64s", "classlabels_strings")
        }
        "SVMClassifier" => ("classlabels_ints", "classlabels_strings"),
        _ => return None,
    };
    let find = |name: &str| node.attribute.iter().find(|a| a.name == name);
    if let Some(a) = find(strs).filter(|a| !a.strings.is_empty()) {
        return Some(strings(a));
    }
    find(ints)
        .filter(|a| !a.ints.is_empty())
        .map(|a| a.ints.iter().map(i64::to_string).collect())
}

/// Replaces every `ZipMap` with an `Identity` whose output is a `[N, C]` float tensor, and
/// returns the class labels of the model: ZipMap's, else those of its classifier operator.
pub fn unzip(model: &mut ModelProto) -> Option<Vec<String>> {
    let graph = model.graph.as_mut()?;
    let mut labels = None;
    let mut zipped = Vec::new();
    for node in graph.node.iter_mut().filter(|n| n.op_type == "ZipMap") {
        let found = node_labels(node);
        let classes = found.as_ref().map_or(0, Vec::len);
        labels = labels.or(found);
        node.op_type = "Identity".into();
        node.domain.clear();
        node.attribute.clear();
        zipped.extend(node.output.iter().map(|o| (o.clone(), classes)));
    }
    for output in graph.output.iter_mut() {
        if let Some((_, classes)) = zipped.iter().find(|(name, _)| *name == output.name) {
            output.r#type = Some(matrix_type(FLOAT, *classes as i64));
        }
    }
    labels.or_else(|| graph.node.iter().find_map(node_labels))
}

/// For each text input of the graph, the categories of the encoder it feeds (through
/// `Identity`, `Reshape`, `Gather` and the like): the values a form can offer for it.
pub fn categories(model: &ModelProto) -> std::collections::BTreeMap<String, Vec<String>> {
    const PASS_THROUGH: [&str; 7] = [
        "Identity",
        "Reshape",
        "Gather",
        "Cast",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
    ];
    const STRING: i32 = 8;
    let mut found = std::collections::BTreeMap::new();
    let Some(graph) = model.graph.as_ref() else {
        return found;
    };
    for input in &graph.input {
        let is_text = matches!(
            input.r#type.as_ref().and_then(|t| t.value.as_ref()),
            Some(Value::TensorType(t)) if t.elem_type == STRING
        );
        if !is_text {
            continue;
        }
        let mut names = vec![input.name.clone()];
        for _ in 0..6 {
            let consumers: Vec<&NodeProto> = graph
                .node
                .iter()
                .filter(|n| n.input.first().is_some_and(|i| names.contains(i)))
                .collect();
            let cats = consumers.iter().find_map(|n| {
                n.attribute
                    .iter()
                    .find(|a| {
                        matches!(
                            a.name.as_str(),
                            "cats_strings" | "keys_strings" | "classes_strings"
                        ) && !a.strings.is_empty()
                    })
                    .map(strings)
            });
            if let Some(cats) = cats {
                found.insert(input.name.clone(), cats);
                break;
            }
            names = consumers
                .iter()
                .filter(|n| PASS_THROUGH.contains(&n.op_type.as_str()))
                .flat_map(|n| n.output.iter().cloned())
                .collect();
            if names.is_empty() {
                break;
            }
        }
    }
    found
}

/// The columns of each float input that the model handles when missing (NaN), input name →
/// columns: every column of an input that reaches an `Imputer` whose marker is NaN (through
/// `Identity`, `Cast`, `Reshape`, `Flatten` and `Concat`, as scikit-learn's column pipelines
/// join their columns), and the columns a tree ensemble reading the input itself (through the
/// same nodes but `Concat`, which moves the columns) sends down a missing-value track. A card
/// can say more.
pub fn missing_columns(model: &ModelProto) -> std::collections::BTreeMap<String, Vec<usize>> {
    const PASS_THROUGH: [&str; 5] = ["Identity", "Reshape", "Cast", "Flatten", "Concat"];
    const DOUBLE: i32 = 11;
    let mut found = std::collections::BTreeMap::new();
    let Some(graph) = model.graph.as_ref() else {
        return found;
    };
    for input in &graph.input {
        let width = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) if t.elem_type == FLOAT || t.elem_type == DOUBLE => t
                .shape
                .as_ref()
                .and_then(|s| s.dim.get(1))
                .and_then(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                }),
            _ => None,
        };
        let Some(width) = width else { continue };
        let mut columns = std::collections::BTreeSet::new();
        // The tensors the input's columns reach, and whether they are still in their places.
        let mut names: Vec<(String, bool)> = vec![(input.name.clone(), true)];
        for _ in 0..8 {
            let mut next = Vec::new();
            for n in &graph.node {
                // The data input of most operators is the first; Concat takes it anywhere.
                let reached = names.iter().find(|(name, _)| {
                    if n.op_type == "Concat" {
                        n.input.contains(name)
                    } else {
                        n.input.first() == Some(name)
                    }
                });
                let Some((_, in_place)) = reached else {
                    continue;
                };
                let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
                match n.op_type.as_str() {
                    "Imputer" if attr("replaced_value_float").is_some_and(|a| a.f.is_nan()) => {
                        columns.extend(0..width);
                    }
                    "TreeEnsembleRegressor" | "TreeEnsembleClassifier" | "TreeEnsemble"
                        if *in_place =>
                    {
                        if let (Some(tracks), Some(features)) = (
                            attr("nodes_missing_value_tracks_true"),
                            attr("nodes_featureids"),
                        ) {
                            columns.extend(
                                tracks
                                    .ints
                                    .iter()
                                    .zip(&features.ints)
                                    .filter(|(t, f)| **t != 0 && (0..width as i64).contains(*f))
                                    .map(|(_, f)| *f as usize),
                            );
                        }
                    }
                    op if PASS_THROUGH.contains(&op) => {
                        let kept = *in_place && op != "Concat";
                        next.extend(n.output.iter().map(|o| (o.clone(), kept)));
                    }
                    _ => {}
                }
            }
            if next.is_empty() || next.len() > 64 {
                break;
            }
            names = next;
        }
        if !columns.is_empty() {
            found.insert(input.name.clone(), columns.into_iter().collect());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zoo(name: &str) -> ModelProto {
        use tract_onnx::prelude::Framework;
        let bytes = std::fs::read(format!("tests/fixtures/zoo/{name}.onnx")).unwrap();
        tract_onnx::onnx()
            .proto_model_for_read(&mut std::io::Cursor::new(bytes))
            .unwrap()
    }

    #[test]
    fn zipmap_becomes_identity_with_a_float_output_and_its_labels_are_kept() {
        let mut model = zoo("string_labels_logistic");
        let labels = unzip(&mut model);
        assert_eq!(
            labels,
            Some(vec![
                "setosa".to_string(),
                "versicolor".into(),
                "virginica".into()
            ])
        );
        let graph = model.graph.as_ref().unwrap();
        assert!(graph.node.iter().all(|n| n.op_type != "ZipMap"));
        let output = graph
            .output
            .iter()
            .find(|o| o.name == "output_probability")
            .unwrap();
        let Some(Value::TensorType(t)) = output.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("not a tensor");
        };
        assert_eq!(t.elem_type, FLOAT);
    }

    #[test]
    fn text_inputs_get_the_categories_of_the_encoder_they_feed() {
        let cats = categories(&zoo("mixed_pipeline"));
        assert_eq!(cats["city"], vec!["Lyon", "Oslo", "Porto", "Turin"]);
        assert_eq!(cats["plan"], vec!["basic", "plus", "pro"]);
        assert!(!cats.contains_key("age"));
    }
}
