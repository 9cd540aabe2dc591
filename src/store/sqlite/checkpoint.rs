//! Copies the write-ahead log into the database file from a connection of its own, so the
//! writer does not. SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, and with participation ids that are UUIDs each checkpoint writes pages all over
//! the database file and flushes it: tens of milliseconds that every accept in the next groups
//! would wait for. A passive checkpoint on another connection runs beside the writer instead.
//!
//! The log starts over from its beginning only when a write finds it wholly copied, which under
//! a steady stream of commits a checkpoint beside them seldom leaves it. So the writer's own
//! automatic checkpoint stays, at a larger threshold ([`BACKSTOP_PAGES`]): by the time the log
//! reaches it this task has copied nearly all of it, the writer copies the rest right after a
//! commit, and the next write starts the log over. The log stays under about 40 MB.

use std::sync::Weak;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};

use super::writer::Writer;

/// The log's size, in pages, at which the writer checkpoints by itself (SQLite's default is
/// 1,000): about 40 MB of log.
pub(super) const BACKSTOP_PAGES: &str = "10000";

/// The size the log file is cut back to when it starts over, if it grew larger (64 MiB).
pub(super) const LOG_LIMIT_BYTES: &str = "67108864";

/// How long to wait between checkpoints. Each flushes the database file, and a flush of pages
/// all over it holds up the flushes of the log that accepts wait for: every 20 ms, the p99 of
/// the 202 at 1,000/s was 5–7 ms; every 250 ms, 4 ms (each copies up to ~4,000 pages at the
/// highest accept rate measured).
const PAUSE: Duration = Duration::from_millis(250);

/// Checkpoints until the store is gone (`writer` no longer upgrades).
pub(super) async fn run(options: SqliteConnectOptions, writer: Weak<Writer>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut failing = false;
    while writer.strong_count() > 0 {
        match checkpoint(&options, &mut conn).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    // Once per spell: the writer's own checkpoints carry on meanwhile.
                    tracing::warn!(error = %e, "the background checkpoint failed; retrying");
                }
                failing = true;
                conn = None;
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// One passive checkpoint: it copies what it can and never waits for the writer or readers.
async fn checkpoint(
    options: &SqliteConnectOptions,
    conn: &mut Option<SqliteConnection>,
) -> Result<(), sqlx::Error> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(options.connect().await?),
    };
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(c)
        .await?;
    Ok(())
}
