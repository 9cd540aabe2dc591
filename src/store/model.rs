//! What the store keeps: notifications, deliveries and attempts. Times are Unix milliseconds.

use std::sync::Arc;

/// A notification to accept, with the destinations it was routed to.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub source: String,
    pub participation_id: String,
    /// `v1` or `v2`.
    pub format: &'static str,
    /// The body exactly as received (validated JSON).
    pub body: String,
    /// Hex SHA-256 of `body`: the same source, id and hash is a duplicate.
    pub body_sha256: String,
    pub received_at: i64,
    pub destinations: Vec<String>,
}

/// What `accept` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New {
        notification: i64,
        deliveries: usize,
    },
    /// The same source, id and body were accepted before.
    Duplicate { notification: i64 },
}

/// A delivery leased to a worker, with what it needs to map and deliver it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub notification_id: i64,
    pub participation_id: String,
    pub destination: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub state: Option<serde_json::Value>,
    pub body: Arc<str>,
    pub received_at: i64,
    /// This claim's token: the attempt is recorded only if the lease still carries it.
    pub lease: i64,
    /// When an earlier attempt started whose result was never recorded (its worker crashed or
    /// was stopped): it may have reached the destination.
    pub in_doubt_since: Option<i64>,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    RetryAt(i64),
    Dead,
}

/// One attempt, as the delivery log keeps it.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub delivery_id: i64,
    /// The claim's lease token ([`Claimed::lease`]).
    pub lease: i64,
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    /// `delivered`, `retry` or `failed`.
    pub outcome: &'static str,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
    /// Replaces the delivery's saved state when set.
    pub state: Option<serde_json::Value>,
    pub next: Next,
}

/// A delivery's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "pending" => Some(Status::Pending),
            "delivered" => Some(Status::Delivered),
            "dead" => Some(Status::Dead),
            _ => None,
        }
    }
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub notification_id: i64,
    pub participation_id: String,
    pub source: String,
    pub destination: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRow {
    pub number: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub destination: Option<String>,
    pub participation_id: Option<String>,
    pub limit: u32,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
