//! Reading the delivery log: lists, one delivery with its attempts, per-destination stats, and
//! the hourly counts charts draw. The same queries as SQLite's, in PostgreSQL's words.

use super::PgStore;
use crate::store::StoreError;
use crate::store::assemble::{self, DELIVERY_COLUMNS};
use crate::store::model::*;

impl PgStore {
    pub(super) async fn list_deliveries(
        &self,
        filter: &Filter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE ($1::text IS NULL OR d.status = $1) AND ($2::text IS NULL OR d.destination = $2)
               AND ($3::text IS NULL OR n.participation_id = $3)
               AND ($4::bigint IS NULL OR d.created_at >= $4)
             ORDER BY d.id DESC LIMIT $5"
        );
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .bind(&filter.destination)
            .bind(&filter.participation_id)
            .bind(filter.since)
            .bind(i64::from(limit))
            .fetch_all(&self.relaxed)
            .await?;
        Ok(rows
            .into_iter()
            .map(assemble::delivery_row)
            .collect::<Result<_, _>>()?)
    }

    pub(super) async fn show_delivery(
        &self,
        delivery_id: i64,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.id = $1"
        );
        let Some(row) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(delivery_id)
            .fetch_optional(&self.relaxed)
            .await?
        else {
            return Ok(None);
        };
        let delivery = assemble::delivery_row(row)?;
        let attempts = sqlx::query_as(
            "SELECT number, started_at, duration_ms, outcome, status_code, error, response
             FROM attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery_id)
        .fetch_all(&self.relaxed)
        .await?
        .into_iter()
        .map(assemble::attempt_row)
        .collect::<Result<_, _>>()?;
        Ok(Some((delivery, attempts)))
    }

    pub(super) async fn notification_row(
        &self,
        id: i64,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let row = sqlx::query_as(
            "SELECT id, source, participation_id, format, received_at, body
             FROM notifications WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.relaxed)
        .await?;
        Ok(row.map(assemble::notification_row))
    }

    pub(super) async fn destination_stats(
        &self,
        recent_since: i64,
    ) -> Result<Vec<DestinationStats>, StoreError> {
        let groups = sqlx::query_as(
            "SELECT destination, status, COUNT(*) AS n, MIN(created_at) AS oldest,
                    MAX(updated_at) AS latest
             FROM deliveries GROUP BY destination, status",
        )
        .fetch_all(&self.relaxed)
        .await?;
        let errors = sqlx::query_as(
            "SELECT DISTINCT ON (destination) destination, updated_at, last_error
             FROM deliveries
             WHERE last_error IS NOT NULL AND status IN ('retrying', 'dead')
             ORDER BY destination, updated_at DESC",
        )
        .fetch_all(&self.relaxed)
        .await?;
        let recent = sqlx::query_as(
            "SELECT d.destination, COUNT(*) AS n,
                    COUNT(*) FILTER (WHERE a.outcome <> 'delivered') AS failed
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE a.started_at >= $1 GROUP BY d.destination",
        )
        .bind(recent_since)
        .fetch_all(&self.relaxed)
        .await?;
        Ok(assemble::destination_stats(groups, errors, recent)?)
    }

    pub(super) async fn hour_counts(&self, since_hour: i64) -> Result<Vec<HourCount>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT destination, hour, delivered, failed FROM attempt_counts
             WHERE hour >= $1 ORDER BY destination, hour",
        )
        .bind(since_hour)
        .fetch_all(&self.relaxed)
        .await?;
        Ok(rows.into_iter().map(assemble::hour_count).collect())
    }
}
