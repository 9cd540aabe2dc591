//! Templates: each destination's `fields` and `when`, compiled once into one minijinja
//! environment and rendered against [`context`]. Missing values render as empty strings; custom
//! filters `date` and `yesno` sit beside minijinja's built-ins, with `truncate` added (minijinja
//! has none) and `join` keeping a single string whole.
//!
//! A leaf: it knows templates and payloads, not the config. The config calls
//! [`check_template`] and [`check_expression`] to validate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, Serde, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

/// A template error in words for a marketer: what went wrong and where in the template.
fn describe(err: &Error) -> String {
    let mut text = err
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| err.kind().to_string());
    if let Some(line) = err.line()
        && line > 1
    {
        text.push_str(&format!(" (template line {line})"));
    }
    text
}

/// The environment every template and expression runs in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Not HTML: no escaping. `none` and missing values print as nothing.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_filter("date", date);
    env.add_filter("yesno", yesno);
    env.add_filter("join", join);
    env.add_filter("truncate", truncate);
    env
}

/// Checks a field template (config validation): its syntax, and that the filters, tests and
/// functions it reaches exist. A misspelt filter is not a syntax error to minijinja, but it would
/// fail every delivery, so it is found here by rendering once against an empty context.
pub fn check_template(source: &str) -> Result<(), String> {
    let env = environment();
    let template = env.template_from_str(source).map_err(|e| describe(&e))?;
    match template.render(minijinja::context! {}) {
        Err(e) if is_unknown_name(&e) => Err(describe(&e)),
        _ => Ok(()),
    }
}

/// Checks a `when` expression (config validation), exactly as [`Mapper`] compiles it, with the
/// same check for unknown filters, tests and functions as [`check_template`].
pub fn check_expression(source: &str) -> Result<(), String> {
    let env = environment();
    env.compile_expression(source).map_err(|e| describe(&e))?;
    let wrapped = when_template(source);
    let template = env.template_from_str(&wrapped).map_err(|e| describe(&e))?;
    match template.render(minijinja::context! {}) {
        Err(e) if is_unknown_name(&e) => Err(describe(&e)),
        _ => Ok(()),
    }
}

/// A filter, test or function that does not exist: wrong whatever the payload. (An unknown
/// method is not here: `x.lower()` fails on a missing value but works on a string.)
fn is_unknown_name(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
    )
}

/// A `when` expression as a template that renders `1` when it is true. A template compiles once
/// into the environment, where an [`minijinja::Expression`] would borrow it.
fn when_template(expression: &str) -> String {
    format!("{{% if {expression} %}}1{{% endif %}}")
}

/// Whether a destination gets a notification, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Routed,
    /// `when` evaluated to false.
    False,
    /// `when` failed at run time: treated as not routed, with a warning.
    Error(String),
}

/// A field template that failed at delivery time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?}: {message}")]
pub struct RenderError {
    pub field: String,
    pub message: String,
}

/// One destination's templates, as [`Mapper::new`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Templates<'a> {
    pub destination: &'a str,
    /// Field name → template, in order.
    pub fields: &'a [(String, String)],
    pub when: Option<&'a str>,
}

/// A template that does not compile (validation should have caught it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {destination:?}, {template}: {message}")]
pub struct CompileError {
    pub destination: String,
    /// `when`, or the field's name.
    pub template: String,
    pub message: String,
}

