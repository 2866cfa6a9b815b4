use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{location, spawn_app, TestApp};

/// Inserts iris predictions whose inputs are the reference rows (cycled), shifted by `shift`.
pub async fn live_window(app: &TestApp, n: usize, shift: f64) {
    let csv = std::fs::read_to_string("models/iris/1/reference.csv").unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let inputs: Vec<Value> = (0..n)
        .map(|i| {
            let row = &rows[(i * 11) % rows.len()];
            let map: serde_json::Map<String, Value> = header
                .iter()
                .zip(row)
                .map(|(k, v)| (k.to_string(), json!(v + shift)))
                .collect();
            Value::Object(map)
        })
        .collect();
    sqlx::query(
        "insert into prediction (model_id, version_id, source, inputs, outputs, latency_us)
         select v.model_id, v.id, 'api', jsonb_build_array(i), '[{\"label\": \"setosa\"}]', 100
         from jsonb_array_elements($1) as i, model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .bind(Value::Array(inputs))
    .execute(&app.pool)
    .await
    .unwrap();
}

pub async fn check_now(app: &TestApp) -> String {
    let res = app
        .post_form_from("/admin/models/iris/drift", "/admin/models/iris/drift", &[])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/admin/models/iris/drift");
    app.get_html("/admin/models/iris/drift").await
}

#[sqlx::test]
async fn drift_is_quiet_on_familiar_inputs_and_flags_shifted_ones(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;

    // Too few rows: no verdict.
    live_window(&app, 40, 0.0).await;
    let page = check_now(&app).await;
    assert!(page.contains("not enough data yet"), "{page}");

    // Familiar inputs: quiet.
    live_window(&app, 200, 0.0).await;
    let page = check_now(&app).await;
    assert!(page.contains("no drift"), "{page}");
    assert!(page.contains("Kolmogorov-Smirnov"));
    assert!(
        page.contains(r#"class="ref""#) && page.contains(r#"class="cur""#),
        "histograms side by side"
    );
    assert!(!app
        .get_html("/admin?window=1h")
        .await
        .contains(">drift</a>"));

    // Shifted inputs: drift, on the page and as a badge on the dashboard.
    sqlx::query("delete from prediction")
        .execute(&app.pool)
        .await
        .unwrap();
    live_window(&app, 200, 0.8).await;
    let page = check_now(&app).await;
    assert!(page.contains("drifting"), "{page}");
    assert!(page.contains("4 of 4 features moved"));
    assert!(page.contains("<polyline"), "the score's history");
    let dash = app.get_html("/admin?window=24h").await;
    assert!(
        dash.contains(r#"href="/admin/models/iris/drift">drift</a>"#),
        "badge on the dashboard"
    );

    let runs: Vec<Option<bool>> = sqlx::query_scalar("select drifted from drift_run order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        runs,
        vec![None, Some(false), Some(true)],
        "results are kept over time"
    );
}

#[sqlx::test]
async fn the_scheduled_job_checks_every_production_version(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    live_window(&app, 150, 0.0).await;
    let registry = plinth::startup::registry_for(&app.pool, &app.settings).unwrap();

    let checked =
        plinth::monitoring::drift::check_all(&registry, &plinth::heavy::Heavy::new(1), 24, 1000)
            .await
            .unwrap();

    assert_eq!(
        checked, 3,
        "iris, diabetes and digits all carry reference data"
    );
    let verdicts: Vec<(String, Option<bool>)> = sqlx::query_as(
        "select m.name, r.drifted from drift_run r join model m on m.id = r.model_id order by m.name",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(verdicts[2], ("iris".to_string(), Some(false)));
    assert_eq!(verdicts[0].1, None, "diabetes has no live data yet");
}
