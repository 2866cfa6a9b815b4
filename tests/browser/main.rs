//! Browser tests: headless Chromium over WebDriver against the real server, for the journeys
//! that matter. Screenshots of the main pages land in `target/tmp/screenshots/`.
//!
//! They need Debian's `chromium` and `chromium-driver`, so they are `#[ignore]`d: `cargo test`
//! reports them as ignored, never as passed; `cargo test -- --include-ignored` (what `.ci/run`
//! runs, after installing both) runs them, and a missing browser fails them.

/// `#[sqlx::test]` reads `DATABASE_URL`: when it is unset, the local server or a private cluster
/// shared by the run's test processes (see `plinth_store::localdb::for_tests`).
#[ctor::ctor(unsafe)]
fn test_database() {
    plinth_store::localdb::for_tests(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-postgres"
    )));
}

#[allow(dead_code)]
#[path = "../api/helpers/mod.rs"]
mod helpers;
mod webdriver;

use sqlx::PgPool;

use helpers::{spawn_app, TestApp};
use webdriver::{Browser, Driver};

mod back_office;

/// These tests are `#[ignore]`d, so they run only when asked (`--include-ignored`, as `.ci/run`
/// does); asked, they fail without the browser rather than pass without running.
fn require_browser() {
    assert!(
        webdriver::available(),
        "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
    );
}