/// The render context for one notification: the payload and its normalised view, with
/// `participation.received_at` from `received_at_ms` (Unix milliseconds); the same keys and
/// values as [`crate::payload::context`].
pub fn context(doc: serde_json::Value, received_at_ms: i64) -> Value {
    let received_at = crate::payload::iso_utc(received_at_ms);
    let view = crate::payload::view(&doc, &received_at);
    let doc = match doc {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    Value::from_object(Context {
        doc,
        view,
        made: Mutex::new(HashMap::new()),
    })
}

/// A notification as templates see it. A top-level key becomes a template value only when a
/// template reads it: fields name a few keys, and converting the whole payload for every
/// delivery cost more than rendering did.
#[derive(Debug)]
struct Context {
    doc: serde_json::Map<String, serde_json::Value>,
    /// Wins over the payload's own key of the same name.
    view: serde_json::Map<String, serde_json::Value>,
    /// The keys read so far, as template values (a destination's fields often read the same).
    made: Mutex<HashMap<String, Value>>,
}

impl Object for Context {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = made.get(key) {
            return Some(value.clone());
        }
        let json = self.view.get(key).or_else(|| self.doc.get(key))?;
        let value = Value::from(Serde(json));
        made.insert(key.to_owned(), value.clone());
        Some(value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys = self.doc.keys().chain(
            self.view
                .keys()
                .filter(|k| !self.doc.contains_key(k.as_str())),
        );
        Enumerator::Values(keys.map(|k| Value::from(k.as_str())).collect())
    }
}

/// Every destination's templates, compiled.
pub struct Mapper {
    env: Environment<'static>,
    /// Each destination's field names, in order.
    fields: HashMap<String, Vec<String>>,
}

impl Mapper {
    /// Compiles every destination's templates.
    pub fn new<'a>(
        destinations: impl IntoIterator<Item = Templates<'a>>,
    ) -> Result<Mapper, CompileError> {
        let mut env = environment();
        let mut fields = HashMap::new();
        for d in destinations {
            let failed = |template: &str, e: Error| CompileError {
                destination: d.destination.into(),
                template: template.into(),
                message: describe(&e),
            };
            for (i, (field, source)) in d.fields.iter().enumerate() {
                env.add_template_owned(field_key(d.destination, i), source.clone())
                    .map_err(|e| failed(field, e))?;
            }
            if let Some(when) = d.when {
                env.add_template_owned(when_key(d.destination), when_template(when))
                    .map_err(|e| failed("when", e))?;
            }
            fields.insert(
                d.destination.to_string(),
                d.fields.iter().map(|(n, _)| n.clone()).collect(),
            );
        }
        Ok(Mapper { env, fields })
    }

    /// Evaluates a destination's `when` (no `when` is always routed).
    pub fn when(&self, destination: &str, ctx: &Value) -> Verdict {
        let Ok(template) = self.env.get_template(&when_key(destination)) else {
            return Verdict::Routed;
        };
        match template.render(ctx) {
            Ok(out) if out == "1" => Verdict::Routed,
            Ok(_) => Verdict::False,
            Err(e) => Verdict::Error(describe(&e)),
        }
    }

    /// Renders a destination's fields in order (none for a destination it does not know).
    pub fn fields(
        &self,
        destination: &str,
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, RenderError> {
        let Some(names) = self.fields.get(destination) else {
            return Ok(Vec::new());
        };
        names
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let rendered = self
                    .env
                    .get_template(&field_key(destination, i))
                    .and_then(|t| t.render(ctx));
                rendered
                    .map(|value| (field.clone(), value))
                    .map_err(|e| RenderError {
                        field: field.clone(),
                        message: describe(&e),
                    })
            })
            .collect()
    }
}

fn field_key(destination: &str, index: usize) -> String {
    format!("{destination}/fields/{index}")
}

fn when_key(destination: &str) -> String {
    format!("{destination}/when")
}

const DEFAULT_DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `{{ value | date("%d/%m/%Y", tz="Europe/Brussels") }}`. Reads Unix seconds (number or string),
/// ISO 8601, or `YYYY-MM-DD HH:MM:SS`. An instant is shown in `tz` (UTC by default); a date and
/// time without an offset is taken as already being in `tz`. Missing or empty → "".
fn date(value: &Value, format: Option<String>, kwargs: Kwargs) -> Result<Value, Error> {
    let tz_name: Option<String> = kwargs.get("tz")?;
    kwargs.assert_all_used()?;
    if value.is_undefined()
        || value.is_none()
        || value.as_str().is_some_and(|s| s.trim().is_empty())
    {
        return Ok(Value::from(""));
    }
    let tz = match &tz_name {
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("date: unknown time zone {name:?}"),
            )
        })?,
        None => jiff::tz::TimeZone::UTC,
    };
    let zoned = to_zoned(value, tz).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("date: cannot read {value} as a date (Unix seconds, ISO 8601 or YYYY-MM-DD HH:MM:SS)"),
        )
    })?;
    let format = format.as_deref().unwrap_or(DEFAULT_DATE_FORMAT);
    jiff::fmt::strtime::format(format, &zoned)
        .map(Value::from)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("date: bad format {format:?}: {e}"),
            )
        })
}

