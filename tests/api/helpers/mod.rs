use std::sync::{Arc, Mutex};

use plinth::auth::{password, Password};
use plinth::config::Settings;
use plinth::startup::Application;
use plinth_store::domain::Username;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::{redirect, Client, Response};
use sqlx::PgPool;

mod publishing;

mod receiver;
pub mod tls;

pub use receiver::*;

/// Runs `command` to its end and returns what it printed; a failure to start or a non-zero exit
/// fails the test with `what` and the command's standard error.
pub fn succeed(command: &mut std::process::Command, what: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub struct TestApp {
    pub address: String,
    /// The separate metrics listener, when `metrics_addr` was set.
    pub metrics_port: Option<u16>,
    pub pool: PgPool,
    pub settings: Settings,
    pub client: Client,
    pub jar: Arc<Jar>,
    /// The server's artifact store, removed with the app.
    _scratch: Arc<tempfile::TempDir>,
}

/// Settings for a test server: a random port, one worker, cookies usable over plain HTTP.
pub fn test_settings() -> Settings {
    Settings::from_lookup(|name| match name {
        "PLINTH_ADDR" => Some("127.0.0.1:0".into()),
        "PLINTH_INSECURE_COOKIES" => Some("1".into()),
        "PLINTH_WORKERS" => Some("1".into()),
        // A directory of its own; `spawn_app_with` replaces it with one removed after the test.
        "PLINTH_ARTIFACTS" => Some(
            tempfile::Builder::new()
                .prefix("plinth-test-")
                .tempdir()
                .expect("a temporary directory")
                .keep()
                .to_string_lossy()
                .to_string(),
        ),
        _ => None,
    })
    .expect("test settings are valid")
}

pub async fn spawn_app(pool: PgPool) -> TestApp {
    spawn_app_with(pool, |_| {}).await
}

pub async fn spawn_app_with(pool: PgPool, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let scratch = tempfile::Builder::new()
        .prefix("plinth-test-")
        .tempdir()
        .expect("a temporary directory");
    let mut settings = test_settings();
    settings.artifacts = scratch.path().join("artifacts").display().to_string();
    settings.cache_dir = scratch.path().join("cache");
    tweak(&mut settings);
    let app = Application::build_with_pool(settings.clone(), pool.clone())
        .await
        .expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_port = app.metrics_port();
    tokio::spawn(app.run_until_stopped());
    let (client, jar) = new_client();
    TestApp {
        address,
        metrics_port,
        pool,
        settings,
        client,
        jar,
        _scratch: Arc::new(scratch),
    }
}

/// A client that keeps cookies and does not follow redirects, like a careful browser.
pub fn new_client() -> (Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = Client::builder()
        .redirect(redirect::Policy::none())
        .cookie_provider(jar.clone())
        .build()
        .expect("client builds");
    (client, jar)
}

/// The value of `name="csrf_token"` in a page.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("the page has a CSRF field") + marker.len();
    let end = html[start..].find('"').expect("the value ends") + start;
    html[start..end].to_string()
}

