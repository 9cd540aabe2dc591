//! What one delivery does on Trello, worked out without I/O: the card's body, each custom field's
//! body, the files to attach, and the progress earlier attempts saved.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{CUSTOM_FIELD_PREFIX, CustomFieldType, DESC, DUE, NAME, Position, TrelloConfig};
use crate::Record;

/// Trello's limit on a card's name and on its description, in characters.
pub const MAX_TEXT_CHARS: usize = 16_384;

/// Everything one delivery sends, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The body of `POST /1/cards`.
    pub card: Map<String, Value>,
    /// The name and description as sent, to recognise the card if its creation went unanswered.
    pub name: String,
    pub desc: String,
    /// Custom field id → the body of `PUT /1/cards/{card}/customField/{id}/item`, in config order.
    /// Fields that rendered empty are left out: a new card has no value to clear.
    pub custom_fields: Vec<(String, Value)>,
    /// Files to attach by URL (empty unless `attach_files`).
    pub attachments: Vec<File>,
    /// Things that went through but deserve a look (a name cut to fit).
    pub warnings: Vec<String>,
}

/// A file of a Webhook 2.0 file-upload response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    pub url: String,
    pub name: String,
    #[serde(rename = "mimeType", skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl File {
    /// The body of `POST /1/cards/{card}/attachments`.
    pub fn body(&self) -> Value {
        let mut body = json!({ "url": self.url, "name": self.name });
        if let Some(mime) = &self.mime_type {
            body["mimeType"] = Value::from(mime.as_str());
        }
        body
    }
}

/// Works out the plan for one record. An error means the rendered values cannot make a card (a
/// due date that is no date): the same record would fail the same way next time.
pub fn plan(config: &TrelloConfig, record: &Record) -> Result<Plan, String> {
    let mut warnings = Vec::new();
    let (name, cut) = cut_chars(field(record, NAME).unwrap_or_default(), MAX_TEXT_CHARS);
    if cut {
        warnings.push(format!("name cut to Trello's {MAX_TEXT_CHARS} characters"));
    }
    let (desc, cut) = cut_chars(field(record, DESC).unwrap_or_default(), MAX_TEXT_CHARS);
    if cut {
        warnings.push(format!(
            "description cut to Trello's {MAX_TEXT_CHARS} characters"
        ));
    }

    let mut card = Map::new();
    card.insert("idList".into(), Value::from(config.list_id.as_str()));
    card.insert("name".into(), Value::from(name.as_str()));
    if !desc.is_empty() {
        card.insert("desc".into(), Value::from(desc.as_str()));
    }
    card.insert(
        "pos".into(),
        Value::from(match config.pos {
            Position::Top => "top",
            Position::Bottom => "bottom",
        }),
    );
    let due = field(record, DUE).unwrap_or_default();
    if !due.trim().is_empty() {
        let at = parse_instant(due).ok_or_else(|| not_a_date("due", due))?;
        card.insert("due".into(), Value::from(iso(at)));
    }
    // Trello reads these as comma-separated ids, whether in a query or a body.
    if !config.labels.is_empty() {
        card.insert("idLabels".into(), Value::from(config.labels.join(",")));
    }
    if !config.members.is_empty() {
        card.insert("idMembers".into(), Value::from(config.members.join(",")));
    }

    let mut custom_fields = Vec::new();
    for (id, custom) in &config.custom_fields {
        let value = field(record, &format!("{CUSTOM_FIELD_PREFIX}{id}")).unwrap_or_default();
        if let Some(body) =
            custom_field_body(custom.kind, value).map_err(|e| format!("custom_fields.{id}: {e}"))?
        {
            custom_fields.push((id.clone(), body));
        }
    }

    let attachments = if config.attach_files {
        files(&record.raw)
    } else {
        Vec::new()
    };
    Ok(Plan {
        card,
        name,
        desc,
        custom_fields,
        attachments,
        warnings,
    })
}

fn field<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The first `max` characters of `text`, and whether anything was cut.
pub fn cut_chars(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((end, _)) => (text[..end].to_string(), true),
        None => (text.to_string(), false),
    }
}

fn not_a_date(what: &str, value: &str) -> String {
    format!(
        "{what}: cannot read {value:?} as a date (Unix seconds, ISO 8601 or YYYY-MM-DD HH:MM:SS)"
    )
}

/// Reads what the `date` filter reads: Unix seconds, ISO 8601, `YYYY-MM-DD HH:MM:SS` or
/// `YYYY-MM-DD`. A date and time without an offset is taken as UTC.
pub fn parse_instant(text: &str) -> Option<jiff::Timestamp> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return jiff::Timestamp::from_second(secs).ok();
    }
    if text.contains('.')
        && let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return jiff::Timestamp::from_millisecond((secs * 1000.0) as i64).ok();
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let utc = jiff::tz::TimeZone::UTC;
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned_datetime(utc).ok().map(|z| z.timestamp());
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(utc).ok())
        .map(|z| z.timestamp())
}

