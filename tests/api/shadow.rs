//! Shadow versions: a copy of every live request, answered off the request path, stored beside
//! the live answer and never returned; agreement is SQL over the stored pairs.

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app_with, TestApp};

/// Flowers over the whole of iris's ranges, so that different models disagree on some.
fn flower(i: usize) -> Value {
    let f = |k: usize, lo: f64, hi: f64| lo + (hi - lo) * (((i * k) % 97) as f64 / 96.0);
    json!({"sepal_length": f(7, 4.3, 7.9), "sepal_width": f(11, 2.0, 4.4),
           "petal_length": f(13, 1.0, 6.9), "petal_width": f(17, 0.1, 2.5)})
}

/// Shadow rows of `version`.
async fn shadow_rows(app: &TestApp, version: i32) -> i64 {
    sqlx::query_scalar(
        "select count(*) from prediction p join model_version v on v.id = p.version_id
         where p.source = 'shadow' and v.version = $1",
    )
    .bind(version)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn wait_for_shadow_rows(app: &TestApp, version: i32, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = shadow_rows(app, version).await;
        if have >= want {
            assert_eq!(have, want, "more shadow rows than live requests");
            return;
        }
        assert!(Instant::now() < deadline, "{have} of {want} shadow rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test]
async fn shadows_answer_copies_of_live_requests_and_never_the_caller(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    assert_eq!(app.publish_zoo(&staff, "decision_tree_classifier").await, 2);
    assert_eq!(app.publish_zoo(&staff, "logistic_regression").await, 3);

    // Refusals.
    let user = app.token_for("ada", false).await;
    let shadow = |version: i32| format!("/api/v1/models/iris/shadows/{version}");
    let (status, _) = app.call_json(Method::PUT, &shadow(2), &user, None).await;
    assert_eq!(status, 403);
    for (version, words) in [(1, "is production"), (9, "no version 9")] {
        let (status, error) = app
            .call_json(Method::PUT, &shadow(version), &staff, None)
            .await;
        assert_eq!(status, 422);
        assert!(error["error"].as_str().unwrap().contains(words), "{error}");
    }

    // Two shadows at once.
    for version in [2, 3] {
        let (status, _) = app
            .call_json(Method::PUT, &shadow(version), &staff, None)
            .await;
        assert_eq!(status, 200);
    }
    let audit: Vec<Value> = sqlx::query_scalar(
        "select detail from audit_event where action = 'shadow.started' order by id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            json!({"model": "iris", "version": 2}),
            json!({"model": "iris", "version": 3})
        ]
    );

    // 200 single-row requests and 10 of 10 rows: every answer is production's.
    let mut requests = 0;
    for i in 0..200 {
        let (status, body) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": flower(i)}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["version"], 1, "a shadow answered the caller");
        requests += 1;
    }
    for b in 0..10 {
        let rows: Vec<Value> = (0..10).map(|r| flower(1000 + b * 10 + r)).collect();
        let (status, body) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": rows}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["version"], 1);
        requests += 1;
    }
    wait_for_shadow_rows(&app, 2, requests).await;
    wait_for_shadow_rows(&app, 3, requests).await;
    // Nor does the caller find a shadow's answer in its history or its API list, which show
    // the caller's own rows: shadow rows belong to nobody.
    let owned: i64 = sqlx::query_scalar(
        "select count(*) from prediction where source = 'shadow'
         and (user_id is not null or token_id is not null)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(owned, 0);

    // Each shadow row answers one live row: same rows, same inputs, its own version's answers.
    let mismatched: i64 = sqlx::query_scalar(
        "select count(*) from prediction sp
         left join prediction lp on lp.id = sp.shadow_of and lp.source = 'api'
         where sp.source = 'shadow'
           and (lp.id is null or lp.n <> sp.n or lp.x is distinct from sp.x
                or cardinality(sp.label) <> sp.n)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    // What a shadow stored is what that version answers when asked directly.
    for i in [3, 50, 120] {
        let (_, direct) = app
            .post_json(
                "/api/v1/models/iris/predict?version=2",
                &staff,
                json!({"inputs": flower(i)}),
            )
            .await;
        let live_id: i64 = sqlx::query_scalar(
            // (serde_json parses floats to within an ulp, not always exactly.)
            "select id from prediction
             where source = 'api' and n = 1
               and (select max(abs(a - b)) from unnest(x, $1::float8[]) as u(a, b)) < 1e-9
             order by id limit 1",
        )
        .bind(
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
                .iter()
                .map(|f| flower(i)[f].as_f64().unwrap())
                .collect::<Vec<f64>>(),
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no live row for {}", flower(i)));
        let shadow_label: String = sqlx::query_scalar(
            "select sp.label[1] from prediction sp join model_version v on v.id = sp.version_id
             where sp.shadow_of = $1 and v.version = 2",
        )
        .bind(live_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(direct["predictions"][0]["label"], shadow_label.as_str());
    }

    // Agreement is SQL over the stored pairs, row by row.
    let (_, report) = app
        .call_json(Method::GET, "/api/v1/models/iris/shadows", &staff, None)
        .await;
    let shadows = report["shadows"].as_array().unwrap();
    assert_eq!(shadows.len(), 2);
    let mut some_disagree = false;
    for s in shadows {
        let version = s["version"].as_i64().unwrap() as i32;
        let pairs: Vec<(Vec<String>, Vec<String>)> = sqlx::query_as(
            "select sp.label, lp.label from prediction sp
             join prediction lp on lp.id = sp.shadow_of
             join model_version v on v.id = sp.version_id where v.version = $1",
        )
        .bind(version)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let (mut total, mut agree) = (0i64, 0i64);
        for (shadow, live) in &pairs {
            assert_eq!(shadow.len(), live.len());
            total += live.len() as i64;
            agree += shadow.iter().zip(live).filter(|(a, b)| a == b).count() as i64;
        }
        assert_eq!(total, 300);
        assert_eq!(s["label_pairs"], total);
        let agreement = s["agreement"].as_f64().unwrap();
        assert!((agreement - agree as f64 / total as f64).abs() < 1e-12);
        let listed = s["disagreements"].as_array().unwrap();
        assert_eq!(listed.is_empty(), agree == total, "{s}");
        for d in listed {
            assert_ne!(d["live"], d["shadow"]);
            assert!(d["inputs"]["petal_length"].is_number(), "{d}");
        }
        some_disagree |= agree < total;
    }
    assert!(
        some_disagree,
        "the flowers were meant to find disagreements"
    );

    // The admin page shows both, with their agreement.
    app.sign_in("hopper", true).await;
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("Stop shadowing version 2"), "{page}");
    assert!(page.contains("Stop shadowing version 3"));
    assert!(page.contains(" of 300 labels"));

    // Stopped: version 3 gets no more copies; version 2 still does.
    let (status, _) = app
        .call_json(Method::DELETE, &shadow(3), &staff, None)
        .await;
    assert_eq!(status, 200);
    for i in 0..20 {
        let (status, _) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": flower(i)}),
            )
            .await;
        assert_eq!(status, 200);
    }
    wait_for_shadow_rows(&app, 2, requests + 20).await;
    assert_eq!(shadow_rows(&app, 3).await, requests);
}

#[sqlx::test]
async fn copies_that_find_the_queue_full_are_dropped_and_counted(pool: PgPool) {
    // A queue of one: under 16 concurrent callers most copies find it full.
    let app = spawn_app_with(pool, |s| s.shadow_queue = 1).await;
    app.import_models().await;
    let staff = app.token_for("grace", true).await;
    assert_eq!(app.publish_zoo(&staff, "knn_classifier").await, 2);
    let (status, _) = app
        .call_json(Method::PUT, "/api/v1/models/iris/shadows/2", &staff, None)
        .await;
    assert_eq!(status, 200);
    let url = app.url("/api/v1/models/iris/predict");
    let answered: Vec<u16> = stream::iter(0..600)
        .map(|i| {
            let (client, url, token) = (app.client.clone(), url.clone(), staff.clone());
            async move {
                client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&json!({"inputs": flower(i)}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(answered.iter().all(|s| *s == 200));
    // Every live request was either answered by the shadow or dropped and counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, report) = app
            .call_json(Method::GET, "/api/v1/models/iris/shadows", &staff, None)
            .await;
        let dropped = report["dropped_here"].as_i64().unwrap();
        let copied = shadow_rows(&app, 2).await;
        if dropped + copied == 600 {
            assert!(dropped > 0, "a queue of one never filled under 16 callers");
            let metrics = app
                .api(Method::GET, "/metrics", &staff)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                metrics.contains(&format!(
                    "plinth_shadow_dropped_total{{model=\"iris\"}} {dropped}"
                )),
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{copied} copied + {dropped} dropped of 600"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
