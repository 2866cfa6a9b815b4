use super::*;
use serde_json::Value;

/// An ONNX file's graph, read as loading reads it.
pub(crate) fn proto(file: &str) -> ModelProto {
    use tract_onnx::prelude::Framework;
    let bytes = std::fs::read(file).unwrap();
    tract_onnx::onnx()
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .unwrap()
}

/// A shap fixture's `{"shape", "data"}` as `f32` rows (null is a gap), and their width.
pub(crate) fn floats(v: &Value) -> (Vec<f32>, usize) {
    let width = v["shape"][1].as_u64().unwrap() as usize;
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map_or(f32::NAN, |x| x as f32))
        .collect();
    (data, width)
}

/// A fixture's list of numbers.
pub(crate) fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// The zoo's linear models (through their scalers and imputers), explained as
/// `shap.LinearExplainer` explained them (`models/zoo_shap.py`).
#[test]
fn linear_contributions_match_the_shap_package() {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir("tests/fixtures/zoo/shap").unwrap() {
        let path = entry.unwrap().path();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if json["kind"] != "linear" {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let model = format!("tests/fixtures/zoo/{}", json["model"].as_str().unwrap());
        let explainer = Explainer::find(&proto(&model)).unwrap();
        assert!(matches!(explainer, Explainer::Linear { .. }), "{name}");
        let (reference, width) = floats(&json["reference"]);
        let means = explainer
            .covers(&reference, reference.len() / width, width)
            .unwrap();
        let (rows, width) = floats(&json["rows"]);
        let t = json["targets"].as_u64().unwrap() as usize;
        let list = |key: &str| numbers(&json[key]);
        let (expected, raw, want) = (list("expected"), list("raw"), list("contributions"));
        let scale = raw.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let mut worst = 0.0f64;
        for (r, row) in rows.chunks_exact(width).enumerate() {
            let e = explainer.explain(&means, row).unwrap();
            assert_eq!(e.n_targets, t, "{name}");
            for k in 0..t {
                worst = worst.max((e.expected[k] - expected[k]).abs() / scale);
                worst = worst.max((e.score[k] - raw[r * t + k]).abs() / scale);
            }
            for (i, c) in e.contributions.iter().enumerate() {
                worst = worst.max((c - want[r * width * t + i]).abs() / scale);
            }
        }
        assert!(worst < 1e-5, "{name}: {worst:e} from shap");
        seen.push(format!("{name}: {worst:.1e}"));
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    eprintln!("largest differences from shap: {}", seen.join(", "));
}

#[test]
fn what_is_neither_trees_nor_linear_says_so() {
    for model in ["svc_rbf", "mlp_classifier", "knn_classifier"] {
        let err = Explainer::find(&proto(&format!("tests/fixtures/zoo/{model}.onnx"))).unwrap_err();
        assert!(
            err.contains("no explanation for this model type"),
            "{model}: {err}"
        );
    }
    for model in ["iris", "diabetes", "digits"] {
        let found = Explainer::find(&proto(&format!("models/{model}/1/model.onnx")));
        assert!(matches!(found, Ok(Explainer::Linear { .. })), "{model}");
    }
}
