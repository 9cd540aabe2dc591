//! A destination's delivery loop: it takes a slot and a call of the rate limit, claims due
//! work (ahead of its free slots when one delivery is one call), and starts one attempt per
//! claimed batch; with nothing due it waits to be woken.

use std::sync::Arc;
use std::time::Duration;

use hookfan_connectors::{Call, Connector};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Worker, fault, rate};
use crate::config::Destination;
use crate::mapping::Mapper;
use crate::redact::Redactor;
use crate::shutdown::{Shutdown, Trigger};
use crate::store::{Claimed, StoreError, now_ms};

/// How long an idle lane waits before looking again without being told (leases that expired,
/// work added by another process).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// The most deliveries a lane of one-at-a-time connectors (webhook, Trello) claims in one go,
/// to start them as its slots free up: a backlog then costs one claim per batch, not one per
/// delivery.
const CLAIM_MAX: usize = 64;

/// Deliveries a lane claimed beyond its free slots, oldest first, with when each was claimed.
#[derive(Default)]
struct Ahead(std::collections::VecDeque<(Claimed, Instant)>);

impl Ahead {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, batch: Vec<Claimed>, now: Instant) {
        self.0.extend(batch.into_iter().map(|c| (c, now)));
    }

    /// The oldest delivery claimed less than `fresh_for` ago. Older ones go to `stale`, to be
    /// given back: their lease may run out before their attempt ends, and then another
    /// instance could send them too.
    fn next(
        &mut self,
        now: Instant,
        fresh_for: Duration,
        stale: &mut Vec<(i64, String)>,
    ) -> Option<Claimed> {
        while let Some((c, at)) = self.0.pop_front() {
            if now.saturating_duration_since(at) < fresh_for {
                return Some(c);
            }
            stale.push((c.delivery_id, c.lease));
        }
        None
    }

    fn take_all(&mut self) -> Vec<(i64, String)> {
        self.0
            .drain(..)
            .map(|(c, _)| (c.delivery_id, c.lease))
            .collect()
    }
}

/// One destination's delivery loop and its limits.
pub struct Lane {
    pub(super) destination: Destination,
    pub(super) connector: Arc<dyn Connector>,
    /// The templates of the config generation the lane was made with.
    pub(super) mapper: Arc<Mapper>,
    /// That generation's secrets: an attempt finishing after a reload that changed them still
    /// has the old ones taken out.
    pub(super) redactor: Arc<Redactor>,
    /// Ingress and finished attempts ring this when something may be due.
    pub(super) wake: Notify,
    pub(super) slots: Arc<Semaphore>,
    /// Attempts that are done and wait for their record ([`super::UNRECORDED_MAX`]): when the
    /// store records slower than the destination answers, the lane slows to the store's pace
    /// instead of holding ever more finished attempts (and their bodies) in memory, their
    /// leases running out.
    pub(super) unrecorded: Semaphore,
    /// Shared by every lane with the same rate key (and, on PostgreSQL, every instance).
    pub(super) gate: Arc<dyn rate::Limiter>,
    /// A reload that replaces or removes the destination retires its lane: it stops claiming,
    /// and attempts it started finish on their own.
    pub(super) retire: Trigger,
    pub(super) stop: Shutdown,
    /// How long its recent attempts took, in µs (a moving average; 0: none yet).
    pub(super) attempt_us: std::sync::atomic::AtomicU64,
}

impl Lane {
    pub(super) fn retired(&self) -> bool {
        self.stop.is_set()
    }

    /// Adds an attempt's duration to the moving average (each new one weighs an eighth).
    pub(super) fn note_attempt(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.attempt_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == 0 {
                us
            } else {
                old.saturating_mul(7).saturating_add(us) / 8
            })
        });
    }
}

impl Worker {
    /// Lease length: long enough for the slowest attempt, short enough that a crash is
    /// recovered from quickly.
    pub(super) fn lease(lane: &Lane) -> Duration {
        fault::lease().unwrap_or_else(|| {
            Duration::from_secs(60).max(lane.connector.timeout() * 2 + Duration::from_secs(15))
        })
    }

    pub(super) async fn lane_loop(self, lane: Arc<Lane>, mut shutdown: Shutdown) {
        let mut ahead = Ahead::default();
        self.lane_turns(&lane, &mut shutdown, &mut ahead).await;
        // Claimed ahead and never started (a reload retired the lane): due again at once, here
        // or on another instance. (At a stop, the drain releases every lease anyway.)
        self.give_back(&lane, ahead.take_all()).await;
    }

