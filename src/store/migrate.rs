//! `hookfan migrate-store`: copies a SQLite store into PostgreSQL, so a relay moves to several
//! instances without losing its work or its history. Every notification, delivery (whatever its
//! status, with its attempts count, retry schedule, saved state and in-doubt mark) and attempt
//! is copied with its id, and the anonymous hourly counts too. Leases are not: a delivery
//! claimed when the copy was taken is due at once in PostgreSQL (its in-doubt mark tells a
//! Trello delivery to look for the card first).
//!
//! The source is read in one read transaction (a consistent snapshot even if a relay still
//! writes to it, though what it accepts afterwards stays behind: stop it first), and the target
//! is written in one transaction: a copy that fails leaves the target as it was.

use sqlx::Row;

use super::{PgStore, SqliteStore, Status, StoreError};

/// Rows per read from SQLite and per insert into PostgreSQL.
const BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the target already holds {0} rows (notifications, deliveries, attempts, hourly counts): pass --replace to empty it first"
    )]
    NotEmpty(i64),
    #[error("the copy does not match the source: {0}")]
    Mismatch(String),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Store(StoreError::Db(e))
    }
}

/// What was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub notifications: u64,
    pub deliveries: u64,
    /// Deliveries by status, in the words' order (only those with any).
    pub by_status: Vec<(Status, u64)>,
    pub attempts: u64,
    pub hourly_counts: u64,
}

/// One table's copy: how rows are read from SQLite (after an id, in id order), and how a batch
/// of them, as JSON objects, is written to PostgreSQL.
struct Table {
    name: &'static str,
    read: &'static str,
    write: &'static str,
}

const NOTIFICATIONS: Table = Table {
    name: "notifications",
    read: "SELECT id, source, participation_id, format, body_sha256, body, received_at
           FROM notifications WHERE id > ?1 ORDER BY id LIMIT ?2",
    write: "INSERT INTO notifications (id, source, participation_id, format, body_sha256, body, received_at)
            SELECT id, source, participation_id, format, body_sha256, body, received_at
            FROM json_to_recordset($1::json) AS x(id bigint, source text, participation_id text,
                 format text, body_sha256 text, body text, received_at bigint)",
};

const DELIVERIES: Table = Table {
    name: "deliveries",
    read: "SELECT id, notification_id, destination, status, attempts, retry_base, next_attempt_at,
                  claimed_at, in_doubt_since, last_error, state, created_at, updated_at
           FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2",
    write: "INSERT INTO deliveries (id, notification_id, destination, status, attempts, retry_base,
                next_attempt_at, claimed_at, in_doubt_since, last_error, state, created_at, updated_at)
            SELECT id, notification_id, destination, status, attempts, retry_base, next_attempt_at,
                   claimed_at, in_doubt_since, last_error, state, created_at, updated_at
            FROM json_to_recordset($1::json) AS x(id bigint, notification_id bigint,
                 destination text, status text, attempts bigint, retry_base bigint,
                 next_attempt_at bigint, claimed_at bigint, in_doubt_since bigint,
                 last_error text, state text, created_at bigint, updated_at bigint)",
};

const ATTEMPTS: Table = Table {
    name: "attempts",
    read: "SELECT id, delivery_id, number, started_at, duration_ms, outcome, status_code, error,
                  response
           FROM attempts WHERE id > ?1 ORDER BY id LIMIT ?2",
    write: "INSERT INTO attempts (id, delivery_id, number, started_at, duration_ms, outcome,
                status_code, error, response)
            SELECT id, delivery_id, number, started_at, duration_ms, outcome, status_code, error,
                   response
            FROM json_to_recordset($1::json) AS x(id bigint, delivery_id bigint, number bigint,
                 started_at bigint, duration_ms bigint, outcome text, status_code bigint,
                 error text, response text)",
};

