//! The schema's history: a database that ran the edited copy of migration 0008 (it was changed
//! after it landed) still starts, and ends with the same schema as one that ran the original.

use sqlx::PgPool;

/// The SHA-384 of migration 0008 as it was edited after landing.
const EDITED_0008: &str = "b9e87ca3f9af22a39fd5991746524621bf71abcb075af9f7560d28db9ef62d2ac05ec5dbb49c089e74ab0ece7d65d1c1";

async fn trigger_functions(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "select t.tgname::text, p.proname::text from pg_trigger t join pg_proc p on p.oid = t.tgfoid
         where t.tgname like '%_notify' order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_database_that_ran_the_edited_0008_migrates_to_the_same_schema(pool: PgPool) {
    // Arrange: the schema and the records of a database migrated by the edited 0008, before
    // 0009 existed (0009 only does what the edit did; 0010 drops a column 0007 added).
    let expected = {
        plinth_store::migrate(&pool).await.unwrap();
        let expected = trigger_functions(&pool).await;
        sqlx::raw_sql("drop schema public cascade; create schema public")
            .execute(&pool)
            .await
            .unwrap();
        expected
    };
    crate::prediction_log::migrator_up_to(20261126000008)
        .run(&pool)
        .await
        .unwrap();
    sqlx::query(
        "update _sqlx_migrations set checksum = decode($1, 'hex') where version = 20261126000008",
    )
    .bind(EDITED_0008)
    .execute(&pool)
    .await
    .unwrap();

    // Act
    plinth_store::migrate(&pool)
        .await
        .expect("the edited database migrates");

    // Assert: every migration applied, the recorded checksum the file's, the same triggers.
    assert!(plinth_store::migrations_current(&pool).await.unwrap());
    let checksum: Vec<u8> =
        sqlx::query_scalar("select checksum from _sqlx_migrations where version = 20261126000008")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(hex::encode(&checksum), EDITED_0008);
    assert_eq!(trigger_functions(&pool).await, expected);
    // (The session trigger of 0012 carries the session's key and has its own function.)
    assert!(
        expected
            .iter()
            .filter(|(t, _)| t != "session_notify")
            .all(|(_, f)| f == "plinth_notify"),
        "{expected:?}"
    );
    let old: i64 = sqlx::query_scalar(
        "select count(*) from pg_proc where proname in ('plinth_notify_auth', 'plinth_notify_registry')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(old, 0);
    let profile: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.columns
         where table_name = 'model_version' and column_name = 'reference_profile'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(profile, 0);
}

#[sqlx::test(migrations = false)]
async fn a_migration_changed_under_a_database_is_still_refused(pool: PgPool) {
    plinth_store::migrate(&pool).await.unwrap();
    sqlx::query(
        "update _sqlx_migrations set checksum = decode('00', 'hex') where version = 20261126000008",
    )
    .execute(&pool)
    .await
    .unwrap();

    let err = plinth_store::migrate(&pool).await.unwrap_err();

    assert!(err.to_string().contains("modified"), "{err}");
}
