//! A fake Google on 127.0.0.1:0: the OAuth token endpoint (it checks the JWT-bearer grant and
//! verifies the assertion's RS256 signature with the test key's public key) and the Sheets API v4
//! calls hookfan makes — `values.get`, `values.update`, `values.append`, `spreadsheets.get` — over
//! an in-memory workbook. Answers can be scripted per call (429, 500, 403…), tokens revoked, and
//! every request is kept.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use super::crm::Reply;
use crate::support::FIXTURES;

/// The test service account. Its key is `tests/fixtures/google-TEST-ONLY-service-account-key.pem`:
/// generated with `openssl genpkey` for these tests, never used anywhere else.
pub const EMAIL: &str = "hookfan@campaign-relay.iam.gserviceaccount.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/spreadsheets";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Which endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    Token,
    /// `spreadsheets.get`
    Spreadsheet,
    /// `values.get`
    Get,
    /// `values.update`
    Update,
    /// `values.append`
    Append,
}

/// A request the fake received, and its answer's status.
#[derive(Debug, Clone)]
pub struct Request {
    pub call: Call,
    pub at: Instant,
    pub status: u16,
    /// The A1 range of a values call, decoded.
    pub range: String,
    pub query: HashMap<String, String>,
    /// The rows of an append or update, as sent.
    pub rows: Vec<Vec<String>>,
    /// Why the fake refused it, if it did on its own.
    pub problem: Option<String>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

struct Book {
    title: String,
    tabs: Vec<(String, Vec<Vec<String>>)>,
}

struct State {
    books: HashMap<String, Book>,
    script: HashMap<Call, VecDeque<Reply>>,
    requests: Vec<Request>,
    valid_tokens: Vec<String>,
    issued: usize,
    /// The public halves of the keys the service account has (DER); assertions signed by
    /// another key are refused.
    keys: Vec<Vec<u8>>,
    /// Answers to these calls are computed when the request arrives and sent this much later
    /// (a slow network): what a caller reads may be stale by the time it has it.
    slow: HashMap<Call, Duration>,
}

pub struct FakeGoogle {
    pub base: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
}

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(State {
            books: HashMap::new(),
            script: HashMap::new(),
            requests: Vec::new(),
            valid_tokens: Vec::new(),
            issued: 0,
            keys: vec![public_key_der(KEY_FILES[0])],
            slow: HashMap::new(),
        }));
        let arrived = Arc::new(Notify::new());
        let (s, a) = (state.clone(), arrived.clone());
        let base = super::serve(2, move |req: HttpRequest, body: web::Bytes| {
            let (s, a) = (s.clone(), a.clone());
            async move {
                let (response, late) = answer(&req, &body, &s);
                a.notify_waiters();
                if let Some(late) = late {
                    tokio::time::sleep(late).await;
                }
                response
            }
        });
        FakeGoogle {
            base,
            state,
            arrived,
        }
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base)
    }

    /// Writes a service-account key file for the test key, with `token_uri` pointing here.
    pub fn write_key(&self, dir: &Path) -> PathBuf {
        self.write_key_file(dir, 0)
    }

    /// The operator deletes the key in the Cloud console and makes a new one: the old key's
    /// assertions and every token issued so far are refused from now on.
    pub fn replace_key(&self) {
        let mut s = self.state.lock().unwrap();
        s.keys = vec![public_key_der(KEY_FILES[1])];
        s.valid_tokens.clear();
    }

    /// Writes the new key's JSON (see [`FakeGoogle::replace_key`]) over the old one's.
    pub fn write_new_key(&self, dir: &Path) -> PathBuf {
        self.write_key_file(dir, 1)
    }

    fn write_key_file(&self, dir: &Path, which: usize) -> PathBuf {
        let pem = std::fs::read_to_string(Path::new(FIXTURES).join(KEY_FILES[which].0)).unwrap();
        let key = json!({
            "type": "service_account",
            "project_id": "campaign-relay",
            "private_key_id": "test-only",
            "private_key": pem,
            "client_email": EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
        });
        let path = dir.join("service-account.json");
        std::fs::write(&path, serde_json::to_string_pretty(&key).unwrap()).unwrap();
        path
    }

    /// Creates (or replaces) a tab holding `rows`, in spreadsheet `id` (created as needed).
    pub fn add_tab(&self, id: &str, tab: &str, rows: &[&[&str]]) {
        let mut s = self.state.lock().unwrap();
        let book = s.books.entry(id.to_string()).or_insert_with(|| Book {
            title: "Campaign results".into(),
            tabs: Vec::new(),
        });
        let rows = rows
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        book.tabs.retain(|(t, _)| t != tab);
        book.tabs.push((tab.to_string(), rows));
    }

    /// A tab's rows as stored (cells as sent, without trailing empty ones).
    pub fn rows(&self, id: &str, tab: &str) -> Vec<Vec<String>> {
        let s = self.state.lock().unwrap();
        s.books
            .get(id)
            .and_then(|b| b.tabs.iter().find(|(t, _)| t == tab))
            .map(|(_, rows)| rows.clone())
            .unwrap_or_default()
    }

    /// Answers the next calls of this kind with these replies, in order.
    pub fn script(&self, call: Call, replies: impl IntoIterator<Item = Reply>) {
        self.state
            .lock()
            .unwrap()
            .script
            .entry(call)
            .or_default()
            .extend(replies);
    }

    /// Answers calls of this kind `late` after they arrive (see `State::slow`).
    pub fn slow(&self, call: Call, late: Duration) {
        self.state.lock().unwrap().slow.insert(call, late);
    }

    /// Every token issued so far stops working (401), as when Google revokes them.
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().valid_tokens.clear();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn calls(&self, call: Call) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.call == call)
            .collect()
    }

    /// Waits until the tab has at least `n` rows; panics after `within`.
    pub async fn wait_rows(
        &self,
        id: &str,
        tab: &str,
        n: usize,
        within: Duration,
    ) -> Vec<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let rows = self.rows(id, tab);
            if rows.len() >= n {
                return rows;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} rows within {within:?}, got {}: {:#?}\nrequests: {:#?}",
                    rows.len(),
                    rows,
                    self.requests()
                );
            }
        }
    }
}