/// ISO 8601 in UTC with milliseconds, the way Trello writes dates.
pub fn iso(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The body that sets one custom field, or `None` when the value rendered empty.
pub fn custom_field_body(kind: CustomFieldType, value: &str) -> Result<Option<Value>, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    Ok(Some(match kind {
        CustomFieldType::Text => json!({ "value": { "text": value } }),
        // Trello takes numbers as strings; this only proves it is one.
        CustomFieldType::Number => match trimmed.parse::<f64>() {
            Ok(n) if n.is_finite() => json!({ "value": { "number": trimmed } }),
            _ => return Err(format!("cannot read {value:?} as a number")),
        },
        CustomFieldType::Date => {
            let at = parse_instant(trimmed).ok_or_else(|| not_a_date("date", value))?;
            json!({ "value": { "date": iso(at) } })
        }
        CustomFieldType::Checkbox => {
            let checked = match trimmed.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "y" | "on" | "checked" => "true",
                "0" | "false" | "no" | "n" | "off" | "unchecked" => "false",
                _ => {
                    return Err(format!(
                        "cannot read {value:?} as a checkbox (1/0, true/false, yes/no)"
                    ));
                }
            };
            json!({ "value": { "checked": checked } })
        }
        CustomFieldType::List => json!({ "idValue": trimmed }),
    }))
}

/// The files of Webhook 2.0 file-upload responses (`form[].responses[].file`), each once. Only
/// http(s) URLs: Trello attaches by fetching the URL.
pub fn files(raw: &str) -> Vec<File> {
    let Ok(doc) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    let mut out: Vec<File> = Vec::new();
    let questions = doc.get("form").and_then(Value::as_array);
    for question in questions.into_iter().flatten() {
        let responses = question.get("responses").and_then(Value::as_array);
        for file in responses
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("file"))
        {
            let Some(url) = file.get("path").and_then(Value::as_str) else {
                continue;
            };
            let url = url.trim();
            let is_http = url.starts_with("https://") || url.starts_with("http://");
            if !is_http || out.iter().any(|f| f.url == url) {
                continue;
            }
            let name = file
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| url.rsplit('/').next().unwrap_or(url).to_string());
            out.push(File {
                url: url.to_string(),
                name,
                mime_type: file
                    .get("type")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            });
        }
    }
    out
}

/// What earlier attempts of one delivery achieved, saved with the delivery so that a retry
/// repeats only the missing steps and never makes a second card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The created card's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
    /// The card's short URL, for people reading the delivery log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Ids of the custom fields already set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_fields: Vec<String>,
    /// URLs of the files already attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    /// Unix seconds when a card creation was sent that got no clear answer (a time-out, a 5xx):
    /// the card may exist, so the next attempt looks for it before creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed_since: Option<i64>,
}

impl Progress {
    /// Reads the state a record carried in; anything unreadable counts as no progress.
    pub fn from_state(state: Option<&Value>) -> Progress {
        state
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }

    /// The state to save, or `None` when there is nothing to remember.
    pub fn to_state(&self) -> Option<Value> {
        if *self == Progress::default() {
            return None;
        }
        serde_json::to_value(self).ok()
    }
}

