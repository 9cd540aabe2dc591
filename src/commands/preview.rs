//! `hookfan preview`: for a real payload, what each destination would receive.

use std::sync::Arc;

use hookfan_connectors::{Connector, Record};
use serde_json::{Value, json};

use crate::config::Config;
use crate::router;
use crate::store::now_ms;

/// One destination's preview.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestinationPreview {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub routed: bool,
    pub reason: Option<String>,
    pub fields: Vec<(String, String)>,
    /// A field that failed to render (the delivery would be dead with this message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request the connector would send, secrets redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<hookfan_connectors::Described>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("the payload is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the payload must be a JSON object")]
    NotObject,
    #[error("no destination named {0:?}")]
    NoSuchDestination(String),
    #[error("no source named {0:?} (sources: {1})")]
    NoSuchSource(String, String),
    #[error("{0}")]
    Setup(String),
}

/// Maps `payload` for every destination (or only `only`), as if it came from `source`, and shows
/// the request each connector would send.
pub fn preview(
    config: &Config,
    payload: &str,
    only: Option<&str>,
    source: Option<&str>,
) -> Result<Vec<DestinationPreview>, PreviewError> {
    let mut prepared = prepare(config, payload, only, source, now_ms(), 0)?;
    for (preview, ready) in prepared.iter_mut() {
        if let Some((connector, record)) = ready {
            preview.request = Some(connector.describe(record));
        }
    }
    Ok(prepared.into_iter().map(|(p, _)| p).collect())
}

/// What `destination` would receive now for a stored notification (the delivery log's detail):
/// its fields mapped with today's config, and the request, secrets redacted. `None` when the
/// config no longer has the destination.
pub fn for_delivery(
    config: &Config,
    body: &str,
    destination: &str,
    received_at_ms: i64,
    delivery_id: i64,
) -> Result<Option<DestinationPreview>, PreviewError> {
    if config.destination(destination).is_none() {
        return Ok(None);
    }
    let mut prepared = prepare(
        config,
        body,
        Some(destination),
        None,
        received_at_ms,
        delivery_id,
    )?;
    Ok(prepared.pop().map(|(mut preview, ready)| {
        if let Some((connector, record)) = ready {
            preview.request = Some(connector.describe(&record));
        }
        preview
    }))
}

/// [`preview`], after asking each destination what shapes its request (Sheets: the header row,
/// so the row shows in the sheet's column order). A destination that cannot be reached says so
/// in `error` and shows the offline request.
pub async fn preview_online(
    config: &Config,
    payload: &str,
    only: Option<&str>,
    source: Option<&str>,
) -> Result<Vec<DestinationPreview>, PreviewError> {
    let mut prepared = prepare(config, payload, only, source, now_ms(), 0)?;
    for (preview, ready) in prepared.iter_mut() {
        if let Some((connector, record)) = ready {
            preview.request = Some(match connector.describe_online(record).await {
                Ok(described) => described,
                Err(e) => {
                    preview.error = Some(format!("online: {e}"));
                    connector.describe(record)
                }
            });
        }
    }
    Ok(prepared.into_iter().map(|(p, _)| p).collect())
}

type Ready = Option<(Arc<dyn Connector>, Record)>;

/// Routes and maps, as if the notification was received at `received_at_ms` and its delivery
/// had `delivery_id`; each destination whose fields rendered gets its connector and record.
fn prepare(
    config: &Config,
    payload: &str,
    only: Option<&str>,
    source: Option<&str>,
    received_at_ms: i64,
    delivery_id: i64,
) -> Result<Vec<(DestinationPreview, Ready)>, PreviewError> {
    let doc: Value = serde_json::from_str(payload).map_err(PreviewError::NotJson)?;
    if !doc.is_object() {
        return Err(PreviewError::NotObject);
    }
    if let Some(name) = only
        && config.destination(name).is_none()
    {
        return Err(PreviewError::NoSuchDestination(name.into()));
    }
    // A misspelt source would silently route as if no destination listened to it.
    if let Some(name) = source
        && !config.sources.iter().any(|s| s.name == name)
    {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(PreviewError::NoSuchSource(name.into(), names.join(", ")));
    }
    let mapper = config
        .mapper()
        .map_err(|e| PreviewError::Setup(e.to_string()))?;
    let client =
        hookfan_connectors::http::client().map_err(|e| PreviewError::Setup(e.to_string()))?;
    let participation_id = doc
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ctx = crate::mapping::context(doc, received_at_ms);
    let routes = router::route(config, &mapper, source, &ctx);
    let mut out = Vec::new();
    for (d, route) in config.destinations.iter().zip(routes) {
        if only.is_some_and(|n| n != d.name) {
            continue;
        }
        let (fields, mut error) = match mapper.fields(&d.name, &ctx) {
            Ok(f) => (f, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let ready = match (&error, d.connector(&client)) {
            (None, Ok(c)) => Some((
                c,
                Record {
                    delivery_id,
                    notification_id: 0,
                    participation_id: participation_id.clone(),
                    attempt: 1,
                    fields: fields.clone(),
                    raw: payload.into(),
                    state: None,
                    in_doubt_since: None,
                },
            )),
            (None, Err(e)) => {
                error = Some(e.to_string());
                None
            }
            _ => None,
        };
        let preview = DestinationPreview {
            name: d.name.clone(),
            kind: d.type_name.into(),
            routed: route.routed,
            reason: route.reason,
            fields,
            error,
            request: None,
        };
        out.push((preview, ready));
    }
    Ok(out)
}

pub fn to_json(previews: &[DestinationPreview]) -> Value {
    json!({ "destinations": previews })
}

pub fn to_text(previews: &[DestinationPreview]) -> String {
    let mut out = String::new();
    for p in previews {
        let status = if p.routed {
            "routed".to_string()
        } else {
            format!("not routed: {}", p.reason.as_deref().unwrap_or_default())
        };
        out.push_str(&format!("{} ({}): {status}\n", p.name, p.kind));
        let width = p
            .fields
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        for (name, value) in &p.fields {
            out.push_str(&format!("  {name:<width$} = {value}\n"));
        }
        if let Some(e) = &p.error {
            out.push_str(&format!("  error: {e}\n"));
        }
        if let Some(r) = &p.request {
            out.push_str(&format!("  would send: {}\n", r.action));
            for (h, v) in &r.headers {
                out.push_str(&format!("    {h}: {v}\n"));
            }
            out.push_str(&format!("    {}\n", r.body));
        }
        out.push('\n');
    }
    out
}
