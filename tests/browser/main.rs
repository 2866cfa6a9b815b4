//! Browser tests: headless Chromium over WebDriver against the real server, for the journeys
//! that matter. Screenshots of the main pages land in `target/tmp/screenshots/`.
//!
//! They need Debian's `chromium` and `chromium-driver`, so they are `#[ignore]`d: `cargo test`
//! reports them as ignored, never as passed; `cargo test -- --include-ignored` (what `.ci/run`
//! runs, after installing both) runs them, and a missing browser fails them.

/// `#[sqlx::test]` reads `DATABASE_URL`: when it is unset, the local server or a private cluster
/// shared by the run's test processes (see `plinth::localdb::for_tests`).
#[ctor::ctor(unsafe)]
fn test_database() {
    plinth::localdb::for_tests(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-postgres"
    )));
}

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod webdriver;

use sqlx::PgPool;

use helpers::spawn_app;
use webdriver::Driver;

/// These tests are `#[ignore]`d, so they run only when asked (`--include-ignored`, as `.ci/run`
/// does); asked, they fail without the browser rather than pass without running.
fn require_browser() {
    assert!(
        webdriver::available(),
        "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
    );
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
async fn a_digit_drawn_on_the_canvas_is_recognised(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("ada", "plinth-pedestal-42", false).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.goto(&app.url("/accounts/login?next=/models/digits"))
        .await;
    b.fill("#username", "ada").await;
    b.fill("#password", "plinth-pedestal-42").await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path("/models/digits").await;

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
    b.goto(&app.url("/accounts/login?next=/models/renewals"))
        .await;
    b.fill("#username", "ada").await;
    b.fill("#password", "plinth-pedestal-42").await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path("/models/renewals").await;

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
async fn staff_upload_and_promote_a_version_in_the_browser(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("root", "staff-member-secret", true).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.goto(&app.url("/accounts/login?next=/admin/models/iris"))
        .await;
    b.fill("#username", "root").await;
    b.fill("#password", "staff-member-secret").await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path("/admin/models/iris").await;

    let model = std::fs::canonicalize("tests/fixtures/iris_v2.onnx").unwrap();
    let card = std::fs::canonicalize("models/iris/1/card.toml").unwrap();
    b.fill("#model", &model.display().to_string()).await;
    b.fill("#card", &card.display().to_string()).await;
    b.click("form[action='/admin/models/iris/versions'] button[type=submit]")
        .await;
    b.wait_for_text("Version 2 uploaded").await;

    b.click("form[action='/admin/models/iris/aliases'] input[value='2'] ~ button")
        .await;
    b.wait_for_text("production now points at version 2.").await;
    b.screenshot("admin-model").await;
    let serving: i32 = sqlx::query_scalar(
        "select v.version from model_alias a join model_version v on v.id = a.version_id
         join model m on m.id = a.model_id where m.name = 'iris' and a.alias = 'production'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(serving, 2);
    b.quit().await;
}

#[sqlx::test]
#[ignore = "needs chromium and chromedriver (apt-get install chromium chromium-driver); .ci/run runs it"]
async fn the_back_office_renders_the_dashboard_and_drift(pool: PgPool) {
    require_browser();
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.create_user("root", "staff-member-secret", true).await;
    // A day of iris traffic, the last of it shifted, with feedback on some.
    sqlx::query(
        "insert into prediction (model_id, version_id, source, inputs, outputs, latency_us, created_at)
         select v.model_id, v.id, (array['form', 'api', 'v2'])[1 + g % 3],
                jsonb_build_array(jsonb_build_object('sepal_length', 5.0 + (g % 30) / 10.0 + 0.8, 'sepal_width', 2.6 + (g % 12) / 10.0,
                                   'petal_length', 1.2 + (g % 55) / 10.0 + 0.8, 'petal_width', 0.2 + (g % 23) / 10.0 + 0.5)),
                jsonb_build_array(jsonb_build_object('label', (array['setosa', 'versicolor', 'virginica'])[1 + g % 3])),
                150 + (g * 37) % 900, now() - make_interval(secs => (g * 61) % 86000)
         from generate_series(1, 600) as g, model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let driver = Driver::start().await;
    let b = driver.browser().await;
    b.goto(&app.url("/accounts/login?next=/admin/models/iris/drift"))
        .await;
    b.fill("#username", "root").await;
    b.fill("#password", "staff-member-secret").await;
    b.click("form.form button[type=submit]").await;
    b.wait_for_path("/admin/models/iris/drift").await;

    b.click("form[action='/admin/models/iris/drift'] button[type=submit]")
        .await;
    let page = b.wait_for_text("features moved").await;
    assert!(page.contains("drifting"), "{page}");
    b.screenshot("admin-drift").await;

    b.goto(&app.url("/admin?window=24h")).await;
    let dash = b.wait_for_text("p50 / p95 / p99").await;
    assert!(dash.contains(r#"href="/admin/models/iris/drift">drift</a>"#));
    b.screenshot("admin-dashboard").await;
    b.quit().await;
}
