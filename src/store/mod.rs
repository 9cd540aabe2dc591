//! Durable state: accepted notifications, their deliveries, and every attempt. The ingress,
//! worker, CLI and admin all go through [`Store`].

mod assemble;
pub mod migrate;
pub mod model;
pub mod postgres;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

pub use model::{
    Accepted, AttemptLog, AttemptOutcome, AttemptRow, Claimed, DeliveryRow, DestinationStats,
    Filter, Forgotten, HourCount, Incoming, Next, NotificationRow, Replayed, Selection, Status,
    UnknownWord, now_ms,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store is shutting down")]
    Closed,
    #[error("{0}")]
    Unsupported(String),
    #[error("the operating system's random generator failed")]
    Random,
    #[error("{0}")]
    Busy(String),
    #[error("the store is inconsistent: {0}")]
    Inconsistent(String),
    /// The store is missing, or its schema is not the one this build knows.
    #[error("{0}")]
    Schema(String),
    /// The database could not be reached for a group of accepts (each of them is told).
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    /// The write-ahead log could not be flushed: the accepts waiting for it are not promised.
    #[error("cannot flush the database to disk: {0}")]
    Flush(String),
    /// The database answered something a correct store never would.
    #[error("unexpected answer from the database: {0}")]
    Unexpected(String),
}

/// The seam every storage backend implements. A `2xx` to Qualifio follows only a successful
/// [`Store::accept`], which returns once the notification is durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Stores a notification and one pending delivery per routed destination, in one
    /// transaction, durably. Concurrent calls may share one commit.
    async fn accept(&self, incoming: Incoming) -> Result<Accepted, StoreError>;

    /// Leases up to `limit` due deliveries of `destination` to `owner` for `lease`. A delivery
    /// whose lease expired (its worker died) is due again.
    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// When the next pending delivery of `destination` becomes claimable, if any.
    async fn next_due(&self, destination: &str) -> Result<Option<i64>, StoreError>;

    /// Records attempts and moves each delivery on (delivered, retry at, dead); clears leases.
    /// An attempt whose claim token is no longer on its delivery (the lease expired and another
    /// worker claimed it) is not recorded at all.
    async fn record(&self, attempts: Vec<AttemptLog>) -> Result<(), StoreError>;

    /// Gives back claims whose deliveries were not sent (a batch stopped early), as
    /// (delivery id, claim token): they are due again at once, with no attempt counted.
    async fn unclaim(&self, claims: Vec<(i64, String)>) -> Result<(), StoreError>;

    /// Gives back every lease `owner` holds (at shutdown), so another worker can start at once.
    async fn release(&self, owner: &str) -> Result<u64, StoreError>;

    /// How many deliveries wait (pending) for each destination that has any.
    async fn pending_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Proves the store accepts writes.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Deliveries, newest first.
    async fn list(&self, filter: &Filter) -> Result<Vec<DeliveryRow>, StoreError>;

    /// One delivery with its attempts, oldest first.
    async fn show(
        &self,
        delivery_id: i64,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, StoreError>;

    /// The notification behind a delivery, as received.
    async fn notification(&self, id: i64) -> Result<Option<NotificationRow>, StoreError>;

    /// Each destination with deliveries: counts by status, the oldest waiting one, the last
    /// success and error, and attempts (failed ones too) since `recent_since`.
    async fn stats(&self, recent_since: i64) -> Result<Vec<DestinationStats>, StoreError>;

    /// Attempts per destination and hour since `since_hour` (Unix hours): anonymous counts that
    /// outlive purges and erasure.
    async fn hourly(&self, since_hour: i64) -> Result<Vec<HourCount>, StoreError>;

    /// Makes the selected deliveries due now with a fresh retry schedule; delivered ones only
    /// with `force`; one in flight is left to finish.
    async fn replay(&self, selection: &Selection, force: bool) -> Result<Replayed, StoreError>;

    /// Cancels `destination`'s deliveries in `statuses` (pending, retrying): kept in the log.
    async fn cancel(&self, destination: &str, statuses: &[Status]) -> Result<u64, StoreError>;

    /// Erases every notification of a participation, its deliveries and attempts, leaving no
    /// byte of them in the database files; the anonymous hourly counts stay.
    async fn forget(&self, participation_id: &str) -> Result<Forgotten, StoreError>;

    /// Deletes deliveries in finished `statuses` (delivered, dead, cancelled) last changed
    /// before `before`, and notifications left without deliveries. Returns how many deliveries
    /// went.
    async fn purge(&self, statuses: &[Status], before: i64) -> Result<u64, StoreError>;

    /// Who keeps the worker's rate windows and 429 pauses: this process (one instance), or
    /// the database every instance shares.
    fn limiters(&self) -> Arc<dyn crate::worker::rate::Limiters> {
        Arc::new(crate::worker::rate::InProcess)
    }

    /// Locks every instance sharing this store honours; `None` when only one instance can
    /// use it.
    fn locks(&self) -> Option<Arc<dyn hookfan_connectors::Locks>> {
        None
    }
}

/// The database file of a `sqlite://FILE[?…]` URL.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or(rest).into())
}

/// Whether opening a store may create it or change its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Create it, or bring it up to this build's schema: `serve` does.
    Upgrade,
    /// Use it as it is, and refuse it unless its schema is this build's: `check` and the
    /// operators' commands, which may run beside a relay of another version (during an
    /// upgrade) and must not change the database under it.
    AsIs,
}

/// Opens the store a `[storage] url` names (`sqlite://FILE` or `postgres://…`), creating and
/// migrating it as needed.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_as(url, Schema::Upgrade).await
}

/// Opens an existing store without changing it: see [`Schema::AsIs`].
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_as(url, Schema::AsIs).await
}

async fn open_as(url: &str, schema: Schema) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(file) = sqlite_file(url) {
        return Ok(Arc::new(SqliteStore::open_as(&file, schema).await?));
    }
    if postgres::is_postgres_url(url) {
        return Ok(Arc::new(PgStore::open_as(url, schema).await?));
    }
    Err(StoreError::Unsupported(
        "the storage url must start with sqlite:// or postgres://".into(),
    ))
}

/// Refuses a schema other than this build's: `applied` is the last migration the store
/// records (0: none), `known` this build's last.
fn same_schema(applied: i64, known: i64) -> Result<(), StoreError> {
    match applied.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::Schema(format!(
            "the store's schema is version {applied}, this hookfan's is {known}: start `hookfan serve` of this version once (it upgrades the store), then try again"
        ))),
        std::cmp::Ordering::Greater => Err(StoreError::Schema(format!(
            "the store's schema is version {applied}, newer than this hookfan's ({known}): use the hookfan that wrote it"
        ))),
    }
}
