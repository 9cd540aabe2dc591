//! Delivers what the store says is due: one lane per destination claims a batch under a lease,
//! maps it, hands it to the connector, records the attempt and decides what comes next. Lanes
//! are independent, so a slow or failing destination never delays the others.

mod fault;
pub mod rate;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hookfan_connectors::pace::Prepaid;
use hookfan_connectors::units::Rate;
use hookfan_connectors::{Attempt, Call, Connector, Outcome, Pace, Record};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::config::Destination;
use crate::live::Live;
use crate::mapping::{self, Mapper};
use crate::redact::Redactor;
use crate::shutdown::{Shutdown, Trigger};
use crate::store::{AttemptLog, Claimed, Store, StoreError, now_ms};

/// How long an idle lane waits before looking again without being told (leases that expired,
/// work added by another process).
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How long in-flight attempts may finish after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The most deliveries a lane of one-at-a-time connectors (webhook, Trello) claims in one go,
/// to start them as its slots free up: a backlog then costs one claim per batch, not one per
/// delivery.
const CLAIM_MAX: usize = 64;

/// The slower of two rates (calls per second), `None` being no limit.
fn strictest(a: Option<Rate>, b: Option<Rate>) -> Option<Rate> {
    match (a, b) {
        (Some(x), Some(y)) => {
            let per_sec = |r: Rate| f64::from(r.count) / r.per.as_secs_f64();
            Some(if per_sec(x) <= per_sec(y) { x } else { y })
        }
        (x, None) => x,
        (None, y) => y,
    }
}

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
    destination: Destination,
    connector: Arc<dyn Connector>,
    /// The templates of the config generation the lane was made with.
    mapper: Arc<Mapper>,
    /// That generation's secrets: an attempt finishing after a reload that changed them still
    /// has the old ones taken out.
    redactor: Arc<Redactor>,
    /// Ingress and finished attempts ring this when something may be due.
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Shared by every lane with the same rate key (and, on PostgreSQL, every instance).
    gate: Arc<dyn rate::Limiter>,
    /// A reload that replaces or removes the destination retires its lane: it stops claiming,
    /// and attempts it started finish on their own.
    retire: Trigger,
    stop: Shutdown,
    /// How long its recent attempts took, in µs (a moving average; 0: none yet).
    attempt_us: std::sync::atomic::AtomicU64,
}

impl Lane {
    fn retired(&self) -> bool {
        self.stop.is_set()
    }

    /// Adds an attempt's duration to the moving average (each new one weighs an eighth).
    fn note_attempt(&self, took: Duration) {
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

/// What a (re)load changed among the lanes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Every lane, by destination name; lanes come and go with reloads.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn Store>,
    lanes: Arc<RwLock<HashMap<String, Arc<Lane>>>>,
    /// Lanes a reload retired: the drain waits for their attempts too.
    retired: Arc<Mutex<Vec<Arc<Lane>>>>,
    /// One gate per rate key, kept across reloads so a window is not reset by one.
    gates: Arc<Mutex<Gates>>,
    /// New lanes for `run` to start.
    spawn: mpsc::UnboundedSender<Arc<Lane>>,
    spawned: Arc<Mutex<Option<mpsc::UnboundedReceiver<Arc<Lane>>>>>,
    /// The stop of the whole worker; each lane stops on it or on its own retirement.
    shutdown: Shutdown,
    /// This process's name on the leases it takes.
    owner: Arc<str>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Attempts whose records are not written yet.
    recording: Arc<Recording>,
}

/// A count of attempts between their start and their record, and a signal when none is left.
#[derive(Default)]
struct Recording {
    count: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// One attempt being counted; dropping it uncounts it.
struct Recorded<'a>(&'a Recording);

impl Recording {
    fn start(&self) -> Recorded<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Recorded(self)
    }

