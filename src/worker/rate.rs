//! Pacing for one destination (or all destinations sharing a rate key): a token bucket for the
//! rate limit, and a pause when the destination answers 429 three times in a row.

use std::time::Duration;

use hookfan_connectors::units::Rate;
use tokio::time::Instant;

/// How many 429s in a row make a pause, and how long it lasts.
pub const PAUSE_AFTER_429S: u32 = 3;
pub const PAUSE: Duration = Duration::from_secs(10);

/// At most `count` calls in any `per`, with bursts up to `count`.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    /// Tokens per second.
    refill: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: Rate, now: Instant) -> Self {
        let capacity = f64::from(rate.count);
        Bucket {
            capacity,
            refill: capacity / rate.per.as_secs_f64(),
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill).min(self.capacity);
        self.updated = now;
    }

    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.refill)
        }
    }
}

/// What a lane asks before each call.
#[derive(Debug)]
pub struct Gate {
    bucket: Option<Bucket>,
    throttled_in_a_row: u32,
    paused_until: Option<Instant>,
}

impl Gate {
    pub fn new(rate: Option<Rate>) -> Self {
        Gate {
            bucket: rate.map(|r| Bucket::new(r, Instant::now())),
            throttled_in_a_row: 0,
            paused_until: None,
        }
    }

    /// How long until a call may go (zero if now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        let paused = self
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default();
        let bucket = self
            .bucket
            .as_mut()
            .map(|b| b.wait(now))
            .unwrap_or_default();
        paused.max(bucket)
    }

    /// Spends one call (after `wait` said zero).
    pub fn take(&mut self, now: Instant) {
        if let Some(b) = &mut self.bucket {
            b.refill(now);
            b.tokens -= 1.0;
        }
    }

    /// Notes whether the destination throttled the last call (HTTP 429).
    pub fn throttled(&mut self, yes: bool, now: Instant) {
        if !yes {
            self.throttled_in_a_row = 0;
            return;
        }
        self.throttled_in_a_row += 1;
        if self.throttled_in_a_row >= PAUSE_AFTER_429S {
            self.throttled_in_a_row = 0;
            self.paused_until = Some(now + PAUSE);
            tracing::warn!(pause_s = PAUSE.as_secs(), "three 429s in a row: pausing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_spaces_calls() {
        let mut g = Gate::new(Some(Rate::parse("3/s").unwrap()));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.wait(t0), Duration::ZERO);
            g.take(t0);
        }
        let w = g.wait(t0);
        assert!(
            w > Duration::from_millis(300) && w <= Duration::from_millis(334),
            "{w:?}"
        );
        assert_eq!(g.wait(t0 + Duration::from_millis(334)), Duration::ZERO);
    }

    #[test]
    fn three_429s_in_a_row_pause_even_without_a_rate() {
        let mut g = Gate::new(None);
        let t0 = Instant::now();
        g.throttled(true, t0);
        g.throttled(true, t0);
        g.throttled(false, t0);
        g.throttled(true, t0);
        g.throttled(true, t0);
        assert_eq!(
            g.wait(t0),
            Duration::ZERO,
            "the run was broken by a success"
        );
        g.throttled(true, t0);
        assert_eq!(g.wait(t0), PAUSE);
        assert_eq!(g.wait(t0 + PAUSE), Duration::ZERO);
    }
}
