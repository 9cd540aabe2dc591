//! Slowing down whoever keeps failing authentication. Each peer address gets a few free
//! failures in a window; past them, its next failures are answered only after a delay that
//! doubles up to a cap. A request with valid credentials is never delayed, so a legitimate
//! Qualifio behind the same proxy as a guesser keeps its pace.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failures a peer may have in [`WINDOW`] before its answers slow down.
pub const FREE_FAILURES: u32 = 5;
/// How long failures are remembered.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The first delay, doubled with each further failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(500);
pub const MAX_DELAY: Duration = Duration::from_secs(8);
/// Peers remembered at most; the oldest are forgotten first.
const MAX_PEERS: usize = 10_000;

#[derive(Debug)]
struct Record {
    failures: u32,
    since: Instant,
}

#[derive(Debug, Default)]
pub struct Throttle {
    peers: Mutex<HashMap<IpAddr, Record>>,
}

impl Throttle {
    /// Counts a failure of `peer` and says how long to wait before answering it.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> Duration {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, r| now.duration_since(r.since) < WINDOW);
            if peers.len() >= MAX_PEERS
                && let Some(oldest) = peers.iter().min_by_key(|(_, r)| r.since).map(|(ip, _)| *ip)
            {
                peers.remove(&oldest);
            }
        }
        let record = peers.entry(peer).or_insert(Record {
            failures: 0,
            since: now,
        });
        if now.duration_since(record.since) >= WINDOW {
            *record = Record {
                failures: 0,
                since: now,
            };
        }
        record.failures = record.failures.saturating_add(1);
        delay(record.failures)
    }
}

/// The wait before answering the `failures`th failure of a window.
fn delay(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(extra) => FIRST_DELAY
            .saturating_mul(1u32 << extra.min(16))
            .min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_failures_are_free_then_each_waits_longer() {
        let t = Throttle::default();
        let (peer, other) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(peer, t0), Duration::ZERO);
        }
        assert_eq!(t.failed(peer, t0), FIRST_DELAY);
        assert_eq!(t.failed(peer, t0), FIRST_DELAY * 2);
        for _ in 0..10 {
            t.failed(peer, t0);
        }
        assert_eq!(t.failed(peer, t0), MAX_DELAY);
        // Another peer, and the same one after the window, start afresh.
        assert_eq!(t.failed(other, t0), Duration::ZERO);
        assert_eq!(t.failed(peer, t0 + WINDOW), Duration::ZERO);
    }
}
