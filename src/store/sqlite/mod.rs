//! SQLite, for one machine: WAL, one writer connection; an accept is answered once its commit
//! is flushed to disk (see `flush`). Accepts are group-committed: whatever arrives while a
//! commit is in flight shares the next one.
//!
//! - this file: opening, and the queue (accept, claim, record);
//! - `writer`: the one writer task, which groups them; `flush`: the disk flush after it;
//!   `checkpoint`: copying the write-ahead log into the database file beside it;
//! - `log`: reading the delivery log (lists, details, stats, hourly counts);
//! - `operate`: what operators change (replay, cancel, forget, purge).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, oneshot};

use super::assemble::{claimed, total};
use super::model::*;
use super::{Schema, Store, StoreError};

mod checkpoint;
mod flush;
mod log;
mod operate;
mod writer;

use flush::Flusher;
use writer::{Durability, Job, Writer};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// One connection: SQLite has one writer at a time anyway, and this keeps them in order.
    writer: Arc<Writer>,
    pub(crate) reader: SqlitePool,
    /// Accepts and attempt records, grouped into shared transactions by `writer::run`.
    jobs: mpsc::Sender<Job>,
    /// Whether a flush of the write-ahead log failed (then nothing is accepted, nor ready).
    flushed: Arc<flush::State>,
}

fn migrator() -> Migrator {
    // A migration that manages its own transaction (to switch foreign keys off) says no_tx.
    let migration = |version, name: &str, sql: &'static str, no_tx| {
        Migration::new(
            version,
            name.to_string().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            no_tx,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../../migrations/sqlite/0001_init.sql"),
            false,
        ),
        migration(
            2,
            "outcome words",
            include_str!("../../../migrations/sqlite/0002_outcome_words.sql"),
            false,
        ),
        migration(
            3,
            "lease token",
            include_str!("../../../migrations/sqlite/0003_lease_token.sql"),
            false,
        ),
        migration(
            4,
            "operators",
            include_str!("../../../migrations/sqlite/0004_operators.sql"),
            true,
        ),
        migration(
            5,
            "received index",
            include_str!("../../../migrations/sqlite/0005_received_index.sql"),
            false,
        ),
        migration(
            6,
            "one notification key",
            include_str!("../../../migrations/sqlite/0006_one_notification_key.sql"),
            true,
        ),
    ])
}

impl SqliteStore {
    pub async fn open(file: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_as(file, Schema::Upgrade).await
    }

    pub async fn open_as(file: &Path, schema: Schema) -> Result<SqliteStore, StoreError> {
        Self::connect(file, BUSY_TIMEOUT, schema).await
    }

    /// `busy_timeout` is how long a write waits for a lock held by another process.
    pub async fn open_with(file: &Path, busy_timeout: Duration) -> Result<SqliteStore, StoreError> {
        Self::connect(file, busy_timeout, Schema::Upgrade).await
    }

