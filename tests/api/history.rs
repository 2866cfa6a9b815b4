use sqlx::PgPool;

use crate::helpers::{prediction_id, spawn_app, spawn_client_for, TestApp};

async fn predict_iris(app: &TestApp, petal_length: f64) -> i64 {
    let res = app
        .predict(
            "iris",
            &[
                ("sepal_length", "5.8".into()),
                ("sepal_width", "3.0".into()),
                ("petal_length", petal_length.to_string()),
                ("petal_width", "1.2".into()),
            ],
        )
        .await;
    prediction_id(&res)
}

#[sqlx::test]
async fn history_is_newest_first_paginated_and_mine_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let mut ids = Vec::new();
    for i in 0..27 {
        ids.push(predict_iris(&app, 1.0 + i as f64 * 0.2).await);
    }
    let other = spawn_client_for(&app);
    other.sign_in("bob", false).await;
    let bobs = predict_iris(&other, 4.0).await;

    let first = app.get_html("/history").await;
    let second = app.get_html("/history?page=2").await;

    let newest = ids[26];
    assert!(first.contains(&format!(r#"href="/predictions/{newest}""#)));
    assert_eq!(first.matches(r#"<a href="/predictions/"#).count(), 25);
    assert!(first.contains(r#"rel="next""#) && !first.contains(r#"rel="prev""#));
    assert_eq!(second.matches(r#"<a href="/predictions/"#).count(), 2);
    assert!(second.contains(&format!(r#"href="/predictions/{}""#, ids[0])));
    assert!(!first.contains(&format!(r#"href="/predictions/{bobs}""#)));
    assert!(!second.contains(&format!(r#"href="/predictions/{bobs}""#)));
    let first_pos = first.find(&format!("/predictions/{}\"", ids[26])).unwrap();
    let later_pos = first.find(&format!("/predictions/{}\"", ids[25])).unwrap();
    assert!(first_pos < later_pos, "newest first");
}

#[sqlx::test]
async fn history_filters_by_model_and_date(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let iris = predict_iris(&app, 1.5).await;
    let res = app
        .predict(
            "diabetes",
            &[
                ("age", "50".into()),
                ("sex", "1".into()),
                ("bmi", "25.3".into()),
                ("bp", "93".into()),
                ("s1", "186".into()),
                ("s2", "111".into()),
                ("s3", "48".into()),
                ("s4", "4".into()),
                ("s5", "4.6".into()),
                ("s6", "90".into()),
            ],
        )
        .await;
    let diabetes = prediction_id(&res);
    sqlx::query("update prediction set created_at = '2026-01-15T12:00:00Z' where id = $1")
        .bind(diabetes)
        .execute(&app.pool)
        .await
        .unwrap();

    let only_iris = app.get_html("/history?model=iris").await;
    assert!(only_iris.contains(&format!("/predictions/{iris}\"")));
    assert!(!only_iris.contains(&format!("/predictions/{diabetes}\"")));

    let january = app.get_html("/history?from=2026-01-01&to=2026-01-31").await;
    assert!(january.contains(&format!("/predictions/{diabetes}\"")));
    assert!(!january.contains(&format!("/predictions/{iris}\"")));

    let res = app.get("/history?from=yesterday").await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("From: enter a date as YYYY-MM-DD."));
}

#[sqlx::test]
async fn the_csv_export_holds_the_filtered_rows(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let a = predict_iris(&app, 1.4).await;
    let b = predict_iris(&app, 5.5).await;
    let other = spawn_client_for(&app);
    other.sign_in("bob", false).await;
    predict_iris(&other, 4.0).await;

    let res = app.get("/history.csv?model=iris").await;

    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,created_at,user,model,version,source,result,latency_ms,inputs,outputs,\
         sepal_length,sepal_width,petal_length,petal_width",
        "the fixed columns, then one per feature"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with(&format!("{b},")) && lines[2].starts_with(&format!("{a},")));
    assert!(
        lines[1].contains(",ada,iris,1,form,virginica,"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains(",setosa,"));
    assert!(
        lines[1].contains(r#""{""petal_length"":5.5"#),
        "inputs are quoted JSON: {}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(",5.8,3.0,5.5,1.2"),
        "and each in its column: {}",
        lines[1]
    );
}

#[sqlx::test]
async fn staff_see_everyones_predictions_filtered_by_user(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let ada = spawn_client_for(&app);
    ada.sign_in("ada", false).await;
    let a = predict_iris(&ada, 1.4).await;
    let bob = spawn_client_for(&app);
    bob.sign_in("bob", false).await;
    let b = predict_iris(&bob, 4.4).await;
    app.sign_in("root", true).await;

    let all = app.get_html("/admin/predictions").await;
    assert!(
        all.contains(&format!("/predictions/{a}\""))
            && all.contains(&format!("/predictions/{b}\""))
    );
    let bobs = app.get_html("/admin/predictions?user=bob").await;
    assert!(
        bobs.contains(&format!("/predictions/{b}\""))
            && !bobs.contains(&format!("/predictions/{a}\""))
    );
    let csv = app
        .get("/admin/predictions.csv?user=ada")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2);
    assert_eq!(ada.get("/admin/predictions").await.status().as_u16(), 403);
}

#[sqlx::test]
async fn a_hundred_thousand_rows_stream_out_as_csv(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let user = app.sign_in("ada", false).await;
    sqlx::query(
        "insert into prediction (model_id, version_id, user_id, source, inputs, outputs, latency_us)
         select v.model_id, v.id, $1, 'form', '[{\"petal_length\": 1.4}]', '[{\"label\": \"setosa\"}]', 100
         from model_version v join model m on m.id = v.model_id, generate_series(1, 100000)
         where m.name = 'iris'",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();

    let mut res = app.get("/history.csv").await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.content_length().is_none(), "streamed, not buffered");
    let (mut lines, mut chunks) = (0usize, 0usize);
    while let Some(chunk) = res.chunk().await.unwrap() {
        chunks += 1;
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 100_001, "a header and every row");
    assert!(chunks > 10, "arrived in pieces: {chunks}");
}
