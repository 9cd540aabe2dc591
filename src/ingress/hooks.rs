//! `POST <source path>`: authenticate, limit, parse, route, store durably, then answer.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use serde_json::json;
use sha2::Digest as _;

use super::{AppState, auth, head};
use crate::config::{Config, Source};
use crate::live::Live;
use crate::metrics::Received;
use crate::payload::Format;
use crate::store::{Accepted, Incoming, now_ms};

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

/// 401, after a delay when this peer keeps failing (see `throttle`).
async fn unauthorized(
    state: &AppState,
    source: &Source,
    req: &HttpRequest,
    failed: auth::Failed,
) -> HttpResponse {
    let peer = req.peer_addr().map(|a| a.ip());
    let delay = peer.map_or(std::time::Duration::ZERO, |ip| {
        state.throttle.failed(ip, tokio::time::Instant::now())
    });
    tracing::warn!(
        source = %source.name,
        failed,
        peer = %peer.map(|ip| ip.to_string()).unwrap_or_default(),
        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "authentication failed"
    );
    tokio::time::sleep(delay).await;
    let mut response = HttpResponse::Unauthorized();
    if source.auth.basic.is_some() {
        response.insert_header((
            header::WWW_AUTHENTICATE,
            "Basic realm=\"hookfan\", charset=\"UTF-8\"",
        ));
    }
    response.json(json!({ "error": "unauthorized" }))
}

/// JSON, `text/plain` (some senders mislabel JSON) or no content type at all.
fn acceptable_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence == "text/plain"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads the body within `limit`, refusing more than `max` bytes: at once when
/// `Content-Length` says so, otherwise as soon as the stream passes it. A sender too slow for
/// `limit` gets 408 and the connection is closed, so a trickle cannot hold it open.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    max: u64,
    limit: std::time::Duration,
) -> Result<Vec<u8>, HttpResponse> {
    match tokio::time::timeout(limit, read_body_unbounded(req, payload, max)).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                peer = %req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default(),
                "the body did not arrive in time; answering 408"
            );
            Err(HttpResponse::build(StatusCode::REQUEST_TIMEOUT)
                .force_close()
                .json(json!({ "error": format!("the body did not arrive within {}s", limit.as_secs_f64()) })))
        }
    }
}

async fn read_body_unbounded(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: u64,
) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // Grows as bytes arrive: a declared length reserves at most 64 KiB before they do.
    let mut body = Vec::with_capacity(declared.unwrap_or(4096).min(max).min(64 * 1024) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The deepest nesting of objects and arrays a notification may have (Qualifio's are 5 deep):
/// checked before parsing, so a hostile body cannot make the parser work for nothing.
pub const MAX_DEPTH: usize = 64;

/// Whether JSON text nests objects and arrays deeper than `max`. Brackets inside strings do not
/// count; the text need not be valid JSON (the parser says what else is wrong).
fn nested_deeper_than(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Validates the document: a JSON object with a non-empty string `id`, nested at most
/// [`MAX_DEPTH`] deep. Public for the fuzz targets, which feed it arbitrary bytes.
pub fn parse(body: &[u8]) -> Result<(serde_json::Value, String), String> {
    let (id, _) = parse_head(body)?;
    let doc =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    Ok((doc, id))
}

/// Validates the document as [`parse`] does, and returns its `id` and its format.
pub fn parse_head(body: &[u8]) -> Result<(String, Format), String> {
    if nested_deeper_than(body, MAX_DEPTH) {
        return Err(format!("the JSON is nested deeper than {MAX_DEPTH} levels"));
    }
    // Only an object is a notification: valid JSON of another kind is told so.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match head::is_json(body) {
            Ok(()) => "the body must be a JSON object".to_string(),
            Err(e) => format!("the body is not valid JSON: {e}"),
        });
    }
    let head: head::Head = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() && e.to_string().starts_with("invalid type") {
            "the body must be a JSON object".to_string()
        } else {
            format!("the body is not valid JSON: {e}")
        }
    })?;
    let id = match head.id {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s,
        Some(_) => return Err("`id` must be a non-empty string".into()),
        None => return Err("the object has no `id`".into()),
    };
    let format = Format::from_configuration(head.configuration.as_ref().and_then(|c| c.as_str()));
    Ok((id, format))
}

/// The source a path belongs to: its own path, or its path and one more segment (a token).
fn find_source<'a>(config: &'a Config, path: &str) -> Option<(&'a Source, Option<String>)> {
    config.sources.iter().find_map(|s| {
        if path == s.path {
            return Some((s, None));
        }
        let segment = path.strip_prefix(s.path.as_str())?.strip_prefix('/')?;
        (!segment.is_empty() && !segment.contains('/')).then(|| {
            let token = percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned();
            (s, Some(token))
        })
    })
}

/// Every request that is not `/healthz` or `/readyz`: a `POST` to a source's path, else 404
/// or 405.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let live = state.live.get();
    let Some((source, path_token)) = find_source(&live.config, req.path()) else {
        return error(StatusCode::NOT_FOUND, "no source at this path");
    };
    if req.method() != actix_web::http::Method::POST {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "POST"))
            .json(json!({ "error": "a source takes POST only" }));
    }
    let response = handle(req, payload, &state, &live, source, path_token).await;
    state.metrics.received(
        &source.name,
        Received::from_status(response.status().as_u16()),
    );
    response
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    live: &Live,
    source: &Source,
    path_token: Option<String>,
) -> HttpResponse {
    if state.draining() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; try again shortly",
        );
    }
    if let Err(failed) = auth::check_credentials(&source.auth, &req, path_token.as_deref()) {
        return unauthorized(state, source, &req, failed).await;
    }
    if !acceptable_content_type(&req) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the notification as application/json",
        );
    }
    let server = &live.config.server;
    let body = match read_body(&req, payload, server.max_body, server.read_timeout).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    if !auth::check_signature(&source.auth, &req, &body) {
        return unauthorized(state, source, &req, "signature").await;
    }
    let (participation_id, format) = match parse_head(&body) {
        Ok(v) => v,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // The bytes were parsed as JSON above, so they are UTF-8.
    let Ok(text) = String::from_utf8(body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let received_at = now_ms();
    let destinations = crate::router::routed(&live.config, &live.mapper, &source.name, || {
        // Valid JSON: it was parsed above.
        let doc = serde_json::from_str(&text).unwrap_or_default();
        crate::mapping::context(doc, received_at)
    });
    let incoming = Incoming {
        source: source.name.clone(),
        participation_id,
        format: format.as_str(),
        body_sha256: hex(&sha2::Sha256::digest(text.as_bytes())),
        body: text,
        received_at,
        destinations: destinations.clone(),
    };
    match state.store.accept(incoming).await {
        Ok(Accepted::New {
            notification,
            deliveries,
        }) => {
            for d in &destinations {
                state.worker.wake(d);
            }
            HttpResponse::Accepted()
                .json(json!({ "notification": notification, "deliveries": deliveries }))
        }
        Ok(Accepted::Duplicate { notification }) => {
            HttpResponse::Ok().json(json!({ "duplicate": true, "notification": notification }))
        }
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "cannot store a notification; answering 503");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; try again",
            )
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
