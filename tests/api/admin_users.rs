use sqlx::PgPool;

use crate::helpers::{location, spawn_app, spawn_client_for, TestApp};

const GOOD: &str = "plinth-pedestal-42";

async fn user_id(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("select id from app_user where username = $1")
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn actions(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("select action from audit_event order by id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn disabling_a_user_ends_their_open_session_at_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("root", true).await;
    let ada = spawn_client_for(&app);
    ada.sign_in("ada", false).await;
    assert_eq!(ada.get("/history").await.status().as_u16(), 200);
    let id = user_id(&app, "ada").await;

    let res = app
        .post_form_from(
            &format!("/admin/users/{id}"),
            &format!("/admin/users/{id}/active"),
            &[("value", "0")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);

    let res = ada.get("/history").await;
    assert_eq!(res.status().as_u16(), 303, "refused on the next request");
    assert!(location(&res).starts_with("/accounts/login"));
    let again = spawn_client_for(&app);
    assert_eq!(again.login("ada", GOOD).await.status().as_u16(), 400);
    assert!(actions(&app).await.contains(&"user.disabled".to_string()));

    app.post_form_from(
        &format!("/admin/users/{id}"),
        &format!("/admin/users/{id}/active"),
        &[("value", "1")],
    )
    .await;
    assert_eq!(
        again.login("ada", GOOD).await.status().as_u16(),
        303,
        "enabled again"
    );
}

#[sqlx::test]
async fn staff_rights_can_be_granted_and_withdrawn_but_not_by_yourself(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("root", true).await;
    let ada = spawn_client_for(&app);
    ada.sign_in("ada", false).await;
    let id = user_id(&app, "ada").await;
    assert_eq!(ada.get("/admin").await.status().as_u16(), 403);

    app.post_form_from(
        &format!("/admin/users/{id}"),
        &format!("/admin/users/{id}/staff"),
        &[("value", "1")],
    )
    .await;
    assert_eq!(ada.get("/admin").await.status().as_u16(), 200);
    app.post_form_from(
        &format!("/admin/users/{id}"),
        &format!("/admin/users/{id}/staff"),
        &[("value", "0")],
    )
    .await;
    assert_eq!(ada.get("/admin").await.status().as_u16(), 403);

    let me = user_id(&app, "root").await;
    let res = app
        .post_form_from(
            &format!("/admin/users/{me}"),
            &format!("/admin/users/{me}/active"),
            &[("value", "0")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 403);
    let acts = actions(&app).await;
    assert!(
        acts.contains(&"user.staff_granted".to_string())
            && acts.contains(&"user.staff_revoked".to_string())
    );
}

#[sqlx::test]
async fn a_temporary_password_must_be_changed_at_next_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("root", true).await;
    let ada = spawn_client_for(&app);
    ada.sign_in("ada", false).await;
    let id = user_id(&app, "ada").await;

    let res = app
        .post_form_from(
            &format!("/admin/users/{id}"),
            &format!("/admin/users/{id}/password"),
            &[
                ("password", "temporary-pass-77"),
                ("password2", "temporary-pass-77"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(
        ada.get("/history").await.status().as_u16(),
        303,
        "old sessions ended"
    );

    let fresh = spawn_client_for(&app);
    let res = fresh.login("ada", "temporary-pass-77").await;
    assert_eq!(location(&res), "/accounts/password");
    let res = fresh.get("/history").await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(
        location(&res),
        "/accounts/password",
        "nothing else until it is changed"
    );
    let res = fresh
        .post_form_from(
            "/accounts/password",
            "/accounts/password",
            &[
                ("current_password", "temporary-pass-77"),
                ("new_password", "my-very-own-phrase"),
                ("new_password2", "my-very-own-phrase"),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(fresh.get("/history").await.status().as_u16(), 200);

    let weak = app
        .post_form_from(
            &format!("/admin/users/{id}"),
            &format!("/admin/users/{id}/password"),
            &[("password", "password"), ("password2", "password")],
        )
        .await;
    assert_eq!(weak.status().as_u16(), 422);
    assert!(weak.text().await.unwrap().contains("too common"));
}

#[sqlx::test]
async fn staff_see_a_users_sessions_and_can_end_one(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("root", true).await;
    let phone = spawn_client_for(&app);
    phone.sign_in("ada", false).await;
    let laptop = spawn_client_for(&app);
    laptop.login("ada", GOOD).await;
    let id = user_id(&app, "ada").await;

    let page = app.get_html(&format!("/admin/users/{id}")).await;
    assert_eq!(
        page.matches(r#"name="session" value=""#).count(),
        3,
        "two sessions and 'all'"
    );
    assert!(page.contains("127.0.0.1"), "the address of each login");
    let first: String = sqlx::query_scalar(
        "select key_hash from session where user_id = $1 order by created_at limit 1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();

    app.post_form_from(
        &format!("/admin/users/{id}"),
        &format!("/admin/users/{id}/sessions/end"),
        &[("session", first.as_str())],
    )
    .await;

    assert_eq!(
        phone.get("/history").await.status().as_u16(),
        303,
        "the ended one is refused"
    );
    assert_eq!(
        laptop.get("/history").await.status().as_u16(),
        200,
        "the other lives on"
    );
    let users = app.get_html("/admin/users?q=ad").await;
    assert!(users.contains(&format!(r#"href="/admin/users/{id}""#)));
    let root = user_id(&app, "root").await;
    assert!(
        !users.contains(&format!(r#"href="/admin/users/{root}""#)),
        "search filters"
    );
}

#[sqlx::test]
async fn each_event_leaves_an_audit_row_with_who_and_where(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;
    let eve = spawn_client_for(&app);
    eve.login("root", "wrong-password-1").await;
    let form = reqwest::multipart::Form::new()
        .part(
            "model",
            crate::helpers::file_part(
                std::fs::read("tests/fixtures/iris_v2.onnx").unwrap(),
                "model.onnx",
            ),
        )
        .part(
            "card",
            crate::helpers::file_part(
                std::fs::read("models/iris/1/card.toml").unwrap(),
                "card.toml",
            ),
        );
    app.post_multipart("/admin/models/iris", "/admin/models/iris/versions", form)
        .await;
    app.post_form_from(
        "/admin/models/iris",
        "/admin/models/iris/aliases",
        &[("alias", "production"), ("version", "2")],
    )
    .await;
    app.post_form_from("/accounts/tokens", "/accounts/tokens", &[("name", "ci")])
        .await;
    let token_id: i64 = sqlx::query_scalar("select id from api_token")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.post_form_from(
        "/accounts/tokens",
        &format!("/accounts/tokens/{token_id}/revoke"),
        &[],
    )
    .await;
    app.post_form_from("/", "/accounts/logout", &[]).await;

    let acts = actions(&app).await;
    for expected in [
        "login.succeeded",
        "login.failed",
        "model.version_uploaded",
        "alias.moved",
        "token.created",
        "token.revoked",
        "logout",
    ] {
        assert!(
            acts.contains(&expected.to_string()),
            "{expected} in {acts:?}"
        );
    }
    let (actor, ip, detail): (Option<String>, Option<String>, serde_json::Value) = sqlx::query_as(
        "select actor, client_ip, detail from audit_event where action = 'alias.moved'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(actor.as_deref(), Some("root"));
    assert_eq!(ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(detail["from"], 1);
    assert_eq!(detail["to"], 2);

    app.login("root", GOOD).await;
    let page = app.get_html("/admin/audit?action=login").await;
    assert!(page.contains("login.failed") && !page.contains("token.created</code>"));
    let bad = app.get("/admin/audit?from=never").await;
    assert_eq!(bad.status().as_u16(), 400);
}

#[sqlx::test]
async fn non_staff_get_403_everywhere_under_admin(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let id = app.sign_in("ada", false).await;

    for path in [
        "/admin",
        "/admin/models",
        "/admin/models/iris",
        "/admin/users",
        &format!("/admin/users/{id}"),
        "/admin/audit",
        "/admin/predictions",
        "/admin/predictions.csv",
    ] {
        assert_eq!(app.get(path).await.status().as_u16(), 403, "{path}");
    }
    let res = app
        .post_form_from("/", &format!("/admin/users/{id}/staff"), &[("value", "1")])
        .await;
    assert_eq!(res.status().as_u16(), 403);
    let staff: bool = sqlx::query_scalar("select is_staff from app_user where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!staff);
}
