//! The JSON API: the CLI's operations over HTTP, and Prometheus metrics.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, unauthorized};
use crate::commands::{log, operate};
use crate::store::{Filter, Selection, Status, StoreError, now_ms};

fn bad_request(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message.into() }))
}

fn store_error(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "admin: the store failed");
    HttpResponse::ServiceUnavailable().json(json!({ "error": format!("the store failed: {e}") }))
}

/// A field that was given, trimmed; empty means not given.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The list's filters, as query parameters or form fields (all optional).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub destination: Option<String>,
    /// e.g. `1h`, `7d`.
    pub since: Option<String>,
    pub participation: Option<String>,
    pub limit: Option<u32>,
}

impl ListQuery {
    /// The store filter; empty fields mean no filter.
    pub fn filter(&self) -> Result<Filter, String> {
        Ok(Filter {
            status: given(&self.status).map(parse_status).transpose()?,
            destination: given(&self.destination).map(str::to_owned),
            participation_id: given(&self.participation).map(str::to_owned),
            since: given(&self.since).map(ago).transpose()?,
            limit: self.limit.unwrap_or(100).min(1000),
        })
    }
}

pub fn parse_status(text: &str) -> Result<Status, String> {
    text.parse().map_err(|_| {
        let words: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!("status {text:?} is not one of {}", words.join(", "))
    })
}

/// Unix milliseconds `text` (a duration) ago.
pub fn ago(text: &str) -> Result<i64, String> {
    let d = hookfan_connectors::units::parse_duration(text)?;
    Ok(now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

pub async fn list(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    let filter = match query.filter() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    match log::list(state.store.as_ref(), &filter).await {
        Ok(items) => HttpResponse::Ok().json(items),
        Err(e) => store_error(&e),
    }
}

pub async fn show(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<i64>,
) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    let id = id.into_inner();
    match log::show(&state.config(), state.store.as_ref(), id).await {
        Ok(Some(detail)) => HttpResponse::Ok().json(detail),
        Ok(None) => HttpResponse::NotFound().json(json!({ "error": format!("no delivery {id}") })),
        Err(e) => store_error(&e),
    }
}

/// `{"ids": [1, 2]}`, or `{"status": "dead", "destination": "crm", "since": "24h"}`; `force`
/// replays delivered ones too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    #[serde(default)]
    pub ids: Vec<i64>,
    pub status: Option<String>,
    pub destination: Option<String>,
    pub since: Option<String>,
    #[serde(default)]
    pub force: bool,
}

pub async fn replay(
    req: HttpRequest,
    state: web::Data<AdminState>,
    body: web::Json<ReplayBody>,
) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    let selection = match (&body.status, body.ids.is_empty()) {
        (Some(status), true) => {
            let status = match parse_status(status) {
                Ok(s) => s,
                Err(e) => return bad_request(e),
            };
            let since = match body.since.as_deref().map(ago).transpose() {
                Ok(s) => s,
                Err(e) => return bad_request(e),
            };
            Selection::Matching {
                status: Some(status),
                destination: body.destination.clone(),
                since,
            }
        }
        (None, false) if body.destination.is_none() && body.since.is_none() => {
            Selection::Ids(body.ids.clone())
        }
        _ => return bad_request("give either `ids`, or `status` (with `destination` and `since`)"),
    };
    match state.store.replay(&selection, body.force).await {
        Ok(r) => {
            state.worker.wake_all();
            replayed(r)
        }
        Err(e) => store_error(&e),
    }
}

fn replayed(r: crate::store::Replayed) -> HttpResponse {
    match operate::missing_text(&r) {
        Some(missing) => HttpResponse::NotFound().json(json!({
            "error": missing,
            "replayed": r.replayed,
            "missing": r.missing,
            "skipped_delivered": r.skipped_delivered,
        })),
        None => HttpResponse::Ok().json(r),
    }
}

/// `{"destination": "crm"}`, with `"status": "pending"` or `"retrying"` to cancel only those.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    pub destination: String,
    pub status: Option<String>,
}

pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AdminState>,
    body: web::Json<CancelBody>,
) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    let statuses: Vec<Status> = match body.status.as_deref().map(parse_status).transpose() {
        Ok(Some(s)) if !s.is_waiting() => {
            return bad_request("only pending or retrying deliveries can be cancelled");
        }
        Ok(s) => s.into_iter().collect(),
        Err(e) => return bad_request(e),
    };
    match operate::cancel(state.store.as_ref(), &body.destination, &statuses).await {
        Ok(n) => HttpResponse::Ok().json(json!({ "cancelled": n })),
        Err(e) => store_error(&e),
    }
}

pub async fn stats(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    match log::stats(&state.config(), state.store.as_ref()).await {
        Ok(items) => HttpResponse::Ok().json(items),
        Err(e) => store_error(&e),
    }
}

pub async fn metrics(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.api_allowed(&req) {
        return unauthorized();
    }
    match log::stats(&state.config(), state.store.as_ref()).await {
        Ok(items) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(state.metrics.encode(&items)),
        Err(e) => store_error(&e),
    }
}
