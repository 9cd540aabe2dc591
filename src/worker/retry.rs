//! What comes after an attempt, and when to try again: the destination's schedule with ±jitter,
//! `Retry-After` honoured but clamped between the scheduled delay and 24 hours. Pure.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use hookfan_connectors::Outcome;

use crate::config::RetryPolicy;
use crate::store::Next;

/// Where a delivery goes after its `number`th attempt (1 for the first) came to `outcome`, at
/// `now` (Unix milliseconds). `unit` is a random number in [0, 1) for the jitter.
pub fn decide(policy: &RetryPolicy, number: u32, outcome: &Outcome, now: i64, unit: f64) -> Next {
    match outcome {
        Outcome::Delivered => Next::Delivered,
        Outcome::Failed { .. } => Next::Dead,
        // Never sent: due again now (the worker gives such claims back without an attempt).
        Outcome::Unsent => Next::RetryAt(now),
        Outcome::Retry { after, .. } => match next_delay(policy, number, *after, unit) {
            Some(delay) => Next::RetryAt(
                now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            ),
            None => Next::Dead,
        },
    }
}

/// The longest a `Retry-After` can push a retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before the next attempt, after `attempts` failed ones (1 after the first); `None`
/// when the schedule is spent and the delivery is dead. `unit` is a random number in [0, 1).
pub fn next_delay(
    policy: &RetryPolicy,
    attempts: u32,
    retry_after: Option<Duration>,
    unit: f64,
) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let scheduled = *policy.schedule.get(index)?;
    let factor = 1.0 + policy.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    let jittered = scheduled.mul_f64(factor.max(0.0));
    Some(match retry_after {
        // The destination asked for a pause: never sooner than it asked, nor than planned.
        Some(asked) => asked.max(scheduled).min(MAX_RETRY_AFTER.max(scheduled)),
        None => jittered,
    })
}

/// A random number in [0, 1) from std's randomly keyed hasher: jitter needs no better.
pub fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secs: &[u64], jitter: f64) -> RetryPolicy {
        RetryPolicy {
            schedule: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
            jitter,
        }
    }

    #[test]
    fn decides_what_comes_next() {
        let p = policy(&[10], 0.0);
        let retry = Outcome::retry("HTTP 503");
        assert_eq!(
            decide(&p, 1, &Outcome::Delivered, 1_000, 0.5),
            Next::Delivered
        );
        assert_eq!(
            decide(&p, 1, &Outcome::failed("HTTP 400"), 1_000, 0.5),
            Next::Dead
        );
        assert_eq!(decide(&p, 1, &retry, 1_000, 0.5), Next::RetryAt(11_000));
        // The schedule is spent: the last retry is dead, and says so.
        assert_eq!(decide(&p, 2, &retry, 1_000, 0.5), Next::Dead);
        let asked = Outcome::Retry {
            after: Some(Duration::from_secs(60)),
            reason: "HTTP 429".into(),
        };
        assert_eq!(decide(&p, 1, &asked, 0, 0.5), Next::RetryAt(60_000));
    }

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let p = policy(&[10, 60], 0.0);
        assert_eq!(next_delay(&p, 1, None, 0.5), Some(Duration::from_secs(10)));
        assert_eq!(next_delay(&p, 2, None, 0.5), Some(Duration::from_secs(60)));
        assert_eq!(next_delay(&p, 3, None, 0.5), None);
        assert_eq!(next_delay(&p, 0, None, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = policy(&[100], 0.2);
        assert_eq!(next_delay(&p, 1, None, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(next_delay(&p, 1, None, 1.0), Some(Duration::from_secs(120)));
        for _ in 0..1000 {
            let d = next_delay(&p, 1, None, random_unit()).unwrap();
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_clamped() {
        let p = policy(&[10], 0.2);
        // Asked for less than planned: the plan wins.
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(2)), 0.0),
            Some(Duration::from_secs(10))
        );
        // Asked for more: honoured, without jitter cutting it short.
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(300)), 0.0),
            Some(Duration::from_secs(300))
        );
        // Never past a day.
        assert_eq!(
            next_delay(&p, 1, Some(Duration::from_secs(10 * 86400)), 0.0),
            Some(MAX_RETRY_AFTER)
        );
    }
}
