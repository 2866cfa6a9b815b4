//! The model zoo (models/zoo.py) through the server: every model uploads without a card (the
//! card is derived from the graph), answers the Open Inference Protocol with onnxruntime's
//! outputs, answers JSON v1 with labels, values and probabilities by label, and text inputs
//! become select fields on the form.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

mod free_text;

/// Labels exactly; numbers within 1e-5 of the expected value relative to it (or to 1 when it
/// is smaller).
const TOLERANCE: f64 = 1e-5;

fn fixtures() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/zoo")
        .expect("the zoo")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    all.sort();
    all
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOLERANCE * want.abs().max(1.0)
}

fn v2_type(dtype: &str) -> &'static str {
    match dtype {
        "f32" => "FP32",
        "f64" => "FP64",
        "i64" => "INT64",
        "string" => "BYTES",
        other => panic!("fixture dtype {other}"),
    }
}

/// Publishes a zoo model without a card.
async fn upload(app: &TestApp, token: &str, name: &str, model: &Path) -> (u16, Value) {
    let res = app
        .publish(token, name, &model.to_string_lossy(), None)
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let res = app
        .api(method, path, token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The label output of a fixture (integers or text), as text per row.
fn fixture_labels(outputs: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    outputs.values().find_map(|o| match o["dtype"].as_str() {
        Some("i64") => Some(
            o["data"]
                .as_array()?
                .iter()
                .map(|v| v.as_i64().expect("int").to_string())
                .collect(),
        ),
        Some("string") => Some(
            o["data"]
                .as_array()?
                .iter()
                .map(|v| v.as_str().expect("text").to_string())
                .collect(),
        ),
        _ => None,
    })
}

#[sqlx::test]
async fn every_zoo_model_serves_onnxruntime_s_answers_through_the_apis(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    app.sign_in("ada", false).await;
    for path in fixtures() {
        let fixture = read_json(&path);
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let (status, body) = upload(&app, &token, &name, &path.with_extension("onnx")).await;
        assert_eq!(status, 201, "{name}: {body}");

        // The Open Inference Protocol, every input as a tensor (text as BYTES).
        let inputs: Vec<Value> = fixture["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                json!({"name": k, "datatype": v2_type(v["dtype"].as_str().unwrap()),
                       "shape": v["shape"], "data": v["data"]})
            })
            .collect();
        let (status, answer) = call(
            &app,
            Method::POST,
            &format!("/v2/models/{name}/infer"),
            &token,
            json!({"inputs": inputs}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        for (out, want) in fixture["outputs"].as_object().unwrap() {
            let got = answer["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == *out)
                .unwrap_or_else(|| panic!("{name}: no output {out} in {answer}"));
            let (got, want) = (
                got["data"].as_array().unwrap(),
                want["data"].as_array().unwrap(),
            );
            assert_eq!(got.len(), want.len(), "{name}: {out}");
            for (g, w) in got.iter().zip(want) {
                match (g.as_f64(), w.as_f64()) {
                    (Some(g), Some(w)) if w.fract() != 0.0 || g.fract() != 0.0 => {
                        assert!(close(g, w), "{name}: {out}: {g} vs {w}")
                    }
                    _ => assert_eq!(g, w, "{name}: {out}"),
                }
            }
        }

        // JSON v1 with named features (derived from the signature), three rows.
        let (_, meta) = call(
            &app,
            Method::GET,
            &format!("/v2/models/{name}"),
            &token,
            Value::Null,
        )
        .await;
        let specs = meta["inputs"].as_array().unwrap().clone();
        let single = specs.len() == 1;
        let rows: Vec<Value> = (1..4)
            .map(|r| {
                let mut row = serde_json::Map::new();
                for spec in &specs {
                    let input = &fixture["inputs"][spec["name"].as_str().unwrap()];
                    let width = input["shape"][1].as_u64().unwrap() as usize;
                    for c in 0..width {
                        // The derived card's names: x0… for one input, the input's name
                        // for a one-column input, the name and the column for a wider one.
                        let input_name = spec["name"].as_str().unwrap();
                        // A map input's columns are named by its keys.
                        let key = fixture["columns"][input_name][c].as_str();
                        let feature = if let Some(key) = key {
                            key.to_string()
                        } else if single {
                            format!("x{c}")
                        } else if width == 1 {
                            input_name.to_string()
                        } else {
                            format!("{input_name}{c}")
                        };
                        row.insert(feature, input["data"][r * width + c].clone());
                    }
                }
                // A map is sent as it is: the keys it has (the others are 0).
                match fixture["maps"].get(r) {
                    Some(map) => map.clone(),
                    None => Value::Object(row),
                }
            })
            .collect();
        // The form, for models whose inputs are all numbers (text: the test below); a missing
        // value (null) is a field left blank.
        if rows[0]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.is_number() || v.is_null())
        {
            let fields: Vec<(&str, String)> = rows[0]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let text = if v.is_null() {
                        String::new()
                    } else {
                        v.to_string()
                    };
                    (k.as_str(), text)
                })
                .collect();
            let res = app.predict(&name, &fields).await;
            assert_eq!(res.status().as_u16(), 303, "{name}: the form refused row 1");
            let id = crate::helpers::prediction_id(&res);
            let page = app.get_html(&format!("/predictions/{id}")).await;
            if let Some(labels) = fixture_labels(fixture["outputs"].as_object().unwrap()) {
                assert!(
                    page.contains(&labels[1]),
                    "{name}: the result page lacks {}",
                    labels[1]
                );
            }
        }
        let (status, answer) = call(
            &app,
            Method::POST,
            &format!("/api/v1/models/{name}/predict"),
            &token,
            json!({"inputs": rows}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {answer}");
        let outputs = fixture["outputs"].as_object().unwrap();
        let predictions = answer["predictions"].as_array().unwrap();
        match fixture_labels(outputs) {
            Some(labels) => {
                for (i, p) in predictions.iter().enumerate() {
                    assert_eq!(p["label"], labels[i + 1], "{name}: row {}", i + 1);
                    // Probabilities by label, in agreement with the probability output.
                    let probs = outputs
                        .values()
                        .find(|o| o["dtype"] == "zipmap" || o["dtype"] == "f32")
                        .unwrap();
                    let classes = probs["shape"][1].as_u64().unwrap() as usize;
                    let names: Vec<String> = match probs["labels"].as_array() {
                        Some(l) => l.iter().map(|l| l.as_str().unwrap().to_string()).collect(),
                        None => (0..classes).map(|c| c.to_string()).collect(),
                    };
                    if p["probabilities"].is_object() && names.len() == classes {
                        for (c, label) in names.iter().enumerate() {
                            let want = probs["data"][(i + 1) * classes + c].as_f64().unwrap();
                            let got = p["probabilities"][label].as_f64().unwrap_or(f64::NAN);
                            assert!(
                                close(got, want),
                                "{name}: row {} P({label}) {got} vs {want}",
                                i + 1
                            );
                        }
                    }
                }
            }
            None => {
                let values = outputs.values().next().unwrap();
                let width = values["data"].as_array().unwrap().len()
                    / values["shape"][0].as_u64().unwrap() as usize;
                for (i, p) in predictions.iter().enumerate() {
                    let want = values["data"][(i + 1) * width].as_f64().unwrap();
                    let got = p["value"].as_f64().unwrap();
                    assert!(close(got, want), "{name}: row {}: {got} vs {want}", i + 1);
                }
            }
        }
    }
}

#[sqlx::test]
async fn text_inputs_become_select_fields_and_text_labels_come_out_as_labels(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    app.sign_in("ada", false).await;
    let model = Path::new("tests/fixtures/zoo/mixed_pipeline.onnx");
    let (status, body) = upload(&app, &token, "renewals", model).await;
    assert_eq!(status, 201, "{body}");

    // The form: numbers for the numeric columns, a select of the encoder's categories for text.
    let page = app.get_html("/models/renewals").await;
    assert!(page.contains("<select"), "{page}");
    for city in ["Lyon", "Oslo", "Porto", "Turin"] {
        assert!(page.contains(&format!(">{city}</option>")), "{city}");
    }
    // Porto is the third category; the model answers with its text label.
    let fields = [
        ("age", "51".to_string()),
        ("income", "41000".to_string()),
        ("visits", "6".to_string()),
        ("city", "1".to_string()),
        ("plan", "2".to_string()),
    ];
    let res = app.predict("renewals", &fields).await;
    assert_eq!(res.status().as_u16(), 303);
    let id = crate::helpers::prediction_id(&res);
    let result = app.get_html(&format!("/predictions/{id}")).await;
    assert!(
        result.contains("renews") || result.contains("leaves"),
        "{result}"
    );
    assert!(
        result.contains("Oslo"),
        "the result page names the chosen city: {result}"
    );
    let stored = app.stored_inputs(id).await;
    assert_eq!(stored["city"], "Oslo");
    assert_eq!(stored["plan"], "pro");
    // "Predict again" selects the stored categories.
    let again = app.get_html(&format!("/models/renewals?from={id}")).await;
    assert!(
        again.contains(r#"<option value="1" selected>Oslo</option>"#),
        "{again}"
    );
    assert!(
        again.contains(r#"<option value="2" selected>pro</option>"#),
        "{again}"
    );

    // JSON v1 takes the text; a value the model does not know is named in a 422.
    let row = json!({"age": 51, "income": 41000, "visits": 6, "city": "Oslo", "plan": "pro"});
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/models/renewals/predict",
        &token,
        json!({"inputs": row}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let label = answer["predictions"][0]["label"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(label == "renews" || label == "leaves");
    let probs = &answer["predictions"][0]["probabilities"];
    assert!(
        (probs["renews"].as_f64().unwrap() + probs["leaves"].as_f64().unwrap() - 1.0).abs() < 1e-6
    );
    let bad = json!({"age": 51, "income": 41000, "visits": 6, "city": "Atlantis", "plan": "pro"});
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/models/renewals/predict",
        &token,
        json!({"inputs": bad}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("Atlantis"), "{answer}");

    // The Open Inference Protocol takes text as BYTES, unknown categories included (the
    // encoder ignores them), and says which input has the wrong type.
    let infer = |city: Value, datatype: &str| {
        json!({"inputs": [
            {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [51.0]},
            {"name": "income", "datatype": "FP32", "shape": [1, 1], "data": [41000.0]},
            {"name": "visits", "datatype": "FP32", "shape": [1, 1], "data": [6.0]},
            {"name": "city", "datatype": datatype, "shape": [1, 1], "data": [city]},
            {"name": "plan", "datatype": "BYTES", "shape": [1, 1], "data": ["pro"]},
        ]})
    };
    let (status, answer) = call(
        &app,
        Method::POST,
        "/v2/models/renewals/infer",
        &token,
        infer(json!("Atlantis"), "BYTES"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = call(
        &app,
        Method::POST,
        "/v2/models/renewals/infer",
        &token,
        infer(json!(3.0), "FP32"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("city"),
        "{answer}"
    );
    let (_, meta) = call(
        &app,
        Method::GET,
        "/v2/models/renewals",
        &token,
        Value::Null,
    )
    .await;
    assert!(
        meta["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "city" && i["datatype"] == "BYTES"),
        "{meta}"
    );
}
