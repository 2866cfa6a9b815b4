//! Dynamic batching: a model whose card asks for it answers concurrent requests exactly as it
//! answers them one by one, and a request that cannot join a batch gets its own answer.

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

const FOREST: &str = "tests/fixtures/zoo/random_forest_classifier.onnx";

fn rows() -> Vec<Vec<f64>> {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/zoo/random_forest_classifier.json").unwrap(),
    )
    .unwrap();
    let x = &fixture["inputs"]["X"];
    let width = x["shape"][1].as_u64().unwrap() as usize;
    let data: Vec<f64> = x["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    data.chunks(width).map(<[f64]>::to_vec).collect()
}

async fn infer(app: &TestApp, token: &str, model: &str, row: &[f64]) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "X", "shape": [1, row.len()], "datatype": "FP32", "data": row}]});
    app.post_json(&format!("/v2/models/{model}/infer"), token, body)
        .await
}

#[sqlx::test]
async fn batched_answers_are_the_answers_alone(pool: PgPool) {
    // Arrange: the forest twice, once with a batching window long enough that concurrent
    // requests surely meet.
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    let card = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        card.path(),
        "[batching]\nmax_wait_us = 5000\nmax_rows = 64\n",
    )
    .unwrap();
    let res = app
        .publish(
            &token,
            "forest-batched",
            FOREST,
            Some(&card.path().to_string_lossy()),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    let res = app.publish(&token, "forest", FOREST, None).await;
    assert_eq!(res.status().as_u16(), 201);
    let rows = rows();

    // Act: every row at once to the batched model, plus one of the wrong width.
    let short = rows[0][..10].to_vec();
    let mut calls: Vec<_> = rows
        .iter()
        .map(|r| infer(&app, &token, "forest-batched", r))
        .collect();
    calls.push(infer(&app, &token, "forest-batched", &short));
    let mut batched = join_all(calls).await;
    let (bad_status, bad) = batched.pop().unwrap();

    // Assert: each answer is the one the unbatched model gives for that row alone.
    for (row, (status, answer)) in rows.iter().zip(&batched) {
        assert_eq!(*status, 200, "{answer}");
        let (status, alone) = infer(&app, &token, "forest", row).await;
        assert_eq!(status, 200);
        assert_eq!(answer["outputs"], alone["outputs"]);
    }
    assert_eq!(bad_status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("64"), "{bad}");
    let stored: i64 = sqlx::query_scalar(
        "select sum(n)::bigint from prediction p join model m on m.id = p.model_id
         where m.name = 'forest-batched'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        rows.len() as i64,
        "every batched prediction has its row"
    );
}
