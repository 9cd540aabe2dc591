//! Pacing for one destination (or all destinations sharing a rate key): a `rate_limit` of
//! `count/per` allows at most `count` calls in any window of length `per`, and three 429s in a
//! row pause every call for a while.
//!
//! # The rule
//!
//! A call counts against the window from when it is allowed until `per` after its end (its
//! answer is in), and for as long as it is in flight. A call may start when fewer than `count`
//! calls count ([`admit`]). So however long a request takes on the wire, the destination never
//! sees more than `count` of them arrive within any `per`: take the calls that arrive within one
//! window; each was allowed before the window's end and ends after its start, so at the moment
//! the last of them was allowed every one of them counted, and that one was allowed only because
//! fewer than `count` did.
//!
//! # Who keeps the window
//!
//! The worker asks the store for its gates ([`crate::store::Store::limiters`]): one [`Limiter`]
//! per rate key, which the lanes of every destination with that key share.
//! - One instance (SQLite): [`Gate`], the calls in memory.
//! - Several instances (PostgreSQL): `store::postgres::rate`, the calls in a table that every
//!   instance reads and writes under one row lock per key, with the database's clock.
//!
//! Both apply [`admit`] to their list of calls, and the same pause ([`PAUSE_AFTER_429S`],
//! [`PAUSE`]), so the limit means the same on one instance as on many.

use std::ops::{Add, Sub};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hookfan_connectors::units::Rate;
use hookfan_connectors::{Call, Pace};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How many 429s in a row make a pause, and how long it lasts.
pub const PAUSE_AFTER_429S: u32 = 3;
pub const PAUSE: Duration = Duration::from_secs(10);

/// The pace of one rate key: the window, and the pause after 429s.
#[async_trait::async_trait]
pub trait Limiter: Pace {
    /// Notes whether the destination throttled the last calls (HTTP 429): [`PAUSE_AFTER_429S`]
    /// in a row pause every call of the key for [`PAUSE`].
    async fn throttled(&self, yes: bool);

    /// A call now if the window and any pause allow it, without waiting for one.
    async fn try_call(&self) -> Option<Call>;

    /// Whether calls are counted in a window (a rate is set), not only paused after 429s.
    fn windowed(&self) -> bool;
}

/// Where a worker's gates come from: one per rate key.
pub trait Limiters: Send + Sync {
    /// The gate of `key` at `rate` (`None`: no window, only the pause). `longest_call` bounds
    /// one call: a call whose end is never heard of (its process died) counts as ended then.
    fn gate(&self, key: &str, rate: Option<Rate>, longest_call: Duration) -> Arc<dyn Limiter>;
}

/// Gates in this process's memory: enough for one instance.
pub struct InProcess;

impl Limiters for InProcess {
    fn gate(&self, _key: &str, rate: Option<Rate>, _longest_call: Duration) -> Arc<dyn Limiter> {
        Arc::new(Gate::new(rate))
    }
}

/// How long one call may last, from the timeouts of the destinations sharing a key: the
/// worker gives up on a delivery 5 s after its connector's timeout.
pub fn longest_call(timeouts: impl Iterator<Item = Duration>) -> Duration {
    timeouts.max().unwrap_or(Duration::from_secs(60)) + Duration::from_secs(5)
}

/// Why a call cannot start yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    For(Duration),
    /// Until a call in flight ends.
    InFlight,
}

/// [The rule](self): whether a call may start at `now`, given the ends of the calls allowed
/// before it (`None` while in flight). Calls that no longer count may be left out or not.
/// `T` is an instant on whichever clock keeps the window.
pub fn admit<T>(rate: Rate, now: T, ends: impl IntoIterator<Item = Option<T>>) -> Result<(), Wait>
where
    T: Copy + Ord + Add<Duration, Output = T> + Sub<T, Output = Duration>,
{
    let count = usize::try_from(rate.count).unwrap_or(usize::MAX).max(1);
    let mut counted = 0usize;
    // When the soonest of the ended calls that still count stops counting.
    let mut soonest: Option<T> = None;
    for end in ends {
        match end {
            None => counted += 1,
            Some(end) if end + rate.per > now => {
                counted += 1;
                let free = end + rate.per;
                soonest = Some(soonest.map_or(free, |s| s.min(free)));
            }
            Some(_) => {}
        }
    }
    if counted < count {
        return Ok(());
    }
    match soonest {
        Some(at) => Err(Wait::For(at - now)),
        None => Err(Wait::InFlight),
    }
}

/// One call in the window.
#[derive(Debug)]
struct Slot {
    id: u64,
    /// When its answer came in; `None` while it is in flight.
    ended: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    /// The calls that may still count, in the order they were allowed.
    log: Vec<Slot>,
    next_id: u64,
    throttled_in_a_row: u32,
    paused_until: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    rate: Option<Rate>,
    state: Mutex<State>,
    /// Rung when a call ends or is given back.
    changed: Notify,
}

/// The pace of one rate key in this process; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate(Arc<Inner>);

