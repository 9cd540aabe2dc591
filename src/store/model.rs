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
    /// Attempts made before the last replay: the retry schedule counts from there.
    pub retry_base: u32,
    pub state: Option<serde_json::Value>,
    pub body: Arc<str>,
    pub received_at: i64,
    /// This claim's random token: the attempt is recorded only if the delivery still carries it.
    pub lease: String,
    /// When an earlier attempt started whose result was never recorded (its worker crashed or
    /// was stopped): it may have reached the destination.
    pub in_doubt_since: Option<i64>,
}

/// Where a delivery goes after an attempt: the worker's decision, which the attempt row and
/// the log both record as its [`AttemptOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Retrying: due again at this time (Unix milliseconds).
    RetryAt(i64),
    Dead,
}

impl Next {
    pub fn outcome(self) -> AttemptOutcome {
        match self {
            Next::Delivered => AttemptOutcome::Delivered,
            Next::RetryAt(_) => AttemptOutcome::Retry,
            Next::Dead => AttemptOutcome::Dead,
        }
    }

    pub fn status(self) -> Status {
        match self {
            Next::Delivered => Status::Delivered,
            Next::RetryAt(_) => Status::Retrying,
            Next::Dead => Status::Dead,
        }
    }
}

/// One attempt, as the delivery log keeps it.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub delivery_id: i64,
    /// The claim's token ([`Claimed::lease`]).
    pub lease: String,
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
    /// Replaces the delivery's saved state when set.
    pub state: Option<serde_json::Value>,
    /// What comes next; also the attempt's outcome.
    pub next: Next,
}

/// A word the store does not know (a row written by a newer version, or by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {word:?} in the store")]
pub struct UnknownWord {
    pub kind: &'static str,
    pub word: String,
}

/// Declares a closed set of words, each one stored, logged and shown the same way.
macro_rules! words {
    ($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, UnknownWord> {
                match text {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord { kind: $kind, word: text.to_string() }),
                }
            }
        }
    };
}

words! {
    /// A delivery's status.
    Status ("status") {
        /// Due now or when scheduled, never tried (or replayed).
        Pending = "pending",
        /// Tried, and due again later.
        Retrying = "retrying",
        Delivered = "delivered",
        /// Refused for good, or out of retries; stays until replayed or purged.
        Dead = "dead",
        /// Withdrawn by an operator; kept in the delivery log.
        Cancelled = "cancelled",
    }
}

impl Status {
    /// Still to be delivered: pending or retrying.
    pub fn is_waiting(self) -> bool {
        matches!(self, Status::Pending | Status::Retrying)
    }
}

words! {
    /// What one attempt came to: the same word in the attempt row and in the log.
    AttemptOutcome ("attempt outcome") {
        Delivered = "delivered",
        Retry = "retry",
        Dead = "dead",
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
    pub status: Status,
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
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// Which deliveries to list (all filters together), newest first.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub destination: Option<String>,
    pub participation_id: Option<String>,
    /// Created at or after (Unix milliseconds).
    pub since: Option<i64>,
    /// At most this many; 0 means 100.
    pub limit: u32,
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotificationRow {
    pub id: i64,
    pub source: String,
    pub participation_id: String,
    /// `v1` or `v2`.
    pub format: String,
    pub received_at: i64,
    /// The body exactly as received.
    pub body: String,
}

/// Which deliveries an operator acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    Ids(Vec<i64>),
    Matching {
        status: Option<Status>,
        destination: Option<String>,
        /// Last changed at or after (Unix milliseconds).
        since: Option<i64>,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// Made due now.
    pub replayed: u64,
    /// Asked for by id, and not in the store.
    pub missing: Vec<i64>,
    /// Delivered already, and left alone (replay them with `force`).
    pub skipped_delivered: u64,
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    pub notifications: u64,
    pub deliveries: u64,
    pub attempts: u64,
}

/// One destination's work and recent health, as the store knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DestinationStats {
    pub destination: String,
    /// How many deliveries are in each status (only those with any).
    pub counts: Vec<(Status, u64)>,
    /// When the oldest delivery still waiting was accepted.
    pub oldest_waiting_at: Option<i64>,
    /// The last delivered attempt.
    pub last_delivered_at: Option<i64>,
    /// The most recent failed attempt still on a waiting or dead delivery, and its error.
    pub last_error_at: Option<i64>,
    pub last_error: Option<String>,
    /// Attempts (and failed ones) since the `recent` time the caller gave.
    pub recent_attempts: u64,
    pub recent_failures: u64,
}

/// Attempts of one destination in one hour: anonymous counts that outlive purges and erasure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HourCount {
    pub destination: String,
    /// Unix hours (milliseconds / 3 600 000).
    pub hour: i64,
    pub delivered: u64,
    pub failed: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
