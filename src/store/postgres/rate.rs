//! Rate windows and the 429 pause, kept in PostgreSQL so that every instance shares them: the
//! same rule as one instance's ([`crate::worker::rate::admit`]), applied to a table of calls.
//!
//! # The algorithm
//!
//! Each rate key has a row in `rate_keys` (its 429 run and pause) and its calls in `rate_calls`
//! (when each was allowed, when its answer was in, and `stale_us`: when a call whose end was
//! never written counts as ended, because its instance died). To start a call, an instance:
//! 1. locks the key's row (`SELECT … FOR UPDATE`): admissions of one key take turns across
//!    every instance, so no two can both see the last free place;
//! 2. reads the database's clock and the calls that may still count, in a new statement (so it
//!    sees every call committed before it got the lock);
//! 3. applies [`admit`]; if it allows the call, inserts the call and forgets calls that stopped
//!    counting long ago;
//! 4. commits, which releases the lock. If not allowed, it waits as long as the rule says (or,
//!    when every counted call is in flight, until one of this instance's calls ends or
//!    [`IN_FLIGHT_POLL`] passes, as another instance's may) and tries again.
//!
//! The call's end is written when the connector drops it (`ended_us` = the database's clock
//! then, which is at or after the answer came in: the window is never shorter than the rule's).
//! Every time is the database's, so instances on machines whose clocks differ still agree.
//!
//! Three 429s in a row, counted across instances, set `paused_until_us` for every instance. A
//! destination without a rate limit has no window: its calls only read the pause, and an
//! instance reads it at most every [`PAUSE_READ_EVERY`] (so another instance's pause reaches it
//! within that time, and a webhook's delivery costs no extra statement). A success resets the
//! run of 429s only when this instance last saw it above zero: a run another instance started
//! since may then go on past this success, pausing a little early rather than late.

use std::ops::{Add, Sub};
use std::sync::Arc;
use std::time::Duration;

use hookfan_connectors::units::Rate;
use hookfan_connectors::{Call, Pace};
use sqlx::Row;
use sqlx::postgres::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::worker::rate::{Limiter, Limiters, PAUSE, PAUSE_AFTER_429S, Wait, admit};

/// How often a call waiting on calls in flight elsewhere looks again.
pub const IN_FLIGHT_POLL: Duration = Duration::from_millis(100);
/// How long a call that stopped counting is kept (at least): a config with a longer `per`,
/// rolled out to one instance before the others, still finds the calls it counts.
const KEEP: Duration = Duration::from_secs(3600);
/// How long to wait before trying again when the database cannot be reached.
const UNREACHABLE_RETRY: Duration = Duration::from_secs(1);
/// How long an instance relies on what it last read of a key's pause and run of 429s.
pub const PAUSE_READ_EVERY: Duration = Duration::from_millis(250);

