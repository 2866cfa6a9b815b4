//! Browser journeys through the back office: uploads and promotion, canaries and shadows, the
//! dashboard and drift, scoring files, training data and comparisons.

use super::*;

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn staff_upload_and_promote_a_version_in_the_browser(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("root", "staff-member-secret", true).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(
        &b,
        &app,
        "root",
        "staff-member-secret",
        "/admin/models/iris",
    )
    .await;

    let model = std::fs::canonicalize("tests/fixtures/iris_v2.onnx").unwrap();
    let card = std::fs::canonicalize("models/iris/1/card.toml").unwrap();
    b.fill("#model", &model.display().to_string()).await;
    b.fill("#card", &card.display().to_string()).await;
    b.click("form[action='/admin/models/iris/versions'] button[type=submit]")
        .await;
    b.wait_for_text("Version 2 uploaded").await;

    b.click("form[action='/admin/models/iris/aliases'] input[value='2'] ~ button")
        .await;
    b.wait_for_text("production now points at version 2.").await;
    b.screenshot("admin-model").await;
    let serving: i32 = sqlx::query_scalar(
        "select v.version from model_alias a join model_version v on v.id = a.version_id
         join model m on m.id = a.model_id where m.name = 'iris' and a.alias = 'production'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(serving, 2);
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn staff_run_a_canary_and_a_shadow_from_the_model_page(pool: PgPool) {
    require_browser();
    let app = helpers::spawn_app_with(pool, |s| {
        s.automation_interval = std::time::Duration::from_secs(1)
    })
    .await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let res = app
        .publish(
            &staff,
            "iris",
            "tests/fixtures/zoo/decision_tree_classifier.onnx",
            Some("models/iris/1/card.toml"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let res = app
        .publish(
            &staff,
            "iris",
            "tests/fixtures/zoo/logistic_regression.onnx",
            Some("models/iris/1/card.toml"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "root", "plinth-pedestal-42", "/admin/models/iris").await;

    // Version 2 as a canary at 20% and version 3 as a shadow, both from the page's forms.
    b.execute("document.querySelector('#candidate').value = '2';")
        .await;
    b.fill("#share", "20").await;
    b.click("form[action='/admin/models/iris/canary'] button[type=submit]")
        .await;
    b.wait_for_text("Version 2 now answers 20% of production")
        .await;
    b.execute("document.querySelector('#shadow_version').value = '3';")
        .await;
    b.click("form[action='/admin/models/iris/shadows'] button[type=submit]")
        .await;
    b.wait_for_text("Version 3 now receives a copy of the live requests")
        .await;

    // Live traffic from forty callers; each one's copies reach the shadow.
    for i in 0..40 {
        let token = app.token_for(&format!("caller{i}"), false).await;
        for k in 0..5 {
            let x = 4.4 + ((i * 5 + k) % 30) as f64 * 0.12;
            let (status, _) = app
                .post_json(
                    "/api/v1/models/iris/predict",
                    &token,
                    serde_json::json!({"inputs": {"sepal_length": x, "sepal_width": 3.0,
                        "petal_length": 1.0 + ((i * 7 + k) % 50) as f64 * 0.11,
                        "petal_width": 0.2 + (k as f64) * 0.4}}),
                )
                .await;
            assert_eq!(status, 200);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let copies: i64 =
            sqlx::query_scalar("select count(*) from prediction where source = 'shadow'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let live: i64 = sqlx::query_scalar("select count(*) from prediction where source = 'api'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if copies == live {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{copies} of {live}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // (Another page first: a new fragment alone would only scroll the page already shown.)
    b.goto(&app.url("/admin")).await;
    b.goto(&app.url("/admin/models/iris#canary")).await;
    let page = b.wait_for_text("Candidate minus production").await;
    assert!(page.contains("answers <strong>20%</strong>"), "{page}");
    assert!(!page.contains("not enough requests yet"), "{page}");
    b.screenshot("admin-canary").await;
    b.goto(&app.url("/admin/models/iris#shadows")).await;
    let page = b.wait_for_text(" of 200 labels").await;
    assert!(page.contains("Stop shadowing version 3"), "{page}");
    b.screenshot("admin-shadow").await;

    // Alerts to a real receiver, added from the webhooks page.
    let hook = helpers::receiver(0).await;
    b.goto(&app.url("/admin/webhooks")).await;
    b.fill("#url", &hook.url).await;
    b.click("form[action='/admin/webhooks'] button[type=submit]")
        .await;
    b.wait_for_text("Alerts now go to").await;

    // A promotion rule from the page: the shadow agrees often enough and is promoted.
    b.goto(&app.url("/admin/models/iris#automation")).await;
    b.fill("#p_min", "150").await;
    b.fill("#p_agree", "50").await;
    b.fill("#p_err", "1").await;
    b.click("form[action='/admin/models/iris/rules/promote'] button[type=submit]")
        .await;
    b.wait_for_text("The promotion rule is set").await;
    b.fill("#r_err", "5").await;
    b.click("form[action='/admin/models/iris/rules/rollback'] button[type=submit]")
        .await;
    b.wait_for_text("The rollback rule is set").await;
    hook.wait_for("promotion").await;
    // The rollback rule looks at the new production on a later round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, rules) = app
            .call_json(
                reqwest::Method::GET,
                "/api/v1/models/iris/rules",
                &staff,
                None,
            )
            .await;
        if rules.to_string().contains("version 3 is healthy") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rules}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.goto(&app.url("/admin")).await;
    b.goto(&app.url("/admin/models/iris#automation")).await;
    let page = b.wait_for_text("production is version 3").await;
    assert!(
        page.contains("rule: promote a candidate after 150 predictions"),
        "{page}"
    );
    assert!(page.contains("version 3 is healthy"), "{page}");
    b.execute("document.querySelector('#automation').scrollIntoView();")
        .await;
    b.screenshot("admin-automation").await;
    b.goto(&app.url("/admin/webhooks")).await;
    let page = b.wait_for_text("delivered").await;
    assert!(
        page.contains("promoted to production automatically"),
        "{page}"
    );
    b.screenshot("admin-webhooks").await;
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn the_back_office_renders_the_dashboard_and_drift(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("root", "staff-member-secret", true).await;
    // A day of iris traffic, the last of it shifted, with feedback on some.
    sqlx::query(
        "insert into prediction (model_id, version_id, source, inputs, outputs, latency_us, created_at)
         select v.model_id, v.id, (array['form', 'api', 'v2'])[1 + g % 3],
                jsonb_build_array(jsonb_build_object('sepal_length', 5.0 + (g % 30) / 10.0 + 0.8, 'sepal_width', 2.6 + (g % 12) / 10.0,
                                   'petal_length', 1.2 + (g % 55) / 10.0 + 0.8, 'petal_width', 0.2 + (g % 23) / 10.0 + 0.5)),
                jsonb_build_array(jsonb_build_object('label', (array['setosa', 'versicolor', 'virginica'])[1 + g % 3])),
                150 + (g * 37) % 900, now() - make_interval(secs => (g * 61) % 86000)
         from generate_series(1, 600) as g, model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(
        &b,
        &app,
        "root",
        "staff-member-secret",
        "/admin/models/iris/drift",
    )
    .await;

    b.click("form[action='/admin/models/iris/drift'] button[type=submit]")
        .await;
    let page = b.wait_for_text("features moved").await;
    assert!(page.contains("drifting"), "{page}");
    b.screenshot("admin-drift").await;

    b.goto(&app.url("/admin?window=24h")).await;
    let dash = b.wait_for_text("p50 / p95 / p99").await;
    assert!(dash.contains(r#"href="/admin/models/iris/drift">drift</a>"#));
    b.screenshot("admin-dashboard").await;
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_file_scored_from_the_model_page_shows_its_progress_moving(pool: PgPool) {
    require_browser();
    // The server the browser talks to runs no batch workers; a second one on the same database
    // does, started once the job's page is open: the page follows a job another instance runs.
    let app = helpers::spawn_app_with(pool.clone(), |s| s.job_workers = 0).await;
    app.import_models().await;
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("flowers.csv");
    let n = 300_000;
    let mut text = String::from("id,sepal_length,sepal_width,petal_length,petal_width\n");
    for i in 0..n {
        let sl = if i == 12 {
            "tall".to_string()
        } else {
            format!("{:.1}", 4.3 + (i % 36) as f64 / 10.0)
        };
        text.push_str(&format!(
            "{i},{sl},{:.1},{:.1},{:.1}\n",
            2.0 + (i % 24) as f64 / 10.0,
            1.0 + (i % 59) as f64 / 10.0,
            0.1 + (i % 24) as f64 / 10.0
        ));
    }
    std::fs::write(&input, text).unwrap();

    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "ada", "plinth-pedestal-42", "/models/iris/batch").await;
    b.fill("#file", &input.display().to_string()).await;
    b.screenshot("batch-upload").await;
    b.click("form[action='/models/iris/jobs'] button[type=submit]")
        .await;
    let path = b.wait_for_path("/jobs/").await;
    let id: i64 = path.trim_start_matches("/jobs/").parse().unwrap();
    b.wait_for_text("queued").await;
    // A mark that a reload would wipe.
    b.execute("window.plinthMark = 42;").await;

    let _workers = helpers::spawn_app_with(pool.clone(), |s| {
        s.job_workers = 1;
        s.job_chunk_rows = 4096;
    })
    .await;
    // The bar moves without a reload: a figure strictly between 0 and the total, mark intact.
    let started = std::time::Instant::now();
    loop {
        let done = b
            .execute("return document.querySelector('[data-field=done]').textContent;")
            .await;
        let done: i64 = done
            .as_str()
            .unwrap_or("0")
            .trim()
            .replace(',', "")
            .parse()
            .unwrap_or(0);
        let mark = b.execute("return window.plinthMark || null;").await;
        if done > 0 && done < n {
            assert_eq!(mark, serde_json::json!(42), "the page was reloaded");
            let bar = b
                .execute("return document.querySelector('progress').value;")
                .await;
            assert_eq!(bar.as_i64(), Some(done));
            b.screenshot("job-progress").await;
            break;
        }
        assert!(done < n, "the job finished before the page saw it move");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no progress shown"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // At the end the page shows the downloads and the refused row, at its line.
    let started = std::time::Instant::now();
    let page = loop {
        let source = b.source().await;
        if source.contains("Download results (CSV)") {
            break source;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{source}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(page.contains("sepal_length: Enter a number."), "{page}");
    assert!(
        page.contains("<td>14</td>"),
        "line 14 (header, then rows 0..12): {page}"
    );
    b.screenshot("job-done").await;
    let stored: i64 = sqlx::query_scalar(
        "select coalesce(sum(n), 0)::bigint from prediction where source = 'batch'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, n - 1);
    // The list of jobs.
    b.goto(&app.url("/jobs")).await;
    let list = b.source().await;
    assert!(list.contains(&format!("href=\"/jobs/{id}\"")), "{list}");
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn staff_register_training_data_and_compare_two_versions(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.create_user("root", "staff-member-secret", true).await;
    let token = app.token_for("ci", true).await;
    // Two iris versions with their reference rows (the compare fixtures' pair).
    for (model, side) in [
        ("logistic_regression.onnx", "a"),
        ("decision_tree_classifier.onnx", "b"),
    ] {
        let dir = "tests/fixtures/compare/classifier";
        app.publish_with_reference(
            &token,
            "flowers",
            &format!("tests/fixtures/zoo/{model}"),
            &std::fs::read(format!("{dir}/{side}_card.toml")).unwrap(),
            std::fs::read(format!("{dir}/{side}_reference.csv")).unwrap(),
        )
        .await;
    }
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "root", "staff-member-secret", "/admin/datasets").await;

    // The training data, registered from the page: its profile.
    let file = std::fs::canonicalize("models/iris/1/reference.csv").unwrap();
    b.fill("#ds-name", "iris-train").await;
    b.fill("#ds-file", &file.display().to_string()).await;
    b.fill(
        "#ds-description",
        "Fisher's iris, the 70% used for training",
    )
    .await;
    b.click("form[action='/admin/datasets'] button[type=submit]")
        .await;
    let page = b
        .wait_for_text("Added iris-train version 1 (105 rows).")
        .await;
    assert!(page.contains("petal_width"));
    b.screenshot("admin-dataset").await;

    // Linked to version 1 from the model's page, then the two versions compared.
    b.goto(&app.url("/admin/models/flowers")).await;
    b.wait_for_text("Compare version").await;
    b.execute("document.querySelector('#link-version').value = '1';")
        .await;
    b.click("#link-dataset button[type=submit]").await;
    b.wait_for_text("Version 1 is linked to iris-train v1 (training).")
        .await;
    b.click("#compare-form button[type=submit]").await;
    b.wait_for_path("/admin/models/flowers/compare").await;
    b.click("#run-comparison").await;
    // The page refreshes itself until the job is done.
    let page = b.wait_for_text("Where they disagree most").await;
    assert!(
        page.contains("iris-train v1 (105 rows)"),
        "the card shows the linked data"
    );
    assert!(page.contains("id=\"confusion\""));
    b.execute("window.scrollTo(0, 0);").await;
    b.screenshot("admin-compare").await;
    b.execute("document.getElementById('answers').scrollIntoView();")
        .await;
    b.screenshot("admin-compare-answers").await;
    b.click("#disagreements a.try-b").await;
    b.wait_for_path("/models/flowers").await;
    let form = b.source().await;
    assert!(form.contains("trying version 2"), "the form is version 2's");
    b.quit().await;
}
