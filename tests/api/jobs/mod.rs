//! Batch scoring jobs through the real server: files in (CSV, Parquet, an S3 object), results
//! out, every row stored once, bad rows reported, budgets, cancelling, and a job that outlives
//! the instance running it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{file_part, spawn_app, spawn_app_with, TestApp};
use crate::instances::{Instance, Weed, ADMIN_PASSWORD};

mod files;

const IRIS_HEADER: &str = "id,sepal_length,sepal_width,petal_length,petal_width";

/// `n` iris rows within the card's ranges, each with an id, and where `bad(i)` a row the form
/// would refuse (sepal_length out of range).
pub fn iris_csv(n: usize, bad: impl Fn(usize) -> bool) -> String {
    let mut text = format!("{IRIS_HEADER}\n");
    for i in 0..n {
        let sl = if bad(i) {
            99.0
        } else {
            4.3 + (i % 36) as f64 / 10.0
        };
        let sw = 2.0 + (i % 24) as f64 / 10.0;
        let pl = 1.0 + (i % 59) as f64 / 10.0;
        let pw = 0.1 + (i % 24) as f64 / 10.0;
        text.push_str(&format!("r{i},{sl:.1},{sw:.1},{pl:.1},{pw:.1}\n"));
    }
    text
}

pub async fn submit_csv(
    app: &TestApp,
    token: &str,
    model: &str,
    csv: String,
    query: &str,
) -> (u16, Value) {
    let res = app
        .api(
            Method::POST,
            &format!("/api/v1/models/{model}/jobs{query}"),
            token,
        )
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn job(app: &TestApp, token: &str, id: i64) -> Value {
    app.api(Method::GET, &format!("/api/v1/jobs/{id}"), token)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("a job")
}

/// Polls until the job is over; its last state.
pub async fn wait_over(app: &TestApp, token: &str, id: i64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let j = job(app, token, id).await;
        if !matches!(
            j["state"].as_str(),
            Some("queued" | "running" | "finishing")
        ) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} still {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn results(app: &TestApp, token: &str, id: i64, format: &str) -> reqwest::Response {
    app.api(
        Method::GET,
        &format!("/api/v1/jobs/{id}/results?format={format}"),
        token,
    )
    .send()
    .await
    .expect("request sent")
}

/// The results as CSV records, header first.
pub async fn result_rows(app: &TestApp, token: &str, id: i64) -> Vec<Vec<String>> {
    let res = results(app, token, id, "csv").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let body = res.bytes().await.unwrap();
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_ref())
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

async fn batch_predictions(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select coalesce(sum(n), 0)::bigint from prediction where source = 'batch'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_csv_job_scores_every_row_stores_each_once_and_gives_the_file_back(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.job_chunk_rows = 150).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let n = 1000;
    let bad = |i: usize| i % 250 == 7;
    let (status, created) = submit_csv(
        &app,
        &token,
        "iris",
        iris_csv(n, bad),
        "?filename=flowers.csv",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["total_rows"], n);
    assert_eq!(created["input"], "flowers.csv");
    let id = created["id"].as_i64().unwrap();
    let done = wait_over(&app, &token, id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["rows_done"], n);
    assert_eq!(done["rows_failed"], 4);
    assert!(done["rows_per_second"].as_f64().unwrap() > 0.0);

    let rows = result_rows(&app, &token, id).await;
    assert_eq!(
        rows[0],
        [
            "id",
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "prediction_id",
            "prediction",
            "probability_setosa",
            "probability_versicolor",
            "probability_virginica",
            "error"
        ]
    );
    assert_eq!(rows.len(), n + 1);
    // In the file's order, the id passed through.
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], format!("r{i}"));
        if bad(i) {
            assert_eq!(row[5], "");
            assert!(
                row[10].contains("sepal_length: Enter a value between 4.3 and 7.9"),
                "{row:?}"
            );
        } else {
            assert_eq!(row[10], "", "{row:?}");
        }
    }
    // Every scored row stored once, under the id the file gives, with source `batch`.
    assert_eq!(batch_predictions(&app.pool).await, (n - 4) as i64);
    let ids: HashSet<i64> = rows[1..]
        .iter()
        .filter(|r| !r[5].is_empty())
        .map(|r| r[5].parse().unwrap())
        .collect();
    assert_eq!(ids.len(), n - 4);
    let rolled: i64 = sqlx::query_scalar(
        "select coalesce(sum(n), 0)::bigint from prediction_rollup where source = 'batch'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rolled, (n - 4) as i64, "the dashboard counts them");
    // A stored prediction is the one in the file, and the one the API gives for its inputs.
    for row in rows[1..].iter().filter(|r| !r[5].is_empty()).step_by(97) {
        let id: i64 = row[5].parse().unwrap();
        let stored = plinth_store::predictions::find(&app.pool, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.source, "batch");
        assert_eq!(
            stored.inputs.0["sepal_length"],
            row[1].parse::<f64>().unwrap()
        );
        let (status, answer) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &token,
                serde_json::json!({"inputs": {
                    "sepal_length": row[1].parse::<f64>().unwrap(),
                    "sepal_width": row[2].parse::<f64>().unwrap(),
                    "petal_length": row[3].parse::<f64>().unwrap(),
                    "petal_width": row[4].parse::<f64>().unwrap(),
                }}),
            )
            .await;
        assert_eq!(status, 200);
        let p = &answer["predictions"][0];
        assert_eq!(p["label"], row[6].as_str());
        for (c, class) in ["setosa", "versicolor", "virginica"].iter().enumerate() {
            let here: f64 = row[7 + c].parse().unwrap();
            let there = p["probabilities"][class].as_f64().unwrap();
            assert!((here - there).abs() < 1e-12, "{class}: {here} vs {there}");
        }
    }
    // The refused rows, at their lines (the header is line 1).
    let errors: Vec<Value> = app
        .api(Method::GET, &format!("/api/v1/jobs/{id}/errors"), &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [9, 259, 509, 759]);
    // Chunks hold no input once scored.
    let left: i64 = sqlx::query_scalar("select count(*) from batch_chunk where input is not null")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[sqlx::test]
