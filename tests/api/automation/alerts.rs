//! Webhook alerts: retried deliveries, refused rules and webhooks, drift and failed jobs
//! reaching the webhooks that want them, a stream whose broker is away.

use super::*;

#[sqlx::test]
async fn a_webhook_answering_500_is_retried_until_it_takes_the_delivery(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let hook = receiver(2).await;
    let (status, created) = app
        .post_json(
            "/api/v1/webhooks",
            &staff,
            json!({"url": hook.url, "model": "iris"}),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().unwrap();

    // A test event from the admin page.
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/webhooks",
            &format!("/admin/webhooks/{id}/test"),
            &[],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let body = hook.wait_for("test").await;
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains("A test from Plinth"));

    // Two refusals and a success, each attempt recorded with what came back. The receiver has
    // the body a moment before the delivery's row says so: asked until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let (status, deliveries) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/webhooks/{id}/deliveries"),
                &staff,
                None,
            )
            .await;
        assert_eq!(status, 200);
        if deliveries[0]["state"] == "delivered" || Instant::now() > deadline {
            break deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = &deliveries[0];
    assert_eq!(d["state"], "delivered", "{d}");
    let tries: Vec<(Value, Value)> = d["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["status"].clone(), t["response"].clone()))
        .collect();
    assert_eq!(
        tries,
        [
            (json!(500), json!("down (0)")),
            (json!(500), json!("down (1)")),
            (json!(200), json!("ok"))
        ]
    );
    let page = app.get_html("/admin/webhooks").await;
    assert!(page.contains("HTTP 500") && page.contains("down (1)") && page.contains("delivered"));

    // A receiver that is gone: the delivery fails for good after its attempts.
    let (_, gone) = app
        .post_json(
            "/api/v1/webhooks",
            &staff,
            json!({"url": "http://127.0.0.1:9/nobody"}),
        )
        .await;
    let gone = gone["id"].as_i64().unwrap();
    sqlx::query("update webhook set enabled = false where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    plinth::automation::webhooks::alert(&app.pool, "job.failed", None, "a job".into(), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, d) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/webhooks/{gone}/deliveries"),
                &staff,
                None,
            )
            .await;
        if d[0]["state"] == "failed" {
            assert_eq!(d[0]["attempts"], app.settings.webhook_attempts);
            assert!(
                d[0]["tries"][0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("onnect"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test]
async fn rules_and_webhooks_that_cannot_work_are_refused_with_the_reason(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let put = |kind: &str| format!("/api/v1/models/iris/rules/{kind}");
    for (kind, body, status, words) in [
        (
            "promote",
            json!({"min_predictions": 10}),
            422,
            "at least one criterion",
        ),
        (
            "promote",
            json!({"min_agreement": 1.5}),
            422,
            "min_agreement is a share",
        ),
        (
            "promote",
            json!({"min_agreement": 0.9, "window_minutes": 5}),
            422,
            "belong to the rollback rule",
        ),
        (
            "rollback",
            json!({"window_minutes": 5}),
            422,
            "max_error_rate, drift_checks",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "mode": "maybe"}),
            422,
            "act or notify",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "min_predictions": 0}),
            422,
            "min_predictions",
        ),
        (
            "rollback",
            json!({"max_error_rate": 0.1, "speed": 3}),
            400,
            "unknown field",
        ),
        (
            "sideways",
            json!({"max_error_rate": 0.1}),
            404,
            "promote and rollback",
        ),
    ] {
        let (got, error) = app
            .call_json(Method::PUT, &put(kind), &staff, Some(body))
            .await;
        assert_eq!(got, status, "{error}");
        assert!(error["error"].as_str().unwrap().contains(words), "{error}");
    }
    let (status, _) = app
        .call_json(
            Method::PUT,
            &put("promote"),
            &user,
            Some(json!({"min_agreement": 0.9})),
        )
        .await;
    assert_eq!(status, 403);
    for (body, words) in [
        (json!({"url": "ftp://example.com/"}), "http:// or https://"),
        (
            json!({"url": "http://x/", "events": ["everything"]}),
            "no event \"everything\"",
        ),
        (
            json!({"url": "http://x/", "model": "nope"}),
            "no model called nope",
        ),
    ] {
        let (status, error) = app.post_json("/api/v1/webhooks", &staff, body).await;
        assert_eq!(status, 422);
        assert!(error["error"].as_str().unwrap().contains(words), "{error}");
    }

    // The admin form marks a bad figure and keeps the page.
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/rules/rollback",
            &[("max_error_rate", "lots"), ("window_minutes", "10")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("The error rate must be a number"));
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/rules/rollback",
            &[
                ("max_error_rate", "5"),
                ("window_minutes", "10"),
                ("mode", "notify"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let rules: Vec<(String, String, Option<f64>)> =
        sqlx::query_as("select kind, mode, max_error_rate from automation_rule")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rules, [("rollback".into(), "notify".into(), Some(0.05))]);
    assert_eq!(audit_actions(&app, "automation.rule_set").await.len(), 1);
}

#[sqlx::test]
async fn drift_flagged_and_a_failed_job_reach_the_webhooks_that_want_them(pool: PgPool) {
    let app = app_with_rules(pool, 60).await;
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let drift_hook = receiver(0).await;
    let jobs_hook = receiver(0).await;
    for (hook, event) in [(&drift_hook, "drift.flagged"), (&jobs_hook, "job.failed")] {
        let (status, _) = app
            .post_json(
                "/api/v1/webhooks",
                &staff,
                json!({"url": hook.url, "events": [event]}),
            )
            .await;
        assert_eq!(status, 201);
    }

    // Shifted inputs: the check flags drift, and the drift webhook hears of it, once.
    app.sign_in("root", true).await;
    crate::drift::live_window(&app, 200, 0.8).await;
    let page = crate::drift::check_now(&app).await;
    assert!(page.contains("drifting"), "{page}");
    let body = drift_hook.wait_for("drift.flagged").await;
    assert_eq!(body["model"], "iris");
    assert_eq!(body["version"], 1);
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("drift flagged on version 1 (4 of 4 features"),
        "{body}"
    );
    crate::drift::check_now(&app).await;

    // A job over its error budget fails, and the jobs webhook hears of it.
    let (status, created) = crate::jobs::submit_csv(
        &app,
        &user,
        "iris",
        crate::jobs::iris_csv(100, |i| i % 2 == 0),
        "?max_errors=3",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let over = crate::jobs::wait_over(&app, &user, id, Duration::from_secs(60)).await;
    assert_eq!(over["state"], "failed");
    let body = jobs_hook.wait_for("job.failed").await;
    assert_eq!(body["job"], id);
    assert!(
        body["text"].as_str().unwrap().contains("error budget of 3"),
        "{body}"
    );

    // Each receiver got only its own event, the second drift check (still drifting) adding none.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(drift_hook.events(), ["drift.flagged"]);
    assert_eq!(jobs_hook.events(), ["job.failed"]);
}

#[sqlx::test]
async fn drift_flagged_on_k_checks_in_a_row_rolls_production_back(pool: PgPool) {
    let app = app_with_rules(pool, 1).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    // Version 1 (with its reference data) is production again after version 2 was: a rollback
    // goes to version 2.
    let other = publish(&app, &staff, &agreeing(scratch.path())).await;
    for v in [other, 1] {
        set_production(&app, &staff, v).await;
    }
    let (status, body) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/rollback",
            &staff,
            Some(json!({"drift_checks": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // One check flags drift: one of two, nothing moves.
    app.sign_in("root", true).await;
    crate::drift::live_window(&app, 200, 0.8).await;
    assert!(crate::drift::check_now(&app).await.contains("drifting"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(production(&app).await, 1);
    let healthy = outcome(&app, "rollback").await;
    assert!(
        healthy.contains("drift flagged on 1 of its last 1 checks"),
        "{healthy}"
    );

    // The second in a row: rolled back within an interval, with the verdicts in the audit entry.
    assert!(crate::drift::check_now(&app).await.contains("drifting"));
    wait_for_production(&app, other, Duration::from_secs(4)).await;
    let rolled = audit_actions(&app, "automation.rolled_back").await;
    assert_eq!(rolled.len(), 1);
    assert_eq!(
        rolled[0].1["figures"]["drift_verdicts"],
        json!([true, true])
    );
    let reason: String =
        sqlx::query_scalar("select reason from alias_event order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        reason.ends_with("drift flagged on 2 checks in a row"),
        "{reason}"
    );
}

#[sqlx::test]
async fn a_stream_whose_broker_is_away_fails_and_alerts_once(pool: PgPool) {
    // A broker address where nothing listens: the consumer is never given a partition.
    let nowhere = crate::helpers::free_port();
    let app = spawn_app_with(pool, |s| {
        s.kafka_brokers = Some(format!("127.0.0.1:{nowhere}"));
    })
    .await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    let hook = receiver(0).await;
    app.post_json(
        "/api/v1/webhooks",
        &staff,
        json!({"url": hook.url, "events": ["stream.failed"]}),
    )
    .await;
    app.sign_in("root", true).await;
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/streams",
            &[("input_topic", "flowers"), ("output_topic", "species")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);

    // It fails once it has held no partition for 20 s, restarts, fails again: one alert.
    let body = tokio::time::timeout(Duration::from_secs(60), hook.wait_for("stream.failed"))
        .await
        .expect("an alert within a minute");
    assert_eq!(body["model"], "iris");
    assert_eq!(body["input_topic"], "flowers");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("the stream from flowers failed"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(hook.events(), ["stream.failed"]);
}
