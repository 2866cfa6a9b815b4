//! Data versions through the real server: data sets registered (the same file twice is one
//! version), linked to model versions, compared version against version; and two model versions
//! compared over their reference rows as a job, against fixtures computed with onnxruntime and
//! numpy (`tests/fixtures/compare/make.py`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

mod comparisons;

mod files;

const IRIS_CSV: &str = "models/iris/1/reference.csv";

/// Adds a CSV file to data set `name` through the API: the status and the answer.
async fn add_csv(app: &TestApp, token: &str, name: &str, query: &str, csv: &[u8]) -> (u16, Value) {
    let res = app
        .api(
            Method::POST,
            &format!("/api/v1/datasets?name={name}{query}"),
            token,
        )
        .header("content-type", "text/csv")
        .body(csv.to_vec())
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits for comparison `id` to end; every answer seen on the way.
async fn wait_done(app: &TestApp, token: &str, model: &str, id: i64) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen = Vec::new();
    loop {
        let (status, c) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/models/{model}/comparisons/{id}"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{c}");
        seen.push(c.clone());
        match c["state"].as_str() {
            Some("done") => return (c, seen),
            Some("failed") => panic!("the comparison failed: {c}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the comparison did not finish: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fixture(pair: &str, file: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/compare/{pair}/{file}")).expect("fixture")
}

fn expected(pair: &str) -> Value {
    serde_json::from_slice(&fixture(pair, "expected.json")).expect("expected.json")
}

