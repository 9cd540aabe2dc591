//! The keys of a `google_sheets` destination, and the checks that need no network.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::layout::normalize;
use crate::ConfigIssue;

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

impl SheetsConfig {
    /// The rate limit when the config sets none: under Google's 60 writes per minute per user.
    pub fn default_rate_limit(&self) -> crate::units::Rate {
        super::DEFAULT_RATE
    }

    /// Checks everything that needs no network; `fields` are the destination's field names.
    pub fn validate(&self, fields: &[&str]) -> Vec<ConfigIssue> {
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

    pub fn summary(&self) -> String {
        format!(
            "append rows to spreadsheet {} tab {:?}",
            self.spreadsheet_id, self.sheet
        )
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
        let issues = config.validate(&["Email", " email", "name"]);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].message.contains("\"Email\" and \" email\""),
            "{issues:?}"
        );
        let order = SheetsConfig {
            columns: Columns::Order,
            ..config
        };
        assert!(order.validate(&["Email", "email"]).is_empty());
    }
}