/// The database's clock now, in microseconds since the Unix epoch (a macro, so queries stay
/// `&'static str`).
macro_rules! now_us {
    () => {
        "floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}

/// An instant on the database's clock: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Micros(i64);

impl Add<Duration> for Micros {
    type Output = Micros;
    fn add(self, d: Duration) -> Micros {
        Micros(self.0.saturating_add(micros(d)))
    }
}

impl Sub for Micros {
    type Output = Duration;
    fn sub(self, other: Micros) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(other.0)).unwrap_or(0))
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Gates whose windows live in PostgreSQL.
pub struct PgLimiters {
    pool: PgPool,
}

impl PgLimiters {
    pub fn new(pool: PgPool) -> Self {
        PgLimiters { pool }
    }
}

impl Limiters for PgLimiters {
    fn gate(&self, key: &str, rate: Option<Rate>, longest_call: Duration) -> Arc<dyn Limiter> {
        Arc::new(PgGate(Arc::new(Inner {
            pool: self.pool.clone(),
            key: key.to_string(),
            rate,
            longest_call,
            changed: Notify::new(),
            seen: std::sync::Mutex::new(None),
        })))
    }
}

struct Inner {
    pool: PgPool,
    key: String,
    rate: Option<Rate>,
    longest_call: Duration,
    /// Rung when one of this instance's calls of the key ends or is given back.
    changed: Notify,
    /// The key's pause and run of 429s as last read or written here.
    seen: std::sync::Mutex<Option<Seen>>,
}

/// A key's pause and run of 429s, as an instance last knew them.
#[derive(Clone, Copy)]
struct Seen {
    at: Instant,
    /// When the pause ends, on this instance's clock (`None`: not paused).
    paused_until: Option<Instant>,
    run: i64,
}

impl Inner {
    fn seen(&self) -> Option<Seen> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a read: `paused_for` is what was left of the pause then, `run` the run of 429s.
    fn saw(&self, paused_for: Option<i64>, run: i64) {
        let at = Instant::now();
        let paused_until = paused_for
            .filter(|us| *us > 0)
            .map(|us| at + Duration::from_micros(us.unsigned_abs()));
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(Seen {
            at,
            paused_until,
            run,
        });
    }
}

/// One rate key's gate, shared with every instance through the database.
#[derive(Clone)]
pub struct PgGate(Arc<Inner>);

impl PgGate {
    /// Starts a call now if the window and any pause allow it (its row id; `None` when there
    /// is no window), or says how long to wait.
    async fn try_start(&self) -> Result<Result<Option<i64>, Wait>, sqlx::Error> {
        let g = &self.0;
        let Some(rate) = g.rate else {
            let fresh = g.seen().filter(|s| s.at.elapsed() < PAUSE_READ_EVERY);
            let seen = match fresh {
                Some(seen) => seen,
                None => {
                    let row: Option<(Option<i64>, i64)> = sqlx::query_as(concat!(
                        "SELECT paused_until_us - ",
                        now_us!(),
                        ", throttled_in_a_row FROM rate_keys WHERE key = $1"
                    ))
                    .bind(&g.key)
                    .fetch_optional(&g.pool)
                    .await?;
                    let (paused_for, run) = row.unwrap_or((None, 0));
                    g.saw(paused_for, run);
                    g.seen().unwrap_or(Seen {
                        at: Instant::now(),
                        paused_until: None,
                        run,
                    })
                }
            };
            let now = Instant::now();
            return Ok(match seen.paused_until {
                Some(until) if until > now => Err(Wait::For(until - now)),
                _ => Ok(None),
            });
        };
        let mut tx = g.pool.begin().await?;
        // 1. The key's lock (its row is made the first time).
        let mut locked = lock_key(&mut tx, &g.key).await?;
        if locked.is_none() {
            sqlx::query("INSERT INTO rate_keys (key) VALUES ($1) ON CONFLICT (key) DO NOTHING")
                .bind(&g.key)
                .execute(&mut *tx)
                .await?;
            locked = lock_key(&mut tx, &g.key).await?;
        }
        let (paused_until, run) = locked.unwrap_or((None, 0));
        // 2. The clock and the calls that may still count: any call allowed since `per` plus
        //    the longest call ago (one allowed before that has ended, or gone stale, since).
        let rows = sqlx::query(concat!(
            "WITH c AS (SELECT ",
            now_us!(),
            " AS now_us)
             SELECT c.now_us, r.ended_us, r.stale_us
             FROM c LEFT JOIN rate_calls r ON r.key = $1 AND r.started_us > c.now_us - $2"
        ))
        .bind(&g.key)
        .bind(micros(rate.per + g.longest_call))
        .fetch_all(&mut *tx)
        .await?;
        let now = Micros(rows.first().map_or(Ok(0), |r| r.try_get("now_us"))?);
        g.saw(paused_until.map(|until| until - now.0), run);
        if let Some(until) = paused_until.map(Micros)
            && until > now
        {
            tx.rollback().await?;
            return Ok(Err(Wait::For(until - now)));
        }
        let mut ends = Vec::with_capacity(rows.len());
        for r in &rows {
            let (ended, stale): (Option<i64>, Option<i64>) =
                (r.try_get("ended_us")?, r.try_get("stale_us")?);
            let Some(stale) = stale else { continue }; // the clock's row, no call
            // In flight until its end is written, or until it went stale.
            ends.push(ended.or((stale <= now.0).then_some(stale)).map(Micros));
        }
        // 3. The rule.
        if let Err(wait) = admit(rate, now, ends) {
            tx.rollback().await?;
            return Ok(Err(wait));
        }
        let id: i64 = sqlx::query_scalar(
            "WITH forgotten AS (
                 DELETE FROM rate_calls WHERE key = $1 AND started_us < $2 - $4)
             INSERT INTO rate_calls (key, started_us, stale_us) VALUES ($1, $2, $2 + $3)
             RETURNING id",
        )
        .bind(&g.key)
        .bind(now.0)
        .bind(micros(g.longest_call))
        .bind(micros(rate.per.max(KEEP) + g.longest_call))
        .fetch_one(&mut *tx)
        .await?;
        // 4. Allowed: the call counts from now, for every instance.
        tx.commit().await?;
        Ok(Ok(Some(id)))
    }

    /// The call that `try_start` allowed (`None`: one no window counts).
    fn counted(&self, id: Option<i64>) -> Call {
        let Some(id) = id else {
            return Call::free();
        };
        let gate = self.clone();
        Call::new(move |made| {
            // The end is written in the background: a connector drops its call where it
            // cannot wait. Outside a runtime the call just goes stale.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { gate.end(id, made).await });
            }
        })
    }

    /// Writes a call's end (`made`), or forgets a call given back unused; then wakes this
    /// instance's waiting calls.
    async fn end(&self, id: i64, made: bool) {
        let g = &self.0;
        let sql = if made {
            concat!(
                "UPDATE rate_calls SET ended_us = ",
                now_us!(),
                " WHERE id = $1"
            )
        } else {
            "DELETE FROM rate_calls WHERE id = $1"
        };
        if let Err(e) = sqlx::query(sql).bind(id).execute(&g.pool).await {
            // The call counts until it goes stale: later than its end, never sooner.
            tracing::warn!(rate_key = %g.key, error = %e, "cannot write the end of a call; it counts until it goes stale");
        }
        g.changed.notify_waiters();
    }
}

