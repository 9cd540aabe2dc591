//! Builds the connector behind each destination.

use std::sync::Arc;

use hookfan_connectors::file::FileSink;
use hookfan_connectors::sheets::Sheets;
use hookfan_connectors::trello::Trello;
use hookfan_connectors::webhook::Webhook;
use hookfan_connectors::{Connector, ConnectorError};

use crate::config::{Destination, DestinationKind};

/// The connector for one destination, sharing the process's HTTP client.
pub fn connector(
    d: &Destination,
    client: &reqwest::Client,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    Ok(match &d.kind {
        DestinationKind::Webhook(c) => Arc::new(Webhook::new(c.clone(), client.clone())?),
        DestinationKind::File(c) => Arc::new(FileSink::new(c.clone())),
        DestinationKind::GoogleSheets(c) => Arc::new(
            Sheets::new(c.clone(), client.clone())?
                .with_fields(d.fields.iter().map(|(n, _)| n.clone()).collect()),
        ),
        DestinationKind::Trello(c) => Arc::new(Trello::new(c.clone(), client.clone())?),
    })
}