/// A Google-shaped error.
pub fn google_error(code: u16, status: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message, "status": status}}).to_string()
}

/// The service account's test keys: (private key, public key) fixture files.
const KEY_FILES: [(&str, &str); 2] = [
    (
        "google-TEST-ONLY-service-account-key.pem",
        "google-TEST-ONLY-service-account-key.pub.pem",
    ),
    (
        "google-TEST-ONLY-service-account-key-2.pem",
        "google-TEST-ONLY-service-account-key-2.pub.pem",
    ),
];

/// A test key's public half, as ring wants it (PKCS#1 `RSAPublicKey`, DER).
fn public_key_der((_, public): (&str, &str)) -> Vec<u8> {
    let pem = std::fs::read_to_string(Path::new(FIXTURES).join(public)).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn reply(r: &Reply) -> HttpResponse {
    let mut response =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status).unwrap());
    for (n, v) in &r.headers {
        response.insert_header((n.as_str(), v.as_str()));
    }
    response
        .content_type("application/json; charset=UTF-8")
        .body(r.body.clone())
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply::status(status).body(&body.to_string())
}

/// `%XX` → bytes → text.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `'It''s'!A1:B2` → (`It's`, `A1:B2`).
fn split_range(range: &str) -> Option<(String, String)> {
    if let Some(rest) = range.strip_prefix('\'') {
        let mut title = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().map(|(_, n)| *n) == Some('\'') {
                    title.push('\'');
                    chars.next();
                    continue;
                }
                let cells = rest[i + 1..].strip_prefix('!')?;
                return Some((title, cells.to_string()));
            }
            title.push(c);
        }
        None
    } else {
        let (title, cells) = range.split_once('!')?;
        Some((title.to_string(), cells.to_string()))
    }
}

/// `D1` or `D1:E1` → (column index, row index), zero-based.
fn start_cell(cells: &str) -> Option<(usize, usize)> {
    let first = cells.split(':').next()?;
    let letters: String = first
        .chars()
        .take_while(|c| c.is_ascii_uppercase())
        .collect();
    let row: usize = first[letters.len()..].parse().ok()?;
    let mut col = 0usize;
    for c in letters.chars() {
        col = col * 26 + (c as usize - 'A' as usize + 1);
    }
    Some((col.checked_sub(1)?, row.checked_sub(1)?))
}

