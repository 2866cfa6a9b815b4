//! Missing values: a model that handles gaps (HistGradientBoosting trained on data with gaps,
//! from models/zoo_gaps.py) takes them at every door — a blank form field, a JSON null, a NaN
//! in a V2 binary tensor — with onnxruntime's answers; the stored inputs and the result page say
//! "missing"; a feature that may not be missing keeps refusing one, naming the field.

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{prediction_id, spawn_app, TestApp};

const MODEL: &str = "tests/fixtures/zoo/hist_gradient_boosting_classifier_gaps";

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{MODEL}.json")).unwrap()).unwrap()
}

/// Row `r` of the fixture's input X: four values, null where missing.
fn row(fixture: &Value, r: usize) -> Vec<Value> {
    fixture["inputs"]["X"]["data"].as_array().unwrap()[r * 4..r * 4 + 4].to_vec()
}

/// onnxruntime's label and class probabilities for row `r`.
fn expected(fixture: &Value, r: usize) -> (i64, Vec<f64>) {
    let outputs = fixture["outputs"].as_object().unwrap();
    let label = outputs.values().find(|o| o["dtype"] == "i64").unwrap()["data"][r]
        .as_i64()
        .unwrap();
    let probs = outputs
        .values()
        .find(|o| o["dtype"] == "zipmap" || o["dtype"] == "f32")
        .unwrap();
    let classes = probs["shape"][1].as_u64().unwrap() as usize;
    let data = probs["data"].as_array().unwrap();
    let p = (0..classes)
        .map(|c| data[r * classes + c].as_f64().unwrap())
        .collect();
    (label, p)
}

/// A V2 request for input X with FP32 binary data, four values a row.
async fn infer_binary(
    app: &TestApp,
    token: &str,
    model: &str,
    values: &[f32],
) -> reqwest::Response {
    let binary: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header =
        json!({"inputs": [{"name": "X", "shape": [values.len() / 4, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": binary.len()}}]})
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&binary);
    app.api(Method::POST, &format!("/v2/models/{model}/infer"), token)
        .header("Inference-Header-Content-Length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_model_that_handles_gaps_takes_them_at_every_door(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let res = app
        .publish(&staff, "gaps", &format!("{MODEL}.onnx"), None)
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let fx = fixture();
    // Rows 1 to 3 each miss one value (zoo_gaps.py puts them there).
    for r in 1..4 {
        assert!(row(&fx, r).iter().any(Value::is_null), "row {r} has a gap");
    }

    // The derived card lets every feature the trees track be missing: the form says so.
    app.sign_in("ada", false).await;
    let page = app.get_html("/models/gaps").await;
    assert!(page.contains("eave blank if unknown"), "{page}");

    // The form: the missing value left blank.
    let values = row(&fx, 1);
    let fields: Vec<(&str, String)> = ["x0", "x1", "x2", "x3"]
        .into_iter()
        .zip(&values)
        .map(|(k, v)| {
            (
                k,
                if v.is_null() {
                    String::new()
                } else {
                    v.to_string()
                },
            )
        })
        .collect();
    let res = app.predict("gaps", &fields).await;
    assert_eq!(res.status().as_u16(), 303, "the blank field is taken");
    let id = prediction_id(&res);
    let stored = app.stored_inputs(id).await;
    let blank = fields.iter().find(|(_, v)| v.is_empty()).unwrap().0;
    assert_eq!(stored[blank], Value::Null, "stored as missing: {stored}");
    let result = app.get_html(&format!("/predictions/{id}")).await;
    assert!(result.contains(">missing<"), "the result page says missing");
    let (label, _) = expected(&fx, 1);
    assert!(
        result.contains(&format!("<p class=\"headline\">{label}</p>")),
        "the result page shows onnxruntime's label {label}"
    );
    // The CSV export: an empty cell for the missing value.
    let csv = app
        .get("/history.csv?model=gaps")
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].ends_with(",outputs,x0,x1,x2,x3"), "{}", lines[0]);
    let cells: Vec<String> = fields
        .iter()
        .map(|(_, v)| {
            v.parse::<f64>()
                .map_or(String::new(), |x| json!(x).to_string())
        })
        .collect();
    assert!(
        lines[1].ends_with(&format!(",{}", cells.join(","))),
        "the blank field is an empty cell: {} (want {:?})",
        lines[1],
        cells
    );

    // JSON v1: null for the missing values; rows 1 to 3 as onnxruntime answered them.
    let token = app.token_for("bea", false).await;
    let rows: Vec<Value> = (1..4)
        .map(|r| {
            let v = row(&fx, r);
            json!({"x0": v[0], "x1": v[1], "x2": v[2], "x3": v[3]})
        })
        .collect();
    let (status, answer) = app
        .post_json(
            "/api/v1/models/gaps/predict",
            &token,
            json!({"inputs": rows}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for (i, p) in answer["predictions"].as_array().unwrap().iter().enumerate() {
        let (label, probs) = expected(&fx, i + 1);
        assert_eq!(p["label"], label.to_string(), "row {}", i + 1);
        for (c, want) in probs.iter().enumerate() {
            let got = p["probabilities"][c.to_string()].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-5,
                "row {}: P({c}) {got} vs {want}",
                i + 1
            );
        }
    }

    // V2 with binary data: NaN for the missing values.
    let floats: Vec<f32> = (1..4)
        .flat_map(|r| row(&fx, r))
        .map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32))
        .collect();
    let res = infer_binary(&app, &token, "gaps", &floats).await;
    assert_eq!(res.status().as_u16(), 200);
    let answer: Value = res.json().await.unwrap();
    let labels = answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["datatype"] == "INT64")
        .unwrap()["data"]
        .clone();
    let want: Vec<i64> = (1..4).map(|r| expected(&fx, r).0).collect();
    assert_eq!(labels, json!(want));

    // The stored rows of all those requests keep the gaps as nulls.
    let nulls: i64 = sqlx::query_scalar(
        "select count(*) from prediction p, unnest(p.x) v where v = 'NaN'::float8",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        nulls >= 7,
        "one gap from the form and six from the APIs: {nulls}"
    );
}

#[sqlx::test]
async fn features_that_may_not_be_missing_refuse_gaps_naming_the_field(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    // JSON v1: null for a feature iris needs.
    let (status, answer) = app
        .post_json(
            "/api/v1/models/iris/predict",
            &token,
            json!({"inputs": {"sepal_length": null, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}),
        )
        .await;
    assert!((400..500).contains(&status), "{status}: {answer}");
    assert!(answer.to_string().contains("sepal_length"), "{answer}");

    // V2: a JSON null, and a NaN in binary data.
    let (status, answer) = app
        .post_json(
            "/v2/models/iris/infer",
            &token,
            json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, null, 1.4, 0.2]}]}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sepal_width"),
        "{answer}"
    );
    let res = infer_binary(&app, &token, "iris", &[5.1, 3.5, f32::NAN, 0.2]).await;
    assert_eq!(res.status().as_u16(), 400);
    let answer: Value = res.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("petal_length"),
        "{answer}"
    );

    // The form: a blank field is required, and marked.
    app.sign_in("bea", false).await;
    let page = app.get_html("/models/iris").await;
    assert!(!page.contains("eave blank if unknown"));
    let res = app
        .predict(
            "iris",
            &[
                ("sepal_length", "5.1".into()),
                ("sepal_width", String::new()),
                ("petal_length", "1.4".into()),
                ("petal_width", "0.2".into()),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("This field is required."), "{html}");
    assert_eq!(app.predictions().await, 0, "nothing stored");
}