    async fn connect(
        file: &Path,
        busy_timeout: Duration,
        schema: Schema,
    ) -> Result<SqliteStore, StoreError> {
        if schema == Schema::AsIs && !file.exists() {
            return Err(StoreError::Schema(format!(
                "there is no store at {}: `hookfan serve` creates it",
                file.display()
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(schema == Schema::Upgrade)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true)
            // Deleted rows are overwritten, so an erased participation leaves no bytes behind.
            .pragma("secure_delete", "ON")
            .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
            // A log that grew (a reader held it, a migration) shrinks back when it starts over.
            .pragma("journal_size_limit", checkpoint::LOG_LIMIT_BYTES);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let migrator = migrator();
        match schema {
            Schema::Upgrade => {
                migrator.run(&writer).await?;
                // A migration that rebuilt a table sent all of it through the log: empty the
                // log and give its space back now, not at the next restart.
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&writer)
                    .await?;
            }
            Schema::AsIs => {
                let migrated: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_sqlx_migrations')",
                )
                .fetch_one(&writer)
                .await?;
                let applied: i64 = if migrated {
                    sqlx::query_scalar(
                        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                    )
                    .fetch_one(&writer)
                    .await?
                } else {
                    0
                };
                let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
                super::same_schema(applied, known)?;
            }
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        let writer = Arc::new(Writer::new(writer));
        let flusher = Flusher::start(file).map_err(|e| StoreError::Flush(e.to_string()))?;
        let flushed = flusher.state();
        let (jobs, rx) = mpsc::channel(4 * writer::GROUP_MAX);
        tokio::spawn(writer::run(writer.clone(), flusher, rx));
        if schema == Schema::Upgrade {
            // Never creates the file again, should it be removed while hookfan runs.
            let options = options.create_if_missing(false);
            tokio::spawn(checkpoint::run(options, Arc::downgrade(&writer)));
        }
        Ok(SqliteStore {
            writer,
            reader,
            jobs,
            flushed,
        })
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn accept(&self, incoming: Incoming) -> Result<Accepted, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Accept(incoming, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let token = crate::random::hex_token(16).map_err(|_| StoreError::Random)?;
        // The writer leases them, in a transaction it shares with the accepts and records that
        // wait with the claim.
        let (reply, leased) = oneshot::channel();
        let claim = writer::Claim {
            destination: destination.to_string(),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            owner: owner.to_string(),
            now,
            expires,
            token: token.clone(),
        };
        self.jobs
            .send(Job::Claim(claim, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        let leased = leased.await.map_err(|_| StoreError::Closed)??;
        // Foreign keys guarantee the notification; a miss would be a bug, not a reason to stop.
        let mut out: Vec<Claimed> = leased
            .into_iter()
            .filter_map(
                |(id, n, attempts, base, state, doubt, participation, body, at)| {
                    let notification = (participation?, Arc::from(body?), at?);
                    let lease = (id, n, attempts, base, state, doubt);
                    Some(claimed(lease, notification, destination, &token))
                },
            )
            .collect();
        out.sort_by_key(|c| c.delivery_id);
        Ok(out)
    }

    async fn next_due(&self, destination: &str) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(MAX(next_attempt_at, COALESCE(lease_expires_at, 0)))
             FROM deliveries WHERE destination = ?1 AND status IN ('pending', 'retrying')",
        )
        .bind(destination)
        .fetch_one(&self.reader)
        .await?;
        Ok(due)
    }

    async fn record(&self, attempts: Vec<AttemptLog>) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Record(attempts, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn unclaim(&self, claims: Vec<(i64, String)>) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let batch: Vec<serde_json::Value> = claims
            .iter()
            .map(|(id, lease)| serde_json::json!({"id": id, "lease": lease}))
            .collect();
        // Nothing was sent under this claim, so it leaves no doubt behind (an earlier one stays).
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL,
                 claimed_at = NULL
             FROM (SELECT value ->> 'id' AS id, value ->> 'lease' AS lease FROM jsonb_each(?1)) AS x
             WHERE deliveries.id = x.id AND deliveries.lease_token = x.lease",
        )
        .bind(serde_json::Value::from(batch).to_string())
        .execute(&mut *self.writer.acquire(Durability::Os).await?)
        .await?;
        Ok(())
    }

    async fn release(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL
             WHERE lease_owner = ?1 AND status IN ('pending', 'retrying')",
        )
        .bind(owner)
        .execute(&mut *self.writer.acquire(Durability::Os).await?)
        .await?;
        Ok(done.rows_affected())
    }

    async fn pending_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT destination, COUNT(*) FROM deliveries WHERE status IN ('pending', 'retrying')
             GROUP BY destination ORDER BY destination",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(d, n)| (d, total(n))).collect())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.flushed.broken()?;
        sqlx::query(
            "INSERT INTO health (id, checked_at) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(now_ms())
        .execute(&mut *self.writer.acquire(Durability::Os).await?)
        .await?;
        Ok(())
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<DeliveryRow>, StoreError> {
        self.list_deliveries(filter).await
    }

    async fn show(
        &self,
        delivery_id: i64,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        self.show_delivery(delivery_id).await
    }

    async fn notification(&self, id: i64) -> Result<Option<NotificationRow>, StoreError> {
        self.notification_row(id).await
    }

    async fn stats(&self, recent_since: i64) -> Result<Vec<DestinationStats>, StoreError> {
        self.destination_stats(recent_since).await
    }

    async fn hourly(&self, since_hour: i64) -> Result<Vec<HourCount>, StoreError> {
        self.hour_counts(since_hour).await
    }

    async fn replay(&self, selection: &Selection, force: bool) -> Result<Replayed, StoreError> {
        self.replay_deliveries(selection, force).await
    }

    async fn cancel(&self, destination: &str, statuses: &[Status]) -> Result<u64, StoreError> {
        self.cancel_deliveries(destination, statuses).await
    }

    async fn forget(&self, participation_id: &str) -> Result<Forgotten, StoreError> {
        self.forget_participation(participation_id).await
    }

    async fn purge(&self, statuses: &[Status], before: i64) -> Result<u64, StoreError> {
        self.purge_finished(statuses, before).await
    }
}
