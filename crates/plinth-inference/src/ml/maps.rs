//! Map inputs: `DictVectorizer` (scikit-learn's, on a `map(string, float)` or a map with int64
//! keys) and `CastMap` (`map(int64, float)`). tract has no map types, and a map fed to one of
//! these operators is a row of named columns anyway: the operator's output is the map's values
//! laid out by key, 0 where a key is absent. So the graph input becomes that `[N, keys]` tensor
//! and the operator an `Identity`; the keys become the columns' names (the derived card's
//! features, 0 by default), and a request's map is laid out by Plinth before the model runs.
//!
//! tract's reader keeps no map type, so a map input is known by the node that reads it.

use std::collections::BTreeMap;

use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};

/// `FLOAT` and `INT64` in ONNX's `TensorProto.DataType`.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn text(attr: Option<&AttributeProto>) -> Option<String> {
    attr.map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// The keys a map-reading node lays out as columns, in order, and the columns' element type.
fn layout(node: &NodeProto, max_columns: usize) -> Result<(Vec<String>, i32), String> {
    let name = &node.op_type;
    let keys: Vec<String> = match node.op_type.as_str() {
        "DictVectorizer" => {
            let strings = attr(node, "string_vocabulary").map_or(0, |a| a.strings.len());
            let ints = attr(node, "int64_vocabulary").map_or(0, |a| a.ints.len());
            if strings.max(ints) > max_columns {
                return Err(format!(
                    "{name}: a vocabulary of {} keys is more than the {max_columns} columns an input may have",
                    strings.max(ints)
                ));
            }
            match (
                attr(node, "string_vocabulary").filter(|a| !a.strings.is_empty()),
                attr(node, "int64_vocabulary").filter(|a| !a.ints.is_empty()),
            ) {
                (Some(a), None) => a
                    .strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
                (None, Some(a)) => a.ints.iter().map(i64::to_string).collect(),
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{name}: both string_vocabulary and int64_vocabulary are given; the specification allows one"
                    ))
                }
                (None, None) => return Err(format!("{name}: the vocabulary is empty")),
            }
        }
        "CastMap" => {
            let form = text(attr(node, "map_form")).unwrap_or_else(|| "DENSE".into());
            if form != "SPARSE" {
                return Err(format!(
                    "{name}: map_form {form} gives as many columns as each map has keys, and Plinth serves a fixed set of columns; export it with map_form SPARSE and max_map"
                ));
            }
            let max_map = attr(node, "max_map").map_or(1, |a| a.i);
            let columns = usize::try_from(max_map)
                .ok()
                .filter(|m| (1..=max_columns).contains(m))
                .ok_or_else(|| {
                    format!("{name}: max_map {max_map} is not between 1 and {max_columns}")
                })?;
            (0..columns).map(|k| k.to_string()).collect()
        }
        _ => return Err(format!("{name} does not read a map")),
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = keys.iter().find(|k| !seen.insert(k.as_str())) {
        return Err(format!("{name}: the key {twice:?} is given twice"));
    }
    let elem = match node.op_type.as_str() {
        "CastMap" => match text(attr(node, "cast_to")).as_deref() {
            None | Some("TO_FLOAT") => FLOAT,
            Some("TO_INT64") => INT64,
            Some(other) => {
                return Err(format!(
                    "{name}: cast_to {other} gives text, which Plinth's map inputs do not take"
                ))
            }
        },
        _ => FLOAT,
    };
    Ok((keys, elem))
}

