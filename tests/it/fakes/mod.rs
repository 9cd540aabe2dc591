//! Fakes of the outside world: real HTTP servers on 127.0.0.1:0 that a test scripts.

pub mod crm;
pub mod google;
pub mod netcut;
pub mod trello;

use std::future::Future;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tokio::time::Instant;

/// Serves every request with `handler` on 127.0.0.1:0, in the test's runtime; returns the base
/// URL (`http://127.0.0.1:PORT`). Bodies up to 16 MiB are read (a 2 MB Sheets append must get
/// through).
pub fn serve<F, Fut>(workers: usize, handler: F) -> String
where
    F: Fn(HttpRequest, web::Bytes) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::PayloadConfig::new(16 << 20))
            .default_service(web::to(handler.clone()))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(0)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    base
}

/// A request a fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn new(req: &HttpRequest, body: &[u8]) -> Received {
        Received {
            at: Instant::now(),
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the fake received JSON")
    }
}
