//! Canary traffic: a candidate version answers a share of the callers of `production`, the
//! same callers each time, and its arms' figures are SQL over what was stored.

use crate::helpers::setosa;
use futures_util::{stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::spawn_app_with;

async fn audit_actions(pool: &PgPool, action: &str) -> Vec<Value> {
    sqlx::query_scalar("select detail from audit_event where action = $1 order by id")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_canary_splits_callers_by_its_share_sticks_to_each_and_counts_what_was_stored(
    pool: PgPool,
) {
    let app = spawn_app_with(pool, |s| s.public_inference = true).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    assert_eq!(app.publish_iris_v2(&staff).await.status().as_u16(), 201);
    let traffic = "/api/v1/models/iris/traffic";

    // Refusals name what is wrong and change nothing.
    let user = app.token_for("ada", false).await;
    let (status, _) = app
        .call_json(
            Method::PUT,
            traffic,
            &user,
            Some(json!({"candidate": 2, "share": 0.1})),
        )
        .await;
    assert_eq!(status, 403);
    for (body, words) in [
        (
            json!({"candidate": 2, "share": 0.0}),
            "above 0 and below 100",
        ),
        (
            json!({"candidate": 2, "share": 1.0}),
            "above 0 and below 100",
        ),
        (json!({"candidate": 1, "share": 0.1}), "production already"),
        (json!({"candidate": 9, "share": 0.1}), "no version 9"),
    ] {
        let (status, error) = app
            .call_json(Method::PUT, traffic, &staff, Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            error["error"].as_str().unwrap().contains(words),
            "{body}: {error}"
        );
    }
    let (status, _) = app
        .call_json(
            Method::PUT,
            traffic,
            &staff,
            Some(json!({"candidate": 2, "share": 0.1, "extra": 1})),
        )
        .await;
    assert_eq!(status, 400);
    let (_, none) = app.call_json(Method::GET, traffic, &staff, None).await;
    assert_eq!(none["canary"], Value::Null);
    assert_eq!(none["production"], 1);

    // 10% to version 2.
    let (status, on) = app
        .call_json(
            Method::PUT,
            traffic,
            &staff,
            Some(json!({"candidate": 2, "share": 0.1})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(on["canary"]["candidate"], 2);
    assert_eq!(on["canary"]["share"], 0.1);
    assert_eq!(
        audit_actions(&app.pool, "canary.set").await,
        [json!({"model": "iris", "candidate": 2, "share": 0.1})]
    );

    // 10,000 anonymous requests: each is drawn at random, so the candidate's count is
    // binomial(10,000, 0.1): mean 1,000, sd 30. Outside 4.5 sd either side (a chance of about
    // 7 in a million when the split is right) the split is wrong.
    let url = app.url("/api/v1/models/iris/predict");
    let versions: Vec<i64> = stream::iter(0..10_000)
        .map(|_| {
            let (client, url) = (app.client.clone(), url.clone());
            async move {
                let res = client
                    .post(&url)
                    .json(&json!({"inputs": setosa()}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                let body: Value = res.json().await.unwrap();
                body["version"].as_i64().unwrap()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let candidate = versions.iter().filter(|v| **v == 2).count();
    assert_eq!(
        versions.iter().filter(|v| **v == 1).count() + candidate,
        10_000
    );
    assert!(
        (865..=1135).contains(&candidate),
        "{candidate} of 10,000 anonymous requests went to the candidate at 10%"
    );

    // Named callers stick: at 50%, 40 tokens of 40 users, 5 requests each, each token always
    // answered by one version, and both versions among them.
    let (_, on) = app
        .call_json(
            Method::PUT,
            traffic,
            &staff,
            Some(json!({"candidate": 2, "share": 0.5})),
        )
        .await;
    assert_eq!(on["canary"]["share"], 0.5);
    let mut arms = std::collections::BTreeMap::new();
    for i in 0..40 {
        let token = app.token_for(&format!("caller{i}"), false).await;
        let mut seen = std::collections::BTreeSet::new();
        let mut first_id = None;
        for _ in 0..5 {
            let (status, body) = app
                .post_json(
                    "/api/v1/models/iris/predict",
                    &token,
                    json!({"inputs": setosa()}),
                )
                .await;
            assert_eq!(status, 200);
            seen.insert(body["version"].as_i64().unwrap());
            first_id.get_or_insert(body["predictions"][0]["id"].as_i64().unwrap());
        }
        // KServe V1 has no place for the version in its body: a header says it, the same.
        let res = app
            .api(Method::POST, "/v1/models/iris:predict", &token)
            .json(&json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let header = res.headers()["plinth-model-version"].to_str().unwrap();
        seen.insert(header.parse::<i64>().unwrap());
        assert_eq!(seen.len(), 1, "token {i} was answered by {seen:?}");
        *arms.entry(*seen.first().unwrap()).or_insert(0) += 1;
        // Feedback on the first one: setosa is right for every third caller.
        let label = if i % 3 == 0 { "setosa" } else { "virginica" };
        let (status, _) = app
            .post_json(
                &format!("/api/v1/predictions/{}/feedback", first_id.unwrap()),
                &token,
                json!({"label": label}),
            )
            .await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        arms.len(),
        2,
        "40 tokens at 50% all landed in one arm: {arms:?}"
    );

    // Requests that fail count against the arm that took them.
    for _ in 0..60 {
        let res = app
            .client
            .post(&url)
            .json(&json!({"inputs": {"sepal_length": 1.0}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 422);
    }
    // Failures are recorded without holding up the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.count("prediction_failure").await < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "failures not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The arms' figures are SQL over the stored rows.
    let (_, report) = app.call_json(Method::GET, traffic, &staff, None).await;
    let canary = &report["canary"];
    let arms = canary["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2);
    let mut failures = 0;
    for (arm, version) in [("production", 1), ("candidate", 2)] {
        let figures = arms.iter().find(|a| a["arm"] == arm).unwrap();
        assert_eq!(figures["version"], version);
        let (requests, predictions, p50, p99): (i64, i64, f64, f64) = sqlx::query_as(
            "select count(*), sum(n)::bigint,
                    percentile_cont(0.5) within group (order by latency_us),
                    percentile_cont(0.99) within group (order by latency_us)
             from prediction p join model_version v on v.id = p.version_id
             where v.version = $1",
        )
        .bind(version)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let failed: i64 = sqlx::query_scalar(
            "select count(*) from prediction_failure f
             join model_version v on v.id = f.version_id where v.version = $1",
        )
        .bind(version)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let (judged, correct): (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where f.label = p.outputs_label)
             from feedback f
             join lateral (select label[(f.prediction_id - id + 1)::int] as outputs_label
                           from prediction where id <= f.prediction_id
                           and f.prediction_id < id + n) p on true
             join model_version v on v.id = f.version_id where v.version = $1",
        )
        .bind(version)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(figures["requests"], requests, "{arm}");
        assert_eq!(figures["predictions"], predictions, "{arm}");
        assert_eq!(figures["failures"], failed, "{arm}");
        assert!((figures["p50_ms"].as_f64().unwrap() - p50 / 1000.0).abs() < 1e-9);
        assert!((figures["p99_ms"].as_f64().unwrap() - p99 / 1000.0).abs() < 1e-9);
        assert_eq!(figures["judged"], judged, "{arm}");
        if judged > 0 {
            let accuracy = correct as f64 / judged as f64;
            assert!((figures["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-12);
        }
        let rate = failed as f64 / (requests + failed) as f64;
        assert!((figures["error_rate"].as_f64().unwrap() - rate).abs() < 1e-12);
        failures += failed;
    }
    assert_eq!(failures, 60);
    let diff = &canary["error_rate_difference"];
    assert!(diff["low"].as_f64().unwrap() <= diff["estimate"].as_f64().unwrap());
    assert!(diff["estimate"].as_f64().unwrap() <= diff["high"].as_f64().unwrap());

    // Ended: everyone gets production again.
    let (status, ended) = app.call_json(Method::DELETE, traffic, &staff, None).await;
    assert_eq!(status, 200);
    assert_eq!(ended["canary"], Value::Null);
    assert_eq!(
        audit_actions(&app.pool, "canary.ended").await,
        [json!({"model": "iris", "candidate": 2})]
    );
    for _ in 0..200 {
        let res = app
            .client
            .post(&url)
            .json(&json!({"inputs": setosa()}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.json::<Value>().await.unwrap()["version"], 1);
    }

    // Promoting the candidate ends its canary.
    let (status, _) = app
        .call_json(
            Method::PUT,
            traffic,
            &staff,
            Some(json!({"candidate": 2, "share": 0.2})),
        )
        .await;
    assert_eq!(status, 200);
    let production = "/api/v1/models/iris/aliases/production";
    let (status, _) = app
        .call_json(Method::PUT, production, &staff, Some(json!({"version": 2})))
        .await;
    assert_eq!(status, 200);
    let (_, after) = app.call_json(Method::GET, traffic, &staff, None).await;
    assert_eq!(after["canary"], Value::Null);
    assert_eq!(after["production"], 2);
}

#[sqlx::test]
async fn the_admin_page_starts_shows_and_ends_a_canary(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    assert_eq!(app.publish_iris_v2(&staff).await.status().as_u16(), 201);
    app.sign_in("hopper", true).await;
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("Start a canary"), "{page}");

    // A share that is not a number is refused on the page, naming the field.
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/canary",
            &[("candidate", "2"), ("share", "lots")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("share is a percentage"));
    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/canary",
            &[("candidate", "2"), ("share", "150")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);

    let res = app
        .post_form_from(
            "/admin/models/iris",
            "/admin/models/iris/canary",
            &[("candidate", "2"), ("share", "25")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    // The signed-in staff user's own predictions go to one arm, always.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let res = app.predict_iris_example().await;
        assert_eq!(res.status().as_u16(), 303);
        let id = crate::helpers::prediction_id(&res);
        let version: i32 = sqlx::query_scalar(
            "select v.version from prediction p join model_version v on v.id = p.version_id
             where p.id <= $1 and $1 < p.id + p.n",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        seen.insert(version);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("answers <strong>25%</strong>"), "{page}");
    assert!(page.contains("Promote version 2 to production"));
    assert!(page.contains("Change the canary"));

    let res = app
        .post_form_from("/admin/models/iris", "/admin/models/iris/canary/end", &[])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("Start a canary"));
    assert!(page.contains("no longer answers"), "the flash says so");
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_event where action like 'canary.%' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(actions, ["canary.set", "canary.ended"]);
}
