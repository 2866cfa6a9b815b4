//! Issue 12: no request, upload or model can take Plinth down, and no session outlives its
//! revocation. Each test is one finding, through the real server where a request causes it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::{csrf_in, file_part, location, spawn_app, spawn_app_with, spawn_client_for};

mod accounts;

mod artifacts;

const GOOD: &str = "plinth-pedestal-42";

async fn infer(app: &crate::helpers::TestApp, token: &str, body: Value) -> (u16, Value) {
    let res = app
        .api(Method::POST, "/v2/models/iris/infer", token)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn iris_row() -> Value {
    json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
}

// --- 1. declared sizes ------------------------------------------------------------------------

#[sqlx::test]
async fn a_huge_declared_shape_is_refused_and_the_server_stays_up(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;

    for first in [10_000_000_000_000i64, 1 << 59, i64::MAX] {
        let body = json!({"inputs": [{"name": "X", "shape": [first, 4], "datatype": "FP32", "data": [1]}]});
        let (status, error) = infer(&app, &token, body).await;
        assert_eq!(status, 413, "{error}");
        assert!(
            error["error"].as_str().unwrap().contains("shape[0]"),
            "{error}"
        );
    }
    // The binary extension's sizes are checked against the body, too.
    let header = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": u64::MAX}}]}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend([0u8; 16]);
    let res = app
        .api(Method::POST, "/v2/models/iris/infer", &token)
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let error: Value = res.json().await.unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("binary_data_size"),
        "{error}"
    );

    // Still serving, and nothing refused was stored.
    let (status, _) = infer(&app, &token, iris_row()).await;
    assert_eq!(status, 200);
    assert_eq!(app.predictions().await, 1);
}

// --- 3. uploads -------------------------------------------------------------------------------

#[sqlx::test]
async fn a_forged_upload_is_refused_before_its_file_is_read(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    // A multipart body with no token whose file never finishes arriving.
    let boundary = "XyZ";
    let head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"a.png\"\r\ncontent-type: image/png\r\n\r\n"
    );
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(head.into_bytes()) })
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(vec![0u8; 10])
            }));
    let started = Instant::now();
    let res = app
        .client
        .post(app.url("/models/digits"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered without waiting for the file"
    );
}

#[sqlx::test]
async fn the_prediction_form_has_its_own_small_limit_counting_every_byte(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    // A 3 MiB "picture": over the form's 2 MiB picture limit (far under the 64 MiB upload
    // limit), marked on its field.
    let form =
        reqwest::multipart::Form::new().part("image", file_part(vec![7u8; 3 << 20], "big.png"));
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("larger than 2048 KiB"));
    // Well over it, the request itself is refused.
    let form =
        reqwest::multipart::Form::new().part("image", file_part(vec![7u8; 8 << 20], "big.png"));
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 413);

    // A preamble is bytes too.
    let token = csrf_in(&app.get_html("/models/digits").await);
    let mut body = vec![b'x'; 4 << 20];
    body.extend(format!("\r\n--B\r\ncontent-disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--B--\r\n").bytes());
    let res = app
        .client
        .post(app.url("/models/digits"))
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);

    // So are parts: a form of many tiny parts is refused.
    let mut form = reqwest::multipart::Form::new();
    for i in 0..40 {
        form = form.text(format!("f{i}"), "1");
    }
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.text().await.unwrap().contains("parts"));

    // A picture larger than 2048 pixels a side is refused from its header, as a field error.
    let img = image::GrayImage::new(4096, 8);
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let form = reqwest::multipart::Form::new().part("image", file_part(png, "wide.png"));
    let res = app
        .post_multipart("/models/digits", "/models/digits", form)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("too large"));
    assert_eq!(app.predictions().await, 0);
}

// --- 4. model files ---------------------------------------------------------------------------

/// `tests/fixtures/zoo/random_forest_regressor.onnx` with one attribute of its tree node changed.
fn regressor_with(attribute: &str, value: i64) -> Vec<u8> {
    use prost::Message;
    let bytes = std::fs::read("tests/fixtures/zoo/random_forest_regressor.onnx").unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "TreeEnsembleRegressor")
        .unwrap();
    node.attribute.retain(|a| a.name != attribute);
    node.attribute.push(tract_onnx::pb::AttributeProto {
        name: attribute.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    });
    model.encode_to_vec()
}

