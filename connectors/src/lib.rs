//! # hookfan-connectors
//!
//! The destinations hookfan delivers to. A [`Connector`] makes one attempt per [`Record`] and
//! classifies the result as an [`Outcome`]; it never sleeps or retries, because the retry schedule
//! is durable and belongs to the worker and the store. Nothing here knows about actix or the store.
//!
//! - [`destination`]: a destination type as the config sees it ([`DestinationConfig`]).
//! - [`keypath`]: key paths into the config file, for errors.
//! - [`secret`]: a string whose `Debug` and `Display` print `***`.
//! - [`units`]: human durations (`"10s"`), sizes (`"1MiB"`) and rates (`"50/min"`).
//! - [`outcome`]: the one table that turns an HTTP status or a transport error into an outcome.
//! - [`pace`]: what a connector asks before each call, so a rate limit counts every call.
//! - [`lock`]: locks held across the instances that share one store (Sheets' header row).
//! - [`http`]: the shared reqwest client.
//! - [`body`]: mapped fields → JSON object (dotted names nest) or form body.
//! - [`webhook`], [`file`], [`sheets`], [`trello`]: one destination each.

pub mod body;
pub mod destination;
pub mod file;
pub mod http;
pub mod keypath;
pub mod lock;
pub mod outcome;
pub mod pace;
pub mod secret;
pub mod sheets;
pub mod trello;
pub mod units;
pub mod webhook;

use std::sync::Arc;

pub use destination::{DestinationConfig, DestinationType, Template};
pub use keypath::{KeyPart, KeyPath};
pub use lock::{Held, Locks};
pub use outcome::{Attempt, Outcome};
pub use pace::{Call, Pace};
pub use secret::Secret;

/// One delivery handed to a connector: the mapped fields, the original notification, and whatever
/// state an earlier attempt of the same delivery saved.
#[derive(Debug, Clone)]
pub struct Record {
    pub delivery_id: i64,
    pub notification_id: i64,
    /// Qualifio's participation id (the payload's `id`).
    pub participation_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The destination's mapped fields, in config order.
    pub fields: Vec<(String, String)>,
    /// The notification exactly as Qualifio sent it.
    pub raw: Arc<str>,
    /// Progress saved by an earlier attempt (e.g. a created card's id).
    pub state: Option<serde_json::Value>,
    /// Unix milliseconds when an earlier attempt started whose result was never recorded (its
    /// process crashed or was stopped): the destination may already have what it sent.
    pub in_doubt_since: Option<i64>,
}

/// What a connector would send for a record, secrets redacted (for `hookfan preview`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Described {
    /// e.g. `POST https://crm.example/hooks` or `append to /var/lib/hookfan/out.jsonl`.
    pub action: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A config problem found by a destination type's own validation, at a path relative to the
/// destination (`headers."X-Token"`, `labels[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: KeyPath,
    pub message: String,
}

impl ConfigIssue {
    /// A problem with one of the destination's own keys.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue::at(KeyPath::root().key(key), message)
    }

    /// A problem deeper in the destination's table.
    pub fn at(path: KeyPath, message: impl Into<String>) -> Self {
        ConfigIssue {
            path,
            message: message.into(),
        }
    }
}

/// Why a connector could not be built or checked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Check(String),
}

/// A destination. Stateless but for clients and caches; per-delivery progress travels in
/// [`Record::state`] and [`Attempt::state`].
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// The most records one `deliver` call takes (Sheets appends many rows in one call).
    fn max_batch(&self) -> usize {
        1
    }

    /// How long a lane waits for more work to join a batch once the queue was empty (Sheets: a
    /// burst becomes a few large appends, not many small ones).
    fn linger(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// The longest one `deliver` call may take; leases are sized from it.
    fn timeout(&self) -> std::time::Duration {
        http::DEFAULT_TIMEOUT
    }

    /// Whether dropping a `deliver` future stops its work. An HTTP request stops when dropped,
    /// so the worker may give up on it after [`Connector::timeout`]; a connector whose work
    /// goes on (a blocking file write) says `false`, and the worker waits for its outcome.
    fn stops_when_dropped(&self) -> bool {
        true
    }

    /// Makes one attempt for each record and returns exactly one [`Attempt`] per record, in order.
    /// Every call to the destination first asks `pace`, and holds the [`Call`] until answered.
    async fn deliver(&self, records: &[Record], pace: &dyn Pace) -> Vec<Attempt>;

    /// A real, harmless call that proves the destination is reachable and the credentials work.
    /// Returns a one-line description of what was found.
    async fn check(&self) -> Result<String, ConnectorError>;

    /// The request `deliver` would send for this record, with secrets redacted.
    fn describe(&self, record: &Record) -> Described;

    /// Like [`Connector::describe`], after asking the destination what shapes the request
    /// (Sheets: the header row). For `hookfan preview --online`.
    async fn describe_online(&self, record: &Record) -> Result<Described, ConnectorError> {
        Ok(self.describe(record))
    }
}