impl Gate {
    pub fn new(rate: Option<Rate>) -> Self {
        Gate(Arc::new(Inner {
            rate,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written: recover it.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call now if the window and any pause allow it (its slot id), or says how long
    /// to wait.
    fn try_start(&self, now: Instant) -> Result<Option<u64>, Wait> {
        let mut state = self.state();
        if let Some(until) = state.paused_until
            && until > now
        {
            return Err(Wait::For(until - now));
        }
        let Some(rate) = self.0.rate else {
            return Ok(None);
        };
        // Calls that stopped counting are forgotten, so the log holds at most `count` ended ones.
        state
            .log
            .retain(|s| s.ended.is_none_or(|end| end + rate.per > now));
        admit(rate, now, state.log.iter().map(|s| s.ended))?;
        let id = state.next_id;
        state.next_id += 1;
        state.log.push(Slot { id, ended: None });
        Ok(Some(id))
    }

    /// A call ended (`made`), or was given back unused.
    fn end(&self, id: u64, made: bool, now: Instant) {
        {
            let mut state = self.state();
            if let Some(i) = state.log.iter().position(|s| s.id == id) {
                if made {
                    state.log[i].ended = Some(now);
                } else {
                    state.log.remove(i);
                }
            }
        }
        self.0.changed.notify_waiters();
    }

    /// Notes whether the destination throttled the last calls (HTTP 429).
    pub fn note_throttled(&self, yes: bool, now: Instant) {
        let mut state = self.state();
        if !yes {
            state.throttled_in_a_row = 0;
            return;
        }
        state.throttled_in_a_row += 1;
        if state.throttled_in_a_row >= PAUSE_AFTER_429S {
            state.throttled_in_a_row = 0;
            state.paused_until = Some(now + PAUSE);
            tracing::warn!(pause_s = PAUSE.as_secs(), "three 429s in a row: pausing");
        }
    }
}

#[async_trait::async_trait]
impl Limiter for Gate {
    async fn throttled(&self, yes: bool) {
        self.note_throttled(yes, Instant::now());
    }

    fn windowed(&self) -> bool {
        self.0.rate.is_some()
    }

    async fn try_call(&self) -> Option<Call> {
        match self.try_start(Instant::now()) {
            Ok(None) => Some(Call::free()),
            Ok(Some(id)) => {
                let gate = self.clone();
                Some(Call::new(move |made| gate.end(id, made, Instant::now())))
            }
            Err(_) => None,
        }
    }
}

#[async_trait::async_trait]
impl Pace for Gate {
    async fn call(&self) -> Call {
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_start(Instant::now()) {
                Ok(None) => return Call::free(),
                Ok(Some(id)) => {
                    let gate = self.clone();
                    return Call::new(move |made| gate.end(id, made, Instant::now()));
                }
                Err(Wait::For(d)) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = &mut changed => {}
                    }
                }
                Err(Wait::InFlight) => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Option<Rate> {
        Some(Rate::parse(text).unwrap())
    }

    #[test]
    fn at_most_count_calls_in_any_window_counted_from_their_end() {
        let g = Gate::new(rate("3/1s"));
        let t0 = Instant::now();
        let ids: Vec<u64> = (0..3).map(|_| g.try_start(t0).unwrap().unwrap()).collect();
        // The fourth waits for the first to end, then for a whole window after that end.
        assert_eq!(g.try_start(t0), Err(Wait::InFlight));
        g.end(ids[0], true, t0 + Duration::from_millis(200));
        assert_eq!(
            g.try_start(t0 + Duration::from_millis(300)),
            Err(Wait::For(Duration::from_millis(900)))
        );
        assert!(g.try_start(t0 + Duration::from_millis(1200)).is_ok());
    }

    #[test]
    fn a_quiet_spell_allows_count_not_twice_count() {
        let g = Gate::new(rate("5/2s"));
        let t0 = Instant::now();
        for _ in 0..5 {
            let id = g.try_start(t0).unwrap().unwrap();
            g.end(id, true, t0);
        }
        // A token bucket that starts full would allow five more here, refilled or not.
        assert!(matches!(
            g.try_start(t0 + Duration::from_millis(1)),
            Err(Wait::For(_))
        ));
    }

    #[test]
    fn a_call_given_back_unused_frees_its_place() {
        let g = Gate::new(rate("1/10s"));
        let t0 = Instant::now();
        let id = g.try_start(t0).unwrap().unwrap();
        g.end(id, false, t0);
        assert!(g.try_start(t0).is_ok());
    }

    #[test]
    fn three_429s_in_a_row_pause_even_without_a_rate() {
        let g = Gate::new(None);
        let t0 = Instant::now();
        g.note_throttled(true, t0);
        g.note_throttled(true, t0);
        g.note_throttled(false, t0);
        g.note_throttled(true, t0);
        g.note_throttled(true, t0);
        assert_eq!(g.try_start(t0), Ok(None), "the run was broken by a success");
        g.note_throttled(true, t0);
        assert_eq!(g.try_start(t0), Err(Wait::For(PAUSE)));
        assert_eq!(g.try_start(t0 + PAUSE), Ok(None));
    }

    #[tokio::test]
    async fn a_waiting_call_starts_when_a_call_in_flight_ends() {
        let g = Gate::new(rate("1/1ms"));
        let first = g.call().await;
        let waiting = tokio::spawn({
            let g = g.clone();
            async move {
                let _second = g.call().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the first call is still in flight");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
