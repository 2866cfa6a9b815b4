//! A small WebDriver client (W3C protocol over HTTP) driving Debian's chromium through
//! chromedriver: enough to sign in, fill forms, draw on a canvas and take screenshots.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    process: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

pub struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `chromedriver` and `chromium` on this machine, if installed.
pub fn available() -> bool {
    std::path::Path::new("/usr/bin/chromedriver").exists()
        && std::path::Path::new("/usr/bin/chromium").exists()
}

impl Driver {
    pub async fn start() -> Driver {
        let port = free_port();
        let process = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(res) = http.get(format!("{base}/status")).send().await {
                let status: Value = res.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new()
            .prefix("plinth-chromium-")
            .tempdir()
            .expect("a temporary directory");
        Driver {
            process,
            base,
            http,
            _profile: profile,
        }
    }

    pub async fn browser(&self) -> Browser<'_> {
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                        format!("--user-data-dir={}", self._profile.path().display()),
                    ]
                }
            }}
        });
        let res: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_string();
        Browser {
            driver: self,
            session,
        }
    }
}

impl Browser<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.driver.base, self.session, path);
        let mut req = self.driver.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res: Value = req
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("json");
        if let Some(err) = res["value"]["error"].as_str() {
            panic!("webdriver {path}: {err}: {}", res["value"]["message"]);
        }
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Waits until the URL's path starts with `prefix`.
    pub async fn wait_for_path(&self, prefix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            let path = url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_default();
            if path.starts_with(prefix) {
                return path;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still at {url}, waiting for {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page contains `text`, and returns the page.
    pub async fn wait_for_text(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the page never showed {text:?}: {source}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Draws a stroke through `points` (relative to the element's centre) with the mouse.
    pub async fn draw(&self, css: &str, points: &[(i64, i64)]) {
        let el = self.find(css).await;
        let origin = json!({ ELEMENT: el });
        let mut actions = vec![
            json!({"type": "pointerMove", "origin": origin, "x": points[0].0, "y": points[0].1, "duration": 0}),
            json!({"type": "pointerDown", "button": 0}),
        ];
        for (x, y) in &points[1..] {
            actions.push(
                json!({"type": "pointerMove", "origin": origin, "x": x, "y": y, "duration": 30}),
            );
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": actions}]})),
        )
        .await;
    }

    /// Runs a script in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG of the window under `target/…/screenshots/`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("base64 PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn quit(self) {
        let url = format!("{}/session/{}", self.driver.base, self.session);
        let _ = self.driver.http.delete(url).send().await;
    }
}
