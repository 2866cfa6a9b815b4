use sqlx::PgPool;

use crate::helpers::{spawn_app, TestApp};

/// Seeds `n` iris predictions over the last hour with known latencies, feedback on some,
/// and a few failures.
async fn seed(app: &TestApp, n: i64) {
    seed_aged(app, n, 0).await
}

/// As [`seed`], `age_secs` in the past.
async fn seed_aged(app: &TestApp, n: i64, age_secs: i64) {
    sqlx::query(
        "insert into prediction (model_id, version_id, source, inputs, outputs, latency_us, created_at)
         select v.model_id, v.id, case when g % 3 = 0 then 'api' else 'form' end, '[{}]',
                jsonb_build_array(jsonb_build_object('label', case when g % 2 = 0 then 'setosa' else 'virginica' end)),
                (g * 37) % 3000 + 60, now() - make_interval(secs => g % 3000 + $2)
         from generate_series(1, $1) as g, model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .bind(n)
    .bind(age_secs as f64)
    .execute(&app.pool)
    .await
    .unwrap();
    // Feedback on every 10th: half of those agree with the prediction.
    sqlx::query(
        "insert into feedback (prediction_id, label, version_id, predicted_at, predicted_label)
         select id, case when r % 20 = 0 then outputs->0->>'label' else 'versicolor' end,
                version_id, created_at, outputs->0->>'label'
         from (select *, row_number() over (order by id) as r from prediction) p where r % 10 = 0
         on conflict do nothing",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into prediction_failure (model_id, version_id, source, reason)
         select v.model_id, v.id, 'api', 'invalid_input' from generate_series(1, 7),
                model_version v join model m on m.id = v.model_id where m.name = 'iris'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

fn figure<'a>(html: &'a str, label: &str) -> &'a str {
    let start = html
        .find(&format!("<dt>{label}</dt><dd>"))
        .unwrap_or_else(|| panic!("no {label}"))
        + label.len()
        + 13;
    let end = html[start..].find("</dd>").unwrap() + start;
    &html[start..end]
}

#[sqlx::test]
async fn the_dashboard_figures_equal_what_sql_says(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    seed(&app, 3000).await;
    app.sign_in("root", true).await;

    let html = app.get_html("/admin?window=1h").await;

    let (count, api, feedback, correct): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where source = 'api'),
                (select count(*) from feedback),
                (select count(*) from feedback f join prediction p on p.id = f.prediction_id where f.label = p.outputs->0->>'label')
         from prediction",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(figure(&html, "Predictions"), count.to_string());
    assert!(figure(&html, "Errors").starts_with("7 "));
    assert!(figure(&html, "By source").contains(&format!("api {api}")));
    assert!(figure(&html, "Feedback").starts_with(&feedback.to_string()));
    let accuracy = format!("{:.1}%", correct as f64 / feedback as f64 * 100.0);
    assert_eq!(figure(&html, "Live accuracy"), accuracy);

    // Percentiles come from the rollup's latency buckets: each lies in the bucket that holds
    // the exact percentile SQL computes over the rows.
    let exact: Vec<f64> = sqlx::query_scalar(
        "select unnest(percentile_disc(array[0.5, 0.95, 0.99]) within group (order by latency_us))::float8 from prediction",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let shown: Vec<f64> = figure(&html, "p50 / p95 / p99")
        .trim_end_matches(" ms")
        .split(" / ")
        .map(|v| v.parse::<f64>().unwrap() * 1000.0)
        .collect();
    let bounds = plinth_store::dashboard::LATENCY_BOUNDS_US;
    for (shown, exact) in shown.iter().zip(&exact) {
        let i = bounds.iter().position(|b| (*b as f64) >= *exact).unwrap();
        let lower = if i == 0 { 0.0 } else { bounds[i - 1] as f64 };
        assert!(
            *shown >= lower - 0.01 && *shown <= bounds[i] as f64 + 0.01,
            "{shown} vs exact {exact}"
        );
    }
}

#[sqlx::test]
async fn rollups_follow_every_insert(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    seed(&app, 500).await;
    seed(&app, 250).await;

    let (rolled, hist_total): (i64, i64) = sqlx::query_as(
        "select sum(n)::bigint, (select sum(h)::bigint from prediction_rollup, unnest(latency_hist) h) from prediction_rollup",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(rolled, 750);
    assert_eq!(hist_total, 750);
    let sum: i64 = sqlx::query_scalar("select sum(latency_sum_us)::bigint from prediction_rollup")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let exact: i64 = sqlx::query_scalar("select sum(latency_us)::bigint from prediction")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sum, exact);
}

#[sqlx::test]
async fn the_window_can_be_chosen_and_old_traffic_drops_out(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    seed(&app, 50).await;
    seed_aged(&app, 50, 3 * 86_400).await;
    app.sign_in("root", true).await;

    let hour = app.get_html("/admin?window=1h").await;
    let week = app.get_html("/admin?window=7d").await;

    assert_eq!(figure(&hour, "Predictions"), "50");
    assert_eq!(figure(&week, "Predictions"), "100");
    assert!(week.contains(r#"href="/admin?window=7d" aria-current="page""#));
}
