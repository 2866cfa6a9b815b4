//! Explanations through the server: `?explain=true` on JSON v1 gives each prediction's exact
//! TreeSHAP values, the same as the `shap` package's (`tests/fixtures/zoo/shap`, written by
//! `models/zoo_shap.py`) when the version's reference data is the rows shap counted covers on;
//! the result page draws them as a waterfall; what cannot be explained says why.

use reqwest::Method;
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app_with, TestApp};

const IRIS: [&str; 4] = ["sepal_length", "sepal_width", "petal_length", "petal_width"];

/// A fixture's array of numbers.
fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shap_fixture(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(format!("tests/fixtures/zoo/shap/{name}.json")).unwrap(),
    )
    .unwrap()
}

/// `(rows, width)` of a fixture's `{"shape", "data"}` (null is a gap).
fn rows_of(v: &Value) -> Vec<Vec<Value>> {
    let width = v["shape"][1].as_u64().unwrap() as usize;
    v["data"]
        .as_array()
        .unwrap()
        .chunks(width)
        .map(<[Value]>::to_vec)
        .collect()
}

fn csv(features: &[String], rows: &[Vec<Value>]) -> Vec<u8> {
    let mut out = features.join(",") + "\n";
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| v.as_f64().map_or_else(String::new, |x| format!("{x}")))
            .collect();
        out += &(cells.join(",") + "\n");
    }
    out.into_bytes()
}

/// A regression card over `n` features `x0…` with no ranges.
fn plain_card(n: usize) -> String {
    let mut card = "title = \"Diabetes (scaled)\"\ntask = \"regression\"\n".to_string();
    for i in 0..n {
        card += &format!("\n[[features]]\nname = \"x{i}\"\n");
    }
    card
}

/// Publishes zoo model `name` with `card` and the shap fixture's reference rows as its
/// reference data; predicts the fixture's rows with `?explain=true`; checks each explanation
/// against shap's values for the target it names.
async fn explained_as_shap_explains(
    app: &TestApp,
    staff: &str,
    model: &str,
    name: &str,
    card: &[u8],
    features: &[String],
    classes: Option<&[&str]>,
) {
    let fixture = shap_fixture(name);
    let reference = csv(features, &rows_of(&fixture["reference"]));
    let published = app
        .publish_with_reference(
            staff,
            model,
            &format!("tests/fixtures/zoo/{name}.onnx"),
            card,
            reference,
        )
        .await;
    let version = published["version"].as_i64().unwrap();
    let rows = rows_of(&fixture["rows"]);
    let inputs: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Object(
                features
                    .iter()
                    .cloned()
                    .zip(r.iter().cloned())
                    .collect::<Map<_, _>>(),
            )
        })
        .collect();
    let before = app.predictions().await;
    let (status, body) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/models/{model}/predict?version={version}&explain=true"),
            staff,
            Some(json!({"inputs": inputs})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.predictions().await,
        before + rows.len() as i64,
        "stored"
    );
    let t = fixture["targets"].as_u64().unwrap() as usize;
    let want = numbers(&fixture["contributions"]);
    let raw = numbers(&fixture["raw"]);
    let scale = raw.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let width = features.len();
    let mut worst = 0.0f64;
    for (r, p) in body["predictions"].as_array().unwrap().iter().enumerate() {
        let e = &p["explanation"];
        assert!(e["method"].as_str().unwrap().contains("TreeSHAP"), "{e}");
        let k = match classes {
            Some(classes) => {
                let target = e["target"].as_str().unwrap();
                assert_eq!(
                    Some(target),
                    p["label"].as_str(),
                    "the predicted class is explained"
                );
                classes.iter().position(|c| *c == target).unwrap()
            }
            None => 0,
        };
        let contributions = e["contributions"].as_array().unwrap();
        assert_eq!(contributions.len(), width, "every feature");
        let mut total = e["base"].as_f64().unwrap();
        let mut last = f64::INFINITY;
        for c in contributions {
            let feature = c["feature"].as_str().unwrap();
            let f = features.iter().position(|x| x == feature).unwrap();
            let got = c["contribution"].as_f64().unwrap();
            assert!(got.abs() <= last, "largest first");
            last = got.abs();
            total += got;
            let expected = want[(r * width + f) * t + k];
            worst = worst.max((got - expected).abs() / scale);
            assert_eq!(
                c["value"], rows[r][f],
                "the row's value beside its contribution"
            );
        }
        let output = e["output"].as_f64().unwrap();
        assert!(
            (total - output).abs() <= 1e-9 * output.abs().max(1.0),
            "{name} row {r}: base + contributions = {total}, output {output}"
        );
        if classes.is_none() {
            // A regressor's explained output is its prediction.
            let value = p["value"].as_f64().unwrap();
            assert!(
                (output - value).abs() <= 1e-4 * value.abs().max(1.0),
                "{output} vs {value}"
            );
        }
    }
    assert!(worst < 1e-5, "{name}: {worst:e} from shap");
}