    async fn lane_turns(&self, lane: &Arc<Lane>, shutdown: &mut Shutdown, ahead: &mut Ahead) {
        let name = lane.destination.name.clone();
        let fault = fault::lane_panics(&name);
        let linger = lane.connector.linger();
        let lease = Self::lease(lane);
        // A connector that takes one record per call gets one task per delivery. Without a
        // rate window its lane claims ahead, so one claim serves many attempts; under one it
        // claims one at a time: the window, not the claims, sets the pace there.
        let one_by_one = lane.connector.max_batch() == 1;
        let claims_ahead = one_by_one && !lane.gate.windowed();
        // Whether the last claim took everything due: then the next one may wait for company.
        let mut drained = true;
        loop {
            if shutdown.is_set() {
                return;
            }
            let permit = tokio::select! {
                p = lane.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.wait() => return,
            };
            if drained && !linger.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(linger) => {}
                    _ = shutdown.wait() => return,
                }
            }
            // The delivery's first call is taken before claiming, so nothing is claimed that the
            // rate limit would then hold back; it is given back if nothing was due.
            let call = tokio::select! {
                c = lane.gate.call() => c,
                _ = shutdown.wait() => return,
            };
            // A lane that claims ahead claims only when what it claimed is used up.
            let limit = if !claims_ahead {
                Some(lane.connector.max_batch())
            } else if ahead.is_empty() {
                Some(Self::ahead_limit(lane, lease))
            } else {
                None
            };
            let mut claimed = Vec::new();
            if let Some(limit) = limit {
                match self.store.claim_due(&name, limit, &self.owner, lease).await {
                    Ok(batch) => {
                        drained = batch.len() < limit;
                        claimed = batch;
                    }
                    Err(e) => {
                        call.unused();
                        drop(permit);
                        if !self.after_error(&name, &e, shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let batch = if claims_ahead {
                ahead.push(claimed, Instant::now());
                let mut stale = Vec::new();
                let next = ahead.next(Instant::now(), lease / 2, &mut stale);
                self.give_back(lane, stale).await;
                next.map(|c| vec![c])
            } else {
                (!claimed.is_empty()).then_some(claimed)
            };
            let Some(batch) = batch else {
                call.unused();
                drop(permit);
                if !self.idle(lane, shutdown).await {
                    return;
                }
                continue;
            };
            if fault {
                panic!("test fault: the lane of {name} panics at its first claim");
            }
            self.start(lane, batch, call, permit);
            // Slots and calls free right now take more of what was claimed ahead.
            while !ahead.is_empty() {
                let Ok(permit) = lane.slots.clone().try_acquire_owned() else {
                    break;
                };
                let Some(call) = lane.gate.try_call().await else {
                    break;
                };
                let mut stale = Vec::new();
                let next = ahead.next(Instant::now(), lease / 2, &mut stale);
                self.give_back(lane, stale).await;
                let Some(claimed) = next else {
                    call.unused();
                    break;
                };
                self.start(lane, vec![claimed], call, permit);
            }
        }
    }

    fn start(
        &self,
        lane: &Arc<Lane>,
        batch: Vec<Claimed>,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        let worker = self.clone();
        let lane = lane.clone();
        tokio::spawn(async move {
            worker.attempt(&lane, batch, call, permit).await;
        });
    }

    /// How many deliveries a lane claims ahead: at least its free slots, and no more than it
    /// sends within a quarter of the lease at the pace of its recent attempts, so none waits
    /// long enough for its lease to run out (up to [`CLAIM_MAX`]).
    fn ahead_limit(lane: &Lane, lease: Duration) -> usize {
        let free = (1 + lane.slots.available_permits()).min(CLAIM_MAX);
        let per_attempt_us = lane.attempt_us.load(std::sync::atomic::Ordering::Relaxed);
        if per_attempt_us == 0 {
            return free; // no attempt measured yet
        }
        let slots = lane.destination.concurrency as f64;
        let fits = lease.as_secs_f64() / 4.0 / (per_attempt_us as f64 / 1e6) * slots;
        (fits as usize).clamp(free, CLAIM_MAX)
    }

    /// Gives deliveries back unattempted: due again at once, no attempt counted.
    async fn give_back(&self, lane: &Lane, leases: Vec<(i64, String)>) {
        if leases.is_empty() {
            return;
        }
        if let Err(e) = self.store.unclaim(leases).await {
            tracing::error!(destination = %lane.destination.name, error = %e, "cannot give back claimed deliveries; their leases expire");
        }
    }

    /// Nothing due: waits until something may be (a wake, the next due time, or a poll).
    /// `false` when the lane is stopping.
    async fn idle(&self, lane: &Lane, shutdown: &mut Shutdown) -> bool {
        let name = &lane.destination.name;
        let wait = match self.store.next_due(name).await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            Ok(None) => IDLE_POLL,
            Err(e) => {
                tracing::warn!(destination = %name, error = %e, "cannot read the queue");
                IDLE_POLL
            }
        };
        // A floor keeps a clock skew or a stuck row from spinning the loop.
        let wait = wait.clamp(Duration::from_millis(20), IDLE_POLL);
        tokio::select! {
            _ = lane.wake.notified() => true,
            _ = tokio::time::sleep(wait) => true,
            _ = shutdown.wait() => false,
        }
    }

    /// A claim failed: waits a second. `false` when the lane is stopping.
    async fn after_error(&self, name: &str, e: &StoreError, shutdown: &mut Shutdown) -> bool {
        tracing::error!(destination = %name, error = %e, "cannot claim deliveries");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
            _ = shutdown.wait() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::tests::{generation, two_on_one_token};

    fn claimed(id: i64) -> Claimed {
        Claimed {
            delivery_id: id,
            notification_id: id,
            participation_id: format!("p{id}"),
            destination: "crm".into(),
            attempts: 0,
            retry_base: 0,
            state: None,
            body: Arc::from("{}"),
            received_at: 0,
            lease: format!("lease-{id}"),
            in_doubt_since: None,
        }
    }

    /// What waited too long in a lane's queue goes back unsent: its lease could run out while
    /// it is being sent, and another instance could then send it too.
    #[test]
    fn claimed_ahead_work_is_sent_only_well_inside_its_lease() {
        let mut ahead = Ahead::default();
        let t0 = Instant::now();
        ahead.push(vec![claimed(1), claimed(2)], t0);
        ahead.push(vec![claimed(3)], t0 + Duration::from_secs(20));
        let mut stale = Vec::new();
        // 35 s and 15 s old, with 30 s allowed.
        let now = t0 + Duration::from_secs(35);
        let next = ahead.next(now, Duration::from_secs(30), &mut stale);
        assert_eq!(next.map(|c| c.delivery_id), Some(3));
        assert_eq!(
            stale,
            [(1, "lease-1".to_string()), (2, "lease-2".to_string())]
        );
        assert!(ahead.is_empty());
    }

    #[test]
    fn a_lane_claims_ahead_what_it_sends_within_a_quarter_of_its_lease() {
        let (_live, mut ready) = generation(&two_on_one_token("90/10s"));
        let (destination, connector) = ready.remove(0);
        let (retire, stop) = crate::shutdown::channel();
        let (live, _) = generation(&two_on_one_token("90/10s"));
        let lane = Lane {
            slots: Arc::new(Semaphore::new(4)),
            unrecorded: Semaphore::new(4),
            gate: Arc::new(rate::Gate::new(None)),
            wake: Notify::new(),
            mapper: live.mapper.clone(),
            redactor: live.redactor.clone(),
            stop,
            retire,
            destination: Destination {
                concurrency: 4,
                ..destination
            },
            connector,
            attempt_us: Default::default(),
        };
        let lease = Duration::from_secs(60);
        // Nothing measured yet: its free slots only.
        assert_eq!(Worker::ahead_limit(&lane, lease), 5);
        // Quick attempts: as many as one claim may take.
        lane.note_attempt(Duration::from_millis(2));
        assert_eq!(Worker::ahead_limit(&lane, lease), CLAIM_MAX);
        // Slow ones (10 s, 4 at a time): 15 s of work is 6 deliveries.
        lane.attempt_us
            .store(10_000_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(Worker::ahead_limit(&lane, lease), 6);
        // Very slow ones: never fewer than the free slots.
        lane.attempt_us
            .store(60_000_000, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(Worker::ahead_limit(&lane, lease), 5);
    }
}
