//! The prediction log at scale: the migration to day partitions keeps every row, the
//! maintenance job keeps partitions ahead and drops whole days past retention, rollups and
//! feedback outlive the raw rows, and two instances never run the job at once.

use std::time::Duration;

use plinth::prediction_log::maintenance::{self, Policy, Run};
use serde_json::json;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

use crate::helpers::spawn_app;

/// The last migration before the log was partitioned.
const BEFORE_PARTITIONS: i64 = 20261201000010;

#[sqlx::test(migrations = false)]
async fn the_migration_keeps_every_row_of_every_day(pool: PgPool) {
    // Arrange: the schema as it was, with 60 predictions over six days and feedback on one.
    migrator_up_to(BEFORE_PARTITIONS).run(&pool).await.unwrap();
    sqlx::raw_sql(
        "insert into model (name) values ('m');
         insert into model_version (model_id, version, sha256, size_bytes, card, signature, source)
         values (1, 1, 'x', 1, '{}', '{}', 'test');
         insert into prediction (model_id, version_id, source, inputs, outputs, latency_us, created_at)
         select 1, 1, 'api', jsonb_build_object('a', g), jsonb_build_object('label', 'l' || g), g,
                now() - make_interval(days => g % 6)
         from generate_series(1, 60) g;
         insert into feedback (prediction_id, label, version_id, predicted_at, predicted_label)
         values (7, 'l7', 1, now(), 'l7');
         insert into prediction_failure (model_id, version_id, source, reason, created_at)
         values (1, 1, 'api', 'invalid_input', now() - interval '4 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let rollup_before: i64 = sqlx::query_scalar("select sum(n)::bigint from prediction_rollup")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Act
    plinth_store::migrate(&pool).await.unwrap();

    // Assert: every prediction readable as before, each in its day's partition.
    for g in 1..=60i64 {
        let p = plinth_store::predictions::find(&pool, g)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("prediction {g} kept"));
        assert_eq!(p.inputs.0, json!({ "a": g }));
        assert_eq!(p.outputs.0, json!({ "label": format!("l{g}") }));
        assert_eq!(p.latency_us as i64, g);
    }
    let placed: Vec<(String, i64)> = sqlx::query_as(
        "select tableoid::regclass::text, count(*) from prediction group by 1 order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(placed.len(), 6, "{placed:?}");
    assert!(placed
        .iter()
        .all(|(t, n)| t.starts_with("prediction_p") && *n == 10));
    let failures: String =
        sqlx::query_scalar("select tableoid::regclass::text from prediction_failure")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(failures.starts_with("prediction_failure_p"), "{failures}");
    let rollup_after: i64 = sqlx::query_scalar("select sum(n)::bigint from prediction_rollup")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        rollup_after, rollup_before,
        "the migration counts nothing twice"
    );
    assert_eq!(
        plinth_store::feedback::find(&pool, 7).await.unwrap(),
        Some((Some("l7".to_string()), None))
    );
    // New predictions get ids after the old ones.
    let next: i64 = sqlx::query_scalar("select nextval('prediction_id_block')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(next > 60);
}

/// The migrations up to `version`, as a database that stopped there ran them.
pub fn migrator_up_to(version: i64) -> Migrator {
    Migrator {
        migrations: plinth_store::MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..Migrator::DEFAULT
    }
}

/// `per_day` predictions on each of the last `days` days (today included), and feedback on the
/// oldest.
async fn seed_days(pool: &PgPool, days: i32, per_day: i32) {
    sqlx::query(
        "insert into prediction (model_id, version_id, source, inputs, outputs, latency_us, created_at)
         select v.model_id, v.id, 'api', '[{}]', '[{\"label\": \"setosa\"}]', 100,
                date_trunc('day', now() at time zone 'UTC') at time zone 'UTC'
                    - make_interval(days => d) + make_interval(mins => 10 + g)
         from generate_series(0, $1 - 1) d, generate_series(1, $2) g,
              model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .bind(days)
    .bind(per_day)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into prediction_failure (model_id, version_id, source, reason, created_at)
         select v.model_id, v.id, 'api', 'invalid_input', now() - make_interval(days => d)
         from generate_series(0, $1 - 1) d, model_version v join model m on m.id = v.model_id
         where m.name = 'iris'",
    )
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into feedback (prediction_id, label, version_id, predicted_at, predicted_label)
         select id, 'setosa', version_id, created_at, 'setosa' from prediction
         order by created_at limit 1",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Waits for the app's own first maintenance run (at start), then forgets it, so the test's run
/// is not skipped as recent.
async fn settle(pool: &PgPool) {
    for _ in 0..100 {
        let ran: bool =
            sqlx::query_scalar("select last_run_at is not null from prediction_log_state")
                .fetch_one(pool)
                .await
                .unwrap();
        if ran {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query("update prediction_log_state set last_run_at = null")
        .execute(pool)
        .await
        .unwrap();
}

fn policy(retention_days: Option<u32>) -> Policy {
    Policy {
        retention_days,
        days_ahead: 3,
        interval: Duration::from_secs(3600),
    }
}

#[sqlx::test]
async fn retention_drops_whole_days_and_keeps_rollups_and_feedback(pool: PgPool) {
    // Arrange: ten days of predictions; all but the newest wait in the default partition.
    let app = spawn_app(pool.clone()).await;
    app.import_models().await;
    app.sign_in("root", true).await;
    seed_days(&pool, 10, 30).await;
    settle(&pool).await;
    let rollups = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("select sum(n)::bigint from prediction_rollup")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let counted = rollups(pool.clone()).await;
    assert_eq!(counted, 300);

    // Act
    let run = maintenance::run(&pool, &policy(Some(7)), "test-a")
        .await
        .unwrap();

    // Assert: the days that ended more than seven days ago are gone, as whole partitions (the
    // day that began eight days ago ended seven days ago and is kept today).
    let Run::Done { created, dropped } = run else {
        panic!("the job ran: {run:?}")
    };
    assert!(
        created >= 9,
        "partitions made for the waiting days: {created}"
    );
    assert_eq!(
        dropped.len(),
        4,
        "two days of predictions and of failures: {dropped:?}"
    );
    let days: Vec<(i32, i64)> = sqlx::query_as(
        "select ((now() at time zone 'UTC')::date - (created_at at time zone 'UTC')::date), count(*)
         from prediction group by 1 order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(days, (0..8).map(|d| (d, 30)).collect::<Vec<_>>());
    let waiting: i64 = sqlx::query_scalar(
        "select (select count(*) from prediction_default) + (select count(*) from prediction_failure_default)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        waiting, 0,
        "rows left the default partitions for their days"
    );
    let failures: i64 = sqlx::query_scalar("select count(*) from prediction_failure")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failures, 8);
    // Rollups and feedback outlive the rows.
    assert_eq!(rollups(pool.clone()).await, 300);
    let feedback: i64 = sqlx::query_scalar("select count(*) from feedback")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(feedback, 1);
    // Partitions stand ready for the days ahead.
    let ahead: i64 = sqlx::query_scalar(
        "select count(*) from plinth_partition_days('prediction') d
         where d > (now() at time zone 'UTC')::date",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ahead, 3);
    // The history pages say older predictions are gone.
    let page = app.get_html("/admin/predictions").await;
    assert!(
        page.contains("are no longer kept (they are kept for 7 days)"),
        "{page}"
    );
    let (from, days) = maintenance::retained_from(&pool).await.unwrap();
    assert_eq!(days, Some(7));
    let from = from.expect("a retention horizon");
    let age = time::OffsetDateTime::now_utc() - from;
    assert!(
        age >= time::Duration::days(7) && age < time::Duration::days(8),
        "{age}"
    );
}

#[sqlx::test]
async fn two_instances_never_run_the_job_twice(pool: PgPool) {
    // Arrange: two instances, each with its own connections.
    let other = sqlx::postgres::PgPoolOptions::new()
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let (a, b) = (policy(Some(30)), policy(Some(30)));

    // Act: both start the job at the same moment, then both again.
    let (first, second) = tokio::join!(
        maintenance::run(&pool, &a, "instance-a"),
        maintenance::run(&other, &b, "instance-b")
    );
    let (third, fourth) = tokio::join!(
        maintenance::run(&pool, &a, "instance-a"),
        maintenance::run(&other, &b, "instance-b")
    );

    // Assert: one run in all; the rest found it running or just run.
    let runs = [first, second, third, fourth].map(Result::unwrap);
    let done = runs
        .iter()
        .filter(|r| matches!(r, Run::Done { .. }))
        .count();
    assert_eq!(done, 1, "{runs:?}");
    assert!(runs
        .iter()
        .all(|r| matches!(r, Run::Done { .. } | Run::Busy | Run::Recent)));

    // While an instance holds the lock, another does nothing, however long since the last run.
    sqlx::query("update prediction_log_state set last_run_at = null")
        .execute(&pool)
        .await
        .unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(8100965752852983149)")
        .execute(&mut *holder)
        .await
        .unwrap();
    assert_eq!(
        maintenance::run(&other, &b, "instance-b").await.unwrap(),
        Run::Busy
    );
    holder.rollback().await.unwrap();
    assert!(matches!(
        maintenance::run(&other, &b, "instance-b").await.unwrap(),
        Run::Done { .. }
    ));
}

#[sqlx::test]
async fn ids_outside_the_range_are_not_found_not_errors(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("root", true).await;
    for id in ["0", "-1", "-9223372036854775808", "9223372036854775807"] {
        let res = app
            .api(
                reqwest::Method::GET,
                &format!("/api/v1/predictions/{id}"),
                &token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 404, "{id}");
        let (status, body) = app
            .post_json(
                &format!("/api/v1/predictions/{id}/feedback"),
                &token,
                json!({"label": "setosa"}),
            )
            .await;
        assert_eq!(status, 404, "{id}: {body}");
    }
}
