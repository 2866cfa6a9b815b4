use sqlx::PgPool;

use crate::helpers::{location, spawn_app, spawn_app_with, spawn_client_for};

const GOOD: &str = "plinth-pedestal-42";

#[sqlx::test]
async fn logging_out_makes_the_old_cookie_useless(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;
    let cookie = app.session_cookie().expect("a session cookie");
    assert_eq!(
        app.get_with_cookie("/accounts/password", &cookie)
            .await
            .status()
            .as_u16(),
        200
    );

    let res = app
        .post_form_from("/accounts/password", "/accounts/logout", &[])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/login?logged_out=1");

    let replay = app.get_with_cookie("/accounts/password", &cookie).await;
    assert_eq!(
        replay.status().as_u16(),
        303,
        "the old cookie no longer signs anyone in"
    );
    let signed_in: i64 =
        sqlx::query_scalar("select count(*) from session where user_id is not null")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(signed_in, 0);
}

#[sqlx::test]
async fn the_session_id_is_renewed_at_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.get("/accounts/login").await;
    let before = app
        .session_cookie()
        .expect("an anonymous session for the CSRF token");

    app.login("ada", GOOD).await;

    let after = app.session_cookie().expect("a session cookie");
    assert_ne!(before, after);
    let res = app.get_with_cookie("/accounts/password", &before).await;
    assert_eq!(
        res.status().as_u16(),
        303,
        "the pre-login id grants nothing"
    );
}

#[sqlx::test]
async fn an_idle_session_expires(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;
    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 200);
    let left: f64 = sqlx::query_scalar(
        "select extract(epoch from expires_at - now())::float8 from session where user_id is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        (1700.0..=1800.0).contains(&left),
        "idle timeout defaults to 30 minutes: {left}"
    );

    sqlx::query("update session set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.sessions_edited();

    let res = app.get("/accounts/password").await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/login?next=/accounts/password");
}

#[sqlx::test]
async fn a_session_ends_at_its_absolute_age_even_when_busy(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;

    sqlx::query("update session set created_at = now() - interval '12 hours 1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();
    app.sessions_edited();

    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 303);
}

#[sqlx::test]
async fn a_disabled_users_live_session_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;
    let cookie = app.session_cookie().unwrap();

    plinth_store::users::set_active(&app.pool, id, false)
        .await
        .unwrap();

    assert_eq!(
        app.get_with_cookie("/accounts/password", &cookie)
            .await
            .status()
            .as_u16(),
        303
    );
    let fresh = spawn_client_for(&app);
    assert_eq!(
        fresh.login("ada", GOOD).await.status().as_u16(),
        400,
        "and cannot log in again"
    );
}

#[sqlx::test]
async fn a_disabled_user_is_refused_even_if_a_session_row_survives(pool: PgPool) {
    let app = spawn_app(pool).await;
    let id = app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;

    // Bypass the session purge: the per-request check must still refuse.
    sqlx::query("update app_user set is_active = false where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();

    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 303);
}

#[sqlx::test]
async fn session_cookies_are_http_only_lax_and_secure_by_default(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.insecure_cookies = false).await;

    let res = app.get("/accounts/login").await;

    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("plinth_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"));
    assert!(cookie.contains("SameSite=Lax"));
    assert!(cookie.contains("Secure"));
    assert!(
        !cookie.contains("Max-Age"),
        "a browser session cookie; the server enforces expiry"
    );
}

#[sqlx::test]
async fn insecure_cookies_drop_only_the_secure_flag(pool: PgPool) {
    let app = spawn_app(pool).await;

    let res = app.get("/accounts/login").await;

    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Secure"));
}

#[sqlx::test]
async fn the_session_table_stores_no_usable_key(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;
    let cookie = app.session_cookie().unwrap();

    let hashes: Vec<String> = sqlx::query_scalar("select key_hash from session")
        .fetch_all(&app.pool)
        .await
        .unwrap();

    assert!(!hashes.is_empty());
    for h in hashes {
        assert!(!cookie.contains(&h));
    }
}
