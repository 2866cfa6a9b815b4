//! Two model versions compared over their reference rows: the answers checked against
//! onnxruntime and numpy, refusals, and a large comparison run as a job.

use super::*;

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