async fn files_that_do_not_fit_are_refused_before_a_job_starts(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let (status, body) = submit_csv(
        &app,
        &token,
        "iris",
        "id,sepal_length,petal_width\nx,5.1,0.2\n".into(),
        "",
    )
    .await;
    assert_eq!(status, 422);
    let e = body["error"].as_str().unwrap();
    assert!(e.contains("\"sepal_width\", \"petal_length\""), "{e}");
    let (status, body) = submit_csv(&app, &token, "iris", String::new(), "").await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("empty"), "{body}");
    let (status, body) = submit_csv(&app, &token, "iris", format!("{IRIS_HEADER}\n"), "").await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("no rows"),
        "{body}"
    );
    let (status, _) = submit_csv(&app, &token, "no-such-model", iris_csv(3, |_| false), "").await;
    assert_eq!(status, 404);
    let (status, body) = submit_csv(
        &app,
        &token,
        "iris",
        iris_csv(3, |_| false),
        "?max_errors=-1",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // Not a file format.
    let res = app
        .api(Method::POST, "/api/v1/models/iris/jobs", &token)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
    // A URL, with none allowed.
    let (status, body) = app
        .post_json(
            "/api/v1/models/iris/jobs",
            &token,
            serde_json::json!({"input_url": "s3://bucket/in.csv"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("PLINTH_JOB_URLS"),
        "{body}"
    );
    // No token.
    let res = app
        .client
        .post(app.url("/api/v1/models/iris/jobs"))
        .header("content-type", "text/csv")
        .body(iris_csv(3, |_| false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // A file over the limit.
    let small = spawn_app_with(app.pool.clone(), |s| s.max_job_bytes = 1000).await;
    let (status, _) = submit_csv(&small, &token, "iris", iris_csv(100, |_| false), "").await;
    assert_eq!(status, 413);
    assert_eq!(app.count("batch_job").await, 0, "nothing was stored");
    assert_eq!(app.count("batch_chunk").await, 0);
}

#[sqlx::test]
async fn a_job_stops_when_its_error_budget_is_spent_and_says_so(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.job_chunk_rows = 20).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let (status, created) = submit_csv(
        &app,
        &token,
        "iris",
        iris_csv(400, |i| i % 3 == 0),
        "?max_errors=5",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let over = wait_over(&app, &token, id, Duration::from_secs(60)).await;
    assert_eq!(over["state"], "failed", "{over}");
    assert!(
        over["message"]
            .as_str()
            .unwrap()
            .contains("error budget of 5"),
        "{over}"
    );
    assert!(
        over["rows_done"].as_i64().unwrap() < 400,
        "it stopped early: {over}"
    );
    // What was scored is kept and downloadable.
    let rows = result_rows(&app, &token, id).await;
    assert_eq!(rows.len() as i64 - 1, over["rows_done"].as_i64().unwrap());
    let stored = batch_predictions(&app.pool).await;
    let scored = rows[1..].iter().filter(|r| !r[5].is_empty()).count() as i64;
    assert_eq!(stored, scored);
}

#[sqlx::test]
async fn a_job_can_be_cancelled_and_is_only_its_owners_and_staffs(pool: PgPool) {
    // No workers here: the job waits until it is cancelled.
    let app = spawn_app_with(pool, |s| s.job_workers = 0).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let other = app.token_for("bob", false).await;
    let staff = app.token_for("root", true).await;
    let (_, created) = submit_csv(&app, &token, "iris", iris_csv(50, |_| false), "").await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["state"], "queued");
    // Results wait for the end.
    assert_eq!(
        results(&app, &token, id, "csv").await.status().as_u16(),
        409
    );
    // Someone else's job is not there for them; staff see it.
    let res = app
        .api(Method::GET, &format!("/api/v1/jobs/{id}"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    let listed: Vec<Value> = app
        .api(Method::GET, "/api/v1/jobs", &other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty());
    let listed: Vec<Value> = app
        .api(Method::GET, "/api/v1/jobs", &staff)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let res = app
        .api(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), &other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);

    let res = app
        .api(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let j: Value = res.json().await.unwrap();
    assert_eq!(j["state"], "cancelled");
    assert!(j["message"].as_str().unwrap().contains("ada"));
    let res = app
        .api(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 409);
    // Over: the (empty) results come, header only.
    let rows = result_rows(&app, &token, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(batch_predictions(&app.pool).await, 0);
}
