//! What accepting needs of a notification (its `id` and its format), read in one pass that
//! checks the rest of the body exactly as a full parse would, without building it: most
//! notifications are stored and routed without anyone reading them.
//!
//! `serde::de::IgnoredAny` is not enough for the rest: it skips numbers and strings without
//! decoding them, so it lets through what `serde_json::Value` refuses (`1e400`, a lone
//! surrogate escape). [`Checked`] decodes every value and keeps none.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

/// Any JSON value, decoded as a full parse decodes it, and dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A top-level key: the two accepting reads, or any other (decoded all the same).
enum Key {
    Id,
    Configuration,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "id" => Key::Id,
                    "configuration" => Key::Configuration,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The top-level object's `id` and `configuration`, as a full parse would leave them: a key
/// given twice keeps its last value.
pub struct Head {
    pub id: Option<serde_json::Value>,
    pub configuration: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HeadVisitor;
        impl<'de> Visitor<'de> for HeadVisitor {
            type Value = Head;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
                let mut head = Head {
                    id: None,
                    configuration: None,
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Id => head.id = Some(map.next_value()?),
                        Key::Configuration => head.configuration = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        d.deserialize_map(HeadVisitor)
    }
}

/// Whether `body` is JSON a full parse accepts, without building it.
pub fn is_json(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<Checked>(body).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick read and the full parse agree on what is JSON.
    #[test]
    fn refuses_what_a_full_parse_refuses() {
        for body in [
            r#"{"id":"x","n":1e400}"#,
            r#"{"id":"x","s":"\udc00\ud800"}"#,
            r#"{"id":"x","\udc00":1}"#,
            r#"{"id":"x","a":[1,2,]}"#,
            r#"{"id":"x"} trailing"#,
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(body).is_err(),
                "{body}"
            );
            assert!(is_json(body.as_bytes()).is_err(), "{body}");
            assert!(serde_json::from_str::<Head>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_a_full_parse_does() {
        let body = r#"{"id":"first","x":{"y":[1,2.5,"\u00e9"]},"id":"last"}"#;
        let head: Head = serde_json::from_str(body).unwrap();
        let full: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(head.id.as_ref(), full.get("id"));
        assert_eq!(head.id, Some(serde_json::json!("last")));
    }
}
