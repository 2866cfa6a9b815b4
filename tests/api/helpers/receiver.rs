//! A receiver of webhook deliveries on a free port, answering as a test tells it to.

use super::*;

/// A free loopback port, for a real `plinth serve` a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A webhook receiver on a loopback port: it answers 500 to the first `failures` requests and
/// 200 after, and keeps every body it was sent.
pub struct Receiver {
    pub url: String,
    pub bodies: Arc<Mutex<Vec<serde_json::Value>>>,
    pub(super) _server: actix_web::dev::ServerHandle,
}

pub async fn receiver(failures: usize) -> Receiver {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (kept, count) = (bodies.clone(), seen.clone());
    let server = HttpServer::new(move || {
        let (kept, count) = (kept.clone(), count.clone());
        App::new().default_service(web::to(move |body: web::Bytes| {
            let (kept, count) = (kept.clone(), count.clone());
            async move {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < failures {
                    return HttpResponse::InternalServerError().body(format!("down ({n})"));
                }
                let value: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                kept.lock().unwrap().push(value);
                HttpResponse::Ok().body("ok")
            }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/hook"),
        bodies,
        _server: handle,
    }
}

impl Receiver {
    pub fn events(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub async fn wait_for(&self, event: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(b) = self
                .bodies
                .lock()
                .unwrap()
                .iter()
                .find(|b| b["event"] == event)
            {
                return b.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {event} arrived: {:?}",
                self.events()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