/// Locks the key's row; `None` if it has none yet, else its pause and run of 429s.
async fn lock_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &str,
) -> Result<Option<(Option<i64>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT paused_until_us, throttled_in_a_row FROM rate_keys WHERE key = $1 FOR UPDATE",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await
}

#[async_trait::async_trait]
impl Pace for PgGate {
    async fn call(&self) -> Call {
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = match self.try_start().await {
                Ok(Ok(id)) => return self.counted(id),
                Ok(Err(Wait::For(d))) => d,
                Ok(Err(Wait::InFlight)) => IN_FLIGHT_POLL,
                Err(e) => {
                    tracing::warn!(rate_key = %self.0.key, error = %e, "cannot read the rate window; trying again");
                    UNREACHABLE_RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut changed => {}
            }
        }
    }
}

#[async_trait::async_trait]
impl Limiter for PgGate {
    async fn throttled(&self, yes: bool) {
        let g = &self.0;
        let result = if yes {
            // One statement: the run of 429s is counted across instances, and the third one
            // in a row pauses the key for all of them.
            sqlx::query_as::<_, (i64, Option<i64>)>(concat!(
                "INSERT INTO rate_keys AS k (key, throttled_in_a_row) VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE SET
                     throttled_in_a_row = CASE WHEN k.throttled_in_a_row + 1 >= $2 THEN 0
                                               ELSE k.throttled_in_a_row + 1 END,
                     paused_until_us = CASE WHEN k.throttled_in_a_row + 1 >= $2 THEN ",
                now_us!(),
                " + $3 ELSE k.paused_until_us END
                 RETURNING throttled_in_a_row, paused_until_us - ",
                now_us!()
            ))
            .bind(&g.key)
            .bind(i64::from(PAUSE_AFTER_429S))
            .bind(micros(PAUSE))
            .fetch_one(&g.pool)
            .await
            .map(|(run, paused_for)| {
                g.saw(paused_for, run);
                if run == 0 {
                    tracing::warn!(
                        pause_s = PAUSE.as_secs(),
                        "three 429s in a row: pausing (every instance)"
                    );
                }
            })
        } else {
            match g.seen().filter(|s| s.at.elapsed() < PAUSE_READ_EVERY) {
                // No run to break, as far as this instance knows: no statement.
                Some(seen) if seen.run == 0 => Ok(()),
                seen => sqlx::query(
                    "UPDATE rate_keys SET throttled_in_a_row = 0
                     WHERE key = $1 AND throttled_in_a_row <> 0",
                )
                .bind(&g.key)
                .execute(&g.pool)
                .await
                .map(|_| {
                    let mut s = g.seen.lock().unwrap_or_else(|e| e.into_inner());
                    *s = Some(Seen {
                        at: Instant::now(),
                        paused_until: seen.and_then(|s| s.paused_until),
                        run: 0,
                    });
                }),
            }
        };
        if let Err(e) = result {
            tracing::warn!(rate_key = %g.key, error = %e, "cannot note 429s in the database");
        }
    }

    fn windowed(&self) -> bool {
        self.0.rate.is_some()
    }

    async fn try_call(&self) -> Option<Call> {
        match self.try_start().await {
            Ok(Ok(id)) => Some(self.counted(id)),
            Ok(Err(_)) => None,
            Err(e) => {
                tracing::warn!(rate_key = %self.0.key, error = %e, "cannot read the rate window");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_clock_obeys_the_same_rule() {
        let rate = Rate::parse("2/1s").unwrap();
        let t = Micros(1_000_000);
        let ended = Some(Micros(900_000));
        assert_eq!(admit(rate, t, [ended]), Ok(()));
        assert_eq!(
            admit(rate, t, [ended, None]),
            Err(Wait::For(Duration::from_millis(900)))
        );
        assert_eq!(admit(rate, t, [None, None]), Err(Wait::InFlight));
        assert_eq!(admit(rate, Micros(1_900_000), [ended, None]), Ok(()));
    }
}
