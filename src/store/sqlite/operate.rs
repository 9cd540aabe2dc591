//! What operators change: replay (due now again), cancel, forget (erasure), purge.

use sqlx::Connection as _;

use super::{Durability, SqliteStore};
use crate::store::StoreError;
use crate::store::assemble::{self, total};
use crate::store::model::*;

/// A list of words or ids as one JSON parameter (`json_each`).
fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

impl SqliteStore {
    pub(super) async fn replay_deliveries(
        &self,
        selection: &Selection,
        force: bool,
    ) -> Result<Replayed, StoreError> {
        let now = now_ms();
        let mut conn = self.writer.acquire(Durability::Os).await?;
        let mut tx = conn.begin().await?;
        // The deliveries selected, before the delivered ones are set aside.
        let ids: Vec<i64> = match selection {
            Selection::Ids(asked) => {
                sqlx::query_scalar(
                    "SELECT id FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))",
                )
                .bind(json_list(asked))
                .fetch_all(&mut *tx)
                .await?
            }
            Selection::Matching {
                status,
                destination,
                since,
            } => {
                sqlx::query_scalar(
                    "SELECT id FROM deliveries
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR destination = ?2)
                       AND (?3 IS NULL OR updated_at >= ?3)",
                )
                .bind(status.map(Status::as_str))
                .bind(destination)
                .bind(since)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let skipped_delivered: i64 = if force {
            0
        } else {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries
                 WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'delivered'",
            )
            .bind(json_list(&ids))
            .fetch_one(&mut *tx)
            .await?
        };
        // Due now, with a fresh retry schedule; a claim in flight is left to finish.
        let replayed = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?2, retry_base = attempts,
                 updated_at = ?2
             WHERE id IN (SELECT value FROM json_each(?1))
               AND (?3 OR status != 'delivered') AND lease_token IS NULL",
        )
        .bind(json_list(&ids))
        .bind(now)
        .bind(force)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Replayed {
            replayed,
            missing: assemble::missing(selection, &ids),
            skipped_delivered: total(skipped_delivered),
        })
    }

    pub(super) async fn cancel_deliveries(
        &self,
        destination: &str,
        statuses: &[Status],
    ) -> Result<u64, StoreError> {
        // A claim in flight loses its token, so its attempt is not recorded over the
        // cancellation.
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', updated_at = ?3, lease_owner = NULL,
                 lease_expires_at = NULL, lease_token = NULL, claimed_at = NULL
             WHERE destination = ?1 AND status IN (SELECT value FROM json_each(?2))",
        )
        .bind(destination)
        .bind(json_list(&assemble::cancellable(statuses)))
        .bind(now_ms())
        .execute(&mut *self.writer.acquire(Durability::Os).await?)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn forget_participation(
        &self,
        participation_id: &str,
    ) -> Result<Forgotten, StoreError> {
        let mut conn = self.writer.acquire(Durability::Fsync).await?;
        let mut tx = conn.begin().await?;
        let counts = sqlx::query_as(
            "SELECT COUNT(DISTINCT n.id) AS notifications, COUNT(DISTINCT d.id) AS deliveries,
                    COUNT(a.id) AS attempts
             FROM notifications n
             LEFT JOIN deliveries d ON d.notification_id = n.id
             LEFT JOIN attempts a ON a.delivery_id = d.id
             WHERE n.participation_id = ?1",
        )
        .bind(participation_id)
        .fetch_one(&mut *tx)
        .await?;
        let forgotten = assemble::forgotten(counts);
        // Deliveries and attempts go with their notification (ON DELETE CASCADE); with
        // secure_delete on, the freed bytes are overwritten.
        sqlx::query("DELETE FROM notifications WHERE participation_id = ?1")
            .bind(participation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Earlier versions of those pages may still be in the write-ahead log: copy the log
        // into the database and empty it. Readers in the middle of a read hold it back for a
        // moment, so try a few times.
        for _ in 0..50 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *conn)
                .await?;
            if busy == 0 {
                return Ok(forgotten);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StoreError::Busy(
            "the erasure is committed, but the write-ahead log could not be emptied while readers held it: run forget again".into(),
        ))
    }

    pub(super) async fn purge_finished(
        &self,
        statuses: &[Status],
        before: i64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer.acquire(Durability::Os).await?;
        let mut tx = conn.begin().await?;
        let gone = sqlx::query(
            "DELETE FROM deliveries
             WHERE status IN (SELECT value FROM json_each(?2)) AND updated_at < ?1",
        )
        .bind(before)
        .bind(json_list(&assemble::purgeable(statuses)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM notifications WHERE received_at < ?1
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.notification_id = notifications.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone)
    }
}
