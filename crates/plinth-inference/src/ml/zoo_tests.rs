//! The model zoo (`models/zoo.py`): every model loads, and on the fixed inputs gives what
//! onnxruntime gave: labels exactly, numbers within 1e-5 relative (with an absolute floor of
//! 1e-5 for values near zero, such as small probabilities).

use std::path::Path;

use serde_json::Value;

use crate::{load, NamedTensor, TensorData};

const TOLERANCE: f64 = 1e-5;

fn tensor(name: &str, v: &Value) -> NamedTensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"].as_array().unwrap();
    let nums = || data.iter().map(|x| x.as_f64().unwrap_or(f64::NAN));
    let data = match v["dtype"].as_str().unwrap() {
        "f32" | "zipmap" => TensorData::F32(nums().map(|x| x as f32).collect()),
        "f64" => TensorData::F64(nums().collect()),
        "i64" => TensorData::I64(data.iter().map(|x| x.as_i64().unwrap()).collect()),
        "string" => TensorData::String(
            data.iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        ),
        other => panic!("fixture dtype {other}"),
    };
    NamedTensor {
        name: name.to_string(),
        shape,
        data,
    }
}

/// The largest difference between two numeric tensors, relative to the expected value (or to 1
/// when that is smaller).
fn max_difference(got: &TensorData, want: &TensorData) -> f64 {
    (0..want.len())
        .map(|i| {
            let (g, w) = (got.get_f64(i).unwrap(), want.get_f64(i).unwrap());
            (g - w).abs() / w.abs().max(1.0)
        })
        .fold(0.0, f64::max)
}

/// Runs one fixture; returns the model's largest difference from onnxruntime.
fn check(fixture: &Path) -> f64 {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let name = fixture.file_stem().unwrap().to_string_lossy().to_string();
    let bytes = std::fs::read(fixture.with_extension("onnx")).unwrap();
    let model = load(&bytes).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    let inputs: Vec<NamedTensor> = json["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| tensor(k, v))
        .collect();
    let outputs = model
        .run(inputs)
        .unwrap_or_else(|e| panic!("{name} does not run: {e}"));
    let mut worst = 0.0f64;
    for (out_name, want) in json["outputs"].as_object().unwrap() {
        let got = outputs
            .iter()
            .find(|t| &t.name == out_name)
            .unwrap_or_else(|| panic!("{name}: no output {out_name}"));
        let expected = tensor(out_name, want);
        assert_eq!(
            got.data.len(),
            expected.data.len(),
            "{name}: {out_name} has {:?} values, onnxruntime gave {:?}",
            got.shape,
            expected.shape
        );
        if want["dtype"] == "zipmap" {
            let labels: Vec<String> = want["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                model.signature.labels.as_ref(),
                Some(&labels),
                "{name}: labels"
            );
        }
        match (&got.data, &expected.data) {
            (TensorData::String(g), TensorData::String(w)) => {
                assert_eq!(g, w, "{name}: {out_name}")
            }
            (TensorData::I64(g), TensorData::I64(w)) => assert_eq!(g, w, "{name}: {out_name}"),
            (g, w) => {
                let d = max_difference(g, w);
                assert!(
                    d <= TOLERANCE,
                    "{name}: {out_name} differs by {d:e}: {g:?} vs {w:?}"
                );
                worst = worst.max(d);
            }
        }
    }
    worst
}

#[test]
fn every_zoo_model_matches_onnxruntime() {
    let dir = Path::new("tests/fixtures/zoo");
    let mut fixtures: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 25,
        "the zoo has {} models",
        fixtures.len()
    );
    let mut failures = Vec::new();
    println!("| model | max difference from onnxruntime |\n| --- | ---: |");
    for f in &fixtures {
        match std::panic::catch_unwind(|| check(f)) {
            Ok(d) => println!("| {} | {d:.1e} |", f.file_stem().unwrap().to_string_lossy()),
            Err(e) => failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{}", f.display())),
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
