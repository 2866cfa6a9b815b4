use sqlx::PgPool;

use crate::helpers::{location, spawn_app, spawn_app_with};

const GOOD: &str = "plinth-pedestal-42";

#[sqlx::test]
async fn signing_up_creates_an_account_and_signs_in(pool: PgPool) {
    let app = spawn_app(pool).await;

    let res = app.signup("ada", GOOD).await;

    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/");
    let home = app.get_html("/").await;
    assert!(home.contains("Welcome to Plinth, ada."), "{home}");
    assert!(home.contains(">ada</summary>"), "the user menu names ada");
    let (staff, hash): (bool, String) =
        sqlx::query_as("select is_staff, password_hash from app_user where username = 'ada'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!staff);
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
}

#[sqlx::test]
async fn a_taken_username_is_refused_with_a_field_error(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;

    let res = app.signup("ADA", "another-long-secret").await;

    assert_eq!(res.status().as_u16(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("A user with that username already exists."));
    assert!(html.contains(r#"<div class="field invalid">"#));
    assert!(
        html.contains(r#"value="ADA""#),
        "the form keeps what was typed"
    );
    let count: i64 = sqlx::query_scalar("select count(*) from app_user")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[sqlx::test]
async fn weak_passwords_and_bad_usernames_are_refused_by_field(pool: PgPool) {
    let app = spawn_app(pool).await;

    let res = app.signup("bad name", "password1").await;

    assert_eq!(res.status().as_u16(), 422);
    let html = res.text().await.unwrap();
    assert!(html.contains("too common"), "{html}");
    assert!(html.contains("Usernames may contain letters"));
    let res = app
        .post_form_from(
            "/accounts/signup",
            "/accounts/signup",
            &[
                ("username", "bob"),
                ("password", GOOD),
                ("password2", "other"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("The two passwords differ."));
    let count: i64 = sqlx::query_scalar("select count(*) from app_user")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test]
async fn closed_signup_refuses_new_accounts(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.signup = plinth::config::SignupPolicy::Closed).await;

    let page = app.get("/accounts/signup").await;
    assert_eq!(page.status().as_u16(), 403);
    assert!(page.text().await.unwrap().contains("Sign-up is closed"));
    let csrf_page = app.get_html("/accounts/login").await;
    let token = crate::helpers::csrf_in(&csrf_page);
    let res = app
        .client
        .post(app.url("/accounts/signup"))
        .form(&[
            ("username", "eve"),
            ("password", GOOD),
            ("password2", GOOD),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 403);
    let count: i64 = sqlx::query_scalar("select count(*) from app_user")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[sqlx::test]
async fn anonymous_visitors_are_sent_to_login_and_back_to_next(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;

    let res = app.get("/accounts/password").await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/login?next=/accounts/password");

    let res = app.login_next("ada", GOOD, "/accounts/password").await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/password");
    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 200);
}

#[sqlx::test]
async fn an_off_site_next_is_refused(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;

    let res = app.login_next("ada", GOOD, "https://evil.example/").await;
    assert_eq!(location(&res), "/");
    let app2 = crate::helpers::spawn_client_for(&app);
    let res = app2.login_next("ada", GOOD, "//evil.example/").await;
    assert_eq!(location(&res), "/");
}

#[sqlx::test]
async fn a_wrong_password_is_refused_without_saying_which_part_was_wrong(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;

    let wrong_password = app.login("ada", "not-the-password").await;
    assert_eq!(wrong_password.status().as_u16(), 400);
    let a = wrong_password.text().await.unwrap();
    let unknown_user = app.login("nobody", "not-the-password").await;
    assert_eq!(unknown_user.status().as_u16(), 400);
    let b = unknown_user.text().await.unwrap();

    let message = "That username and password do not match an active account.";
    assert!(a.contains(message) && b.contains(message));
    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 303);
}

#[sqlx::test]
async fn throttling_engages_after_repeated_failures_and_lifts(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;

    // Arrange: the free failures.
    for _ in 0..plinth::auth::throttle::ACCOUNT_FREE_FAILURES {
        let res = app.login("ada", "wrong-guess-123").await;
        assert_eq!(res.status().as_u16(), 400);
    }

    // Act: even the right password is refused while the delay runs.
    let res = app.login("ada", GOOD).await;

    // Assert
    assert_eq!(res.status().as_u16(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Too many failed attempts"));
    assert_eq!(app.get("/accounts/password").await.status().as_u16(), 303);

    // The delay counts from the last failure: move the failures back rather than wait it out.
    sqlx::query("update login_failure set created_at = created_at - make_interval(secs => $1)")
        .bind(retry as f64 + 1.0)
        .execute(&app.pool)
        .await
        .unwrap();
    let res = app.login("ada", GOOD).await;
    assert_eq!(
        res.status().as_u16(),
        303,
        "the right password passes once it lifts"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from login_failure where username = 'ada'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a success resets the account's failures");
}

#[sqlx::test]
async fn changing_the_password_retires_the_old_one_and_other_sessions(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;
    let other = crate::helpers::spawn_client_for(&app);
    other.login("ada", GOOD).await;
    assert_eq!(other.get("/accounts/password").await.status().as_u16(), 200);

    let res = app
        .post_form_from(
            "/accounts/password",
            "/accounts/password",
            &[
                ("current_password", GOOD),
                ("new_password", "a-brand-new-phrase"),
                ("new_password2", "a-brand-new-phrase"),
            ],
        )
        .await;

    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(
        app.get("/accounts/password").await.status().as_u16(),
        200,
        "this browser stays in"
    );
    assert_eq!(
        other.get("/accounts/password").await.status().as_u16(),
        303,
        "the other is out"
    );
    let fresh = crate::helpers::spawn_client_for(&app);
    assert_eq!(fresh.login("ada", GOOD).await.status().as_u16(), 400);
    assert_eq!(
        fresh
            .login("ada", "a-brand-new-phrase")
            .await
            .status()
            .as_u16(),
        303
    );
}

#[sqlx::test]
async fn a_wrong_current_password_is_a_field_error(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;

    let res = app
        .post_form_from(
            "/accounts/password",
            "/accounts/password",
            &[
                ("current_password", "not-it-at-all"),
                ("new_password", "a-brand-new-phrase"),
                ("new_password2", "a-brand-new-phrase"),
            ],
        )
        .await;

    assert_eq!(res.status().as_u16(), 422);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("That is not your current password."));
}

#[sqlx::test]
async fn a_post_without_csrf_token_is_forbidden_and_changes_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.login("ada", GOOD).await;

    let res = app
        .post_form_without_token(
            "/accounts/password",
            &[
                ("current_password", GOOD),
                ("new_password", "a-brand-new-phrase"),
                ("new_password2", "a-brand-new-phrase"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 403);
    assert!(res.text().await.unwrap().contains("security token"));
    let res = app
        .client
        .post(app.url("/accounts/logout"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);

    assert_eq!(
        app.get("/accounts/password").await.status().as_u16(),
        200,
        "still signed in"
    );
    let fresh = crate::helpers::spawn_client_for(&app);
    assert_eq!(
        fresh.login("ada", GOOD).await.status().as_u16(),
        303,
        "password unchanged"
    );
}

#[sqlx::test]
async fn admin_is_for_staff_only(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    app.create_user("root", "staff-member-secret", true).await;

    let res = app.get("/admin").await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/accounts/login?next=/admin");

    app.login("ada", GOOD).await;
    let res = app.get("/admin").await;
    assert_eq!(res.status().as_u16(), 403);
    let html = res.text().await.unwrap();
    assert!(html.contains("This area is for staff"));
    assert!(
        !html.contains(r#"href="/admin""#),
        "no admin link for non-staff"
    );

    let staff = crate::helpers::spawn_client_for(&app);
    staff.login("root", "staff-member-secret").await;
    let res = staff.get("/admin").await;
    assert_eq!(res.status().as_u16(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Recent logins") && html.contains("ada"));
    assert!(
        staff.get_html("/").await.contains(r#"href="/admin""#),
        "header links to admin"
    );
}