pub fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .expect("ascii")
        .to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_html(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("a body")
    }

    /// Fetches `page` for its CSRF token, then posts `fields` with that token to `path`.
    pub async fn post_form_from(
        &self,
        page: &str,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Response {
        let token = csrf_in(&self.get_html(page).await);
        let mut body: Vec<(&str, &str)> = fields.to_vec();
        body.push(("csrf_token", &token));
        self.client
            .post(self.url(path))
            .form(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts `fields` without any CSRF token.
    pub async fn post_form_without_token(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .post(self.url(path))
            .form(fields)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.login_next(username, password, "").await
    }

    pub async fn login_next(&self, username: &str, password: &str, next: &str) -> Response {
        self.post_form_from(
            "/accounts/login",
            "/accounts/login",
            &[
                ("username", username),
                ("password", password),
                ("next", next),
            ],
        )
        .await
    }

    pub async fn signup(&self, username: &str, password: &str) -> Response {
        self.post_form_from(
            "/accounts/signup",
            "/accounts/signup",
            &[
                ("username", username),
                ("password", password),
                ("password2", password),
            ],
        )
        .await
    }

    /// Creates an account directly in the database.
    pub async fn create_user(&self, username: &str, secret: &str, staff: bool) -> i64 {
        let username = Username::parse(username).expect("valid username");
        let secret = Password::parse(secret, username.as_str()).expect("valid password");
        let hash = password::hash(&secret).await.expect("hashed");
        plinth_store::users::create(&self.pool, &username, &hash, staff)
            .await
            .expect("created")
            .id
    }

    /// The session cookie this client holds, as a `Cookie` header value.
    pub fn session_cookie(&self) -> Option<String> {
        let url = self.address.parse().expect("url");
        self.jar
            .cookies(&url)
            .map(|v| v.to_str().expect("ascii").to_string())
    }

    /// A GET with an explicit `Cookie` header and no cookie store.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Response {
        Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .expect("client")
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("request sent")
    }
}

/// The URL of the database behind `pool`, for running the binary against it.
pub async fn database_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .expect("database name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    // A private cluster's URL names its socket in the query: `…/postgres?host=/path`.
    let (base, query) = base.split_once('?').unwrap_or((&base, ""));
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    if query.is_empty() {
        format!("{prefix}/{name}")
    } else {
        format!("{prefix}/{name}?{query}")
    }
}

/// A client for a server started outside the test process (a real `plinth serve`).
pub fn test_app_at(address: String, pool: PgPool) -> TestApp {
    let (client, jar) = new_client();
    TestApp {
        address,
        metrics_port: None,
        pool,
        settings: test_settings(),
        client,
        jar,
        _scratch: Arc::new(tempfile::tempdir().expect("a temporary directory")),
    }
}

/// A second browser on the same server.
pub fn spawn_client_for(app: &TestApp) -> TestApp {
    let (client, jar) = new_client();
    TestApp {
        address: app.address.clone(),
        metrics_port: app.metrics_port,
        pool: app.pool.clone(),
        settings: app.settings.clone(),
        client,
        jar,
        _scratch: app._scratch.clone(),
    }
}

impl TestApp {
    /// Imports the model repository shipped in `models/`, as `plinth serve` does at start.
    pub async fn import_models(&self) {
        // The shipped models, whatever upload limit the test server has.
        let mut settings = self.settings.clone();
        settings.max_upload_bytes = 64 << 20;
        plinth::startup::registry_for(&self.pool, &settings)
            .expect("a registry")
            .import_repository(std::path::Path::new("models"))
            .await
            .expect("the shipped models import");
    }

    /// Creates a user and signs this client in as them.
    pub async fn sign_in(&self, username: &str, staff: bool) -> i64 {
        let id = self
            .create_user(username, "plinth-pedestal-42", staff)
            .await;
        let res = self.login(username, "plinth-pedestal-42").await;
        assert_eq!(res.status().as_u16(), 303, "signed in");
        id
    }

    /// Posts a model's form with the given values; the CSRF token comes from the form page.
    pub async fn predict(&self, model: &str, fields: &[(&str, String)]) -> Response {
        let page = format!("/models/{model}");
        let token = csrf_in(&self.get_html(&page).await);
        let mut body: Vec<(&str, String)> = fields.to_vec();
        body.push(("csrf_token", token));
        self.client
            .post(self.url(&page))
            .form(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts iris's form with the card's example (a setosa).
    pub async fn predict_iris_example(&self) -> Response {
        self.predict(
            "iris",
            &[
                ("sepal_length", "5.1".into()),
                ("sepal_width", "3.5".into()),
                ("petal_length", "1.4".into()),
                ("petal_width", "0.2".into()),
            ],
        )
        .await
    }

    /// Posts a multipart form, adding the CSRF token taken from `page`.
    pub async fn post_multipart(
        &self,
        page: &str,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Response {
        let token = csrf_in(&self.get_html(page).await);
        // A script's way to send the token before any file part: the header.
        self.client
            .post(self.url(path))
            .header("x-csrf-token", &token)
            .multipart(form.text("csrf_token", token))
            .send()
            .await
            .expect("request sent")
    }

    /// The inputs stored with prediction `id`.
    pub async fn stored_inputs(&self, id: i64) -> serde_json::Value {
        plinth_store::predictions::find(&self.pool, id)
            .await
            .expect("the prediction log is readable")
            .expect("a stored prediction")
            .inputs
            .0
    }

    /// POSTs JSON with a token: the status and the JSON answer (null when it is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.call_json(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Any method with a token and, when given, a JSON body: the status and the JSON answer
    /// (null when it is not JSON).
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.api(method, path, token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// After a test edits session rows to move the clock: the trigger's notice reaches the
    /// session cache a moment later; this makes it now.
    pub fn sessions_edited(&self) {
        plinth_store::sessions::cache::forget_all(&plinth_store::database_of(&self.pool));
    }

    /// How many predictions the log holds (a row holds a request's predictions).
    pub async fn predictions(&self) -> i64 {
        sqlx::query_scalar("select coalesce(sum(n), 0)::bigint from prediction")
            .fetch_one(&self.pool)
            .await
            .expect("the prediction log is readable")
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// Iris's card example (a setosa), as JSON v1 takes a row.
pub fn setosa() -> serde_json::Value {
    serde_json::json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
}

/// A file part for multipart uploads.
pub fn file_part(bytes: Vec<u8>, name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name(name.to_string())
}

/// The prediction id a form POST redirected to.
pub fn prediction_id(res: &Response) -> i64 {
    let loc = location(res);
    loc.strip_prefix("/predictions/")
        .unwrap_or_else(|| panic!("redirected to {loc}"))
        .parse()
        .expect("an id")
}
