//! Locks every instance honours: PostgreSQL advisory locks, each held by a transaction, so an
//! instance that dies (its connection closes) lets the others in at once, and one that forgets
//! to release still releases when the transaction rolls back.

use std::time::Duration;

use hookfan_connectors::{Held, Locks};
use sha2::Digest as _;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

/// How long a lock is waited for before the caller gives up (and its attempt is retried).
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

pub struct PgLocks {
    pool: PgPool,
}

impl PgLocks {
    pub fn new(pool: PgPool) -> Self {
        PgLocks { pool }
    }
}

/// The advisory lock's number for `key`: the first 8 bytes of SHA-256("hookfan:" + key), so
/// keys cannot collide with small numbers other software on the database may lock.
pub fn lock_id(key: &str) -> i64 {
    let digest = sha2::Sha256::digest(format!("hookfan:{key}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[async_trait::async_trait]
impl Locks for PgLocks {
    async fn lock(&self, key: &str) -> Result<Box<dyn Held>, String> {
        let take = async {
            let mut tx = self.pool.begin().await?;
            // The wait is bounded on the server too, so a lock is never granted to a caller
            // that already gave up.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL lock_timeout = '{}ms'",
                LOCK_WAIT.as_millis()
            )))
            .execute(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_id(key))
                .execute(&mut *tx)
                .await?;
            Ok::<_, sqlx::Error>(tx)
        };
        match tokio::time::timeout(LOCK_WAIT + Duration::from_secs(5), take).await {
            Ok(Ok(tx)) => Ok(Box::new(PgHeld(tx))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no lock after {}s", LOCK_WAIT.as_secs())),
        }
    }
}

/// The transaction holding the lock: it ends with the lock.
struct PgHeld(Transaction<'static, Postgres>);

#[async_trait::async_trait]
impl Held for PgHeld {
    async fn release(self: Box<Self>) {
        if let Err(e) = self.0.commit().await {
            // The transaction, and with it the lock, ends when the connection is dropped.
            tracing::warn!(error = %e, "could not release a shared lock cleanly");
        }
    }
}
