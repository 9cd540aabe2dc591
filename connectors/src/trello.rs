//! `type = "trello"`: one card per delivery on a list, never two.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Attempt, ConfigIssue, Connector, ConnectorError, Described, Outcome, Record, Secret};

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

impl TrelloConfig {
    /// The templates to render for each record, as (record field, template): `name`, `desc`,
    /// `due`, then `custom_fields.<id>`.
    pub fn templates(&self) -> Vec<(String, String)> {
        let mut out = vec![(NAME.to_string(), self.name.clone())];
        if let Some(desc) = &self.desc {
            out.push((DESC.into(), desc.clone()));
        }
        if let Some(due) = &self.due {
            out.push((DUE.into(), due.clone()));
        }
        for (id, field) in &self.custom_fields {
            out.push((format!("{CUSTOM_FIELD_PREFIX}{id}"), field.value.clone()));
        }
        out
    }

    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.key.is_empty() {
            issues.push(ConfigIssue::new("key", "must not be empty"));
        }
        if self.token.is_empty() {
            issues.push(ConfigIssue::new("token", "must not be empty"));
        }
        if self.list_id.trim().is_empty() {
            issues.push(ConfigIssue::new("list_id", "must not be empty"));
        }
        if self.name.trim().is_empty() {
            issues.push(ConfigIssue::new(
                "name",
                "must not be empty: every card needs a name",
            ));
        }
        if let Err(e) = reqwest::Url::parse(&self.api_base) {
            issues.push(ConfigIssue::new(
                "api_base",
                format!("not a valid URL: {e}"),
            ));
        }
        issues
    }

    pub fn summary(&self) -> String {
        format!("create a card on list {}", self.list_id)
    }
}

/// A ready Trello destination.
pub struct Trello {
    config: TrelloConfig,
}

impl Trello {
    pub fn new(config: TrelloConfig, _client: reqwest::Client) -> Result<Self, ConnectorError> {
        Ok(Trello { config })
    }
}

#[async_trait::async_trait]
impl Connector for Trello {
    async fn deliver(&self, records: &[Record]) -> Vec<Attempt> {
        records
            .iter()
            .map(|_| Attempt::new(Outcome::failed("trello is not built yet")))
            .collect()
    }

    async fn check(&self) -> Result<String, ConnectorError> {
        Err(ConnectorError::Check("trello is not built yet".into()))
    }

    fn describe(&self, record: &Record) -> Described {
        Described {
            action: self.config.summary(),
            headers: Vec::new(),
            body: format!("{:?}", record.fields),
        }
    }
}