fn to_zoned(value: &Value, tz: jiff::tz::TimeZone) -> Option<jiff::ZonedDateTime> {
    // minijinja reads `true` as the number 1, which is no date.
    if value.kind() == minijinja::value::ValueKind::Bool {
        return None;
    }
    if let Some(secs) = value.as_i64() {
        return jiff::Timestamp::from_second(secs)
            .ok()
            .map(|t| t.to_zoned_datetime(tz));
    }
    if let Ok(f) = f64::try_from(value.clone())
        && value.as_str().is_none()
        && f.is_finite()
    {
        return jiff::Timestamp::from_millisecond((f * 1000.0) as i64)
            .ok()
            .map(|t| t.to_zoned_datetime(tz));
    }
    let text = value.as_str()?.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return jiff::Timestamp::from_second(secs)
            .ok()
            .map(|t| t.to_zoned_datetime(tz));
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.to_zoned_datetime(tz));
    }
    if let Ok(dt) = text.parse::<jiff::civil::DateTime>() {
        return dt.to_zoned_datetime(tz).ok();
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(tz).ok())
}

/// `{{ consent.newsletter | yesno }}` → `yes`/`no`; `yesno("Oui", "Non")` for other words.
/// "1", 1, true, "true", "yes" are yes; missing → "".
fn yesno(value: &Value, yes: Option<String>, no: Option<String>) -> Value {
    if value.is_undefined() || value.is_none() {
        return Value::from("");
    }
    let truthy = match value.as_str() {
        Some(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "y" | "on"
        ),
        None => value.is_true(),
    };
    let word = if truthy {
        yes.unwrap_or_else(|| "yes".into())
    } else {
        no.unwrap_or_else(|| "no".into())
    };
    Value::from(word)
}

/// minijinja's `join`, except that a single string is kept whole: a check-box field with one
/// response is its value, not a list, and `"cycling" | join(", ")` must not give `c, y, c, …`.
fn join(
    state: &mut minijinja::State,
    value: &Value,
    joiner: Option<minijinja::value::StringInput<'_>>,
    attribute: Option<&str>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    if value.as_str().is_some() {
        // Still reject misspelt keyword arguments.
        let _: Option<Value> = kwargs.get("d")?;
        let _: Option<Value> = kwargs.get("attribute")?;
        kwargs.assert_all_used()?;
        return Ok(value.clone());
    }
    minijinja::filters::join(state, value, joiner, attribute, kwargs)
}

/// Jinja's `truncate(length=255, killwords=false, end="...", leeway=5)`, which minijinja lacks
/// (`leeway` by name only). Counting characters, a text longer than `length + leeway` is cut to
/// `length` characters including `end`, at a word boundary unless `killwords`. Missing → "".
fn truncate(
    value: &Value,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let length = match length {
        Some(v) => v,
        None => kwargs.get::<Option<usize>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(v) => v,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end = match end {
        Some(v) => v,
        None => kwargs
            .get::<Option<String>>("end")?
            .unwrap_or_else(|| "...".into()),
    };
    let leeway = kwargs.get::<Option<usize>>("leeway")?.unwrap_or(5);
    kwargs.assert_all_used()?;
    if value.is_undefined() || value.is_none() {
        return Ok(Value::from(""));
    }
    let text = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    if text.chars().count() <= length.saturating_add(leeway) {
        return Ok(Value::from(text));
    }
    let keep = length.saturating_sub(end.chars().count());
    let head: String = text.chars().take(keep).collect();
    let head = if killwords {
        head
    } else {
        match head.rfind(' ') {
            Some(i) => head[..i].to_string(),
            None => head,
        }
    };
    Ok(Value::from(head + &end))
}