/// Signs in through the login page, which then goes on to `next`.
async fn sign_in(b: &Browser<'_>, app: &TestApp, username: &str, password: &str, next: &str) {
    b.goto(&app.url(&format!("/accounts/login?next={next}")))
        .await;
    b.fill("#username", username).await;
    b.fill("#password", password).await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path(next).await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_user_signs_in_predicts_iris_and_finds_it_in_history(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;

    b.goto(&app.url("/")).await;
    b.screenshot("catalogue-anonymous").await;
    b.goto(&app.url("/models/iris")).await;
    assert_eq!(
        b.wait_for_path("/accounts/login").await,
        "/accounts/login?next=/models/iris"
    );
    b.fill("#username", "ada").await;
    b.fill("#password", "plinth-pedestal-42").await;
    b.screenshot("login").await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path("/models/iris").await;
    b.screenshot("iris-form").await;

    b.fill("#f-petal_length", "5.6").await;
    b.fill("#f-petal_width", "2.2").await;
    b.fill("#f-sepal_length", "6.7").await;
    b.click("form.predict-form button[type=submit]").await;
    let path = b.wait_for_path("/predictions/").await;
    let source = b.source().await;
    assert!(
        source.contains(r#"<p class="headline">virginica</p>"#),
        "{source}"
    );
    b.screenshot("iris-result").await;
    let id: i64 = path.trim_start_matches("/predictions/").parse().unwrap();
    let stored: i64 =
        sqlx::query_scalar("select count(*) from prediction where id <= $1 and $1 < id + n")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1, "the prediction shown is in Postgres");

    b.goto(&app.url("/history")).await;
    let history = b.source().await;
    assert!(history.contains(&format!(r#"href="/predictions/{id}""#)));
    b.screenshot("history").await;

    b.goto(&app.url("/")).await;
    b.screenshot("catalogue").await;
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_field_left_blank_is_predicted_and_the_result_explains_why(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    // Iris as a HistGradientBoosting model trained with gaps, whose card lets petal width be
    // missing, with iris's reference data (for the trees' covers), in production.
    let staff = app.token_for("grace", true).await;
    let card = std::fs::read_to_string("models/iris/1/card.toml")
        .unwrap()
        .replace(
            "name = \"petal_width\"\n",
            "name = \"petal_width\"\nmissing = \"allowed\"\n",
        );
    assert!(
        card.contains("missing = \"allowed\""),
        "the card names petal_width"
    );
    let published = app
        .publish_with_reference(
            &staff,
            "iris",
            "tests/fixtures/zoo/hist_gradient_boosting_classifier_gaps.onnx",
            card.as_bytes(),
            std::fs::read("models/iris/1/reference.csv").unwrap(),
        )
        .await;
    let version = published["version"].as_i64().unwrap();
    let (status, body) = app
        .call_json(
            reqwest::Method::PUT,
            "/api/v1/models/iris/aliases/production",
            &staff,
            Some(serde_json::json!({ "version": version })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "ada", "plinth-pedestal-42", "/models/iris").await;
    let form = b.source().await;
    assert!(form.contains("eave blank if unknown"), "{form}");
    b.fill("#f-sepal_length", "6.4").await;
    b.fill("#f-sepal_width", "2.9").await;
    b.fill("#f-petal_length", "4.6").await;
    b.fill("#f-petal_width", "").await;
    b.click("form.predict-form button[type=submit]").await;
    let path = b.wait_for_path("/predictions/").await;
    let page = b.source().await;
    assert!(
        page.contains("<td>missing</td>"),
        "the blank is shown as missing: {page}"
    );
    assert!(page.contains("class=\"waterfall\""), "{page}");
    assert!(
        page.contains("Petal width = missing"),
        "the gap has its contribution: {page}"
    );
    assert!(page.contains("TreeSHAP"), "{page}");
    b.screenshot("iris-explained").await;
    let id: i64 = path.trim_start_matches("/predictions/").parse().unwrap();
    let stored = plinth_store::predictions::find(&app.pool, id)
        .await
        .unwrap()
        .expect("the prediction shown is in Postgres");
    assert_eq!(
        stored.inputs.0["petal_width"],
        serde_json::Value::Null,
        "stored as a gap"
    );
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_digit_drawn_on_the_canvas_is_recognised(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "ada", "plinth-pedestal-42", "/models/digits").await;

    // A "1": one firm vertical stroke down the middle of the box.
    b.draw(
        "[data-draw] canvas",
        &[(0, -90), (0, -45), (0, 0), (0, 45), (0, 90)],
    )
    .await;
    b.screenshot("digits-drawn").await;
    b.click("form.predict-form button[type=submit]").await;
    b.wait_for_path("/predictions/").await;

    let source = b.source().await;
    assert!(source.contains(r#"<p class="headline">1</p>"#), "{source}");
    b.screenshot("digits-result").await;
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_pipeline_with_text_columns_takes_its_categories_from_selects(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    let res = app
        .publish(
            &token,
            "renewals",
            "tests/fixtures/zoo/mixed_pipeline.onnx",
            Some("tests/fixtures/renewals.card.toml"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "ada", "plinth-pedestal-42", "/models/renewals").await;

    b.fill("#f-age", "58").await;
    b.fill("#f-income", "52000").await;
    b.fill("#f-visits", "9").await;
    b.click("#f-city option[value='1']").await;
    b.click("#f-plan option[value='2']").await;
    b.screenshot("renewals-form").await;
    b.click("form.predict-form button[type=submit]").await;
    let path = b.wait_for_path("/predictions/").await;
    let source = b.source().await;
    assert!(
        source.contains(r#"<p class="headline">renews</p>"#),
        "{source}"
    );
    assert!(
        source.contains("Oslo") && source.contains("pro"),
        "{source}"
    );
    b.screenshot("renewals-result").await;
    let id: i64 = path.trim_start_matches("/predictions/").parse().unwrap();
    let stored = app.stored_inputs(id).await;
    assert_eq!(stored["city"], "Oslo");
    assert_eq!(stored["plan"], "pro");
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn a_review_typed_in_the_text_area_is_read_by_the_tfidf_pipeline(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    let token = app.token_for("root", true).await;
    let res = app
        .publish(
            &token,
            "reviews",
            "tests/fixtures/zoo/tfidf_logistic_regression.onnx",
            Some("tests/fixtures/reviews.card.toml"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    sign_in(&b, &app, "ada", "plinth-pedestal-42", "/models/reviews").await;

    let review = "Love it! Fast delivery, works great. I recommend this battery.";
    b.fill("#f-review", review).await;
    b.screenshot("reviews-form").await;
    b.click("form.predict-form button[type=submit]").await;
    let path = b.wait_for_path("/predictions/").await;
    let source = b.source().await;
    assert!(
        source.contains(r#"<p class="headline">positive</p>"#),
        "{source}"
    );
    assert!(source.contains("Fast delivery, works great."), "{source}");
    b.screenshot("reviews-result").await;
    let id: i64 = path.trim_start_matches("/predictions/").parse().unwrap();
    assert_eq!(app.stored_inputs(id).await["review"], review);
    b.quit().await;
}
