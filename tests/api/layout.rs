use sqlx::PgPool;

use crate::helpers::spawn_app;

fn assert_security_headers(res: &reqwest::Response) {
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    assert!(h.contains_key("x-request-id"));
}

#[sqlx::test]
async fn every_response_carries_the_security_headers(pool: PgPool) {
    let app = spawn_app(pool).await;
    for path in [
        "/",
        "/accounts/login",
        "/static/plinth.css",
        "/healthz",
        "/nowhere",
        "/api/v1/nowhere",
    ] {
        let res = app.get(path).await;
        assert_security_headers(&res);
    }
}

#[sqlx::test]
async fn a_missing_page_is_a_404_page_with_the_request_id(pool: PgPool) {
    let app = spawn_app(pool).await;

    let res = app.get("/no/such/page").await;

    assert_eq!(res.status().as_u16(), 404);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Not Found") && html.contains(&id), "{html}");
    assert!(
        html.contains(r#"<link rel="stylesheet" href="/static/plinth.css">"#),
        "same layout"
    );
}

#[sqlx::test]
async fn api_paths_get_json_errors(pool: PgPool) {
    let app = spawn_app(pool).await;

    for path in ["/api/v1/nothing", "/v2/nothing"] {
        let res = app.get(path).await;
        assert_eq!(res.status().as_u16(), 404);
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("nothing at this address"));
        assert_eq!(body["request_id"], id.as_str());
    }
}

#[sqlx::test]
async fn a_body_over_the_limit_is_refused_with_413(pool: PgPool) {
    let app = spawn_app(pool).await;
    let token = crate::helpers::csrf_in(&app.get_html("/accounts/login").await);
    let huge = "x".repeat(2 << 20);

    let res = app
        .client
        .post(app.url("/accounts/login"))
        .form(&[("username", huge.as_str()), ("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(res.status().as_u16(), 413);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("larger than this server accepts"));
}

#[sqlx::test]
async fn the_layout_has_a_stylesheet_a_favicon_and_a_user_menu(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", "plinth-pedestal-42", false).await;

    let anonymous = app.get_html("/").await;
    assert!(anonymous.contains(r#"href="/accounts/login""#));
    assert!(anonymous.contains(r#"href="/accounts/signup""#));
    app.login("ada", "plinth-pedestal-42").await;
    let html = app.get_html("/").await;
    assert!(html.contains(r#"<summary><span class="avatar""#));
    assert!(html.contains(r#"action="/accounts/logout""#));

    let css = app.get("/static/plinth.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains(".site-header"));
    let icon = app.get("/favicon.ico").await;
    assert_eq!(icon.status().as_u16(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
}

#[sqlx::test]
async fn no_link_on_the_main_pages_is_dead(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("root", "staff-member-secret", true).await;
    app.login("root", "staff-member-secret").await;

    app.import_models().await;
    let res = app.predict_iris_example().await;
    let result = crate::helpers::location(&res);
    for page in [
        "/",
        "/admin",
        "/accounts/password",
        "/accounts/logout",
        "/accounts/tokens",
        "/history",
        "/models/iris",
        result.as_str(),
        "/admin/models",
        "/admin/models/iris",
        "/admin/users",
        "/admin/audit",
        "/admin/predictions",
        "/api/docs",
    ] {
        let html = app.get_html(page).await;
        for link in html.split("href=\"").skip(1) {
            let target = &link[..link.find('"').unwrap()];
            if !target.starts_with('/') || target.starts_with("//") || target.contains("logout") {
                continue;
            }
            let status = app.get(target).await.status().as_u16();
            assert!(
                status == 200 || status == 303,
                "{page} links to {target}: {status}"
            );
        }
    }
}

/// Every page a staff member can reach by following links from the admin area answers, with a
/// title that is only text: no dead links, no page that fails to render.
#[sqlx::test]
async fn the_back_office_has_no_dead_links(pool: PgPool) {
    use std::collections::{BTreeSet, VecDeque};
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ml-engineer", true).await;
    // Something on every page: a second version, a data set linked to it, a comparison.
    app.publish_iris_v2(&token).await;
    let csv = std::fs::read("models/iris/1/reference.csv").unwrap();
    let res = app
        .api(
            reqwest::Method::POST,
            "/api/v1/datasets?name=iris-train",
            &token,
        )
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    app.post_json(
        "/api/v1/models/iris/versions/1/datasets",
        &token,
        serde_json::json!({"dataset": "iris-train"}),
    )
    .await;
    app.post_json(
        "/api/v1/models/iris/comparisons",
        &token,
        serde_json::json!({"a": 1, "b": 2}),
    )
    .await;
    app.sign_in("staff", true).await;

    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from(["/admin".to_string()]);
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) || seen.len() > 400 {
            continue;
        }
        let res = app.get(&path).await;
        let status = res.status().as_u16();
        assert!(
            status == 200 || (path == "/metrics" && status == 401),
            "{path} answered {status}"
        );
        let is_html = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/html"));
        if !is_html {
            continue;
        }
        let html = res.text().await.unwrap();
        let title = html
            .split("<title>")
            .nth(1)
            .and_then(|t| t.split("</title>").next())
            .unwrap_or_else(|| panic!("{path} has no title"));
        assert!(!title.contains('<'), "{path}'s title holds markup: {title}");
        for link in html.split("href=\"").skip(1) {
            let href = link.split('"').next().unwrap_or("");
            let href = href.replace("&#38;", "&").replace("&amp;", "&");
            let href = href.split('#').next().unwrap_or("").to_string();
            // Same-site pages only; signing out would end the crawl.
            if href.starts_with('/') && !href.starts_with("//") && href != "/accounts/logout" {
                queue.push_back(href);
            }
        }
    }
    assert!(seen.len() > 40, "only {} pages: {seen:?}", seen.len());
    for page in [
        "/admin/datasets",
        "/admin/datasets/iris-train",
        "/admin/datasets/iris-train/versions/1",
        "/admin/models/iris/compare?a=1&b=2",
        "/admin/webhooks",
    ] {
        assert!(seen.contains(page), "{page} is not reachable from /admin");
    }
}
