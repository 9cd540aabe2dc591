//! A token bucket per destination: at most `count` calls in any `per`, with bursts up to `count`.

use std::time::Duration;

use hookfan_connectors::units::Rate;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Bucket {
    capacity: f64,
    /// Tokens per second.
    refill: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn new(rate: Rate) -> Self {
        let capacity = f64::from(rate.count);
        Bucket {
            capacity,
            refill: capacity / rate.per.as_secs_f64(),
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill).min(self.capacity);
        self.updated = now;
    }

    /// How long until a token is available (zero if one is).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.refill)
        }
    }

    /// Spends one token (call after `wait` said zero).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_spaces_calls() {
        let mut b = Bucket::new(Rate::parse("3/s").unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.wait(t0), Duration::ZERO);
            b.take(t0);
        }
        let w = b.wait(t0);
        assert!(
            w > Duration::from_millis(300) && w <= Duration::from_millis(334),
            "{w:?}"
        );
        assert_eq!(b.wait(t0 + Duration::from_millis(334)), Duration::ZERO);
    }
}
