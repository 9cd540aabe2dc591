//! A fake Trello: one board with one list, cards made by `POST /1/cards`, custom fields and
//! attachments set on them, every request kept. Answers 401 unless the `Authorization` header
//! carries [`KEY`] and [`TOKEN`]; a test can script an answer for the next matching request,
//! with or without doing the work first (a 504 after the card was made).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::fakes::Received;
use crate::fakes::crm::Reply;

pub const KEY: &str = "fakekey0123456789abcdef0123456789";
pub const TOKEN: &str = "ATTAfaketoken9876543210fedcba9876543210";
pub const LIST: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";
pub const LIST_NAME: &str = "Prize winners";
pub const BOARD: &str = "5f1b2c3d4e5f6a7b8c9d0b0a";
pub const BOARD_NAME: &str = "Winter quiz 2026";

/// A card as the fake keeps it.
#[derive(Debug, Clone)]
pub struct Card {
    pub id: String,
    /// The body of the `POST /1/cards` that made it.
    pub body: Value,
    /// Custom field id → the body of the `PUT` that set it.
    pub custom_fields: BTreeMap<String, Value>,
    /// The bodies of the attachment `POST`s.
    pub attachments: Vec<Value>,
}

/// An answer for the next request with this method whose path contains `path`.
struct Scripted {
    method: String,
    path: String,
    reply: Reply,
    /// Do the work, then answer with `reply` anyway.
    apply: bool,
}

struct State {
    cards: Vec<Card>,
    received: Vec<Received>,
    script: Vec<Scripted>,
    made: u64,
}

pub struct FakeTrello {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl FakeTrello {
    pub async fn start() -> FakeTrello {
        let state = Arc::new(Mutex::new(State {
            cards: Vec::new(),
            received: Vec::new(),
            script: Vec::new(),
            made: 0,
        }));
        let s = state.clone();
        let base = super::serve(1, move |req: HttpRequest, body: web::Bytes| {
            let s = s.clone();
            async move { answer(req, body, s).await }
        });
        FakeTrello { base, state }
    }

    /// The next `method` request whose path contains `path` gets `reply`, and nothing is done.
    pub fn fail_once(&self, method: &str, path: &str, reply: Reply) {
        self.script(method, path, reply, false);
    }

    /// The next `method` request whose path contains `path` is carried out, then answered with
    /// `reply` (a gateway time-out after the work was done).
    pub fn do_then_answer(&self, method: &str, path: &str, reply: Reply) {
        self.script(method, path, reply, true);
    }

    fn script(&self, method: &str, path: &str, reply: Reply, apply: bool) {
        self.state.lock().unwrap().script.push(Scripted {
            method: method.into(),
            path: path.into(),
            reply,
            apply,
        });
    }

    pub fn cards(&self) -> Vec<Card> {
        self.state.lock().unwrap().cards.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

/// The header a client with [`KEY`] and [`TOKEN`] sends.
pub fn expected_authorization() -> String {
    format!("OAuth oauth_consumer_key=\"{KEY}\", oauth_token=\"{TOKEN}\"")
}

async fn answer(req: HttpRequest, body: web::Bytes, state: Arc<Mutex<State>>) -> HttpResponse {
    let received = Received::new(&req, &body);
    let (status, reply) = {
        let mut s = state.lock().unwrap();
        s.received.push(received.clone());
        let scripted = s
            .script
            .iter()
            .position(|x| x.method == received.method && received.path.contains(&x.path))
            .map(|i| s.script.remove(i));
        match scripted {
            Some(x) if !x.apply => (x.reply.status, x.reply),
            Some(x) => {
                let _ = handle(&mut s, &received);
                (x.reply.status, x.reply)
            }
            None => {
                let (status, value) = handle(&mut s, &received);
                // Trello answers errors in plain text, the rest in JSON.
                let body = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                (status, Reply::status(status).body(&body))
            }
        }
    };
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    for (n, v) in &reply.headers {
        response.insert_header((n.as_str(), v.as_str()));
    }
    response.body(reply.body)
}

/// What Trello would do and answer.
fn handle(s: &mut State, r: &Received) -> (u16, Value) {
    if r.header("authorization") != Some(expected_authorization().as_str()) {
        return (401, Value::from("invalid token"));
    }
    let not_found = (404, Value::from("The requested resource was not found."));
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    match (r.method.as_str(), parts.as_slice()) {
        ("POST", ["1", "cards"]) => {
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if body["idList"] != LIST {
                return not_found;
            }
            s.made += 1;
            let secs = jiff::Timestamp::now().as_second();
            let id = format!("{secs:08x}{:016x}", s.made);
            let short = format!("https://trello.com/c/fake{}", s.made);
            s.cards.push(Card {
                id: id.clone(),
                body: body.clone(),
                custom_fields: BTreeMap::new(),
                attachments: Vec::new(),
            });
            (
                200,
                json!({"id": id, "name": body["name"], "desc": body["desc"], "idList": LIST,
                       "shortUrl": short, "url": format!("{short}/1-card")}),
            )
        }
        ("PUT", ["1", "cards", card, "customField", field, "item"]) => {
            let Some(c) = s.cards.iter_mut().find(|c| c.id == *card) else {
                return not_found;
            };
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            c.custom_fields.insert(field.to_string(), body.clone());
            (
                200,
                json!({"id": "cfi1", "idCustomField": field, "idModel": card, "value": body["value"]}),
            )
        }
        ("POST", ["1", "cards", card, "attachments"]) => {
            let Some(c) = s.cards.iter_mut().find(|c| c.id == *card) else {
                return not_found;
            };
            let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            c.attachments.push(body.clone());
            (
                200,
                json!({"id": "att1", "url": body["url"], "name": body["name"]}),
            )
        }
        ("GET", ["1", "lists", list, "cards"]) if *list == LIST => {
            let cards: Vec<Value> = s
                .cards
                .iter()
                .map(|c| json!({"id": c.id, "name": c.body["name"], "desc": c.body["desc"]}))
                .collect();
            (200, Value::Array(cards))
        }
        ("GET", ["1", "lists", list]) if *list == LIST => (
            200,
            json!({"id": LIST, "name": LIST_NAME, "closed": false, "idBoard": BOARD}),
        ),
        ("GET", ["1", "boards", board]) if *board == BOARD => (
            200,
            json!({"id": BOARD, "name": BOARD_NAME, "url": "https://trello.com/b/fakeboard/winter-quiz-2026"}),
        ),
        _ => not_found,
    }
}
