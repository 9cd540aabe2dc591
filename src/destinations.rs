//! Every destination type hookfan knows, in one list. A new type (a CRM such as HubSpot or
//! Brevo) is a module in `hookfan-connectors` whose config implements
//! [`hookfan_connectors::DestinationType`], plus one line in [`TYPES`].

use hookfan_connectors::file::FileConfig;
use hookfan_connectors::sheets::SheetsConfig;
use hookfan_connectors::trello::TrelloConfig;
use hookfan_connectors::webhook::WebhookConfig;
use hookfan_connectors::{DestinationConfig, DestinationType};

/// Reads a destination type's own keys.
pub type Parse =
    fn(
        toml::Value,
    ) -> Result<Box<dyn DestinationConfig>, serde_path_to_error::Error<toml::de::Error>>;

/// One destination type: the `type = "…"` that names it, and how its own keys are read.
pub struct TypeEntry {
    pub name: &'static str,
    pub parse: Parse,
}

/// The list. Its order is the order error messages name the types in.
pub static TYPES: &[TypeEntry] = &[
    TypeEntry::of::<WebhookConfig>(),
    TypeEntry::of::<SheetsConfig>(),
    TypeEntry::of::<TrelloConfig>(),
    TypeEntry::of::<FileConfig>(),
];

impl TypeEntry {
    const fn of<T: DestinationType>() -> TypeEntry {
        TypeEntry {
            name: T::TYPE,
            parse: parse::<T>,
        }
    }
}

fn parse<T: DestinationType>(
    value: toml::Value,
) -> Result<Box<dyn DestinationConfig>, serde_path_to_error::Error<toml::de::Error>> {
    let config: T = serde_path_to_error::deserialize(value)?;
    Ok(Box::new(config))
}

/// The type named `name`.
pub fn find(name: &str) -> Option<&'static TypeEntry> {
    TYPES.iter().find(|t| t.name == name)
}

/// `webhook, google_sheets, …`, for messages.
pub fn names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}