const HOURLY_COUNTS: Table = Table {
    name: "attempt_counts",
    // Keyed by (destination, hour), not an id: read by rowid.
    read: "SELECT rowid AS id, destination, hour, delivered, failed
           FROM attempt_counts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    write: "INSERT INTO attempt_counts (destination, hour, delivered, failed)
            SELECT destination, hour, delivered, failed
            FROM json_to_recordset($1::json) AS x(destination text, hour bigint,
                 delivered bigint, failed bigint)",
};

/// A SQLite value as JSON (text made storable in PostgreSQL).
fn value(row: &sqlx::sqlite::SqliteRow, i: usize) -> Result<serde_json::Value, sqlx::Error> {
    use sqlx::{TypeInfo as _, ValueRef as _};
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(serde_json::Value::Null);
    }
    let kind = raw.type_info().name().to_string();
    Ok(match kind.as_str() {
        "INTEGER" => row.try_get::<i64, _>(i)?.into(),
        _ => super::postgres::text(&row.try_get::<String, _>(i)?).into(),
    })
}

/// Copies `from` into `to`; `replace` empties the target first, else a target holding anything
/// is refused.
pub async fn sqlite_to_postgres(
    from: &SqliteStore,
    to: &PgStore,
    replace: bool,
) -> Result<Copied, MigrateError> {
    let mut source = from.reader.begin().await?;
    let mut target = to.durable.begin().await?;
    // No relay may write to the target while it is filled.
    sqlx::query(
        "LOCK TABLE notifications, deliveries, attempts, attempt_counts IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *target)
    .await?;
    let present: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM notifications) + (SELECT COUNT(*) FROM deliveries)
              + (SELECT COUNT(*) FROM attempts) + (SELECT COUNT(*) FROM attempt_counts)",
    )
    .fetch_one(&mut *target)
    .await?;
    if present > 0 {
        if !replace {
            return Err(MigrateError::NotEmpty(present));
        }
        sqlx::query(
            "TRUNCATE notifications, deliveries, attempts, attempt_counts RESTART IDENTITY",
        )
        .execute(&mut *target)
        .await?;
    }
    let mut copied = Copied::default();
    for table in [&NOTIFICATIONS, &DELIVERIES, &ATTEMPTS, &HOURLY_COUNTS] {
        let mut after = 0i64;
        let mut n = 0u64;
        loop {
            let rows = sqlx::query(table.read)
                .bind(after)
                .bind(BATCH)
                .fetch_all(&mut *source)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("id")?;
            let mut batch = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut object = serde_json::Map::new();
                for (i, column) in row.columns().iter().enumerate() {
                    use sqlx::Column as _;
                    object.insert(column.name().to_string(), value(row, i)?);
                }
                batch.push(serde_json::Value::Object(object));
            }
            n += u64::try_from(batch.len()).unwrap_or(0);
            sqlx::query(table.write)
                .bind(serde_json::Value::from(batch).to_string())
                .execute(&mut *target)
                .await?;
        }
        match table.name {
            "notifications" => copied.notifications = n,
            "deliveries" => copied.deliveries = n,
            "attempts" => copied.attempts = n,
            _ => copied.hourly_counts = n,
        }
    }
    // New rows continue after the copied ids.
    for table in ["notifications", "deliveries", "attempts"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                           COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
        )))
        .execute(&mut *target)
        .await?;
    }
    // The copy is checked against the source before it is committed.
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status")
            .fetch_all(&mut *target)
            .await?;
    let source_by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status")
            .fetch_all(&mut *source)
            .await?;
    if by_status != source_by_status {
        return Err(MigrateError::Mismatch(format!(
            "deliveries by status: {source_by_status:?} in SQLite, {by_status:?} copied"
        )));
    }
    for (status, n) in by_status {
        let status: Status = status
            .parse()
            .map_err(|e: super::UnknownWord| MigrateError::Mismatch(e.to_string()))?;
        copied
            .by_status
            .push((status, u64::try_from(n).unwrap_or(0)));
    }
    copied.by_status.sort_by_key(|(s, _)| *s);
    target.commit().await?;
    source.rollback().await?;
    Ok(copied)
}
