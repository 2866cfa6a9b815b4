//! Free text through the form, JSON v1 and batch files, as onnxruntime reads it.

use super::*;

#[sqlx::test]
async fn free_text_goes_through_the_form_json_and_batch_files_as_onnxruntime_reads_it(
    pool: PgPool,
) {
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    app.sign_in("ada", false).await;
    let path = Path::new("tests/fixtures/zoo/tfidf_logistic_regression.json");
    let fixture = read_json(path);
    let (status, body) = upload(&app, &token, "reviews", &path.with_extension("onnx")).await;
    assert_eq!(status, 201, "{body}");
    let texts: Vec<String> = fixture["inputs"]["text"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let labels: Vec<String> = fixture["outputs"]["output_label"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.to_string())
        .collect();
    // The first non-empty review with a label of 1, and one of 0.
    let pick = |label: &str| {
        (0..texts.len())
            .find(|&i| !texts[i].trim().is_empty() && labels[i] == label)
            .unwrap()
    };
    let (yes, no) = (pick("1"), pick("0"));

    // The derived card takes free text: a text area on the form.
    let page = app.get_html("/models/reviews").await;
    assert!(page.contains("<textarea id=\"f-x0\" name=\"x0\""), "{page}");
    let res = app.predict("reviews", &[("x0", texts[yes].clone())]).await;
    assert_eq!(res.status().as_u16(), 303);
    let id = crate::helpers::prediction_id(&res);
    assert_eq!(app.stored_inputs(id).await["x0"], texts[yes].as_str());
    let result = app.get_html(&format!("/predictions/{id}")).await;
    assert!(
        result.contains("<p class=\"headline\">1</p>"),
        "onnxruntime's label: {result}"
    );
    let again = app.get_html(&format!("/models/reviews?from={id}")).await;
    assert!(
        again.contains(&format!(">{}</textarea>", texts[yes])),
        "predict again fills the text area"
    );
    // An empty text is refused on the form, naming the field.
    let res = app.predict("reviews", &[("x0", "   ".to_string())]).await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("Enter some text."));

    // JSON v1: every review of the fixture, onnxruntime's label for each (400 strings).
    let inputs: Vec<Value> = texts.iter().map(|t| json!({ "x0": t })).collect();
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/models/reviews/predict",
        &token,
        json!({ "inputs": inputs }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let got: Vec<String> = answer["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, labels);
    // A number where text belongs is named.
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/models/reviews/predict",
        &token,
        json!({ "inputs": { "x0": 3 } }),
    )
    .await;
    assert_eq!(status, 422);
    assert!(answer.to_string().contains("x0: expected text"), "{answer}");
    // A door that takes no free text says which do.
    let (status, answer) = call(
        &app,
        Method::POST,
        "/v1/models/reviews:predict",
        &token,
        json!({ "instances": [{ "x0": "great" }] }),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("free text"), "{answer}");

    // A batch file with a text column (quoted, commas and all).
    let mut csv = "id,x0\n".to_string();
    for i in [yes, no] {
        csv += &format!("r{i},\"{}, zyzzyva\"\n", texts[i].replace('"', "\"\""));
    }
    let (status, job) = crate::jobs::submit_csv(&app, &token, "reviews", csv, "").await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_i64().unwrap();
    let over = crate::jobs::wait_over(&app, &token, id, std::time::Duration::from_secs(60)).await;
    assert_eq!(over["state"], "done", "{over}");
    let records = crate::jobs::result_rows(&app, &token, id).await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(records[1][1], format!("{}, zyzzyva", texts[yes]));
    // "zyzzyva" is no word the model knows: the answers are the texts' own.
    let prediction = records[0].iter().position(|h| h == "prediction").unwrap();
    assert_eq!(records[1][prediction], "1");
    assert_eq!(records[2][prediction], "0");
}
