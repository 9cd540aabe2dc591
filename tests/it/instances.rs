//! Several instances on one PostgreSQL database, as the real binary runs them: they share the
//! queue (each notification delivered once), take over a killed instance's work, keep one rate
//! limit between them, and ride out the database going away without a restart.

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookfan::store::{Filter, Status, Store};
use hookfan::worker::UNRECORDED_MAX;
use tokio::sync::Mutex;

use crate::backends::{PgSchema, eventually};
use crate::fakes::crm::{FakeCrm, Reply};
use crate::fakes::netcut::NetCut;
use crate::support::{assert_at_most_per_window, v2_with_id};

const WAIT: Duration = Duration::from_secs(30);

/// A `hookfan serve` process with a config of its own, on a port of its own.
struct Instance {
    child: Option<Child>,
    base: String,
    dir: tempfile::TempDir,
}

impl Instance {
    /// Starts `hookfan serve` on `storage` with `rest` (sources, retry, destinations), with
    /// `env` set, and waits until it answers.
    async fn start(storage: &str, rest: &str, env: &[(&str, &str)]) -> Instance {
        crate::support::init();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\nurl = \"{storage}\"\n\n{rest}"
        );
        std::fs::write(dir.path().join("hookfan.toml"), config).unwrap();
        let stderr = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hookfan"))
            .args(["serve", "--config", "hookfan.toml", "--log-format", "json"])
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let instance = Instance {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client
                .get(format!("{}/healthz", instance.base))
                .send()
                .await
                .is_ok()
            {
                return instance;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("hookfan serve did not start:\n{}", instance.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Its attempt events for `destination`.
    fn attempts(&self, destination: &str) -> usize {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "attempt" && l["destination"] == destination)
            .count()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGKILL: no drain, no lease given back.
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and its exit status.
    async fn stop(mut self) -> std::process::ExitStatus {
        crate::support::terminate(self.child.take().unwrap()).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Posts a notification with participation `id` to an instance; its HTTP status, or 0 when
/// no answer came.
async fn post(client: &reqwest::Client, base: &str, id: &str) -> u16 {
    client
        .post(format!("{base}/hooks/qualifio"))
        .header("content-type", "application/json")
        .body(v2_with_id(id))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The one destination these stories use: `crm`, a webhook posting the participation id.
fn crm_destination(crm: &FakeCrm, extra: &str) -> String {
    crate::support::config(&format!(
        "[destinations.crm]\ntype = \"webhook\"\nurl = \"{}\"\n{extra}\n[destinations.crm.fields]\nid = \"{{{{ participation.id }}}}\"\n",
        crm.url("/in")
    ))
}

/// The participation ids the CRM received, with how many times each came.
fn received_ids(crm: &FakeCrm) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for r in crm.received() {
        *ids.entry(r.json()["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    ids
}

/// Waits until every delivery in the store is delivered and there are `n`.
async fn all_delivered(store: &dyn Store, n: usize) {
    crate::support::wait_deliveries(
        store,
        Filter {
            limit: 10_000,
            ..Filter::default()
        },
        Status::Delivered,
        n,
        WAIT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_posted_to_two_instances_are_each_delivered_once() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(200).delay(Duration::from_millis(20)));
    let config = crm_destination(&crm, "");
    let (a, z) = (
        Instance::start(&schema.url, &config, &[]).await,
        Instance::start(&schema.url, &config, &[]).await,
    );
    let client = reqwest::Client::new();
    let mut posted = BTreeSet::new();
    for i in 0..40 {
        let id = format!("both-{i}");
        let base = if i % 2 == 0 { &a.base } else { &z.base };
        assert_eq!(post(&client, base, &id).await, 202);
        posted.insert(id);
    }
    let store = hookfan::store::open(&schema.url).await.unwrap();
    all_delivered(store.as_ref(), 40).await;
    let got = received_ids(&crm);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), posted);
    assert!(got.values().all(|n| *n == 1), "sent twice: {got:?}");
    // Both instances delivered: they share one queue.
    assert!(
        a.attempts("crm") > 0 && z.attempts("crm") > 0,
        "attempts: {} and {}",
        a.attempts("crm"),
        z.attempts("crm")
    );
    assert_eq!(a.attempts("crm") + z.attempts("crm"), 40);
    assert!(a.stop().await.success() && z.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_nothing_and_repeats_at_most_what_was_in_flight() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let crm = FakeCrm::start().await;
    // Slow answers, so the instance dies with attempts in flight.
    crm.set_default(Reply::status(200).delay(Duration::from_millis(300)));
    let concurrency = 4;
    let config = crm_destination(&crm, &format!("concurrency = {concurrency}"));
    // Claims of a dead instance are taken over after 2 s rather than a minute.
    let env = [("HOOKFAN_TEST_LEASE", "2s")];
    let mut a = Instance::start(&schema.url, &config, &env).await;
    let z = Instance::start(&schema.url, &config, &env).await;
    let client = reqwest::Client::new();
    let mut posted = BTreeSet::new();
    for i in 0..30 {
        let id = format!("kill-{i}");
        let base = if i % 2 == 0 { &a.base } else { &z.base };
        assert_eq!(post(&client, base, &id).await, 202);
        posted.insert(id);
    }
    crm.wait_for(6, WAIT).await;
    // Ready before the kill, so the claims it left are read well before their leases expire.
    let mut db = schema.connect().await;
    let a_owner = format!("{}-%", a.pid());
    a.kill();
    // What the dead instance held: sent or not, answered or not, nothing of it recorded.
    let held: BTreeSet<String> = sqlx::query_scalar(
        "SELECT n.participation_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id
         WHERE d.lease_owner LIKE $1 AND d.status IN ('pending', 'retrying')",
    )
    .bind(&a_owner)
    .fetch_all(&mut db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert!(
        !held.is_empty() && crm.received().len() < 30,
        "the instance died mid-way, with work in hand and work left"
    );
    for i in 30..40 {
        let id = format!("kill-{i}");
        assert_eq!(post(&client, &z.base, &id).await, 202);
        posted.insert(id);
    }
    let store = hookfan::store::open(&schema.url).await.unwrap();
    all_delivered(store.as_ref(), 40).await;
    let got = received_ids(&crm);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), posted);
    // Only what the killed instance held unrecorded can have gone out twice, and only once more.
    // (That can be more than `concurrency`: a slot is freed when the destination answers, before
    // the attempt is recorded.)
    let repeated: BTreeSet<String> = got
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        repeated.is_subset(&held) && got.values().all(|n| *n <= 2),
        "repeated {repeated:?}, but the killed instance held only {held:?}: {got:?}"
    );
    assert!(z.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_attempts_cannot_be_recorded_an_instance_stops_sending_more() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let crm = FakeCrm::start().await;
    let concurrency = 2;
    let config = crm_destination(&crm, &format!("concurrency = {concurrency}"));
    let relay = Instance::start(&schema.url, &config, &[]).await;
    // An operator's long transaction holds the attempts table: every record waits for it.
    let mut db = schema.connect().await;
    sqlx::query("BEGIN").execute(&mut db).await.unwrap();
    sqlx::query("LOCK TABLE attempts IN SHARE MODE")
        .execute(&mut db)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let posted = UNRECORDED_MAX + 40;
    for i in 0..posted {
        assert_eq!(post(&client, &relay.base, &format!("held-{i}")).await, 202);
    }
    // UNRECORDED_MAX attempts wait for their records, and `concurrency` more hold the slots:
    // then the lane waits, rather than sending on with nothing recorded.
    let most = UNRECORDED_MAX + concurrency;
    crm.wait_for(most, WAIT).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        crm.received().len(),
        most,
        "sent on while nothing could be recorded"
    );
    sqlx::query("ROLLBACK").execute(&mut db).await.unwrap();
    let store = hookfan::store::open(&schema.url).await.unwrap();
    all_delivered(store.as_ref(), posted).await;
    let got = received_ids(&crm);
    assert_eq!(got.len(), posted);
    assert!(got.values().all(|n| *n == 1), "sent twice: {got:?}");
    assert!(relay.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_instances() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let crm = FakeCrm::start().await;
    let config = crm_destination(&crm, "rate_limit = \"6/3s\"");
    let (a, z) = (
        Instance::start(&schema.url, &config, &[]).await,
        Instance::start(&schema.url, &config, &[]).await,
    );
    let client = reqwest::Client::new();
    // 14 calls: at least three windows' worth. Each instance alone would allow 6 per 3 s, so
    // without a shared window the CRM would see up to 12.
    for i in 0..14 {
        let base = if i % 2 == 0 { &a.base } else { &z.base };
        assert_eq!(post(&client, base, &format!("rate-{i}")).await, 202);
    }
    let got = crm.wait_for(14, WAIT).await;
    let times: Vec<_> = got.iter().map(|r| r.at).collect();
    assert_at_most_per_window(&times, 6, Duration::from_secs(3));
    assert!(
        a.attempts("crm") > 0 && z.attempts("crm") > 0,
        "both instances called the CRM: {} and {}",
        a.attempts("crm"),
        z.attempts("crm")
    );
    assert!(a.stop().await.success() && z.stop().await.success());
}

/// The schema's URL, through `proxy` and under its own application name, so the test can find
/// the relay's sessions.
fn through(schema: &PgSchema, proxy: &NetCut, application: &str) -> String {
    let mut url = url::Url::parse(&schema.url).unwrap();
    let (host, port) = proxy.addr.split_once(':').unwrap();
    url.set_host(Some(host)).unwrap();
    url.set_port(Some(port.parse().unwrap())).unwrap();
    url.query_pairs_mut()
        .append_pair("application_name", application);
    url.to_string()
}

/// What the load generator saw: each participation id, the status of its post, and when.
type Seen = Arc<Mutex<Vec<(String, u16, tokio::time::Instant)>>>;

/// Waits until `n` posts answered after `since` were accepted.
async fn accepted_since(seen: &Seen, since: tokio::time::Instant, n: usize, what: &str) {
    eventually(WAIT, what, || {
        let seen = seen.clone();
        async move {
            seen.lock()
                .await
                .iter()
                .filter(|(_, status, t)| *status == 202 && *t > since)
                .count()
                >= n
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_gives_503s_loses_nothing_and_recovers_without_a_restart() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let upstream = url::Url::parse(&schema.url).unwrap();
    let proxy = NetCut::start(format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(5432)
    ))
    .await;
    let application = format!("hookfan-{}", schema.name);
    let crm = FakeCrm::start().await;
    let mut relay = Instance::start(
        &through(&schema, &proxy, &application),
        &crm_destination(&crm, ""),
        &[("HOOKFAN_TEST_LEASE", "2s")],
    )
    .await;

    // Load: four senders posting new participations until told to stop.
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..4 {
        let (seen, stop, base) = (seen.clone(), stop.clone(), relay.base.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("load-{s}-{i}");
                let status = post(&client, &base, &id).await;
                seen.lock()
                    .await
                    .push((id, status, tokio::time::Instant::now()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let start = tokio::time::Instant::now();
    accepted_since(&seen, start, 10, "notifications are accepted").await;

    // 1. The database ends every session of the relay.
    let mut admin = schema.connect().await;
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&application)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the relay had sessions to end");
    let after_terminate = tokio::time::Instant::now();
    accepted_since(
        &seen,
        after_terminate,
        10,
        "accepts resume after the sessions ended",
    )
    .await;

    // 2. The database cannot be reached at all for a while.
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    let client = reqwest::Client::new();
    eventually(WAIT, "/readyz says the store is unavailable", || {
        let (client, base) = (client.clone(), relay.base.clone());
        async move {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 503)
        }
    })
    .await;
    eventually(WAIT, "posts get 503 while the database is away", || {
        let seen = seen.clone();
        async move {
            seen.lock()
                .await
                .iter()
                .any(|(_, status, t)| *status == 503 && *t > cut_at)
        }
    })
    .await;
    proxy.restore();
    let restored_at = tokio::time::Instant::now();

    // 3. It comes back: accepts resume, without a restart.
    accepted_since(
        &seen,
        restored_at,
        10,
        "accepts resume once the database is back",
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    while senders.join_next().await.is_some() {}
    assert!(relay.running(), "hookfan exited:\n{}", relay.logs());

    // Every notification answered 202 reaches the CRM (some twice: attempts whose record was
    // cut off are made again, as at-least-once allows).
    let accepted: BTreeSet<String> = seen
        .lock()
        .await
        .iter()
        .filter(|(_, status, _)| *status == 202)
        .map(|(id, _, _)| id.clone())
        .collect();
    let refused = seen
        .lock()
        .await
        .iter()
        .filter(|(_, status, _)| *status == 503)
        .count();
    assert!(refused > 0);
    eventually(WAIT, "every accepted notification is delivered", || {
        let got: BTreeSet<String> = received_ids(&crm).into_keys().collect();
        let missing = accepted.difference(&got).count();
        async move { missing == 0 }
    })
    .await;
    // Readiness is probed at most once a second, so the last failed probe may stand that long.
    eventually(WAIT, "/readyz is 200 again, without a restart", || {
        let (client, url) = (client.clone(), format!("{}/readyz", relay.base));
        async move {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        }
    })
    .await;
    assert!(relay.stop().await.success());
}
