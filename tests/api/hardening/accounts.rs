//! Hardening of accounts and sessions: password changes and sessions in flight, login times,
//! throttles, forced password changes, log lines a username cannot forge.

use super::*;

// --- 2. sessions ------------------------------------------------------------------------------

/// Changes the signed-in user's password to `plinth-plinth-43`, giving `current` as the old one.
async fn change_password(app: &crate::helpers::TestApp, current: &str) -> reqwest::Response {
    app.post_form_from(
        "/accounts/password",
        "/accounts/password",
        &[
            ("current_password", current),
            ("new_password", "plinth-plinth-43"),
            ("new_password2", "plinth-plinth-43"),
        ],
    )
    .await
}

/// A POST to the iris form whose body arrives slowly: the request is in flight (its session
/// loaded, its user known) until `release` fires.
async fn slow_form_post(
    app: &crate::helpers::TestApp,
    csrf: String,
    release: tokio::sync::oneshot::Receiver<()>,
) -> reqwest::Response {
    let first = format!("csrf_token={csrf}&sepal_length=5.1");
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures_util::stream::once(async move {
            let _ = release.await;
            Ok("&sepal_width=oops".to_string())
        }),
    );
    app.client
        .post(app.url("/models/iris"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("the slow request is answered")
}

#[sqlx::test]
async fn a_password_change_ends_a_session_whose_request_is_in_flight(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let user_id = app.sign_in("ada", false).await;
    let other = spawn_client_for(&app);
    assert_eq!(other.login("ada", GOOD).await.status().as_u16(), 303);

    // Arrange: the other browser has a request open.
    let csrf = csrf_in(&other.get_html("/models/iris").await);
    let (release, wait) = tokio::sync::oneshot::channel();
    let other = std::sync::Arc::new(other);
    let slow = {
        let other = other.clone();
        tokio::spawn(async move { slow_form_post(&other, csrf, wait).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act: the first browser changes the password; then the slow request finishes.
    let res = change_password(&app, GOOD).await;
    assert_eq!(res.status().as_u16(), 303);
    release.send(()).unwrap();
    let slow = slow.await.unwrap();
    let _ = slow.text().await;

    // Assert: only the changing browser's session is left, and the other one is signed out.
    let sessions: i64 = sqlx::query_scalar("select count(*) from session where user_id = $1")
        .bind(user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        sessions, 1,
        "the in-flight request did not bring its session back"
    );
    let res = other.get("/history").await;
    assert_eq!(res.status().as_u16(), 303);
    assert!(location(&res).starts_with("/accounts/login"));
}

#[sqlx::test]
async fn renewing_a_session_keeps_its_login_time(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("ada", false).await;
    sqlx::query("update session set created_at = now() - interval '11 hours', state = jsonb_set(state, '{authenticated_at}', to_jsonb((extract(epoch from now() - interval '11 hours')::bigint)::text))")
        .execute(&app.pool)
        .await
        .unwrap();
    app.sessions_edited();
    let res = change_password(&app, GOOD).await;
    assert_eq!(res.status().as_u16(), 303);
    let age: f64 = sqlx::query_scalar(
        "select extract(epoch from now() - created_at)::float8 from session where user_id is not null",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        age > 10.0 * 3600.0,
        "the renewed session still ends 12 h after login ({age} s)"
    );
}

// --- 7. throttling ----------------------------------------------------------------------------

#[sqlx::test]
async fn parallel_guesses_cannot_pass_the_throttle_together(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.create_user("ada", GOOD, false).await;
    let guesses: Vec<_> = (0..20)
        .map(|i| {
            let client = spawn_client_for(&app);
            tokio::spawn(async move {
                client
                    .login("ada", &format!("wrong-guess-{i}"))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut verified = 0;
    for g in guesses {
        if g.await.unwrap() == 400 {
            verified += 1;
        }
    }
    assert!(
        verified <= 6,
        "{verified} of 20 parallel guesses were checked"
    );
}

#[sqlx::test]
async fn sign_ups_and_wrong_current_passwords_are_throttled(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let client = spawn_client_for(&app);
        statuses.push(
            client
                .signup(&format!("new{i}"), GOOD)
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..5].iter().all(|s| *s == 303), "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");

    let app2 = spawn_client_for(&app);
    app2.sign_in("grace", false).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let res = change_password(&app2, "not-the-password").await;
        statuses.push(res.status().as_u16());
    }
    assert!(statuses[..5].iter().all(|s| *s == 422), "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
}

#[sqlx::test]
async fn a_generated_admin_password_must_be_changed_at_first_login(pool: PgPool) {
    let app = spawn_app(pool).await;
    let mut settings = app.settings.clone();
    settings.admin_password = None;
    plinth::startup::bootstrap_admin(&app.pool, &settings)
        .await
        .unwrap();
    let must: bool =
        sqlx::query_scalar("select must_change_password from app_user where username = 'admin'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(must);
}

#[sqlx::test]
async fn a_username_cannot_forge_log_lines(pool: PgPool) {
    // The real binary, logging to its stdout.
    let url = crate::helpers::database_url(&pool).await;
    let scratch = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .env("PLINTH_DATABASE_URL", &url)
        .env("PLINTH_ADDR", format!("127.0.0.1:{port}"))
        .env("PLINTH_MODELS", "no-such-repository")
        .env("PLINTH_INSECURE_COOKIES", "1")
        .env("PLINTH_ADMIN_PASSWORD", "plinth-pedestal-42")
        .env("PLINTH_ARTIFACTS", scratch.path())
        .env("PLINTH_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let (client, _) = crate::helpers::new_client();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server started");
    let page = client
        .get(format!("{base}/accounts/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = csrf_in(&page);
    let forged = "mallory\n2026-01-01T00:00:00Z  INFO login succeeded username=\"admin\"";
    let res = client
        .post(format!("{base}/accounts/login"))
        .form(&[
            ("username", forged),
            ("password", "wrong"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("login failed"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a line was forged: {log}"
    );
}
