//! Mapped fields as a request body: a JSON object whose dotted names nest (`address.city`), or a
//! form body whose names stay flat.

use serde::Deserialize;
use serde_json::{Map, Value};

/// What a webhook or file destination sends for each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// The mapped fields as an object.
    #[default]
    Fields,
    /// The notification exactly as Qualifio sent it.
    Raw,
}

/// Finds a field name that is both a value and the parent of another (`a` and `a.b`), which no
/// JSON object can hold.
pub fn nesting_conflict<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let names: Vec<&str> = names.into_iter().collect();
    for name in &names {
        if name.split('.').any(str::is_empty) {
            return Some(format!("field {name:?} has an empty part between dots"));
        }
        for other in &names {
            if other.len() > name.len()
                && other.starts_with(name)
                && other.as_bytes()[name.len()] == b'.'
            {
                return Some(format!(
                    "field {name:?} is a value, so {other:?} cannot nest under it"
                ));
            }
        }
    }
    None
}

/// `[("name", "Ann"), ("address.city", "Namur")]` → `{"name": "Ann", "address": {"city": "Namur"}}`.
/// Names are checked with [`nesting_conflict`] at load; here a later conflicting field wins.
pub fn fields_to_json(fields: &[(String, String)]) -> Value {
    let mut root = Map::new();
    for (name, value) in fields {
        let mut parts = name.split('.').peekable();
        let mut node = &mut root;
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_string(), Value::String(value.clone()));
                break;
            }
            let child = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            match child {
                Value::Object(map) => node = map,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

/// `application/x-www-form-urlencoded`, names as written.
pub fn fields_to_form(fields: &[(String, String)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        form.append_pair(name, value);
    }
    form.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dotted_names_nest() {
        let v = fields_to_json(&f(&[
            ("name", "Ann"),
            ("address.city", "Namur"),
            ("address.zip", "5000"),
        ]));
        assert_eq!(
            v,
            serde_json::json!({"name": "Ann", "address": {"city": "Namur", "zip": "5000"}})
        );
        // serde_json's preserve_order keeps config order.
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["name", "address"]);
    }

    #[test]
    fn conflicts_are_found() {
        assert_eq!(nesting_conflict(["a", "b.c", "b.d"]), None);
        assert!(nesting_conflict(["a", "a.b"]).unwrap().contains("\"a.b\""));
        assert!(nesting_conflict(["a..b"]).is_some());
        assert_eq!(nesting_conflict(["ab", "a.b"]), None);
    }

    #[test]
    fn form_encodes() {
        assert_eq!(
            fields_to_form(&f(&[("e mail", "a@b.c"), ("n", "Amélie & co")])),
            "e+mail=a%40b.c&n=Am%C3%A9lie+%26+co"
        );
    }
}