#[sqlx::test]
async fn a_model_implying_huge_sizes_is_refused_at_upload_with_the_reason(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = app.token_for("root", true).await;
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("huge-targets.onnx");
    std::fs::write(&path, regressor_with("n_targets", 1 << 40)).unwrap();

    let res = app
        .publish(&staff, "huge", path.to_str().unwrap(), None)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    let error: Value = res.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("n_targets"),
        "{error}"
    );
}

#[test]
fn many_trees_are_grouped_in_linear_time() {
    use plinth_inference::ml::tree::{Aggregate, Attributes, Ensemble};
    // 200 000 one-leaf trees: a search per node over the trees seen would take minutes.
    let n = 200_000i64;
    let a = Attributes {
        tree_ids: (0..n).collect(),
        node_ids: vec![0; n as usize],
        feature_ids: vec![0; n as usize],
        modes: vec![None; n as usize],
        values: vec![0.0; n as usize],
        true_ids: vec![0; n as usize],
        false_ids: vec![0; n as usize],
        missing_true: vec![false; n as usize],
        weight_tree_ids: (0..n).collect(),
        weight_node_ids: vec![0; n as usize],
        weight_targets: vec![0; n as usize],
        weights: vec![1.0; n as usize],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Ensemble::build(&a, 1, Aggregate::Sum).map(|_| ()));
    });
    let built = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("built well within 30 seconds");
    assert!(built.is_ok(), "{built:?}");
}

#[sqlx::test]
async fn concurrent_first_requests_load_a_version_once_and_the_cache_is_bounded(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let mut settings = app.settings.clone();
    settings.max_loaded_versions = 1;
    let registry =
        std::sync::Arc::new(plinth::startup::registry_for(&app.pool, &settings).unwrap());
    let (_, iris) = plinth_store::models::by_number(&app.pool, "iris", 1)
        .await
        .unwrap()
        .unwrap();
    let iris = std::sync::Arc::new(iris);
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let (registry, iris) = (registry.clone(), iris.clone());
            tokio::spawn(async move { registry.load(&iris).await.map(|(_, m)| m) })
        })
        .collect();
    let mut plans = Vec::new();
    for l in loads {
        plans.push(l.await.unwrap().unwrap());
    }
    assert!(
        plans.iter().all(|p| std::sync::Arc::ptr_eq(p, &plans[0])),
        "one load, shared by all eight"
    );
    assert_eq!(registry.load_count(), 1);

    let (_, diabetes) = plinth_store::models::by_number(&app.pool, "diabetes", 1)
        .await
        .unwrap()
        .unwrap();
    registry.load(&diabetes).await.unwrap();
    assert_eq!(
        registry.loaded_count(),
        1,
        "at most max_loaded_versions in memory"
    );
}

// --- 5. exports -------------------------------------------------------------------------------

