//! Delivers what the store says is due: one lane per destination claims a batch under a lease,
//! maps it, hands it to the connector, records the attempt and decides what comes next. Lanes
//! are independent, so a slow or failing destination never delays the others.

mod attempt;
mod fault;
mod lane;
pub mod rate;
pub mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hookfan_connectors::Connector;
use hookfan_connectors::units::Rate;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::config::Destination;
use crate::live::Live;
use crate::shutdown::Shutdown;
use crate::store::Store;
use attempt::Recording;
use lane::Lane;

/// How long in-flight attempts may finish after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The most answered attempts of one destination that wait for their record at once (or its
/// `concurrency`, if larger); beyond it the destination's slots stay taken until records catch
/// up. Enough for the store to record them in groups (PostgreSQL takes up to 128 calls per
/// statement; a bound of `concurrency` cut a drain at concurrency 4 from 4,641 to 2,746/s),
/// and few enough to hold in memory well within a lease.
pub const UNRECORDED_MAX: usize = 256;

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
                unrecorded: Semaphore::new(destination.concurrency.max(UNRECORDED_MAX)),
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

    pub(super) fn generation(text: &str) -> (Live, Vec<Ready>) {
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

    pub(super) fn two_on_one_token(b_rate: &str) -> String {
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
