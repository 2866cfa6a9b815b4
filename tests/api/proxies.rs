//! `PLINTH_TRUSTED_PROXIES`: the client's address comes from `X-Forwarded-For` only when the
//! connection comes from a trusted balancer.

use sqlx::PgPool;

use crate::helpers::{csrf_in, spawn_app_with, TestApp};

/// A failed login sent with `X-Forwarded-For`; the address the audit log recorded for it.
async fn failed_login_from(app: &TestApp, forwarded: &str) -> String {
    let token = csrf_in(&app.get_html("/accounts/login").await);
    let res = app
        .client
        .post(app.url("/accounts/login"))
        .header("X-Forwarded-For", forwarded)
        .form(&[
            ("username", "ada"),
            ("password", "not her password"),
            ("next", ""),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    // The form comes back with the error.
    assert_eq!(status, 400, "{}", res.text().await.unwrap_or_default());
    sqlx::query_scalar("select client_ip from audit_event order by id desc limit 1")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn the_forwarded_address_is_believed_only_from_a_trusted_proxy(pool: PgPool) {
    // Behind a balancer on this host: the address it appended is the client's.
    let app = spawn_app_with(pool.clone(), |s| {
        s.trusted_proxies =
            plinth_store::domain::proxies::Cidr::parse_list("127.0.0.1,::1").unwrap()
    })
    .await;
    assert_eq!(
        failed_login_from(&app, "6.6.6.6, 203.0.113.7").await,
        "203.0.113.7"
    );
}

#[sqlx::test]
async fn without_trusted_proxies_the_header_is_ignored(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    assert_eq!(failed_login_from(&app, "203.0.113.7").await, "127.0.0.1");
}

/// The `Set-Cookie` headers of a fresh login page fetched with `X-Forwarded-Proto`.
async fn cookies_over(app: &TestApp, proto: &str) -> Vec<String> {
    let res = app
        .client
        .get(app.url("/accounts/login"))
        .header("X-Forwarded-Proto", proto)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(!cookies.is_empty(), "the login page starts a session");
    cookies
}

fn secure(cookie: &str) -> bool {
    cookie
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("secure"))
}

#[sqlx::test]
async fn https_at_a_trusted_proxy_makes_cookies_secure_even_on_a_plain_http_setup(pool: PgPool) {
    // Test servers run with PLINTH_INSECURE_COOKIES (plain HTTP); the balancer says the client
    // came over HTTPS.
    let app = spawn_app_with(pool, |s| {
        s.trusted_proxies = plinth_store::domain::proxies::Cidr::parse_list("127.0.0.1").unwrap()
    })
    .await;
    assert!(app.settings.insecure_cookies);
    assert!(cookies_over(&app, "https").await.iter().all(|c| secure(c)));
    let plain = crate::helpers::spawn_client_for(&app);
    assert!(!cookies_over(&plain, "http").await.iter().any(|c| secure(c)));
}

#[sqlx::test]
async fn a_clients_own_forwarded_proto_is_ignored(pool: PgPool) {
    let app = spawn_app_with(pool, |_| {}).await;
    assert!(!cookies_over(&app, "https").await.iter().any(|c| secure(c)));
}
