//! Qualifio's two notification formats, and the normalised view that makes them look alike to a
//! mapping: `participation.*`, `participant.*`, `consent.*`, `answer.*`.

use serde_json::{Map, Value, json};

/// Which Qualifio format a notification is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Webhook 1.0 (`"configuration": "pushWebhookParticipationV1"`).
    V1,
    /// Webhook 2.0.
    V2,
}

impl Format {
    pub fn detect(doc: &Value) -> Format {
        Format::from_configuration(doc.get("configuration").and_then(Value::as_str))
    }

    /// From the payload's `configuration` field, if any.
    pub fn from_configuration(configuration: Option<&str>) -> Format {
        match configuration {
            Some("pushWebhookParticipationV1") => Format::V1,
            _ => Format::V2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::V1 => "v1",
            Format::V2 => "v2",
        }
    }
}

/// The mapping context: the document's own keys, then the normalised view on top.
/// `received_at` is when hookfan accepted it (ISO 8601).
pub fn context(doc: &Value, received_at: &str) -> Value {
    let mut ctx = match doc {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    ctx.extend(view(doc, received_at));
    Value::Object(ctx)
}

/// The normalised view alone: `participation`, `participant`, `consent` and `answer`.
pub fn view(doc: &Value, received_at: &str) -> Map<String, Value> {
    let view = match Format::detect(doc) {
        Format::V1 => v1(doc, received_at),
        Format::V2 => v2(doc, received_at),
    };
    match view {
        Value::Object(view) => view,
        _ => Map::new(),
    }
}

fn v1(doc: &Value, received_at: &str) -> Value {
    let mut participant = Map::new();
    let mut consent = Map::new();
    if let Some(crm) = doc.get("crm").and_then(Value::as_object) {
        for (k, v) in crm {
            participant.insert(k.clone(), v.clone());
            if let Some(name) = k.strip_suffix("_bit") {
                consent.insert(name.to_string(), Value::String(text(v)));
            }
        }
    }
    if let Some(sso) = doc.get("sso").and_then(Value::as_object) {
        for (k, v) in sso {
            participant.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let game = doc.get("game");
    json!({
        "participation": {
            "id": text_at(doc, "id"),
            "format": "v1",
            // Webhook 1.0 is only sent for finished participations.
            "state": "COMPLETED",
            "campaign_id": game.map(|g| text_at(g, "id")).unwrap_or_default(),
            "campaign_name": game.map(|g| text_at(g, "name")).unwrap_or_default(),
            "website": game.and_then(|g| g.get("channel")).map(|c| text_at(c, "sitename")).unwrap_or_default(),
            "started_at": iso_from_unix(doc.get("dateStartServer")),
            "completed_at": iso_from_unix(doc.get("dateendserver")),
            "received_at": received_at,
        },
        "participant": participant,
        "consent": consent,
        "answer": {},
    })
}

fn v2(doc: &Value, received_at: &str) -> Value {
    let campaign = doc.get("campaign");
    let participant = by_variable(doc.get("form"), |entry| responses(entry.get("responses")));
    let consent = by_variable(doc.get("optins"), |entry| {
        Value::String(text_at(entry, "response"))
    });
    let answer = by_variable(doc.get("questionnaire"), |entry| {
        responses(entry.get("responses"))
    });
    json!({
        "participation": {
            "id": text_at(doc, "id"),
            "format": "v2",
            "state": text_at(doc, "state"),
            "campaign_id": campaign.map(|c| text_at(c, "id")).unwrap_or_default(),
            "campaign_name": campaign.map(|c| text_at(c, "name")).unwrap_or_default(),
            "website": campaign
                .and_then(|c| c.pointer("/channel/website"))
                .map(|w| text_at(w, "name"))
                .unwrap_or_default(),
            "started_at": iso_from_text(doc.get("startedAt")),
            "completed_at": iso_from_text(doc.get("completedAt")),
            "received_at": received_at,
        },
        "participant": participant,
        "consent": consent,
        "answer": answer,
    })
}

/// `[{variable, …}]` → `{variable: f(entry)}`; entries without a variable are skipped.
fn by_variable(list: Option<&Value>, f: impl Fn(&Value) -> Value) -> Map<String, Value> {
    let mut out = Map::new();
    for entry in list.and_then(Value::as_array).into_iter().flatten() {
        if let Some(var) = entry
            .get("variable")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            out.insert(var.to_string(), f(entry));
        }
    }
    out
}

/// One response → its value; several → a list; none → "". A file upload's value is its URL.
fn responses(list: Option<&Value>) -> Value {
    let values: Vec<Value> = list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| match r.get("value") {
            Some(v) if !v.is_null() => Value::String(text(v)),
            _ => Value::String(r.pointer("/file/path").map(text).unwrap_or_default()),
        })
        .collect();
    match values.len() {
        0 => Value::String(String::new()),
        1 => values.into_iter().next().unwrap_or_default(),
        _ => Value::Array(values),
    }
}

/// A scalar as text (`771204` → `"771204"`); absent, null or a structure → "".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn text_at(v: &Value, key: &str) -> String {
    v.get(key).map(text).unwrap_or_default()
}

/// Unix milliseconds → `2026-11-20T09:15:00Z` (whole seconds, UTC).
pub fn iso_utc(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime(ISO_SECONDS).to_string())
        .unwrap_or_default()
}

const ISO_SECONDS: &str = "%Y-%m-%dT%H:%M:%SZ";

/// Unix seconds (number or string) → `2019-07-24T12:48:55Z`; anything else → "".
fn iso_from_unix(v: Option<&Value>) -> String {
    let secs = match v {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    secs.and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime(ISO_SECONDS).to_string())
        .unwrap_or_default()
}

/// ISO 8601 with an offset → the same instant as `…Z` in whole seconds; otherwise as given.
fn iso_from_text(v: Option<&Value>) -> String {
    let raw = v.map(text).unwrap_or_default();
    raw.parse::<jiff::Timestamp>()
        .map(|t| t.strftime(ISO_SECONDS).to_string())
        .unwrap_or(raw)
}