#[sqlx::test]
async fn unread_exports_hold_no_connection_and_are_limited_per_user(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    // Two users with 50 000 predictions each (about 9 MB of CSV each): more than socket buffers
    // hold, so an export that is not read cannot finish.
    let mut clients = Vec::new();
    for i in 0..2 {
        let client = spawn_client_for(&app);
        let user_id = client.sign_in(&format!("user{i}"), false).await;
        sqlx::query(
            "insert into prediction (model_id, version_id, user_id, source, inputs, outputs, latency_us)
             select v.model_id, v.id, $1, 'form', '[{\"sepal_length\": 5.1}]', '[{\"label\": \"setosa\"}]', 100
             from model_version v cross join generate_series(1, 50000)
             where v.id = (select min(id) from model_version)",
        )
        .bind(user_id)
        .execute(&app.pool)
        .await
        .unwrap();
        clients.push(client);
    }
    // Two unread exports each. Each reader takes the answer's head and then nothing, with a
    // small receive buffer.
    let mut open = Vec::new();
    for c in &clients {
        for _ in 0..2 {
            open.push(unread_download(c, "/history.csv").await);
        }
    }

    // Once each export has filled the socket and its buffer, none holds a connection: no export
    // query is running or in a transaction. (Polled: a loaded machine may be slow to get there;
    // a connection held while the client does not read would never be let go.)
    let busy = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from pg_stat_activity
             where datname = current_database() and state <> 'idle'
               and query like '%from prediction p%' and pid <> pg_backend_pid()",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut quiet_since = None;
    while Instant::now() < deadline {
        if busy().await == 0 {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                break;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        quiet_since.is_some_and(|s| s.elapsed() > Duration::from_secs(2)),
        "an unread export holds a connection"
    );
    // So every page still answers.
    let res = clients[0].get("/history").await;
    assert_eq!(res.status().as_u16(), 200);

    // A third export for the same user waits its turn.
    let res = clients[0].get("/history.csv").await;
    assert_eq!(res.status().as_u16(), 429);

    // Readers that hang up free their slots (at once, or after the send timeout at most), and
    // an export read to the end has every row.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(40);
    let res = loop {
        let res = clients[1].get("/history.csv").await;
        if res.status().as_u16() != 429 || Instant::now() > deadline {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(res.status().as_u16(), 200);
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().count(), 50_001);
}

/// Starts a download and reads only the answer's head, with a 4 KiB receive buffer: the server
/// soon cannot send more. The connection stays open as long as the stream lives.
async fn unread_download(client: &crate::helpers::TestApp, path: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = client
        .address
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let cookie = client.session_cookie().expect("signed in");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

// --- 6. metrics labels ------------------------------------------------------------------------

#[sqlx::test]
async fn unknown_methods_do_not_make_new_metrics_series(pool: PgPool) {
    let app = spawn_app(pool).await;
    let staff = app.token_for("root", true).await;
    for i in 0..20 {
        let method = Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        app.client
            .request(method, app.url("/"))
            .send()
            .await
            .unwrap();
    }
    app.get("/no/such/page/123").await;
    let text = app
        .api(Method::GET, "/metrics", &staff)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("FOO"), "no series per method string");
    assert!(text.contains("method=\"other\""));
    assert!(!text.contains("/no/such/page"));
    assert!(text.contains("route=\"unmatched\""));
}

// --- 8. smaller ones --------------------------------------------------------------------------

#[sqlx::test]
async fn csv_cells_that_could_be_formulas_are_neutralised(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("-ada", true).await;
    let res = app.predict_iris_example().await;
    assert_eq!(res.status().as_u16(), 303);
    let csv = app
        .get("/admin/predictions.csv")
        .await
        .text()
        .await
        .unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.contains(",'-ada,"), "{row}");
}

#[sqlx::test]
async fn card_markdown_keeps_only_http_https_and_mailto_links(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let card = std::fs::read_to_string("models/iris/1/card.toml").unwrap();
    let card = card.replacen(
        "description = \"\"\"\n",
        "description = \"\"\"\n[click](javascript:alert(1)) [docs](https://example.org) [mail](mailto:a@example.org)\n\n",
        1,
    );
    assert!(card.contains("javascript:"), "the card was changed");
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("js-card.toml");
    std::fs::write(&path, card).unwrap();
    let res = app
        .publish(&staff, "links", "models/iris/1/model.onnx", path.to_str())
        .await;
    assert_eq!(res.status().as_u16(), 201);
    app.sign_in("ada", false).await;
    let page = app.get_html("/models/links").await;
    assert!(!page.contains("javascript:"));
    assert!(page.contains("href=\"https://example.org\""));
    assert!(page.contains("href=\"mailto:a@example.org\""));
}

#[sqlx::test]
async fn pages_and_api_answers_are_not_cached_and_hsts_is_optional(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.hsts = true).await;
    app.import_models().await;
    app.sign_in("ada", false).await;
    let token = app.token_for("ada", false).await;
    let page = app.get("/history").await;
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let api = app
        .api(Method::GET, "/api/v1/models", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["cache-control"], "no-store");
    let css = app.get("/static/plinth.css").await;
    assert_ne!(css.headers()["cache-control"], "no-store");
}