/// Replaces each `DictVectorizer` and `CastMap` reading a graph input with an `Identity`, the
/// input becoming a `[N, keys]` tensor; returns the keys by input name. Refuses (saying why)
/// such a node whose map is not a graph input of its own, and layouts Plinth cannot serve.
pub fn densify(
    model: &mut ModelProto,
    max_columns: usize,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut columns = BTreeMap::new();
    let Some(graph) = model.graph.as_mut() else {
        return Ok(columns);
    };
    let readers: Vec<usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op_type.as_str(), "DictVectorizer" | "CastMap"))
        .map(|(i, _)| i)
        .collect();
    for i in readers {
        let node = &graph.node[i];
        let (op, input) = (
            node.op_type.clone(),
            node.input.first().cloned().unwrap_or_default(),
        );
        if !graph.input.iter().any(|g| g.name == input) {
            return Err(format!(
                "{op} reads {input:?}, which is not one of the graph's inputs; Plinth takes maps only as inputs"
            ));
        }
        let readers = graph
            .node
            .iter()
            .filter(|n| n.input.contains(&input))
            .count();
        if readers > 1 || graph.output.iter().any(|o| o.name == input) {
            return Err(format!(
                "the map input {input:?} is read by more than its {op}"
            ));
        }
        let (keys, elem) = layout(node, max_columns)?;
        let width = keys.len() as i64;
        let node = &mut graph.node[i];
        node.op_type = "Identity".into();
        node.domain.clear();
        node.attribute.clear();
        node.input.truncate(1);
        if let Some(g) = graph.input.iter_mut().find(|g| g.name == input) {
            g.r#type = Some(super::zipmap::matrix_type(elem, width));
        }
        columns.insert(input, keys);
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::tensor_shape_proto::dimension;
    use tract_onnx::pb::type_proto::Value;
    use tract_onnx::pb::{GraphProto, ValueInfoProto};

    fn strings(name: &str, values: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            strings: values.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }

    fn text_attr(name: &str, value: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            s: value.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn graph(node: NodeProto) -> ModelProto {
        ModelProto {
            graph: Some(GraphProto {
                input: vec![ValueInfoProto {
                    name: "map".into(),
                    ..Default::default()
                }],
                output: vec![ValueInfoProto {
                    name: "out".into(),
                    ..Default::default()
                }],
                node: vec![node],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            domain: "ai.onnx.ml".into(),
            input: vec!["map".into()],
            output: vec!["out".into()],
            attribute,
            ..Default::default()
        }
    }

    fn width_of(model: &ModelProto) -> (i32, Option<i64>) {
        let input = &model.graph.as_ref().unwrap().input[0];
        match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(Value::TensorType(t)) => (
                t.elem_type,
                match t.shape.as_ref().unwrap().dim[1].value {
                    Some(dimension::Value::DimValue(v)) => Some(v),
                    _ => None,
                },
            ),
            None => (0, None),
        }
    }

    #[test]
    fn a_dict_vectorizer_becomes_its_vocabularys_columns() {
        // The specification's example: vocabulary ["a", "c", "b", "z"].
        let mut model = graph(node(
            "DictVectorizer",
            vec![strings("string_vocabulary", &["a", "c", "b", "z"])],
        ));
        let columns = densify(&mut model, 100).unwrap();
        assert_eq!(columns["map"], ["a", "c", "b", "z"]);
        assert_eq!(model.graph.as_ref().unwrap().node[0].op_type, "Identity");
        assert_eq!(width_of(&model), (FLOAT, Some(4)));
    }

    #[test]
    fn integer_keys_and_sparse_cast_maps_are_columns_too() {
        let mut model = graph(node(
            "DictVectorizer",
            vec![AttributeProto {
                name: "int64_vocabulary".into(),
                ints: vec![7, 3],
                ..Default::default()
            }],
        ));
        assert_eq!(densify(&mut model, 100).unwrap()["map"], ["7", "3"]);

        let mut model = graph(node(
            "CastMap",
            vec![
                text_attr("map_form", "SPARSE"),
                text_attr("cast_to", "TO_INT64"),
                AttributeProto {
                    name: "max_map".into(),
                    i: 3,
                    ..Default::default()
                },
            ],
        ));
        assert_eq!(densify(&mut model, 100).unwrap()["map"], ["0", "1", "2"]);
        assert_eq!(width_of(&model), (INT64, Some(3)));
    }

    #[test]
    fn layouts_plinth_cannot_serve_are_refused_saying_why() {
        let cases = [
            (
                node("CastMap", vec![]),
                "map_form DENSE gives as many columns",
            ),
            (
                node(
                    "CastMap",
                    vec![
                        text_attr("map_form", "SPARSE"),
                        AttributeProto {
                            name: "max_map".into(),
                            i: 1 << 40,
                            ..Default::default()
                        },
                    ],
                ),
                "is not between 1 and 100",
            ),
            (
                node(
                    "CastMap",
                    vec![
                        text_attr("map_form", "SPARSE"),
                        text_attr("cast_to", "TO_STRING"),
                    ],
                ),
                "gives text",
            ),
            (node("DictVectorizer", vec![]), "the vocabulary is empty"),
            (
                node(
                    "DictVectorizer",
                    vec![strings("string_vocabulary", &["a", "b", "a"])],
                ),
                "the key \"a\" is given twice",
            ),
            (
                node(
                    "DictVectorizer",
                    vec![strings(
                        "string_vocabulary",
                        &(0..101).map(|_| "k").collect::<Vec<_>>(),
                    )],
                ),
                "more than the 100 columns",
            ),
        ];
        for (node, why) in cases {
            let mut model = graph(node);
            let e = densify(&mut model, 100).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // A map made inside the graph rather than given.
        let mut inner = node("DictVectorizer", vec![strings("string_vocabulary", &["a"])]);
        inner.input = vec!["made".into()];
        let e = densify(&mut graph(inner), 100).unwrap_err();
        assert!(e.contains("not one of the graph's inputs"), "{e}");
    }
}
