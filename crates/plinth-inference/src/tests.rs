use super::*;

fn model(name: &str) -> LoadedModel {
    let bytes = std::fs::read(format!("models/{name}/1/model.onnx")).expect("shipped model");
    load(&bytes).expect("loads")
}

fn fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("tests/fixtures/{name}.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

/// The fixture's rows in column order: (values, rows, width).
fn rows(fx: &serde_json::Value) -> (Vec<f32>, usize, usize) {
    let rows = fx["rows"].as_array().unwrap();
    let width = rows[0].as_array().unwrap().len();
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    (data, rows.len(), width)
}

#[test]
fn the_signature_comes_from_the_file() {
    let iris = model("iris");
    assert_eq!(iris.signature.inputs.len(), 1);
    assert_eq!(iris.signature.inputs[0].dtype, DType::F32);
    assert_eq!(iris.signature.inputs[0].row_width(), 4);
    let names: Vec<&str> = iris
        .signature
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(names, ["label", "probabilities"]);
    assert_eq!(iris.signature.outputs[0].dtype, DType::I64);
    assert!(
        iris.metadata.values().any(|v| v.contains("skl2onnx")),
        "{:?}",
        iris.metadata
    );
}

#[test]
fn outputs_match_onnxruntime() {
    for name in ["iris", "diabetes", "digits"] {
        let m = model(name);
        let fx = fixture(name);
        let (data, n, width) = rows(&fx);
        let input = NamedTensor {
            name: m.signature.inputs[0].name.clone(),
            shape: vec![n, width],
            data: TensorData::F32(data),
        };
        let out = m.run(vec![input]).expect("runs");
        for t in out {
            let expected: Vec<f64> = flatten(&fx["outputs"][&t.name]);
            assert_eq!(expected.len(), t.data.len(), "{name}.{}", t.name);
            for (i, e) in expected.iter().enumerate() {
                let got = t.data.get_f64(i).unwrap();
                assert!(
                    (got - e).abs() <= 1e-5 * e.abs().max(1.0),
                    "{name}.{}[{i}]: {got} vs {e}",
                    t.name
                );
            }
        }
    }
}

fn flatten(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

#[test]
fn too_few_columns_are_refused_before_tract() {
    let m = model("iris");
    let err = m
        .run(vec![NamedTensor {
            name: "X".into(),
            shape: vec![1, 3],
            data: TensorData::F32(vec![1.0, 2.0, 3.0]),
        }])
        .unwrap_err();
    assert!(err.to_string().contains("must have shape [-1, 4]"), "{err}");
}

#[test]
fn infinity_and_wrong_types_are_refused() {
    let m = model("iris");
    let inf = m.run(vec![NamedTensor {
        name: "X".into(),
        shape: vec![1, 4],
        data: TensorData::F32(vec![1.0, f32::INFINITY, 3.0, 1.0]),
    }]);
    assert!(inf.unwrap_err().to_string().contains("infinity"));
    let ints = m.run(vec![NamedTensor {
        name: "X".into(),
        shape: vec![1, 4],
        data: TensorData::I64(vec![1, 2, 3, 4]),
    }]);
    assert!(ints.unwrap_err().to_string().contains("must be FP32"));
}

#[test]
fn garbage_is_not_onnx_and_says_so() {
    let err = load(b"definitely not a protobuf").unwrap_err();
    assert!(matches!(err, LoadError::NotOnnx(_)), "{err}");
    let err = load(b"").unwrap_err();
    assert!(matches!(err, LoadError::NotOnnx(_)), "{err}");
}

#[test]
fn an_unknown_operator_is_named() {
    // FusedGemm: an onnxruntime contrib operator (its optimiser writes it) neither tract nor
    // Plinth implements.
    let bytes = std::fs::read("tests/fixtures/unknown_operator.onnx").unwrap();
    let err = load(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "The model uses the operator FusedGemm (com.microsoft), which Plinth cannot run."
    );
    // FeatureVectorizer was refused the same way until Plinth implemented it.
    let bytes = std::fs::read("tests/fixtures/feature_vectorizer.onnx").unwrap();
    let model = load(&bytes).unwrap();
    let out = model
        .run(vec![NamedTensor {
            name: "X".into(),
            shape: vec![2, 2],
            data: TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]),
        }])
        .unwrap();
    assert_eq!(out[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
    // A real skl2onnx export, StandardScaler + Ridge, was refused for its Scaler before
    // Plinth implemented it.
    let bytes = std::fs::read("tests/fixtures/scaled_ridge.onnx").unwrap();
    assert!(load(&bytes).is_ok());
}

#[test]
fn a_truncated_file_is_refused() {
    let bytes = std::fs::read("models/iris/1/model.onnx").unwrap();
    assert!(load(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn a_tree_that_loops_is_refused_with_the_reason() {
    let bytes = std::fs::read("tests/fixtures/looping_tree.onnx").unwrap();
    let err = load(&bytes).unwrap_err().to_string();
    assert!(
        err == "The model cannot be prepared for serving: TreeEnsembleRegressor: tree 0 has a cycle through node 0",
        "{err}"
    );
}

/// A tree's thresholds given as a tensor whose data is "in another file" (here /etc/passwd):
/// refused, and the file is never opened.
#[test]
fn a_tensor_attribute_kept_in_another_file_is_refused() {
    let bytes = std::fs::read("tests/fixtures/tree_external_thresholds.onnx").unwrap();
    let err = load(&bytes).unwrap_err().to_string();
    assert!(
        err.contains(
            "nodes_values_as_tensor keeps its data in another file, which Plinth does not read"
        ),
        "{err}"
    );
}

/// Found by `scripts/fuzz` (model_load): a graph whose output names a value no node makes made
/// tract panic while reading it.
#[test]
fn a_graph_output_no_node_makes_is_refused_not_a_panic() {
    let bytes = std::fs::read("tests/fixtures/fuzz/output_not_made.onnx").expect("fixture");
    let err = load(&bytes).expect_err("refused");
    assert!(err.to_string().contains("is not made by any node"), "{err}");
}

/// Found by `scripts/fuzz` (model_load): a Transpose whose perm names an axis past the input's
/// rank made tract index out of bounds.
#[test]
fn a_transpose_that_is_not_a_permutation_is_refused_not_a_panic() {
    let bytes = std::fs::read("tests/fixtures/fuzz/transpose_bad_perm.onnx").expect("fixture");
    assert!(load(&bytes).is_err());
}

/// Found by `scripts/fuzz` (model_load): a graph whose TopK sorts NaN makes the standard
/// library's sort panic inside tract. The run's guard turns it into an error.
#[test]
fn a_panic_inside_tract_while_running_is_an_error() {
    let bytes = std::fs::read("tests/fixtures/fuzz/topk_nan_sort.onnx").expect("fixture");
    let model = load(&bytes).expect("it loads");
    let err = smoke_run(&model, 2).expect_err("the run fails");
    assert!(err.to_string().contains("the model panicked"), "{err}");
}
