use image::{GrayImage, Luma};
use serde_json::Value;
use sqlx::PgPool;

use crate::helpers::{file_part, location, prediction_id, spawn_app, spawn_client_for};

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("tests/fixtures/{name}.json")).unwrap())
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

async fn stored_outputs(pool: &PgPool, id: i64) -> Value {
    plinth_store::predictions::find(pool, id)
        .await
        .unwrap()
        .expect("a stored prediction")
        .outputs
        .0
}

#[sqlx::test]
async fn the_catalogue_lists_every_shipped_model(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;

    let html = app.get_html("/").await;

    for (name, title) in [
        ("iris", "Iris species"),
        ("diabetes", "Diabetes progression"),
        ("digits", "Handwritten digits"),
    ] {
        assert!(
            html.contains(&format!(r#"href="/models/{name}""#)),
            "{name}"
        );
        assert!(html.contains(title));
    }
    assert!(html.contains("Serving version 1"));
}

#[sqlx::test]
async fn the_form_needs_a_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;

    let res = app.get("/models/iris").await;

    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/login?next=/models/iris");
}

#[sqlx::test]
async fn the_generated_form_has_bounds_units_and_an_example(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    let html = app.get_html("/models/iris").await;

    assert!(
        html.contains(r#"name="sepal_length" type="number""#),
        "{html}"
    );
    assert!(
        html.contains(r#"value="5.1""#),
        "the card's example is filled in"
    );
    assert!(html.contains(r#"min="4.3" max="7.9" step="0.1""#));
    assert!(html.contains("(cm)"));
    assert!(
        html.contains("<strong>sepals</strong>"),
        "the description is rendered Markdown"
    );
    assert!(html.contains("ACCURACY"));
}

#[sqlx::test]
async fn iris_and_diabetes_match_onnxruntime_through_their_forms(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    for name in ["iris", "diabetes"] {
        let fx = fixture(name);
        let features: Vec<String> = serde_json::from_value(fx["features"].clone()).unwrap();
        let rows = fx["rows"].as_array().unwrap();
        for (i, row) in rows.iter().enumerate() {
            let fields: Vec<(&str, String)> = features
                .iter()
                .zip(row.as_array().unwrap())
                .map(|(f, v)| (f.as_str(), v.as_f64().unwrap().to_string()))
                .collect();

            let res = app.predict(name, &fields).await;

            assert_eq!(res.status().as_u16(), 303, "{name} row {i}");
            let id = prediction_id(&res);
            let page = app.get(&format!("/predictions/{id}")).await;
            assert_eq!(page.status().as_u16(), 200);
            let html = page.text().await.unwrap();
            let out = stored_outputs(&app.pool, id).await;
            if name == "iris" {
                let labels = ["setosa", "versicolor", "virginica"];
                let expected_label = labels[fx["outputs"]["label"][i].as_u64().unwrap() as usize];
                assert_eq!(out["label"], expected_label);
                assert!(html.contains(&format!(r#"<p class="headline">{expected_label}</p>"#)));
                for (c, label) in labels.iter().enumerate() {
                    let expected = fx["outputs"]["probabilities"][i][c].as_f64().unwrap();
                    let got = out["probabilities"][label].as_f64().unwrap();
                    assert!(close(got, expected), "{label}: {got} vs {expected}");
                }
            } else {
                let expected = fx["outputs"]["variable"][i][0].as_f64().unwrap();
                let got = out["value"].as_f64().unwrap();
                assert!(close(got, expected), "{got} vs {expected}");
            }
        }
    }
    assert_eq!(
        app.predictions().await,
        8,
        "every result page shown has its row"
    );
}

/// Draws an 8×8 grid of ink levels (0–16) as a 160×160 dark-on-light picture.
fn digit_picture(grid: &[f64]) -> Vec<u8> {
    let mut img = GrayImage::from_pixel(200, 200, Luma([255]));
    for (i, v) in grid.iter().enumerate() {
        let (cx, cy) = ((i % 8) as u32, (i / 8) as u32);
        let level = 255 - (v / 16.0 * 255.0).round() as u8;
        for y in 0..20 {
            for x in 0..20 {
                img.put_pixel(20 + cx * 20 + x, 20 + cy * 20 + y, Luma([level]));
            }
        }
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

#[sqlx::test]
async fn uploaded_digit_pictures_are_recognised(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let fx = fixture("digits");

    let mut right = 0;
    let rows = fx["rows"].as_array().unwrap();
    for (i, row) in rows.iter().enumerate() {
        let grid: Vec<f64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let form = reqwest::multipart::Form::new()
            .part("image", file_part(digit_picture(&grid), "digit.png"));

        let res = app
            .post_multipart("/models/digits", "/models/digits", form)
            .await;

        assert_eq!(res.status().as_u16(), 303, "digit {i}");
        let out = stored_outputs(&app.pool, prediction_id(&res)).await;
        let expected = fx["outputs"]["label"][i].as_i64().unwrap().to_string();
        if out["label"] == expected.as_str() {
            right += 1;
        }
        assert_eq!(out["probabilities"].as_object().unwrap().len(), 10);
    }
    assert!(
        right >= rows.len() - 1,
        "{right} of {} recognised",
        rows.len()
    );
    let first: i64 = sqlx::query_scalar("select min(id) from prediction")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let inputs = app.stored_inputs(first).await;
    assert_eq!(inputs.as_object().unwrap().len(), 64);
}

#[sqlx::test]
async fn a_canvas_drawing_arrives_as_a_data_url(pool: PgPool) {
    use base64::Engine;
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let grid: Vec<f64> = fixture("digits")["rows"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(digit_picture(&grid))
    );
    let form = reqwest::multipart::Form::new()
        .text("image_data", data_url)
        .part("image", file_part(Vec::new(), ""));

    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;

    assert_eq!(res.status().as_u16(), 303);
    let out = stored_outputs(&app.pool, prediction_id(&res)).await;
    assert_eq!(out["label"], "0");
}

#[sqlx::test]
async fn bad_values_re_render_the_form_with_each_field_marked(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    let res = app
        .predict(
            "iris",
            &[
                ("sepal_length", "five".into()),
                ("sepal_width", "".into()),
                ("petal_length", "100".into()),
                ("petal_width", "NaN".into()),
            ],
        )
        .await;

    assert_eq!(res.status().as_u16(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("Enter a number."));
    assert!(html.contains("This field is required."));
    assert!(html.contains("Enter a value between 1 and 6.9"));
    assert!(html.contains("Enter a finite number"));
    assert_eq!(html.matches(r#"<div class="field invalid">"#).count(), 4);
    assert!(html.contains(r#"value="five""#), "what was typed is kept");
    let res = app
        .predict(
            "iris",
            &[
                ("sepal_length", "5".into()),
                ("sepal_width", "3".into()),
                ("petal_length", "1.5".into()),
                ("petal_width", "inf".into()),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert_eq!(
        app.predictions().await,
        0,
        "nothing was predicted or stored"
    );
}

#[sqlx::test]
async fn an_unreadable_or_missing_picture_is_a_field_error(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    let form = reqwest::multipart::Form::new()
        .part("image", file_part(b"not a picture".to_vec(), "x.png"));
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("could not be read"));

    let form = reqwest::multipart::Form::new().text("image_data", "");
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("Draw a digit"));
    assert_eq!(app.predictions().await, 0);
}

#[sqlx::test]
async fn another_users_prediction_is_not_found(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let res = app.predict_iris_example().await;
    let id = prediction_id(&res);

    let bob = spawn_client_for(&app);
    bob.sign_in("bob", false).await;
    let res = bob.get(&format!("/predictions/{id}")).await;
    assert_eq!(res.status().as_u16(), 404);

    let staff = spawn_client_for(&app);
    staff.sign_in("root", true).await;
    assert_eq!(
        staff
            .get(&format!("/predictions/{id}"))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[sqlx::test]
async fn predict_again_fills_the_form_with_the_earlier_inputs(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let res = app
        .predict(
            "iris",
            &[
                ("sepal_length", "6.3".into()),
                ("sepal_width", "2.5".into()),
                ("petal_length", "4.9".into()),
                ("petal_width", "1.5".into()),
            ],
        )
        .await;
    let id = prediction_id(&res);
    let result = app.get_html(&format!("/predictions/{id}")).await;
    assert!(result.contains(&format!(r#"href="/models/iris?from={id}""#)));

    let html = app.get_html(&format!("/models/iris?from={id}")).await;

    assert!(html.contains(r#"value="6.3""#) && html.contains(r#"value="4.9""#));
}

#[sqlx::test]
async fn an_unknown_model_is_a_404_page(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    let res = app.get("/models/nothing-here").await;

    assert_eq!(res.status().as_u16(), 404);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("There is no model called nothing-here"));
}

#[sqlx::test]
async fn importing_the_repository_twice_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.import_models().await;

    assert_eq!(app.count("model").await, 3);
    assert_eq!(app.count("model_version").await, 3);
    let production: i64 =
        sqlx::query_scalar("select count(*) from model_alias where alias = 'production'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(production, 3);
}