#[sqlx::test]
async fn explanations_through_the_api_are_shaps_and_add_up(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let iris: Vec<String> = IRIS.iter().map(|s| s.to_string()).collect();
    let iris_card = std::fs::read("models/iris/1/card.toml").unwrap();
    explained_as_shap_explains(
        &app,
        &staff,
        "iris",
        "gradient_boosting_classifier",
        &iris_card,
        &iris,
        Some(&["setosa", "versicolor", "virginica"]),
    )
    .await;
    let diabetes: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    explained_as_shap_explains(
        &app,
        &staff,
        "scaled_diabetes",
        "random_forest_regressor",
        plain_card(10).as_bytes(),
        &diabetes,
        None,
    )
    .await;
}

/// Publishes zoo model `file` as a new iris version (iris's card, no reference data) and asks it
/// for an explained prediction: the body of its 422.
async fn publish_and_explain(app: &TestApp, staff: &str, file: &str, flower: &Value) -> String {
    let version = app.publish_zoo(staff, file).await;
    let (status, body) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/models/iris/predict?version={version}&explain=true"),
            staff,
            Some(flower.clone()),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    body.to_string()
}

#[sqlx::test]
async fn what_cannot_be_explained_says_why_and_nothing_is_predicted(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let flower = json!({"inputs": {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}});
    let before = app.predictions().await;
    // An RBF support vector machine: neither trees nor a linear model.
    let body = publish_and_explain(&app, &staff, "svc_rbf", &flower).await;
    assert!(
        body.contains("cannot explain") && body.contains("no explanation for this model type"),
        "{body}"
    );
    // A tree version published without reference data: the covers cannot be counted.
    let body = publish_and_explain(&app, &staff, "decision_tree_classifier", &flower).await;
    assert!(body.contains("no reference data"), "{body}");
    assert_eq!(
        app.predictions().await,
        before,
        "nothing predicted, nothing stored"
    );
    // Without the question, both answer as ever; explain=false is the default.
    for path in [
        "/api/v1/models/iris/predict",
        "/api/v1/models/iris/predict?version=3&explain=false",
    ] {
        let (status, body) = app
            .call_json(Method::POST, path, &staff, Some(flower.clone()))
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["predictions"][0].get("explanation").is_none(),
            "{body}"
        );
    }
    // The result page says why there is no chart.
    app.sign_in("hopper", true).await;
    let id: i64 = sqlx::query_scalar("select max(id) from prediction")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let page = app.get_html(&format!("/predictions/{id}")).await;
    assert!(
        page.contains("Why this answer") && page.contains("no reference data"),
        "{page}"
    );
}

