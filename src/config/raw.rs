//! The file's shape, as serde reads it. Every struct denies unknown keys; validation and defaults
//! happen in `super::validate`, in one place.

use std::path::PathBuf;

use hookfan_connectors::Secret;
use hookfan_connectors::units::{HumanDuration, HumanSize, Rate};
use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub retry: RawRetry,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub sources: IndexMap<String, RawSource>,
    /// Read as tables first: the common keys and the type's own keys are split by `type`.
    #[serde(default)]
    pub destinations: IndexMap<String, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body: Option<HumanSize>,
    pub read_timeout: Option<HumanDuration>,
    pub max_connections: Option<usize>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub url: Option<String>,
    pub retention: Option<HumanDuration>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub schedule: Option<Vec<HumanDuration>>,
    pub jitter: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub path: Option<String>,
    pub basic: Option<RawBasic>,
    pub token: Option<Secret>,
    pub header: Option<RawHeader>,
    pub hmac_secrets: Option<Vec<Secret>>,
    pub auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: String,
    pub value: Secret,
}

/// The keys every destination has, whatever its type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommon {
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: Option<bool>,
    pub sources: Option<Vec<String>>,
    pub when: Option<String>,
    pub fields: Option<IndexMap<String, String>>,
    pub rate_limit: Option<Rate>,
    pub concurrency: Option<usize>,
    pub retry: Option<RawRetry>,
}

/// The names of [`RawCommon`]'s keys, to split a destination's table.
pub const COMMON_KEYS: &[&str] = &[
    "type",
    "enabled",
    "sources",
    "when",
    "fields",
    "rate_limit",
    "concurrency",
    "retry",
];

#[cfg(test)]
mod tests {
    use serde::de::{Error as _, Visitor};

    use super::*;

    /// A deserializer that only records the field names a struct asks for.
    struct FieldNames<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    #[test]
    fn common_keys_are_exactly_the_common_struct_fields() {
        let mut fields: &'static [&'static str] = &[];
        let _ = RawCommon::deserialize(FieldNames(&mut fields));
        let mut from_struct = fields.to_vec();
        let mut listed = COMMON_KEYS.to_vec();
        from_struct.sort_unstable();
        listed.sort_unstable();
        assert_eq!(from_struct, listed);
    }
}