/// When a Trello id was made: its first 8 hex digits are Unix seconds (a MongoDB ObjectId).
pub fn id_created_at(id: &str) -> Option<i64> {
    let head = id.get(..8)?;
    i64::from_str_radix(head, 16).ok()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::CustomField;
    use super::*;
    use crate::Secret;

    fn config() -> TrelloConfig {
        TrelloConfig {
            key: Secret::new("k"),
            token: Secret::new("t"),
            name: "{{ x }}".into(),
            ..TrelloConfig::sample()
        }
    }

    fn record(fields: &[(&str, &str)], raw: &str) -> Record {
        Record {
            delivery_id: 1,
            notification_id: 1,
            participation_id: "p".into(),
            attempt: 1,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            raw: Arc::from(raw),
            state: None,
            in_doubt_since: None,
        }
    }

    #[test]
    fn reads_the_inputs_the_date_filter_reads() {
        let expect = "2026-11-20T09:14:41.000Z";
        for input in [
            "1795166081",
            "2026-11-20T09:14:41Z",
            "2026-11-20T10:14:41+01:00",
            "2026-11-20T09:14:41.000Z",
            "2026-11-20 09:14:41",
            "2026-11-20T09:14:41",
            " 2026-11-20 09:14:41 ",
        ] {
            let at = parse_instant(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(iso(at), expect, "{input}");
        }
        assert_eq!(
            iso(parse_instant("2026-12-01").unwrap()),
            "2026-12-01T00:00:00.000Z"
        );
        assert_eq!(
            iso(parse_instant("1795166081.25").unwrap()),
            "2026-11-20T09:14:41.250Z"
        );
        for bad in ["soon", "2026-13-01", "20/11/2026", ""] {
            assert!(parse_instant(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_card_has_what_the_config_says() {
        let mut c = config();
        c.pos = Position::Top;
        c.labels = vec!["l1".into(), "l2".into()];
        c.members = vec!["m1".into()];
        let r = record(
            &[
                ("name", "Amélie"),
                ("desc", "d"),
                ("due", "2026-11-20 09:14:41"),
            ],
            "{}",
        );
        let p = plan(&c, &r).unwrap();
        assert_eq!(
            Value::Object(p.card),
            json!({
                "idList": "list1", "name": "Amélie", "desc": "d", "pos": "top",
                "due": "2026-11-20T09:14:41.000Z", "idLabels": "l1,l2", "idMembers": "m1",
            })
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn an_empty_due_is_none_and_a_bad_one_is_an_error() {
        let p = plan(&config(), &record(&[("name", "n"), ("due", "  ")], "{}")).unwrap();
        assert!(!p.card.contains_key("due"));
        assert!(!p.card.contains_key("desc"));
        let e = plan(
            &config(),
            &record(&[("name", "n"), ("due", "tomorrow")], "{}"),
        )
        .unwrap_err();
        assert!(e.starts_with("due: cannot read \"tomorrow\""), "{e}");
    }

    #[test]
    fn name_and_desc_are_cut_by_characters() {
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let p = plan(
            &config(),
            &record(&[("name", &long), ("desc", &long)], "{}"),
        )
        .unwrap();
        assert_eq!(p.name.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(p.desc.chars().count(), MAX_TEXT_CHARS);
        assert_eq!(p.warnings.len(), 2);
        let exact = "x".repeat(MAX_TEXT_CHARS);
        assert_eq!(cut_chars(&exact, MAX_TEXT_CHARS), (exact.clone(), false));
    }

    #[test]
    fn custom_field_bodies_by_type() {
        use CustomFieldType::*;
        let body = |k, v| custom_field_body(k, v).unwrap().unwrap();
        assert_eq!(body(Text, "hi "), json!({"value": {"text": "hi "}}));
        assert_eq!(body(Number, " 42.5"), json!({"value": {"number": "42.5"}}));
        assert_eq!(
            body(Date, "1795166081"),
            json!({"value": {"date": "2026-11-20T09:14:41.000Z"}})
        );
        assert_eq!(body(Checkbox, "Yes"), json!({"value": {"checked": "true"}}));
        assert_eq!(body(Checkbox, "0"), json!({"value": {"checked": "false"}}));
        assert_eq!(body(List, "opt1"), json!({"idValue": "opt1"}));
        assert_eq!(custom_field_body(Number, " ").unwrap(), None);
        assert!(custom_field_body(Number, "12abc").is_err());
        assert!(custom_field_body(Number, "NaN").is_err());
        assert!(custom_field_body(Checkbox, "maybe").is_err());
        assert!(custom_field_body(Date, "later").is_err());
    }

    #[test]
    fn a_bad_custom_field_names_itself() {
        let mut c = config();
        c.custom_fields.insert(
            "cf1".into(),
            CustomField {
                kind: CustomFieldType::Number,
                value: "{{ x }}".into(),
            },
        );
        let e = plan(
            &c,
            &record(&[("name", "n"), ("custom_fields.cf1", "ten")], "{}"),
        );
        assert_eq!(
            e.unwrap_err(),
            "custom_fields.cf1: cannot read \"ten\" as a number"
        );
    }

    #[test]
    fn files_come_from_file_upload_responses() {
        let raw = r#"{"form": [
            {"variable": "email", "responses": [{"value": "a@b.c"}]},
            {"variable": "photo", "responses": [
                {"file": {"path": "https://files.example/a.png", "name": "a.png", "type": "image/png"}},
                {"file": {"path": "https://files.example/a.png", "name": "again.png"}},
                {"file": {"path": "https://files.example/dir/b.pdf"}},
                {"file": {"path": "/local/c.txt", "name": "c.txt"}}
            ]}
        ]}"#;
        assert_eq!(
            files(raw),
            [
                File {
                    url: "https://files.example/a.png".into(),
                    name: "a.png".into(),
                    mime_type: Some("image/png".into()),
                },
                File {
                    url: "https://files.example/dir/b.pdf".into(),
                    name: "b.pdf".into(),
                    mime_type: None,
                },
            ]
        );
        assert!(files(r#"{"crm": {}}"#).is_empty());
        assert!(files("not json").is_empty());
    }

    #[test]
    fn progress_round_trips_and_nothing_is_none() {
        assert_eq!(Progress::default().to_state(), None);
        let p = Progress {
            card: Some("c1".into()),
            custom_fields: vec!["f1".into()],
            ..Progress::default()
        };
        let state = p.to_state().unwrap();
        assert_eq!(state, json!({"card": "c1", "custom_fields": ["f1"]}));
        assert_eq!(Progress::from_state(Some(&state)), p);
        assert_eq!(
            Progress::from_state(Some(&json!("garbage"))),
            Progress::default()
        );
    }

    #[test]
    fn ids_tell_when_they_were_made() {
        assert_eq!(id_created_at("5a6a23abf958725e1ac86c21"), Some(0x5a6a23ab));
        assert_eq!(id_created_at("short"), None);
    }
}
