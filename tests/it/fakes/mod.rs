//! Fakes of the outside world: real HTTP servers on 127.0.0.1:0 that a test scripts.

pub mod crm;
pub mod google;
pub mod trello;

use actix_web::HttpRequest;
use tokio::time::Instant;

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
