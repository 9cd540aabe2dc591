//! Reading the delivery log: lists, one delivery with its attempts, per-destination stats, and
//! the hourly counts charts draw. The same queries as SQLite's, in PostgreSQL's words.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{DELIVERY_COLUMNS, PgStore, count, delivery_row, total, word};
use crate::store::StoreError;
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
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.status.map(Status::as_str))
            .bind(&filter.destination)
            .bind(&filter.participation_id)
            .bind(filter.since)
            .bind(i64::from(limit))
            .fetch_all(&self.relaxed)
            .await?;
        Ok(rows.iter().map(delivery_row).collect::<Result<_, _>>()?)
    }

    pub(super) async fn show_delivery(
        &self,
        delivery_id: i64,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN notifications n ON n.id = d.notification_id
             WHERE d.id = $1"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(delivery_id)
            .fetch_optional(&self.relaxed)
            .await?
        else {
            return Ok(None);
        };
        let delivery = delivery_row(&row)?;
        let attempts = sqlx::query(
            "SELECT number, started_at, duration_ms, outcome, status_code, error, response
             FROM attempts WHERE delivery_id = $1 ORDER BY id",
        )
        .bind(delivery_id)
        .fetch_all(&self.relaxed)
        .await?
        .iter()
        .map(|r| -> Result<AttemptRow, sqlx::Error> {
            Ok(AttemptRow {
                number: count(r, "number")?,
                started_at: r.try_get("started_at")?,
                duration_ms: r.try_get("duration_ms")?,
                outcome: word(r, "outcome")?,
                status_code: r
                    .try_get::<Option<i64>, _>("status_code")?
                    .and_then(|c| u16::try_from(c).ok()),
                error: r.try_get("error")?,
                response: r.try_get("response")?,
            })
        })
        .collect::<Result<_, _>>()?;
        Ok(Some((delivery, attempts)))
    }

    pub(super) async fn notification_row(
        &self,
        id: i64,
    ) -> Result<Option<NotificationRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, source, participation_id, format, received_at, body
             FROM notifications WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.relaxed)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        Ok(Some(NotificationRow {
            id: r.try_get("id")?,
            source: r.try_get("source")?,
            participation_id: r.try_get("participation_id")?,
            format: r.try_get("format")?,
            received_at: r.try_get("received_at")?,
            body: r.try_get("body")?,
        }))
    }

    pub(super) async fn destination_stats(
        &self,
        recent_since: i64,
    ) -> Result<Vec<DestinationStats>, StoreError> {
        let mut by_name: BTreeMap<String, DestinationStats> = BTreeMap::new();
        let groups = sqlx::query(
            "SELECT destination, status, COUNT(*) AS n, MIN(created_at) AS oldest,
                    MAX(updated_at) AS latest
             FROM deliveries GROUP BY destination, status",
        )
        .fetch_all(&self.relaxed)
        .await?;
        for g in &groups {
            let name: String = g.try_get("destination")?;
            let status: Status = word(g, "status")?;
            let n = total(g, "n")?;
            let s = slot(&mut by_name, name);
            s.counts.push((status, n));
            if status.is_waiting() {
                let oldest: i64 = g.try_get("oldest")?;
                s.oldest_waiting_at = Some(s.oldest_waiting_at.map_or(oldest, |o| o.min(oldest)));
            }
            if status == Status::Delivered {
                s.last_delivered_at = g.try_get("latest")?;
            }
        }
        // In the words' order (pending, retrying, delivered, dead, cancelled).
        for s in by_name.values_mut() {
            s.counts.sort_by_key(|(status, _)| *status);
        }
        let errors = sqlx::query(
            "SELECT DISTINCT ON (destination) destination, updated_at, last_error
             FROM deliveries
             WHERE last_error IS NOT NULL AND status IN ('retrying', 'dead')
             ORDER BY destination, updated_at DESC",
        )
        .fetch_all(&self.relaxed)
        .await?;
        for e in &errors {
            let s = slot(&mut by_name, e.try_get("destination")?);
            s.last_error_at = e.try_get("updated_at")?;
            s.last_error = e.try_get("last_error")?;
        }
        let recent = sqlx::query(
            "SELECT d.destination, COUNT(*) AS n,
                    COUNT(*) FILTER (WHERE a.outcome <> 'delivered') AS failed
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE a.started_at >= $1 GROUP BY d.destination",
        )
        .bind(recent_since)
        .fetch_all(&self.relaxed)
        .await?;
        for r in &recent {
            let s = slot(&mut by_name, r.try_get("destination")?);
            s.recent_attempts = total(r, "n")?;
            s.recent_failures = total(r, "failed")?;
        }
        Ok(by_name.into_values().collect())
    }

    pub(super) async fn hour_counts(&self, since_hour: i64) -> Result<Vec<HourCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT destination, hour, delivered, failed FROM attempt_counts
             WHERE hour >= $1 ORDER BY destination, hour",
        )
        .bind(since_hour)
        .fetch_all(&self.relaxed)
        .await?;
        rows.iter()
            .map(|r| -> Result<HourCount, StoreError> {
                Ok(HourCount {
                    destination: r.try_get("destination")?,
                    hour: r.try_get("hour")?,
                    delivered: total(r, "delivered")?,
                    failed: total(r, "failed")?,
                })
            })
            .collect()
    }
}

/// The stats of `destination`, made empty the first time it is seen.
fn slot(
    map: &mut BTreeMap<String, DestinationStats>,
    destination: String,
) -> &mut DestinationStats {
    map.entry(destination.clone())
        .or_insert_with(|| DestinationStats {
            destination,
            ..DestinationStats::default()
        })
}
