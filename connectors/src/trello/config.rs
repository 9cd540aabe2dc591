//! The keys of a `trello` destination and their validation, without I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::units::Rate;
use crate::{
    ConfigIssue, Connector, ConnectorError, DestinationConfig, DestinationType, KeyPath, Secret,
    Template,
};

pub const DEFAULT_API_BASE: &str = "https://api.trello.com";

/// The keys of a `trello` destination (besides `type`, `enabled`, `sources`, `when`,
/// `rate_limit`, `concurrency`, `retry`). Its templates are `name`, `desc`, `due` and each custom
/// field's `value`; it has no `fields` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrelloConfig {
    /// API key (a secret; usually `${TRELLO_KEY}`).
    pub key: Secret,
    /// API token (a secret; usually `${TRELLO_TOKEN}`).
    pub token: Secret,
    /// The list new cards go on.
    pub list_id: String,
    /// Template for the card's name (required).
    pub name: String,
    /// Template for the card's description.
    pub desc: Option<String>,
    /// Template rendering the due date (read like the `date` filter's input); empty means none.
    pub due: Option<String>,
    /// `top` or `bottom` (default).
    #[serde(default)]
    pub pos: Position,
    /// Label ids to put on each card.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Member ids to put on each card.
    #[serde(default)]
    pub members: Vec<String>,
    /// Custom field id → its type and a template for its value.
    #[serde(default)]
    pub custom_fields: BTreeMap<String, CustomField>,
    /// Attach the files of Webhook 2.0 file-upload responses to the card, by URL.
    #[serde(default)]
    pub attach_files: bool,
    /// For tests and proxies.
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Top,
    #[default]
    Bottom,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomField {
    #[serde(rename = "type")]
    pub kind: CustomFieldType,
    /// A template; for `list`, it renders the option id.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomFieldType {
    Text,
    Number,
    Date,
    Checkbox,
    List,
}

/// The record field names the templates render into.
pub const NAME: &str = "name";
pub const DESC: &str = "desc";
pub const DUE: &str = "due";
pub const CUSTOM_FIELD_PREFIX: &str = "custom_fields.";

impl DestinationType for TrelloConfig {
    const TYPE: &'static str = "trello";
}

impl DestinationConfig for TrelloConfig {
    /// Trello's templates are its own keys, not a `fields` table.
    fn templates(&self, _fields: &[(String, String)]) -> Vec<Template> {
        let at = |key: &str| KeyPath::root().key(key);
        let mut out = vec![Template {
            field: NAME.into(),
            source: self.name.clone(),
            at: at("name"),
        }];
        if let Some(desc) = &self.desc {
            out.push(Template {
                field: DESC.into(),
                source: desc.clone(),
                at: at("desc"),
            });
        }
        if let Some(due) = &self.due {
            out.push(Template {
                field: DUE.into(),
                source: due.clone(),
                at: at("due"),
            });
        }
        for (id, field) in &self.custom_fields {
            out.push(Template {
                field: format!("{CUSTOM_FIELD_PREFIX}{id}"),
                source: field.value.clone(),
                at: at("custom_fields").key(id.clone()).key("value"),
            });
        }
        out
    }

    fn validate(&self, fields: &[(String, String)]) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !fields.is_empty() {
            issues.push(ConfigIssue::new(
                "fields",
                "a trello destination has no fields: its templates are name, desc, due and custom_fields",
            ));
        }
        for (key, secret) in [("key", &self.key), ("token", &self.token)] {
            if secret.is_empty() {
                issues.push(ConfigIssue::new(key, "must not be empty"));
            } else if !secret
                .expose()
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
            {
                issues.push(ConfigIssue::new(
                    key,
                    "holds spaces, quotes or other characters no Trello credential has",
                ));
            }
        }
        if self.list_id.trim().is_empty() {
            issues.push(ConfigIssue::new("list_id", "must not be empty"));
        } else if !is_id(&self.list_id) {
            issues.push(ConfigIssue::new("list_id", NOT_AN_ID));
        }
        if self.name.trim().is_empty() {
            issues.push(ConfigIssue::new(
                "name",
                "must not be empty: every card needs a name",
            ));
        }
        for (key, ids) in [("labels", &self.labels), ("members", &self.members)] {
            for (i, id) in ids.iter().enumerate() {
                if !is_id(id) {
                    issues.push(ConfigIssue::at(
                        KeyPath::root().key(key).index(i),
                        NOT_AN_ID,
                    ));
                }
            }
        }
        for id in self.custom_fields.keys() {
            if !is_id(id) {
                issues.push(ConfigIssue::at(
                    KeyPath::root().key("custom_fields").key(id.clone()),
                    NOT_AN_ID,
                ));
            }
        }
        // The key and token travel in a header: never in clear over the network.
        if let Err(e) = crate::http::require_safe_url(&self.api_base) {
            issues.push(ConfigIssue::new("api_base", e));
        }
        issues
    }

    fn summary(&self) -> String {
        format!("create a card on list {}", self.list_id)
    }

    fn secrets(&self) -> Vec<String> {
        vec![
            self.key.expose().to_string(),
            self.token.expose().to_string(),
        ]
    }

    /// 90 calls per 10 s per token, under Trello's 100. The worker charges each card the calls
    /// it costs.
    fn default_rate_limit(&self) -> Option<Rate> {
        Some(Rate {
            count: super::CALLS_PER_10S,
            per: std::time::Duration::from_secs(10),
        })
    }

    /// Trello limits per token: every destination with the same token shares one limit. The
    /// token is hashed so it never shows in a key that may be logged.
    fn rate_key(&self) -> Option<String> {
        let digest = Sha256::digest(self.token.expose().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("trello-token:{hex}"))
    }

    fn build(
        &self,
        client: &reqwest::Client,
        _fields: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(super::Trello::new(self.clone(), client.clone())?))
    }
}

const NOT_AN_ID: &str =
    "must be a Trello id: letters and digits only, e.g. 5f1b2c3d4e5f6a7b8c9d0e1f";

/// Ids go into URL paths: letters and digits only, so none can change the path.
pub(crate) fn is_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
impl TrelloConfig {
    /// A minimal valid config for unit tests: key `key123`, token `tok456`, list `list1`.
    pub(crate) fn sample() -> TrelloConfig {
        TrelloConfig {
            key: Secret::new("key123"),
            token: Secret::new("tok456"),
            list_id: "list1".into(),
            name: "n".into(),
            desc: None,
            due: None,
            pos: Position::Bottom,
            labels: Vec::new(),
            members: Vec::new(),
            custom_fields: BTreeMap::new(),
            attach_files: false,
            api_base: DEFAULT_API_BASE.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrelloConfig {
        TrelloConfig::sample()
    }

    #[test]
    fn ids_and_credentials_are_checked() {
        assert!(config().validate(&[]).is_empty());
        let mut c = config();
        c.list_id = "../boards/x".into();
        c.labels = vec!["ok1".into(), "a,b".into()];
        c.token = Secret::new("tok en");
        let paths: Vec<String> = c
            .validate(&[])
            .into_iter()
            .map(|i| i.path.to_string())
            .collect();
        assert_eq!(paths, ["token", "list_id", "labels[1]"]);
    }
}
