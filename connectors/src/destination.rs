//! A destination type as the config file sees it: its own keys, their checks, the templates it
//! renders, its rate limit, its one-line summary, and how it becomes a [`Connector`]. The main
//! crate lists the types in one place; a new type (a CRM such as HubSpot or Brevo) is a new
//! module here that implements these two traits, plus one line in that list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::keypath::KeyPath;
use crate::units::Rate;
use crate::{ConfigIssue, Connector, ConnectorError, Locks};

/// One template a destination renders for each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The name the rendered value gets in [`crate::Record::fields`].
    pub field: String,
    /// The minijinja source.
    pub source: String,
    /// Where it is written, relative to the destination's table (for errors).
    pub at: KeyPath,
}

/// A destination's own keys, deserialized. `Debug` must not show secrets.
pub trait DestinationConfig: fmt::Debug + Send + Sync + 'static {
    /// Checks the type's own keys without I/O. `fields` is the destination's `fields` table
    /// (name → template), in file order. Each issue's path is relative to the destination.
    fn validate(&self, fields: &[(String, String)]) -> Vec<ConfigIssue>;

    /// What each record renders. Most types render their `fields` table; a type with templates
    /// of its own (Trello's `name`, `desc`, custom fields) returns those.
    fn templates(&self, fields: &[(String, String)]) -> Vec<Template> {
        fields
            .iter()
            .map(|(field, source)| Template {
                field: field.clone(),
                source: source.clone(),
                at: KeyPath::root().key("fields").key(field.clone()),
            })
            .collect()
    }

    /// The rate limit when the destination sets none (the remote API's quota).
    fn default_rate_limit(&self) -> Option<Rate> {
        None
    }

    /// Destinations with the same key share one rate limit (Trello limits per token, Google per
    /// service account). `None`: the destination has a limit of its own. Never a secret: it
    /// may be logged.
    fn rate_key(&self) -> Option<String> {
        None
    }

    /// One line for `hookfan check`, secrets redacted.
    fn summary(&self) -> String;

    /// Every secret value the destination sends (tokens, header values, passwords): they are
    /// cut out of anything stored or logged, in case the destination echoes them back.
    fn secrets(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes relative paths absolute (`resolve` anchors them at the config file's folder).
    fn resolve_paths(&mut self, _resolve: &dyn Fn(&Path) -> PathBuf) {}

    /// The ready connector, sharing the process's HTTP client. `fields` are the rendered
    /// field names, in order.
    fn build(
        &self,
        client: &reqwest::Client,
        fields: &[String],
    ) -> Result<Arc<dyn Connector>, ConnectorError>;

    /// [`DestinationConfig::build`] for a relay whose instances share one store: `locks` are
    /// held across all of them. A type whose work must not interleave with another instance's
    /// (Sheets' header row) overrides it; the others need nothing more.
    fn build_shared(
        &self,
        client: &reqwest::Client,
        fields: &[String],
        locks: Arc<dyn Locks>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let _ = locks;
        self.build(client, fields)
    }
}

/// A destination type: its config, and the `type = "…"` that names it.
pub trait DestinationType: DestinationConfig + DeserializeOwned {
    const TYPE: &'static str;
}
