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

    /// Until `cost` tokens are there (at most a full bucket, so a costly call can still go).
    fn wait(&mut self, now: Instant, cost: f64) -> Duration {
        self.refill(now);
        let need = cost.min(self.capacity);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.refill)
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

    /// How long until a delivery costing `cost` calls may go (zero if now).
    pub fn wait(&mut self, now: Instant, cost: u32) -> Duration {
        let paused = self
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default();
        let bucket = self
            .bucket
            .as_mut()
            .map(|b| b.wait(now, f64::from(cost)))
            .unwrap_or_default();
        paused.max(bucket)
    }

    /// Spends `cost` calls (after `wait` said zero).
    pub fn take(&mut self, now: Instant, cost: u32) {
        if let Some(b) = &mut self.bucket {
            b.refill(now);
            b.tokens -= f64::from(cost);
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
            assert_eq!(g.wait(t0, 1), Duration::ZERO);
            g.take(t0, 1);
        }
        let w = g.wait(t0, 1);
        assert!(
            w > Duration::from_millis(300) && w <= Duration::from_millis(334),
            "{w:?}"
        );
        assert_eq!(g.wait(t0 + Duration::from_millis(334), 1), Duration::ZERO);
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
            g.wait(t0, 1),
            Duration::ZERO,
            "the run was broken by a success"
        );
        g.throttled(true, t0);
        assert_eq!(g.wait(t0, 1), PAUSE);
        assert_eq!(g.wait(t0 + PAUSE, 1), Duration::ZERO);
    }

    #[test]
    fn a_costly_delivery_waits_for_all_its_calls() {
        let mut g = Gate::new(Some(Rate::parse("10/s").unwrap()));
        let t0 = Instant::now();
        g.take(t0, 9);
        // 1 token left; 3 needed: 200 ms.
        let w = g.wait(t0, 3);
        assert!(
            w > Duration::from_millis(190) && w <= Duration::from_millis(201),
            "{w:?}"
        );
        // More than a bucket holds still goes once the bucket is full.
        assert_eq!(g.wait(t0 + Duration::from_secs(1), 25), Duration::ZERO);
    }
}