/// The real server's answer for one row of a fixture file, from version `version`.
async fn predict_row(
    app: &TestApp,
    token: &str,
    model: &str,
    version: i32,
    inputs: &Value,
) -> Value {
    let mut row = serde_json::Map::new();
    for (k, v) in inputs.as_object().unwrap() {
        row.insert(
            k.clone(),
            json!(v.as_str().unwrap().parse::<f64>().unwrap()),
        );
    }
    let (status, answer) = app
        .post_json(
            &format!("/api/v1/models/{model}/predict?version={version}"),
            token,
            json!({"inputs": [Value::Object(row)]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["predictions"][0].clone()
}

#[sqlx::test]
async fn the_same_file_twice_is_one_version_and_bad_files_are_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let csv = std::fs::read(IRIS_CSV).unwrap();

    let (status, first) = add_csv(
        &app,
        &token,
        "iris-train",
        "&description=Fisher%27s%20iris",
        &csv,
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["created"], true);
    let v = &first["version"];
    assert_eq!(v["version"], 1);
    assert_eq!(v["rows"], 105);
    assert_eq!(
        v["sha256"],
        plinth::registry::artifacts::sha256_hex(&csv),
        "the version is known by its file's SHA-256"
    );
    // The profile's figures are the file's (computed here from the same cells).
    let values: Vec<f64> = csv::Reader::from_reader(csv.as_slice())
        .records()
        .map(|r| r.unwrap()[0].parse::<f64>().unwrap())
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let p = &v["profile"]["columns"]["sepal_length"];
    assert!((p["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{p}");
    assert_eq!(p["count"], 105);
    assert_eq!(p["missing"], 0);
    assert_eq!(
        v["schema"][0],
        json!({"name": "sepal_length", "kind": "number"})
    );

    // The same file again: the same version, nothing added.
    let (status, again) = add_csv(&app, &token, "iris-train", "", &csv).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["version"]["version"], 1);
    assert_eq!(app.count("dataset_version").await, 1);

    // Another file is the next version.
    let mut more = csv.clone();
    more.extend_from_slice(b"5.0,3.0,1.5,0.2\n");
    let (status, second) = add_csv(&app, &token, "iris-train", "", &more).await;
    assert_eq!(status, 201);
    assert_eq!(second["version"]["version"], 2);
    assert_eq!(second["version"]["rows"], 106);
    let added: i64 =
        sqlx::query_scalar("select count(*) from audit_event where action = 'dataset.added'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(added, 2, "each new version is audited once");

    // What is wrong is named, with a 4xx.
    let (status, e) = add_csv(&app, &token, "Bad Name", "", &csv).await;
    assert_eq!(status, 422);
    assert!(e["error"].as_str().unwrap().contains("lowercase"), "{e}");
    let (status, e) = add_csv(&app, &token, "keyed", "&key=id", b"id,x\n1,2\n2,3\n1,4\n").await;
    assert_eq!(status, 422);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("\"1\" twice (line 2 and 4)"),
        "{e}"
    );
    let (status, e) = add_csv(&app, &token, "short", "", b"a,b\n1,2\n3\n").await;
    assert_eq!(status, 422);
    assert!(
        e["error"].as_str().unwrap().contains("Line 3 has 1 cells"),
        "{e}"
    );
    let (status, e) = add_csv(&app, &token, "empty", "", b"").await;
    assert_eq!(status, 422, "{e}");
    let res = app
        .api(Method::POST, "/api/v1/datasets?name=x", &token)
        .header("content-type", "image/png")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    // Not staff: refused.
    let user = app.token_for("someone", false).await;
    let (status, _) = add_csv(&app, &user, "mine", "", &csv).await;
    assert_eq!(status, 403);
    let (status, list) = app
        .call_json(Method::GET, "/api/v1/datasets", &token, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["datasets"][0]["description"], "Fisher's iris");
}

#[sqlx::test]
async fn versions_link_to_their_data_by_the_card_the_form_and_the_api(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let csv = std::fs::read(IRIS_CSV).unwrap();
    add_csv(&app, &token, "iris-train", "", &csv).await;
    add_csv(
        &app,
        &token,
        "iris-eval",
        "",
        b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n",
    )
    .await;

    // The card's lineage names the training data by version and the evaluation data by name.
    let card = std::fs::read_to_string("models/iris/1/card.toml").unwrap();
    let line = card
        .lines()
        .find(|l| l.starts_with("dataset = "))
        .expect("the card names its data");
    let card = card.replace(
        line,
        "dataset = \"iris-train@1\"\nevaluation_dataset = \"iris-eval\"",
    );
    app.publish_with_reference(
        &token,
        "iris",
        "models/iris/1/model.onnx",
        card.as_bytes(),
        csv.clone(),
    )
    .await;
    let (_, d) = app
        .call_json(Method::GET, "/api/v1/datasets/iris-train", &token, None)
        .await;
    let used = &d["versions"][0]["used_by"];
    assert_eq!(used.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(used[0]["model"], "iris");
    assert_eq!(used[0]["model_version"], 1);
    assert_eq!(used[0]["role"], "training");
    let (_, e) = app
        .call_json(
            Method::GET,
            "/api/v1/datasets/iris-eval/versions/1",
            &token,
            None,
        )
        .await;
    assert_eq!(e["used_by"][0]["role"], "evaluation", "{e}");

    // The API links a version; linking twice is linking once.
    app.publish_with_reference(
        &token,
        "iris",
        "tests/fixtures/iris_v2.onnx",
        b"",
        Vec::new(),
    )
    .await;
    for _ in 0..2 {
        let (status, links) = app
            .post_json(
                "/api/v1/models/iris/versions/2/datasets",
                &token,
                json!({"dataset": "iris-train", "version": 1, "role": "training"}),
            )
            .await;
        assert_eq!(status, 200, "{links}");
        assert_eq!(links["links"].as_array().unwrap().len(), 1, "{links}");
    }
    let (status, e) = app
        .post_json(
            "/api/v1/models/iris/versions/2/datasets",
            &token,
            json!({"dataset": "nope"}),
        )
        .await;
    assert_eq!(status, 404, "{e}");
    let (status, e) = app
        .post_json(
            "/api/v1/models/iris/versions/2/datasets",
            &token,
            json!({"dataset": "iris-train", "role": "testing"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");

    // The admin pages show the links both ways; the upload form offers the data sets.
    app.sign_in("staff", true).await;
    let page = app.get_html("/admin/models/iris").await;
    assert!(
        page.contains("href=\"/admin/datasets/iris-train/versions/1\""),
        "the model page links the data"
    );
    assert!(page.contains("name=\"training_dataset\""));
    assert!(page.contains("<option value=\"iris-eval@1\">"));
    let page = app.get_html("/admin/datasets/iris-train/versions/1").await;
    assert!(page.contains("href=\"/admin/models/iris\">iris version 1</a> — training"));
    assert!(page.contains("iris version 2</a> — training"));

    // The form links a version to a data set picked from the list.
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/datasets",
            &[
                ("version", "2"),
                ("role", "evaluation"),
                ("dataset", "iris-eval@1"),
            ],
        )
        .await;
    assert_eq!(res.status(), 303);
    let n: i64 = sqlx::query_scalar("select count(*) from model_version_dataset")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 4);
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/datasets",
            &[
                ("version", "2"),
                ("role", "evaluation"),
                ("dataset", "iris-eval@7"),
            ],
        )
        .await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("There is no data set version &#34;iris-eval@7&#34;"),
        "{}",
        &page[page.find("flash").unwrap_or(0)..][..300]
    );
}

#[sqlx::test]
async fn two_data_set_versions_compared_row_by_row_and_by_distribution(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let a: String = std::iter::once("id,x,colour\n".to_string())
        .chain((0..200).map(|i| format!("{i},{},{}\n", i % 40, ["red", "blue"][i % 2])))
        .collect();
    // b: ids 0–9 removed, 200–214 added, x moved by 25 on ids ≥ 100, one colour changed.
    let b: String = std::iter::once("id,x,colour\n".to_string())
        .chain((10..215).map(|i| {
            let x = if i >= 100 { i % 40 + 25 } else { i % 40 };
            let colour = if i == 50 {
                "green"
            } else {
                ["red", "blue"][i % 2]
            };
            format!("{i},{x},{colour}\n")
        }))
        .collect();
    add_csv(&app, &token, "events", "&key=id", a.as_bytes()).await;
    add_csv(&app, &token, "events", "&key=id", b.as_bytes()).await;
    let (status, d) = app
        .call_json(
            Method::GET,
            "/api/v1/datasets/events/diff?a=1&b=2",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    let rows = &d["rows"];
    assert_eq!(rows["removed"], 10);
    assert_eq!(rows["added"], 15);
    // Changed: x on ids 100–199 (100 rows), colour on id 50.
    assert_eq!(rows["changed"], 101);
    assert_eq!(rows["unchanged"], 200 - 10 - 101);
    assert_eq!(rows["removed_keys"][0], "0");
    let x = d["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["column"] == "x")
        .unwrap();
    assert_eq!(x["drifted"], true, "{x}");
    let colour = d["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["column"] == "colour")
        .unwrap();
    assert_eq!(
        colour["histogram"]["categories"],
        json!(["blue", "green", "red"])
    );

    app.sign_in("staff", true).await;
    let page = app.get_html("/admin/datasets/events/diff?a=1&b=2").await;
    assert!(page.contains("<dd id=\"rows-added\">15</dd>"));
    assert!(page.contains("<form method=\"get\" action=\"/admin/datasets/events/diff\""));
    assert!(page.contains("<dd id=\"rows-changed\">101</dd>"));
    assert!(page.contains("data-column=\"x\""));
    let page = app.get_html("/admin/datasets/events").await;
    assert!(page.contains("href=\"/admin/datasets/events/versions/2\""));
    let page = app.get_html("/admin/datasets/events/versions/2").await;
    assert!(page.contains("205 rows"));
    assert!(page.contains("compare with version 1"));
    let res = app.get("/admin/datasets/nothing").await;
    assert_eq!(res.status(), 404);
}

#[sqlx::test]
async fn the_admin_forms_say_what_is_wrong(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("staff", true).await;
    let add = |form: reqwest::multipart::Form| {
        app.post_multipart("/admin/datasets", "/admin/datasets", form)
    };
    let res = add(reqwest::multipart::Form::new().text("name", "iris-train")).await;
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains("Choose the file to add"), "{page}");
    assert!(
        page.contains("value=\"iris-train\""),
        "the form keeps what was typed"
    );
    let csv = std::fs::read(IRIS_CSV).unwrap();
    let res = add(reqwest::multipart::Form::new()
        .text("name", "Iris Train")
        .part("file", crate::helpers::file_part(csv.clone(), "train.csv")))
    .await;
    assert_eq!(res.status(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Data set names use lowercase letters"));
    let res = add(reqwest::multipart::Form::new()
        .text("name", "iris-train")
        .text("key", "sepal_length")
        .part("file", crate::helpers::file_part(csv.clone(), "train.csv")))
    .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("keys must be unique"));
    let res = add(reqwest::multipart::Form::new()
        .text("name", "iris-train")
        .part("file", crate::helpers::file_part(csv, "train.csv")))
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        crate::helpers::location(&res),
        "/admin/datasets/iris-train/versions/1"
    );
    // An upload naming a data set version that does not exist is refused before it is stored.
    let versions = app.count("model_version").await;
    let res = app
        .post_multipart(
            "/admin/models/iris",
            "/admin/models/iris/versions",
            reqwest::multipart::Form::new()
                .text("training_dataset", "iris-train@9")
                .part(
                    "model",
                    crate::helpers::file_part(
                        std::fs::read("tests/fixtures/iris_v2.onnx").unwrap(),
                        "model.onnx",
                    ),
                ),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("There is no data set version &#34;iris-train@9&#34;"));
    assert_eq!(app.count("model_version").await, versions);
    let res = app.get("/admin/models/iris/compare?a=1&b=7").await;
    assert_eq!(res.status(), 404);
}
