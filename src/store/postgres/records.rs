//! Attempts recorded in groups: every `record` call waiting at the time, or arriving within a
//! few milliseconds of the first, goes into one statement. A statement per attempt cost
//! PostgreSQL about a millisecond of CPU each (planning, the foreign key check, the hourly
//! count's row, on which concurrent ones also queued): on two cores a drain stayed under 2,000
//! deliveries/s.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use sqlx::PgPool;

use super::text;
use crate::store::StoreError;
use crate::store::assemble::attempt_json;
use crate::store::model::{AttemptLog, now_ms};

/// The most `record` calls in one statement (a call carries one attempt, or a batch
/// connector's whole batch).
const CALLS_MAX: usize = 128;

type Reply = oneshot::Sender<Result<(), StoreError>>;

/// Where `record` calls are sent; the task taking them ends when every sender is gone.
pub(super) type Records = mpsc::Sender<(Vec<AttemptLog>, Reply)>;

pub(super) fn start(pool: PgPool) -> Records {
    let (tx, rx) = mpsc::channel(4 * CALLS_MAX);
    tokio::spawn(run(pool, rx));
    tx
}

/// How long a group waits for more calls after its first. A statement costs PostgreSQL a plan
/// and a commit whatever its size: in a drain at concurrency 4, groups gathered for 5 ms took
/// about a quarter off PostgreSQL's CPU per delivery (BENCHMARKS.md, the sixth round). The
/// attempts' slots are free already; the worker bounds how many wait (`UNRECORDED_MAX`).
const LINGER: Duration = Duration::from_millis(5);

/// One statement at a time: the calls that arrive while it runs, or within [`LINGER`] of the
/// first, make the next one.
async fn run(pool: PgPool, mut rx: mpsc::Receiver<(Vec<AttemptLog>, Reply)>) {
    let mut calls = Vec::with_capacity(CALLS_MAX);
    while rx.recv_many(&mut calls, CALLS_MAX).await > 0 {
        let until = Instant::now() + LINGER;
        while calls.len() < CALLS_MAX {
            let room = CALLS_MAX - calls.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut calls, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        commit(&pool, std::mem::take(&mut calls)).await;
    }
}

async fn commit(pool: &PgPool, calls: Vec<(Vec<AttemptLog>, Reply)>) {
    let (attempts, replies): (Vec<Vec<AttemptLog>>, Vec<Reply>) = calls.into_iter().unzip();
    let all: Vec<&AttemptLog> = attempts.iter().flatten().collect();
    match record_all(pool, &all).await {
        Ok(()) => {
            for reply in replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        // Unreachable: every call fails now, not after one connection wait each.
        Err(e) if super::unreachable(&e) => {
            let why = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unreachable(why.clone())));
            }
        }
        // One call the database refuses must not fail the others: each alone, then.
        Err(_) => {
            for (call, reply) in attempts.iter().zip(replies) {
                let one: Vec<&AttemptLog> = call.iter().collect();
                let _ = reply.send(record_all(pool, &one).await);
            }
        }
    }
}

/// Records `attempts` in one statement. Only the claim's holder records: a delivery is moved
/// only where its token still matches, and the attempt row and hourly count are written only
/// for the attempts that moved it (matched on the token too: a group can hold a stale attempt
/// and the current one of the same delivery).
async fn record_all(pool: &PgPool, attempts: &[&AttemptLog]) -> Result<(), StoreError> {
    if attempts.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<serde_json::Value> = attempts
        .iter()
        .map(|a| attempt_json(a, now, text))
        .collect();
    sqlx::query(
        "WITH x AS (
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(
                 id bigint, lease text, number bigint, started_at bigint, duration_ms bigint,
                 outcome text, status_code bigint, error text, response text, state text,
                 status text, next_at bigint)),
         moved AS (
             UPDATE deliveries d SET status = x.status, attempts = x.number,
                 next_attempt_at = x.next_at, last_error = x.error,
                 state = COALESCE(x.state, d.state),
                 lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL,
                 claimed_at = NULL, in_doubt_since = NULL, updated_at = $2
             FROM x WHERE d.id = x.id AND d.lease_token = x.lease
             RETURNING d.id, d.destination, x.lease),
         logged AS (
             INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome,
                                   status_code, error, response)
             SELECT x.id, x.number, x.started_at, x.duration_ms, x.outcome, x.status_code,
                    x.error, x.response
             FROM x JOIN moved ON moved.id = x.id AND moved.lease = x.lease)
         INSERT INTO attempt_counts (destination, hour, delivered, failed)
         SELECT moved.destination, x.started_at / 3600000,
                COUNT(*) FILTER (WHERE x.outcome = 'delivered'),
                COUNT(*) FILTER (WHERE x.outcome <> 'delivered')
         FROM x JOIN moved ON moved.id = x.id AND moved.lease = x.lease
         GROUP BY 1, 2
         ON CONFLICT (destination, hour) DO UPDATE SET
             delivered = attempt_counts.delivered + excluded.delivered,
             failed = attempt_counts.failed + excluded.failed",
    )
    .bind(serde_json::Value::from(rows).to_string())
    .bind(now)
    // Not kept prepared (an unnamed statement): planned at every execution with the tables'
    // current statistics, never from a plan cached while `deliveries` was empty (a scan of the
    // whole table). The pool caches what the triggers prepare (the foreign key check of each
    // attempt row), which forced custom plans replanned once per row. It costs a round trip:
    // sqlx parses and describes an unnamed statement before binding it.
    .persistent(false)
    .execute(pool)
    .await?;
    Ok(())
}