fn column_letter(index: usize) -> String {
    let mut n = index + 1;
    let mut out = String::new();
    while n > 0 {
        out.insert(0, (b'A' + ((n - 1) % 26) as u8) as char);
        n = (n - 1) / 26;
    }
    out
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows_of(body: &Value) -> Vec<Vec<String>> {
    body["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cells| cells.iter().map(cell_text).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The answer, and how long to hold it back.
fn answer(
    req: &HttpRequest,
    body: &[u8],
    state: &Mutex<State>,
) -> (HttpResponse, Option<Duration>) {
    // The JWT's audience must be the token endpoint it was posted to: this one.
    let token_uri = format!("http://{}/token", req.connection_info().host());
    let query: HashMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let path = req.path().to_string();
    let method = req.method().as_str().to_string();
    let mut s = state.lock().unwrap();

    // Which call, and on which spreadsheet and range.
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let (call, id, range) = match (method.as_str(), segments.as_slice()) {
        ("POST", [t]) if t == "token" => (Call::Token, String::new(), String::new()),
        ("GET", [v, s, id]) if v == "v4" && s == "spreadsheets" => {
            (Call::Spreadsheet, id.clone(), String::new())
        }
        (m, [v, s, id, values, range])
            if v == "v4" && s == "spreadsheets" && values == "values" =>
        {
            match (m, range.strip_suffix(":append")) {
                ("POST", Some(r)) => (Call::Append, id.clone(), r.to_string()),
                ("GET", None) => (Call::Get, id.clone(), range.clone()),
                ("PUT", None) => (Call::Update, id.clone(), range.clone()),
                _ => return (HttpResponse::NotFound().finish(), None),
            }
        }
        _ => return (HttpResponse::NotFound().finish(), None),
    };
    let body_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut record = Request {
        call,
        at: Instant::now(),
        status: 0,
        range: range.clone(),
        query: query.clone(),
        rows: rows_of(&body_json),
        problem: None,
    };

    let result = handle(
        &mut s, call, &id, &range, &query, body, &body_json, req, &token_uri,
    );
    let (reply, problem) = match result {
        Ok(r) => (r, None),
        Err((r, problem)) => (r, Some(problem)),
    };
    record.status = reply.status;
    record.problem = problem;
    s.requests.push(record);
    (self::reply(&reply), s.slow.get(&call).copied())
}

type Handled = Result<Reply, (Reply, String)>;

#[allow(clippy::too_many_arguments)]
fn handle(
    s: &mut State,
    call: Call,
    id: &str,
    range: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    body_json: &Value,
    req: &HttpRequest,
    token_uri: &str,
) -> Handled {
    if call == Call::Token {
        if let Some(r) = s.script.get_mut(&call).and_then(VecDeque::pop_front) {
            return Ok(r);
        }
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let refuse = |why: &str| {
            (
                json_reply(
                    400,
                    json!({"error": "invalid_grant", "error_description": why}),
                ),
                why.to_string(),
            )
        };
        if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(refuse("grant_type must be the JWT bearer grant"));
        }
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        verify_assertion(&assertion, &s.keys, token_uri).map_err(|e| refuse(&e))?;
        s.issued += 1;
        let token = format!("ya29.fake-token-{}", s.issued);
        s.valid_tokens.push(token.clone());
        return Ok(json_reply(
            200,
            json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
        ));
    }

    // The Sheets API: a valid bearer token first, as Google does.
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.valid_tokens.iter().any(|t| t == bearer) {
        return Err((
            Reply::status(401).body(&google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )),
            "no valid token".into(),
        ));
    }
    if let Some(r) = s.script.get_mut(&call).and_then(VecDeque::pop_front) {
        return Ok(r);
    }
    let not_found = || {
        (
            Reply::status(404).body(&google_error(
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
            )),
            "no such spreadsheet".to_string(),
        )
    };
    let book = s.books.get_mut(id).ok_or_else(not_found)?;
    if call == Call::Spreadsheet {
        let sheets: Vec<Value> = book
            .tabs
            .iter()
            .enumerate()
            .map(|(i, (title, rows))| {
                json!({"properties": {
                    "sheetId": i, "title": title, "index": i, "sheetType": "GRID",
                    "gridProperties": {"rowCount": rows.len().max(1000), "columnCount": 26}
                }})
            })
            .collect();
        return Ok(json_reply(
            200,
            json!({"spreadsheetId": id, "properties": {"title": book.title}, "sheets": sheets}),
        ));
    }
    let bad_range = |why: &str| {
        (
            Reply::status(400).body(&google_error(
                400,
                "INVALID_ARGUMENT",
                &format!("Unable to parse range: {range}"),
            )),
            why.to_string(),
        )
    };
    let (title, cells) = split_range(range).ok_or_else(|| bad_range("not A1 notation"))?;
    let rows = &mut book
        .tabs
        .iter_mut()
        .find(|(t, _)| *t == title)
        .ok_or_else(|| bad_range("no such tab"))?
        .1;
    let quoted = format!("'{}'", title.replace('\'', "''"));
    let invalid = |why: String| {
        (
            Reply::status(400).body(&google_error(400, "INVALID_ARGUMENT", &why)),
            why,
        )
    };
    match call {
        Call::Get => {
            if cells != "1:1" {
                return Err(invalid(format!("this fake reads row 1 only, not {cells}")));
            }
            let mut row = rows.first().cloned().unwrap_or_default();
            while row.last().is_some_and(String::is_empty) {
                row.pop();
            }
            let mut answer = json!({"range": format!("{quoted}!A1:Z1"), "majorDimension": "ROWS"});
            if !row.is_empty() {
                answer["values"] = json!([row]);
            }
            Ok(json_reply(200, answer))
        }
        Call::Update => {
            if query.get("valueInputOption").map(String::as_str) != Some("RAW") {
                return Err(invalid("header cells must be written RAW".into()));
            }
            let (col, row) =
                start_cell(&cells).ok_or_else(|| invalid(format!("bad cells {cells}")))?;
            let values = rows_of(body_json);
            for (r, cells) in values.iter().enumerate() {
                while rows.len() <= row + r {
                    rows.push(Vec::new());
                }
                let target = &mut rows[row + r];
                for (c, v) in cells.iter().enumerate() {
                    while target.len() <= col + c {
                        target.push(String::new());
                    }
                    target[col + c] = v.clone();
                }
            }
            Ok(json_reply(
                200,
                json!({"spreadsheetId": id, "updatedRange": format!("{quoted}!{cells}"), "updatedRows": values.len()}),
            ))
        }
        Call::Append => {
            let input = query.get("valueInputOption").map(String::as_str);
            if !matches!(input, Some("RAW" | "USER_ENTERED")) {
                return Err(invalid(format!("valueInputOption {input:?}")));
            }
            if query.get("insertDataOption").map(String::as_str) != Some("INSERT_ROWS") {
                return Err(invalid("insertDataOption must be INSERT_ROWS".into()));
            }
            if cells != "A1" {
                return Err(invalid(format!("appends go to A1, not {cells}")));
            }
            let values = rows_of(body_json);
            if values.is_empty() {
                return Err(invalid("no rows".into()));
            }
            let first = rows.len() + 1;
            let width = values.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let mut added = values;
            for r in &mut added {
                while r.last().is_some_and(String::is_empty) {
                    r.pop();
                }
            }
            let n = added.len();
            rows.extend(added);
            Ok(json_reply(
                200,
                json!({
                    "spreadsheetId": id,
                    "tableRange": format!("{quoted}!A1:{}{}", column_letter(width - 1), first - 1),
                    "updates": {
                        "spreadsheetId": id,
                        "updatedRange": format!("{quoted}!A{first}:{}{}", column_letter(width - 1), first + n - 1),
                        "updatedRows": n,
                        "updatedColumns": width,
                        "updatedCells": n * width,
                    }
                }),
            ))
        }
        Call::Token | Call::Spreadsheet => unreachable!("handled above"),
    }
}

/// Google's checks on a service-account assertion: RS256 over `header.claims` with the key's
/// public half, issued by the service account, for this endpoint and the spreadsheets scope,
/// not expired.
fn verify_assertion(assertion: &str, keys: &[Vec<u8>], token_uri: &str) -> Result<(), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("the assertion is not a JWT".into());
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|e| format!("bad base64url: {e}"))
    };
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg must be RS256, got {}", header["alg"]));
    }
    let signed = &assertion[..assertion.rfind('.').unwrap_or(0)];
    let signature = decode(signature)?;
    let signed_by_a_key = keys.iter().any(|key| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(signed.as_bytes(), &signature)
            .is_ok()
    });
    if !signed_by_a_key {
        return Err("Invalid JWT Signature.".into());
    }
    let claims: Value = serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let now = jiff::Timestamp::now().as_second();
    if claims["iss"] != EMAIL {
        return Err(format!("iss {} is not the service account", claims["iss"]));
    }
    if claims["aud"] != token_uri {
        return Err(format!("aud {} is not {token_uri}", claims["aud"]));
    }
    if claims["scope"] != SCOPE {
        return Err(format!("scope {} is not {SCOPE}", claims["scope"]));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if exp <= now || iat > now + 60 || exp - iat > 3600 {
        return Err(format!("bad iat/exp {iat}/{exp} at {now}"));
    }
    Ok(())
}
