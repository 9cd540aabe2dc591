//! A fake CRM (or any webhook receiver): answers from a script, then a default, and keeps every
//! request it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

pub use super::Received;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a hanging destination).
    pub delay: Duration,
    /// Answer with the request's headers and body, as some CRMs do in their errors.
    pub echo: bool,
    /// Answer only once the test adds a permit here (a destination the test holds open).
    pub held: Option<Arc<Semaphore>>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
            echo: false,
            held: None,
        }
    }

    pub fn echo(mut self) -> Reply {
        self.echo = true;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Answers each request once `release` has a permit for it.
    pub fn held(mut self, release: Arc<Semaphore>) -> Reply {
        self.held = Some(release);
        self
    }
}

struct State {
    script: VecDeque<Reply>,
    default: Reply,
    received: Vec<Received>,
}

pub struct FakeCrm {
    pub base: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
}

impl FakeCrm {
    /// Starts a fake that answers 200 unless scripted otherwise.
    pub async fn start() -> FakeCrm {
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            default: Reply::status(200).body("{\"ok\":true}"),
            received: Vec::new(),
        }));
        let arrived = Arc::new(Notify::new());
        let (s, a) = (state.clone(), arrived.clone());
        let base = super::serve(1, move |req: HttpRequest, body: web::Bytes| {
            let (s, a) = (s.clone(), a.clone());
            async move { answer(req, body, s, a).await }
        });
        FakeCrm {
            base,
            state,
            arrived,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers these first, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Answers this once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests arrived; panics after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} requests within {within:?}, got {}: {:#?}",
                    got.len(),
                    got
                );
            }
        }
    }
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
) -> HttpResponse {
    let reply = {
        let mut s = state.lock().unwrap();
        s.received.push(Received::new(&req, &body));
        let default = s.default.clone();
        s.script.pop_front().unwrap_or(default)
    };
    arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if let Some(release) = &reply.held
        && let Ok(permit) = release.acquire().await
    {
        permit.forget();
    }
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    for (n, v) in &reply.headers {
        response.insert_header((n.as_str(), v.as_str()));
    }
    if reply.echo {
        let mut echoed = String::from("you sent:\n");
        for (name, value) in req.headers() {
            echoed.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or_default()));
        }
        echoed.push_str(&String::from_utf8_lossy(&body));
        return response.body(echoed);
    }
    response.body(reply.body)
}