    async fn until_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

/// Each rate key's rate and gate.
type Gates = HashMap<String, (Option<Rate>, Arc<dyn rate::Limiter>)>;

/// A destination and its connector, ready for a lane.
pub type Ready = (Destination, Arc<dyn Connector>);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: Shutdown,
    ) -> Worker {
        let owner = format!(
            "{}-{:08x}",
            std::process::id(),
            (retry::random_unit() * f64::from(u32::MAX)) as u32
        );
        let (spawn, spawned) = mpsc::unbounded_channel();
        Worker {
            store,
            lanes: Arc::new(RwLock::new(HashMap::new())),
            retired: Arc::new(Mutex::new(Vec::new())),
            gates: Arc::new(Mutex::new(HashMap::new())),
            spawn,
            spawned: Arc::new(Mutex::new(Some(spawned))),
            shutdown,
            owner: owner.into(),
            metrics,
            recording: Arc::default(),
        }
    }

    fn lanes(&self) -> Vec<Arc<Lane>> {
        self.lanes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Puts a config generation's enabled destinations in place: a new or changed destination
    /// gets a new lane, a changed or removed one's lane is retired (it stops claiming; its
    /// attempts in flight finish), an unchanged one keeps its lane. Destinations sharing a rate
    /// key (one Trello token, one Google account) share one gate, at the strictest of their
    /// rates; a gate whose key and rate stay is kept, window and all.
    pub fn apply(&self, destinations: Vec<Ready>, generation: &Live) -> Applied {
        // Read once: a Sheets key comes from its key file, which may change meanwhile.
        let keys: Vec<String> = destinations.iter().map(|(d, _)| d.rate_key()).collect();
        let mut rates: HashMap<String, Option<Rate>> = HashMap::new();
        for ((d, _), key) in destinations.iter().zip(&keys) {
            let rate = d.effective_rate_limit();
            let entry = rates.entry(key.clone()).or_insert(rate);
            if *entry != rate {
                tracing::warn!(destination = %d.name, "destinations sharing a rate limit set different ones; the strictest applies");
                *entry = strictest(*entry, rate);
            }
        }
        {
            // The store says who keeps each window: this process, or every instance together.
            let limiters = self.store.limiters();
            let mut gates = locked(&self.gates);
            let old = std::mem::take(&mut *gates);
            for (key, rate) in rates {
                let gate = match old.get(&key) {
                    Some((r, g)) if *r == rate => g.clone(),
                    _ => {
                        let longest = rate::longest_call(
                            destinations
                                .iter()
                                .zip(&keys)
                                .filter(|(_, k)| **k == key)
                                .map(|((_, c), _)| c.timeout()),
                        );
                        limiters.gate(&key, rate, longest)
                    }
                };
                gates.insert(key, (rate, gate));
            }
        }
        let mut applied = Applied::default();
        let mut lanes = self.lanes.write().unwrap_or_else(|e| e.into_inner());
        let wanted: Vec<String> = destinations.iter().map(|(d, _)| d.name.clone()).collect();
        let gone: Vec<String> = lanes
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(lane) = lanes.remove(&name) {
                self.retire(lane);
                applied.removed.push(name);
            }
        }
        for ((destination, connector), key) in destinations.into_iter().zip(keys) {
            let name = destination.name.clone();
            let Some(gate) = locked(&self.gates).get(&key).map(|(_, g)| g.clone()) else {
                continue; // every key was given a gate above
            };
            // A lane is kept only if its gate is too: a key whose rate changed gets a new gate,
            // and every lane of the key moves to it, so no two windows split one limit.
            match lanes.get(&name) {
                Some(lane)
                    if lane.destination.fingerprint == destination.fingerprint
                        && Arc::ptr_eq(&lane.gate, &gate) =>
                {
                    continue;
                }
                Some(_) => applied.changed.push(name.clone()),
                None => applied.added.push(name.clone()),
            }
            let (retire, own) = crate::shutdown::channel();
            let lane = Arc::new(Lane {
                slots: Arc::new(Semaphore::new(destination.concurrency)),
                gate,
                wake: Notify::new(),
                mapper: generation.mapper.clone(),
                redactor: generation.redactor.clone(),
                stop: self.shutdown.or(&own),
                retire,
                attempt_us: Default::default(),
                destination,
                connector,
            });
            if let Some(old) = lanes.insert(name, lane.clone()) {
                self.retire(old);
            }
            // `run` starts it; if `run` has ended, the worker is stopping anyway.
            let _ = self.spawn.send(lane);
        }
        applied
    }

    fn retire(&self, lane: Arc<Lane>) {
        lane.retire.trigger();
        lane.wake.notify_one();
        let mut retired = locked(&self.retired);
        // A retired lane nothing else holds has ended its loop and its attempts: let it go.
        retired.retain(|l| Arc::strong_count(l) > 1);
        retired.push(lane);
    }

    /// Tells every lane to look for work (an operator made some due).
    pub fn wake_all(&self) {
        for lane in self.lanes() {
            lane.wake.notify_one();
        }
    }

    /// Tells a destination's lane that work arrived.
    pub fn wake(&self, destination: &str) {
        let lanes = self.lanes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get(destination) {
            lane.wake.notify_one();
        }
    }

    /// Runs the lanes [`Worker::apply`] makes until the stop. A lane that ends unasked (a
    /// panic) ends them all and is returned as an error, so the process can stop and be
    /// restarted; then call [`Worker::drain`] in both cases.
    pub async fn run(self) -> Result<(), String> {
        let Some(mut spawned) = locked(&self.spawned).take() else {
            return Err("the worker was started twice".into());
        };
        let mut shutdown = self.shutdown.clone();
        let mut tasks = tokio::task::JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Arc<Lane>> = HashMap::new();
        loop {
            tokio::select! {
                Some(lane) = spawned.recv() => {
                    let task = tasks.spawn(self.clone().lane_loop(lane.clone(), lane.stop.clone()));
                    running.insert(task.id(), lane);
                }
                Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (id, how) = match ended {
                        Ok((id, ())) => (id, "ended"),
                        Err(e) if e.is_panic() => (e.id(), "panicked"),
                        Err(e) => (e.id(), "was cancelled"),
                    };
                    let lane = running.remove(&id);
                    if let Some(l) = lane.as_ref().filter(|l| l.retired()) {
                        if how != "ended" {
                            tracing::error!(destination = %l.destination.name, "a retired delivery lane {how}");
                        }
                        continue;
                    }
                    let name = lane.map_or_else(|| "?".to_string(), |l| l.destination.name.clone());
                    tasks.shutdown().await;
                    return Err(format!("the delivery lane of {name} {how}"));
                }
                _ = shutdown.wait() => break,
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Lets in-flight attempts finish for up to [`DRAIN_TIMEOUT`] and gives back the leases of
    /// those that did not.
    pub async fn drain(&self) {
        let all: Vec<Arc<Lane>> = self
            .lanes()
            .into_iter()
            .chain(locked(&self.retired).iter().cloned())
            .collect();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            for lane in all {
                let n = u32::try_from(lane.destination.concurrency).unwrap_or(u32::MAX);
                let _ = lane.slots.acquire_many(n).await;
            }
            self.recording.until_idle().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "attempts still running after {DRAIN_TIMEOUT:?}; their leases are released"
            );
        }
        match self.store.release(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released leases"),
            Err(e) => {
                tracing::error!(error = %e, "could not release leases; they expire on their own")
            }
        }
    }

    /// Lease length: long enough for the slowest attempt, short enough that a crash is
    /// recovered from quickly.
    fn lease(lane: &Lane) -> Duration {
        fault::lease().unwrap_or_else(|| {
            Duration::from_secs(60).max(lane.connector.timeout() * 2 + Duration::from_secs(15))
        })
    }

    async fn lane_loop(self, lane: Arc<Lane>, mut shutdown: Shutdown) {
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
            if claims_ahead && ahead.is_empty() {
                let limit = Self::ahead_limit(lane, lease);
                match self.store.claim_due(&name, limit, &self.owner, lease).await {
                    Ok(batch) => {
                        drained = batch.len() < limit;
                        ahead.push(batch, Instant::now());
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
                let mut stale = Vec::new();
                let next = ahead.next(Instant::now(), lease / 2, &mut stale);
                self.give_back(lane, stale).await;
                next.map(|c| vec![c])
            } else {
                let limit = lane.connector.max_batch();
                match self.store.claim_due(&name, limit, &self.owner, lease).await {
                    Ok(batch) => {
                        drained = batch.len() < limit;
                        (!batch.is_empty()).then_some(batch)
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

    /// Maps, delivers and records one claimed batch, in one `attempt` span: every event the
    /// connector and the rate gate log carries the destination, and for a single delivery its
    /// id, participation and attempt number (a batch carries its size).
    async fn attempt(
        &self,
        lane: &Lane,
        batch: Vec<Claimed>,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        let span = tracing::info_span!(
            "attempt",
            destination = %lane.destination.name,
            delivery_id = Empty,
            participation_id = Empty,
            attempt = Empty,
            batch = batch.len(),
        );
        if let [one] = batch.as_slice() {
            span.record("delivery_id", one.delivery_id);
            span.record("participation_id", one.participation_id.as_str());
            span.record("attempt", one.attempts + 1);
        }
        self.attempt_in_span(lane, batch, call, permit)
            .instrument(span)
            .await;
    }

    async fn attempt_in_span(
        &self,
        lane: &Lane,
        batch: Vec<Claimed>,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        // Counted until recorded: the drain waits for records as for attempts.
        let _recording = self.recording.start();
        let destination = &lane.destination;
        let started_at = now_ms();
        let clock = Instant::now();
        let mut logs = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        for c in batch {
            match Self::map(lane, &c) {
                Ok(record) => {
                    records.push(record);
                    sent.push(c);
                }
                // A mapping that cannot render will not render next time either.
                Err((detail, summary)) => {
                    let attempt = Attempt::new(Outcome::failed(detail));
                    logs.push(self.finish(lane, &c, attempt, Some(summary), started_at, 0));
                }
            }
        }
        let mut unsent = Vec::new();
        if !records.is_empty() {
            let pace = Prepaid::new(call, lane.gate.as_ref());
            let mut results = self.deliver(lane, &records, &pace).await;
            drop(pace);
            let elapsed = clock.elapsed();
            lane.note_attempt(elapsed);
            let duration_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
            // A connector must answer once per record; a missing answer is a retry, not a loss.
            results.resize_with(records.len(), || {
                Attempt::new(Outcome::retry(
                    "the connector gave no outcome for this record",
                ))
            });
            let throttled = results.iter().any(|a| a.status == Some(429));
            lane.gate.throttled(throttled).await;
            for (c, attempt) in sent.iter().zip(results) {
                if attempt.outcome == Outcome::Unsent {
                    unsent.push((c.delivery_id, c.lease.clone()));
                    continue;
                }
                // Only our own words about a request that got no answer (time-outs, refused
                // connections) go to the log: a destination's message, or a value that failed
                // to convert, may quote participant data. The delivery log keeps the whole reason.
                let logged = match (&attempt.outcome, attempt.status) {
                    (Outcome::Retry { reason, .. }, None) => Some(reason.clone()),
                    _ => None,
                };
                logs.push(self.finish(lane, c, attempt, logged, started_at, duration_ms));
            }
        } else {
            // Nothing could be mapped: the call taken for it was never made.
            call.unused();
        }
        // The destination is done with: the slot is free for the next delivery while this one
        // is recorded (its lease keeps it from being claimed again meanwhile).
        drop(permit);
        lane.wake.notify_one();
        if let Err(e) = self.store.record(logs).await {
            // The leases expire and the deliveries are tried again: at least once, never lost.
            tracing::error!(destination = %destination.name, error = %e, "cannot record attempts");
        }
        // The record may have made a retry due soon: the lane looks again.
        lane.wake.notify_one();
        if !unsent.is_empty() {
            tracing::debug!(
                destination = %destination.name,
                unsent = unsent.len(),
                "part of the batch was not sent; it stays due"
            );
            if let Err(e) = self.store.unclaim(unsent).await {
                tracing::error!(destination = %destination.name, error = %e, "cannot give back unsent deliveries; their leases expire");
            }
        }
    }

    /// The connector's outcomes for `records`. A connector whose work stops when dropped is
    /// given up on after its time-out (the lease was sized from that bound; the slack lets the
    /// connector's own, more precise time-out speak first). One whose work would go on (a
    /// blocking file write) is waited for, so no attempt is recorded while it may still land.
    async fn deliver(&self, lane: &Lane, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        let deliver = lane.connector.deliver(records, pace);
        if !lane.connector.stops_when_dropped() {
            return deliver.await;
        }
        let limit = lane.connector.timeout() + Duration::from_secs(5);
        match tokio::time::timeout(limit, deliver).await {
            Ok(results) => results,
            Err(_) => vec![
                Attempt::new(Outcome::retry(format!(
                    "timed out: no outcome within {}s",
                    limit.as_secs()
                )));
                records.len()
            ],
        }
    }

    /// The record for one claimed delivery; on failure, the whole reason (for the delivery log)
    /// and one without any value (for the log).
    fn map(lane: &Lane, c: &Claimed) -> Result<Record, (String, String)> {
        let destination = &lane.destination;
        let doc: serde_json::Value = serde_json::from_str(&c.body).map_err(|e| {
            let reason = format!("stored notification is not JSON: {e}");
            (reason.clone(), reason)
        })?;
        let ctx = mapping::context(&doc, c.received_at);
        let fields = lane.mapper.fields(&destination.name, &ctx).map_err(|e| {
            (
                format!("mapping failed: {e}"),
                format!("mapping failed: field {:?}", e.field),
            )
        })?;
        Ok(Record {
            delivery_id: c.delivery_id,
            notification_id: c.notification_id,
            participation_id: c.participation_id.clone(),
            attempt: c.attempts + 1,
            fields,
            raw: c.body.clone(),
            state: c.state.clone(),
            in_doubt_since: c.in_doubt_since,
        })
    }

    /// Decides what comes next ([`retry::decide`]), logs the attempt with that word, and
    /// returns its row, which records the same word.
    fn finish(
        &self,
        lane: &Lane,
        c: &Claimed,
        attempt: Attempt,
        logged_reason: Option<String>,
        started_at: i64,
        duration_ms: i64,
    ) -> AttemptLog {
        let (destination, redactor) = (&lane.destination, &lane.redactor);
        let number = c.attempts + 1;
        let next = retry::decide(
            &destination.retry,
            // A replay restarts the schedule.
            number.saturating_sub(c.retry_base),
            &attempt.outcome,
            now_ms(),
            retry::random_unit(),
        );
        // A destination may echo our request (headers, tokens) in its answer: no configured
        // secret is stored or logged.
        let mut error = attempt.outcome.reason().map(str::to_owned);
        if !attempt.warnings.is_empty() {
            let warnings = attempt.warnings.join("; ");
            error = Some(match error {
                Some(e) => format!("{e}; {warnings}"),
                None => format!("warning: {warnings}"),
            });
        }
        self.metrics.attempt(
            &destination.name,
            next.outcome(),
            Duration::from_millis(u64::try_from(duration_ms).unwrap_or(0)),
        );
        tracing::info!(
            destination = %destination.name,
            delivery_id = c.delivery_id,
            participation_id = %c.participation_id,
            attempt = number,
            outcome = %next.outcome(),
            status = attempt.status,
            duration_ms,
            reason = logged_reason.map(|r| redactor.redact(&r)).as_deref(),
            "attempt"
        );
        AttemptLog {
            delivery_id: c.delivery_id,
            lease: c.lease.clone(),
            number,
            started_at,
            duration_ms,
            status_code: attempt.status,
            error: redactor.redact_opt(error),
            response: redactor.redact_opt(attempt.response),
            state: attempt.state,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_gates_take_the_strictest_rate() {
        let r = |t: &str| Some(Rate::parse(t).unwrap());
        assert_eq!(strictest(r("90/10s"), r("30/10s")), r("30/10s"));
        assert_eq!(strictest(r("50/min"), r("1/s")), r("50/min"));
        assert_eq!(strictest(None, r("1/s")), r("1/s"));
        assert_eq!(strictest(r("1/s"), None), r("1/s"));
        assert_eq!(strictest(None, None), None);
    }

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

    fn generation(text: &str) -> (Live, Vec<Ready>) {
        let config = crate::config::Config::parse(text, std::path::Path::new("t.toml"), &|_| None)
            .expect("a valid config");
        let client = hookfan_connectors::http::client().expect("an HTTP client");
        let ready = config
            .destinations
            .iter()
            .map(|d| (d.clone(), d.connector(&client).expect("a connector")))
            .collect();
        (Live::new(config).expect("templates"), ready)
    }

    fn two_on_one_token(b_rate: &str) -> String {
        let trello = |name: &str, rate: &str| {
            format!(
                "[destinations.{name}]\ntype = \"trello\"\nkey = \"key-123456\"\ntoken = \"shared-token\"\nlist_id = \"5f1b2c3d4e5f6a7b8c9d0e1f\"\nname = \"x\"\nrate_limit = \"{rate}\"\n"
            )
        };
        format!(
            "[sources.q]\nauth = \"none\"\n{}{}",
            trello("a", "90/10s"),
            trello("b", b_rate)
        )
    }

    /// A reload that changes one rate of a shared key moves every lane of the key to one new
    /// gate: two windows would let the token see both limits added together.
    #[tokio::test]
    async fn a_reload_keeps_one_gate_per_rate_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let (_trigger, stop) = crate::shutdown::channel();
        let worker = Worker::new(
            Arc::new(store),
            Arc::new(crate::metrics::Metrics::new()),
            stop,
        );
        let gates = |w: &Worker| {
            let lanes = w.lanes.read().unwrap();
            (lanes["a"].gate.clone(), lanes["b"].gate.clone())
        };
        let running = tokio::spawn(worker.clone().run());
        let (live, ready) = generation(&two_on_one_token("90/10s"));
        worker.apply(ready, &live);
        let (a, b) = gates(&worker);
        assert!(Arc::ptr_eq(&a, &b));

        let (live, ready) = generation(&two_on_one_token("30/10s"));
        let applied = worker.apply(ready, &live);
        let (a2, b2) = gates(&worker);
        assert!(Arc::ptr_eq(&a2, &b2), "a and b split one token's limit");
        assert!(!Arc::ptr_eq(&a, &a2), "the stricter rate needs a new gate");
        assert_eq!(applied.changed, ["a", "b"]);

        // The same again: nothing changes.
        let (live, ready) = generation(&two_on_one_token("30/10s"));
        assert_eq!(worker.apply(ready, &live), Applied::default());

        // Retired lanes whose loops have ended are let go at the next retirement.
        drop((a, b, a2, b2));
        let ended = || {
            locked(&worker.retired)
                .iter()
                .all(|l| Arc::strong_count(l) == 1)
        };
        for _ in 0..200 {
            if ended() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ended(), "the retired lanes' loops did not end");
        let (live, ready) = generation(&two_on_one_token("20/10s"));
        worker.apply(ready, &live);
        assert_eq!(
            locked(&worker.retired).len(),
            2,
            "only the last two are kept"
        );
        running.abort();
    }
}
