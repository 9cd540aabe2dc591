//! The keys of a `google_sheets` destination, and the checks that need no network.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::layout::normalize;
use crate::units::Rate;
use crate::{ConfigIssue, Connector, ConnectorError, DestinationConfig, DestinationType};

pub const DEFAULT_API_BASE: &str = "https://sheets.googleapis.com";

/// The keys of a `google_sheets` destination (besides the common ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetsConfig {
    /// The id in the spreadsheet's URL: `https://docs.google.com/spreadsheets/d/<id>/edit`.
    pub spreadsheet_id: String,
    /// The tab's title.
    pub sheet: String,
    /// A Google service-account key (JSON); relative to the config's folder.
    pub credentials: PathBuf,
    /// `header` (default): each field under the header cell of the same name; `order`: fields in
    /// config order, nothing read.
    #[serde(default)]
    pub columns: Columns,
    /// In `header` mode, add a header cell for a field that has none (default true).
    #[serde(default = "yes")]
    pub add_missing_columns: bool,
    /// `raw` (default): values stored as typed; `user_entered`: parsed as if typed in the UI.
    #[serde(default)]
    pub value_input: ValueInput,
    /// For tests and proxies: https, or plain http to a loopback address only.
    #[serde(default = "default_api_base")]
    pub api_base: String,
}

fn yes() -> bool {
    true
}

fn default_api_base() -> String {
    DEFAULT_API_BASE.into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Columns {
    #[default]
    Header,
    Order,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueInput {
    #[default]
    Raw,
    UserEntered,
}

impl DestinationType for SheetsConfig {
    const TYPE: &'static str = "google_sheets";
}

impl DestinationConfig for SheetsConfig {
    /// Under Google's 60 writes per minute per user.
    fn default_rate_limit(&self) -> Option<Rate> {
        Some(super::DEFAULT_RATE)
    }

    /// Google's write quota is per user, and a service account is one user: every destination
    /// using the same key shares one limit. A key that cannot be read yet is known by its path.
    fn rate_key(&self) -> Option<String> {
        Some(match super::auth::read_email(&self.credentials) {
            Ok(email) => format!("google:{email}"),
            Err(_) => format!("google-key:{}", self.credentials.display()),
        })
    }

    /// Checks everything that needs no network.
    fn validate(&self, fields: &[(String, String)]) -> Vec<ConfigIssue> {
        let fields: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let mut issues = Vec::new();
        if self.spreadsheet_id.trim().is_empty() {
            issues.push(ConfigIssue::new("spreadsheet_id", "must not be empty"));
        }
        if self.sheet.trim().is_empty() {
            issues.push(ConfigIssue::new(
                "sheet",
                "must not be empty (the tab's title)",
            ));
        }
        if fields.is_empty() {
            issues.push(ConfigIssue::new(
                "fields",
                "a sheet needs at least one field (column)",
            ));
        }
        if let Err(e) = crate::http::require_safe_url(&self.api_base) {
            issues.push(ConfigIssue::new("api_base", e));
        }
        if self.columns == Columns::Header {
            // Two fields matching one header cell would fight over its column.
            let mut seen: HashMap<String, &str> = HashMap::new();
            for f in fields {
                let key = normalize(f);
                if key.is_empty() {
                    issues.push(ConfigIssue::new(
                        "fields",
                        "a field name must not be blank: it names a header cell",
                    ));
                } else if let Some(first) = seen.insert(key, f) {
                    issues.push(ConfigIssue::new(
                        "fields",
                        format!(
                            "fields {first:?} and {f:?} would go under the same header cell (names match trimmed and case-insensitively)"
                        ),
                    ));
                }
            }
        }
        issues
    }

    fn summary(&self) -> String {
        format!(
            "append rows to spreadsheet {} tab {:?}",
            self.spreadsheet_id, self.sheet
        )
    }

    fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf) {
        self.credentials = resolve(&self.credentials);
    }

    fn build(
        &self,
        client: &reqwest::Client,
        fields: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(
            super::Sheets::new(self.clone(), client.clone())?.with_fields(fields.to_vec()),
        ))
    }

    /// Instances that share a store extend a tab's header row one at a time.
    fn build_shared(
        &self,
        client: &reqwest::Client,
        fields: &[String],
        locks: Arc<dyn crate::Locks>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        Ok(Arc::new(
            super::Sheets::new(self.clone(), client.clone())?
                .with_fields(fields.to_vec())
                .with_locks(locks),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_mode_refuses_fields_that_share_a_header() {
        let config: SheetsConfig = serde_json::from_value(serde_json::json!({
            "spreadsheet_id": "x", "sheet": "T", "credentials": "k.json"
        }))
        .unwrap();
        let fields = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), String::new()))
                .collect()
        };
        let issues = config.validate(&fields(&["Email", " email", "name"]));
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].message.contains("\"Email\" and \" email\""),
            "{issues:?}"
        );
        let order = SheetsConfig {
            columns: Columns::Order,
            ..config
        };
        assert!(order.validate(&fields(&["Email", "email"])).is_empty());
    }
}
