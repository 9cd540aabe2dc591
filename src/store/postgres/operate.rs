//! What operators change: replay (due now again), cancel, forget (erasure), purge. The same
//! rules as SQLite's; erasure differs in what the database can promise (see
//! [`PgStore::forget_participation`]).

use super::PgStore;
use crate::store::StoreError;
use crate::store::assemble::{self, total};
use crate::store::model::*;

impl PgStore {
    pub(super) async fn replay_deliveries(
        &self,
        selection: &Selection,
        force: bool,
    ) -> Result<Replayed, StoreError> {
        let now = now_ms();
        let mut tx = self.relaxed.begin().await?;
        // The deliveries selected, before the delivered ones are set aside.
        let ids: Vec<i64> = match selection {
            Selection::Ids(asked) => {
                sqlx::query_scalar("SELECT id FROM deliveries WHERE id = ANY($1)")
                    .bind(asked)
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
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR destination = $2)
                       AND ($3::bigint IS NULL OR updated_at >= $3)",
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
                "SELECT COUNT(*) FROM deliveries WHERE id = ANY($1) AND status = 'delivered'",
            )
            .bind(&ids)
            .fetch_one(&mut *tx)
            .await?
        };
        // Due now, with a fresh retry schedule; a claim in flight is left to finish.
        let replayed = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, retry_base = attempts,
                 updated_at = $2
             WHERE id = ANY($1) AND ($3 OR status <> 'delivered') AND lease_token IS NULL",
        )
        .bind(&ids)
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
            "UPDATE deliveries SET status = 'cancelled', updated_at = $3, lease_owner = NULL,
                 lease_expires_at = NULL, lease_token = NULL, claimed_at = NULL
             WHERE destination = $1 AND status = ANY($2)",
        )
        .bind(destination)
        .bind(assemble::cancellable(statuses))
        .bind(now_ms())
        .execute(&self.relaxed)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes the participation's notifications, deliveries and attempts in one durable
    /// transaction, then vacuums the three tables, index entries included.
    ///
    /// What PostgreSQL guarantees is less than SQLite's `secure_delete`: once committed, no
    /// query, dump (`pg_dump`) or copy made from then on holds the rows; VACUUM then marks their
    /// space free (and removes their index entries) so new rows overwrite it, but it does not
    /// zero the bytes, and the write-ahead log keeps the inserts until it is recycled (and
    /// WAL archives, replicas' files and earlier backups keep them as long as they are kept).
    /// `VACUUM FULL` rewrites a table into new files; it locks the table while it runs, so it is
    /// left to the operator (deploy/README.md).
    pub(super) async fn forget_participation(
        &self,
        participation_id: &str,
    ) -> Result<Forgotten, StoreError> {
        let participation_id = super::text(participation_id);
        let mut tx = self.durable.begin().await?;
        let counts = sqlx::query_as(
            "SELECT COUNT(DISTINCT n.id) AS notifications, COUNT(DISTINCT d.id) AS deliveries,
                    COUNT(a.id) AS attempts
             FROM notifications n
             LEFT JOIN deliveries d ON d.notification_id = n.id
             LEFT JOIN attempts a ON a.delivery_id = d.id
             WHERE n.participation_id = $1",
        )
        .bind(&participation_id)
        .fetch_one(&mut *tx)
        .await?;
        let forgotten = assemble::forgotten(counts);
        // Deliveries and attempts go with their notification (ON DELETE CASCADE).
        sqlx::query("DELETE FROM notifications WHERE participation_id = $1")
            .bind(&participation_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if forgotten.notifications == 0 {
            return Ok(forgotten);
        }
        // INDEX_CLEANUP ON: PostgreSQL would otherwise skip the indexes when few rows died,
        // leaving the participation id in them. TOAST tables (long bodies) are vacuumed with
        // their tables.
        let vacuumed = sqlx::query("VACUUM (INDEX_CLEANUP ON) notifications, deliveries, attempts")
            .execute(&self.durable)
            .await;
        if let Err(e) = vacuumed {
            return Err(StoreError::Busy(format!(
                "the erasure is committed (no query returns the rows), but VACUUM failed: {e}; run forget again, or VACUUM the notifications, deliveries and attempts tables"
            )));
        }
        Ok(forgotten)
    }

    pub(super) async fn purge_finished(
        &self,
        statuses: &[Status],
        before: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.relaxed.begin().await?;
        let gone = sqlx::query("DELETE FROM deliveries WHERE status = ANY($2) AND updated_at < $1")
            .bind(before)
            .bind(assemble::purgeable(statuses))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM notifications WHERE received_at < $1
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE deliveries.notification_id = notifications.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(gone)
    }
}
