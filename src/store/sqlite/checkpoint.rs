//! Copies the write-ahead log into the database file from a connection of its own, so the
//! writer does not. SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, and with participation ids that are UUIDs each checkpoint writes pages all over
//! the database file and flushes it: tens of milliseconds that every accept in the next groups
//! would wait for. A passive checkpoint on another connection runs beside the writer instead.
//! The writer's own automatic checkpoint stays as a backstop, at a larger threshold
//! ([`BACKSTOP_PAGES`]), for a log this task cannot keep short.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};

use super::writer::Writer;

/// The log's size, in pages, at which the writer checkpoints by itself (SQLite's default is
/// 1,000): about 40 MB of log, reached only if this task falls behind.
pub(super) const BACKSTOP_PAGES: &str = "10000";

/// How long to wait after a checkpoint that copied pages, and after one that found none.
const BUSY_PAUSE: Duration = Duration::from_millis(20);
const IDLE_PAUSE: Duration = Duration::from_millis(250);

/// Checkpoints until the store is gone (`writer` no longer upgrades).
pub(super) async fn run(options: SqliteConnectOptions, writer: Weak<Writer>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut failing = false;
    // The log's size and how much of it was in the database file, after the last checkpoint.
    let mut last = (0, 0);
    while writer.strong_count() > 0 {
        let pause = match checkpoint(&options, &mut conn).await {
            Ok(now) => {
                failing = false;
                let grew = now != last;
                last = now;
                if grew { BUSY_PAUSE } else { IDLE_PAUSE }
            }
            Err(e) => {
                if !failing {
                    // Once per spell: the writer's own checkpoints carry on meanwhile.
                    tracing::warn!(error = %e, "the background checkpoint failed; retrying");
                }
                failing = true;
                conn = None;
                IDLE_PAUSE
            }
        };
        tokio::time::sleep(pause).await;
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// One passive checkpoint (it never waits for the writer or readers): the log's size in pages,
/// and how many of them are now in the database file.
async fn checkpoint(
    options: &SqliteConnectOptions,
    conn: &mut Option<SqliteConnection>,
) -> Result<(i64, i64), sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(options.connect().await?),
    };
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(c)
        .await?;
    Ok((log, copied))
}
