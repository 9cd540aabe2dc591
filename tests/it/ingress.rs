//! Qualifio posts to a source: who gets in, what is refused and why, and what a 2xx promises.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookfan::store::{Filter, SqliteStore, Status, Store};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Relay, for_destination, v2_with_id, wait_deliveries};

const CONFIG: &str = r#"
[server]
max_body = "8KiB"

[sources.basic]
basic = { username = "qualifio", password = "s3cret-pass" }

[sources.token]
token = "0123456789abcdef-token"

[sources.header]
header = { name = "X-Api-Token", value = "header-secret" }

[sources.signed]
hmac_secrets = ["new-secret", "old-secret"]

[sources.both]
basic = { username = "qualifio", password = "s3cret-pass" }
hmac_secrets = ["new-secret"]

[sources.open]
auth = "none"

[destinations.archive]
type = "file"
path = "out.jsonl"

[destinations.archive.fields]
id = "{{ participation.id }}"
"#;

fn sign(secret: &str, body: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_lets_qualifio_in_and_keeps_others_out() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/basic");
    let ok = relay
        .client
        .post(&url)
        .basic_auth("qualifio", Some("s3cret-pass"))
        .body(v2_with_id("b-1"))
        .send()
        .await
        .unwrap();
    let (status, body) = json(ok).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1);
    assert!(body["notification"].as_i64().unwrap() > 0);

    let wrong = relay
        .client
        .post(&url)
        .basic_auth("qualifio", Some("nope"))
        .body(v2_with_id("b-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(
        wrong.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    let (_, body) = json(wrong).await;
    // Says nothing about which check failed.
    assert_eq!(body, serde_json::json!({"error": "unauthorized"}));

    let missing = relay
        .client
        .post(&url)
        .body(v2_with_id("b-3"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_as_bearer_query_or_path_segment() {
    let relay = Relay::start(CONFIG).await;
    let token = "0123456789abcdef-token";
    let post = |url: String| {
        relay
            .client
            .post(url)
            .body(v2_with_id(&format!("t-{}", rand_suffix())))
    };
    let bearer = post(relay.url("/hooks/token"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 202);
    let query = post(relay.url(&format!("/hooks/token?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status().as_u16(), 202);
    let path = post(relay.url(&format!("/hooks/token/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(path.status().as_u16(), 202);

    for bad in [
        post(relay.url("/hooks/token"))
            .bearer_auth("wrong-token-0000000")
            .send()
            .await
            .unwrap(),
        post(relay.url("/hooks/token?token=wrong"))
            .send()
            .await
            .unwrap(),
        post(relay.url("/hooks/token/wrong-token-0000000"))
            .send()
            .await
            .unwrap(),
        post(relay.url("/hooks/token")).send().await.unwrap(),
        // A path segment means nothing on a source without a token.
        post(relay.url(&format!("/hooks/basic/{token}")))
            .basic_auth("qualifio", Some("s3cret-pass"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(bad.status().as_u16(), 401);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_schemes_are_case_insensitive() {
    let relay = Relay::start(CONFIG).await;
    let basic = base64::engine::general_purpose::STANDARD.encode("qualifio:s3cret-pass");
    for (path, authorization) in [
        ("/hooks/token", "bearer 0123456789abcdef-token".to_string()),
        ("/hooks/token", "BEARER 0123456789abcdef-token".to_string()),
        ("/hooks/basic", format!("basic {basic}")),
        ("/hooks/basic", format!("BASIC {basic}")),
    ] {
        let r = relay
            .client
            .post(relay.url(path))
            .header("authorization", &authorization)
            .body(v2_with_id(&format!("case-{}", rand_suffix())))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{authorization}");
    }
    relay.stop().await;
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_header_must_match() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/header");
    let ok = relay
        .client
        .post(&url)
        .header("X-Api-Token", "header-secret")
        .body(v2_with_id("h-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    let wrong = relay
        .client
        .post(&url)
        .header("X-Api-Token", "header-secreT")
        .body(v2_with_id("h-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_in_hex_or_base64_with_any_current_secret() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/signed");
    let b64 = base64::engine::general_purpose::STANDARD;
    let as_hex = |d: &[u8]| format!("sha256={}", hex(d));
    let as_b64 = |d: &[u8]| format!("sha256={}", b64.encode(d));
    let garbage = |_: &[u8]| "sha256=not-a-digest".to_string();
    type Render<'a> = &'a dyn Fn(&[u8]) -> String;
    let cases: [(&str, &str, Render, u16); 5] = [
        ("hex", "new-secret", &as_hex, 202),
        ("base64", "new-secret", &as_b64, 202),
        ("rotated", "old-secret", &as_hex, 202),
        ("unknown secret", "other-secret", &as_hex, 401),
        ("garbage", "new-secret", &garbage, 401),
    ];
    for (i, (what, secret, render, expected)) in cases.into_iter().enumerate() {
        let body = v2_with_id(&format!("s-{i}"));
        let header = render(&sign(secret, &body));
        let r = relay
            .client
            .post(&url)
            .header("X-Qualifio-Signature", header)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected, "{what}");
    }
    // Signed over other bytes than those sent.
    let body = v2_with_id("s-tampered");
    let header = format!("sha256={}", b64.encode(sign("new-secret", &body)));
    let r = relay
        .client
        .post(&url)
        .header("X-Qualifio-Signature", header)
        .body(body.replace("Amélie", "Amelie"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // No signature at all.
    let r = relay
        .client
        .post(&url)
        .body(v2_with_id("s-none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_kind_must_pass() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/both");
    let body = v2_with_id("both-1");
    let signature = format!("sha256={}", hex(&sign("new-secret", &body)));
    let only_basic = relay
        .client
        .post(&url)
        .basic_auth("qualifio", Some("s3cret-pass"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(only_basic.status().as_u16(), 401);
    let only_signed = relay
        .client
        .post(&url)
        .header("X-Qualifio-Signature", &signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(only_signed.status().as_u16(), 401);
    let both = relay
        .client
        .post(&url)
        .basic_auth("qualifio", Some("s3cret-pass"))
        .header("X-Qualifio-Signature", &signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(both.status().as_u16(), 202);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_notifications_get_400_with_a_reason() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/open");
    for (body, reason) in [
        ("{\"id\": ", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("{\"state\": \"COMPLETED\"}", "has no `id`"),
        ("{\"id\": 42}", "`id` must be a non-empty string"),
        ("{\"id\": \"  \"}", "`id` must be a non-empty string"),
        // Refused by a full parse, so refused here too: stored, they could never be mapped.
        ("{\"id\": \"x\", \"n\": 1e400}", "number out of range"),
        ("{\"id\": \"x\", \"s\": \"\\udc00\"}", "not valid JSON"),
    ] {
        let (status, json) = json(
            relay
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            json["error"].as_str().unwrap().contains(reason),
            "{body}: {json}"
        );
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_content_types_are_accepted() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/open");
    let xml = relay
        .client
        .post(&url)
        .header("content-type", "application/xml")
        .body(v2_with_id("ct-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status().as_u16(), 415);
    for (i, ct) in ["application/json; charset=utf-8", "text/plain"]
        .into_iter()
        .enumerate()
    {
        let r = relay
            .client
            .post(&url)
            .header("content-type", ct)
            .body(v2_with_id(&format!("ct-ok-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{ct}");
    }
    // reqwest sets no content type for a plain string body.
    let none = relay
        .client
        .post(&url)
        .body(v2_with_id("ct-none"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status().as_u16(), 202);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let relay = Relay::start(CONFIG).await;
    let big = format!("{{\"id\": \"big\", \"pad\": \"{}\"}}", "x".repeat(9 * 1024));
    let r = relay
        .client
        .post(relay.url("/hooks/open"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);

    // Chunked: the size is only known while reading.
    let addr = relay.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in big.as_bytes().chunks(1024) {
        let _ = stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = stream.write_all(chunk).await;
        let _ = stream.write_all(b"\r\n").await;
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Nothing of it was stored.
    let store = relay.store().await;
    assert!(store.list(&Filter::default()).await.unwrap().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_a_duplicate_but_a_changed_body_is_new() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/open");
    let body = v2_with_id("dup-1");
    let (s1, first) = json(
        relay
            .client
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (s2, again) = json(
        relay
            .client
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(
        again,
        serde_json::json!({"duplicate": true, "notification": first["notification"]})
    );

    // Qualifio sends an incomplete participation, then the completed one, with the same id.
    let changed = body.replace("COMPLETED", "STARTED");
    let (s3, third) = json(relay.client.post(&url).body(changed).send().await.unwrap()).await;
    assert_eq!(s3, 202);
    assert_ne!(third["notification"], first["notification"]);

    let store = relay.store().await;
    wait_deliveries(
        &store,
        for_destination("archive"),
        Status::Delivered,
        2,
        Duration::from_secs(10),
    )
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let relay = Relay::start(CONFIG).await;
    let h = relay
        .client
        .get(relay.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    let r = relay.client.get(relay.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_commit_gets_503_never_2xx() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let db = dir.path().join("hookfan.db");
    let store = Arc::new(
        SqliteStore::open_with(&db, Duration::from_millis(200))
            .await
            .unwrap(),
    );
    let relay = Relay::with(CONFIG)
        .dir(dir.clone())
        .store(store)
        .start()
        .await;
    let url = relay.url("/hooks/open");

    // Another process holds the write lock.
    use sqlx::Connection as _;
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, body) = json(
        relay
            .client
            .post(&url)
            .body(v2_with_id("locked-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let ready = relay.client.get(relay.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let (status, _) = json(
        relay
            .client
            .post(&url)
            .body(v2_with_id("locked-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 202,
        "the retry is new: the refused one was never stored"
    );
    // Readiness is probed at most once a second; then it says so.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ready = relay.client.get(relay.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let relay = Relay::start(CONFIG).await;
    let addr = relay.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Only the head: the answer must not wait for 100 000 bytes that never come.
    let head = "POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("413 before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    relay.stop().await;
}

/// Sends `head` then `trickle`, one byte a second, and returns what the relay answered and how
/// long the answer took.
async fn trickle(relay: &Relay, head: &str, trickle: &str) -> (String, Duration) {
    let addr = relay.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = tokio::time::Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let bytes = trickle.as_bytes().to_vec();
    let sender = tokio::spawn(async move {
        for b in bytes {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
        }
    });
    let mut answer = String::new();
    // The relay closes the connection after its answer: read_to_string ends.
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut answer))
        .await
        .expect("the relay let a trickle hold the connection")
        .unwrap();
    sender.abort();
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_sender_gets_408_and_the_connection_closes() {
    let config = CONFIG.replace(
        "max_body = \"8KiB\"",
        "max_body = \"8KiB\"\nread_timeout = \"2s\"",
    );
    let relay = Relay::start(&config).await;
    let body = v2_with_id("slow-1");
    // The body, a byte a second.
    let head = format!(
        "POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (answer, took) = trickle(&relay, &head, &body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    // The headers, a byte a second.
    let (answer, took) = trickle(
        &relay,
        "POST /hooks/open HTTP/1.1\r\n",
        "Host: relay\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    // Nothing was stored.
    let store = relay.store().await;
    assert!(store.list(&Filter::default()).await.unwrap().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_serves_https() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    crate::support::make_certificate(dir.path(), "cert", "localhost");
    let config = format!("[server.tls]\ncert = \"cert.pem\"\nkey = \"cert.key\"\n{CONFIG}");
    let relay = Relay::with(&config).dir(dir).tls().start().await;
    let r = relay
        .client
        .post(relay.url("/hooks/open"))
        .body(v2_with_id("tls-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Plain HTTP on the same port gets no answer worth the name.
    let plain = relay.base.replace("https://", "http://");
    let refused = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(refused.is_err() || !refused.unwrap().status().is_success());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_too_deep_is_refused_before_parsing() {
    let relay = Relay::start(CONFIG).await;
    let nested = |levels: usize| {
        // The object itself is one level; the rest are arrays.
        format!(
            "{{\"id\":\"deep-{levels}\",\"a\":{}{}}}",
            "[".repeat(levels - 1),
            "]".repeat(levels - 1)
        )
    };
    let post = |body: String| {
        relay
            .client
            .post(relay.url("/hooks/open"))
            .body(body)
            .send()
    };
    assert_eq!(post(nested(64)).await.unwrap().status().as_u16(), 202);
    let (status, body) = json(post(nested(65)).await.unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "the JSON is nested deeper than 64 levels");
    // Brackets inside strings are text, not nesting.
    let text = format!("{{\"id\":\"brackets\",\"note\":\"{}\"}}", "[".repeat(500));
    assert_eq!(post(text).await.unwrap().status().as_u16(), 202);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_credentials_are_slowed_down_but_valid_ones_are_not() {
    let relay = Relay::start(CONFIG).await;
    let url = relay.url("/hooks/basic");
    let attempt = |password: &'static str| {
        relay
            .client
            .post(&url)
            .basic_auth("qualifio", Some(password))
            .body(v2_with_id(&format!("guess-{}", rand_suffix())))
            .send()
    };
    for _ in 0..5 {
        assert_eq!(attempt("guess").await.unwrap().status().as_u16(), 401);
    }
    // The sixth failure waits half a second, the seventh a second.
    for at_least in [500, 1000] {
        let started = tokio::time::Instant::now();
        assert_eq!(attempt("guess").await.unwrap().status().as_u16(), 401);
        assert!(
            started.elapsed() >= Duration::from_millis(at_least),
            "{:?}",
            started.elapsed()
        );
    }
    // Qualifio, from the same address, is not held back.
    let started = tokio::time::Instant::now();
    assert_eq!(attempt("s3cret-pass").await.unwrap().status().as_u16(), 202);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_until_one_closes() {
    let config = CONFIG.replace(
        "max_body = \"8KiB\"",
        "max_body = \"8KiB\"\nmax_connections = 2\nread_timeout = \"30s\"",
    );
    let relay = Relay::start(&config).await;
    let addr = relay.base.trim_start_matches("http://").to_string();
    // Two connections that are busy sending their headers hold both places…
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
            .await
            .unwrap();
        busy.push(stream);
    }
    // …so a third is not served…
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(800), third.read(&mut answer))
            .await
            .is_err(),
        "served past the limit"
    );
    // …until one of them goes.
    drop(busy.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut answer))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_503_never_a_2xx_for_what_is_not_stored_and_accepting_resumes() {
    let disk = crate::support::SmallDisk::mount("2m");
    let config = format!(
        "[storage]\nurl = \"sqlite://{}/hookfan.db\"\n{CONFIG}",
        disk.path.display()
    );
    let relay = Relay::start(&config).await;
    let post = |id: String| {
        relay
            .client
            .post(relay.url("/hooks/open"))
            .body(v2_with_id(&id))
            .send()
    };
    assert_eq!(
        post("before-full".into()).await.unwrap().status().as_u16(),
        202
    );

    // The disk fills up. The write-ahead log may still have room it already took (once a
    // checkpoint has copied it all into the database, new commits overwrite it from the start):
    // what lands there is stored, flushed and answered 202. Then the log must grow, and cannot:
    // 503, and nothing of a refused notification is kept.
    let filler = disk.fill_up();
    let mut stored_while_full = Vec::new();
    let mut refused = 0;
    for i in 0..1000 {
        let id = format!("while-full-{i}");
        let status = post(id.clone()).await.unwrap().status().as_u16();
        match status {
            202 => stored_while_full.push(id),
            503 => {
                refused += 1;
                if refused == 10 {
                    break;
                }
            }
            other => panic!("{other} while the disk is full"),
        }
    }
    // (Commits small enough for room a failed one left, or freed by a checkpoint, can still
    // succeed between refusals; each is stored, checked below. So can `/readyz`'s one-row
    // probe, which is why it is not asked here.)
    assert_eq!(refused, 10, "the full disk was never noticed");

    // Space returns: the next posts are stored.
    std::fs::remove_file(filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if post(format!("after-{}", rand_suffix()))
            .await
            .unwrap()
            .status()
            .as_u16()
            == 202
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "accepting never resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing refused was stored; what was accepted is there, also while the disk was full.
    let store = SqliteStore::open(&disk.path.join("hookfan.db"))
        .await
        .unwrap();
    let stored: Vec<String> = store
        .list(&Filter {
            limit: 1000,
            ..Filter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.participation_id)
        .collect();
    let stored_while_refusing: Vec<&String> = stored
        .iter()
        .filter(|p| p.starts_with("while-full") && !stored_while_full.contains(p))
        .collect();
    assert!(
        stored_while_refusing.is_empty(),
        "{stored_while_refusing:?}"
    );
    for id in stored_while_full.iter().chain([&"before-full".to_string()]) {
        assert!(
            stored.contains(id),
            "{id} was answered 202 but is not stored"
        );
    }
    eprintln!(
        "while the disk was full: {} stored in the log's room, then {refused} refused",
        stored_while_full.len()
    );
    relay.stop().await;
}