#[sqlx::test]
async fn the_result_page_draws_the_explanation_as_a_waterfall(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let card = std::fs::read("models/iris/1/card.toml").unwrap();
    let reference = std::fs::read("models/iris/1/reference.csv").unwrap();
    let published = app
        .publish_with_reference(
            &staff,
            "iris",
            "tests/fixtures/zoo/gradient_boosting_classifier.onnx",
            &card,
            reference,
        )
        .await;
    let version = published["version"].as_i64().unwrap();
    let (status, body) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/models/iris/predict?version={version}&explain=true"),
            &staff,
            Some(json!({"inputs": {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let p = &body["predictions"][0];
    let id = p["id"].as_i64().unwrap();
    let top = p["explanation"]["contributions"][0]["feature"]
        .as_str()
        .unwrap()
        .to_string();
    app.sign_in("hopper", true).await;
    let page = app.get_html(&format!("/predictions/{id}")).await;
    assert!(page.contains("class=\"waterfall\""), "{page}");
    assert!(
        page.contains(&format!("{} = ", label_of(&top))),
        "the largest contribution is drawn: {page}"
    );
    assert!(
        page.contains("TreeSHAP") && page.contains("this prediction"),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "for <strong>{}</strong>",
            p["label"].as_str().unwrap()
        )),
        "{page}"
    );
}

/// An iris feature's label on the pages ("petal_length" is "Petal length").
fn label_of(feature: &str) -> String {
    let mut label = feature.replace('_', " ");
    label[..1].make_ascii_uppercase();
    label
}

#[sqlx::test]
async fn batch_jobs_add_each_features_contribution_when_asked(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let name = "gradient_boosting_classifier";
    let fixture = shap_fixture(name);
    let iris: Vec<String> = IRIS.iter().map(|s| s.to_string()).collect();
    let card = std::fs::read("models/iris/1/card.toml").unwrap();
    let published = app
        .publish_with_reference(
            &staff,
            "iris",
            &format!("tests/fixtures/zoo/{name}.onnx"),
            &card,
            csv(&iris, &rows_of(&fixture["reference"])),
        )
        .await;
    let version = published["version"].as_i64().unwrap();
    let rows = rows_of(&fixture["rows"]);
    let file = String::from_utf8(csv(&iris, &rows)).unwrap();

    let (status, job) = crate::jobs::submit_csv(
        &app,
        &staff,
        "iris",
        file.clone(),
        &format!("?version={version}&explain=true"),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["contributions"], json!(IRIS), "{job}");
    let id = job["id"].as_i64().unwrap();
    let over = crate::jobs::wait_over(&app, &staff, id, std::time::Duration::from_secs(60)).await;
    assert_eq!(over["state"], "done", "{over}");
    let records = crate::jobs::result_rows(&app, &staff, id).await;
    let header = &records[0];
    let at = |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column} in {header:?}"))
    };
    let (base_at, prediction_at) = (at("explanation_base"), at("prediction"));
    assert_eq!(
        header.last().unwrap(),
        "error",
        "the error column stays last"
    );
    let classes = ["setosa", "versicolor", "virginica"];
    let t = fixture["targets"].as_u64().unwrap() as usize;
    let want = numbers(&fixture["contributions"]);
    let raw = numbers(&fixture["raw"]);
    let scale = raw.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_eq!(records.len(), rows.len() + 1, "a header and every row");
    // The same rows explained by JSON v1 (whose base and contributions add up to the output,
    // as the test above checks).
    let inputs: Vec<Value> = rows
        .iter()
        .map(|r| Value::Object(iris.iter().cloned().zip(r.iter().cloned()).collect()))
        .collect();
    let (status, body) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/models/iris/predict?version={version}&explain=true"),
            &staff,
            Some(json!({"inputs": inputs})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut worst = 0.0f64;
    for (r, record) in records[1..].iter().enumerate() {
        // The predicted class is the one explained, as on the result page.
        let k = classes
            .iter()
            .position(|c| *c == record[prediction_at])
            .unwrap();
        let api = &body["predictions"][r]["explanation"];
        assert_eq!(api["target"], record[prediction_at].as_str());
        let base: f64 = record[base_at].parse().unwrap();
        assert!(
            (base - api["base"].as_f64().unwrap()).abs() < 1e-9,
            "row {r}: {base} vs {api}"
        );
        for (f, feature) in IRIS.iter().enumerate() {
            let got: f64 = record[at(&format!("contribution_{feature}"))]
                .parse()
                .unwrap();
            worst = worst.max((got - want[(r * 4 + f) * t + k]).abs() / scale);
            let same = api["contributions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["feature"] == *feature)
                .unwrap()["contribution"]
                .as_f64()
                .unwrap();
            assert!(
                (got - same).abs() < 1e-9,
                "row {r} {feature}: {got} vs {same}"
            );
        }
    }
    assert!(worst < 1e-5, "{worst:e} from shap");

    // A version that cannot be explained refuses the job before reading the file.
    let svc = app.publish_zoo(&staff, "svc_rbf").await;
    let (status, body) = crate::jobs::submit_csv(
        &app,
        &staff,
        "iris",
        file,
        &format!("?version={svc}&explain=true"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("no explanation for this model type"),
        "{body}"
    );
}
