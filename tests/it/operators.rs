//! An operator answers "did participation X reach the CRM, and if not, why?", replays what
//! failed, cancels what should never go out, erases a participant, and watches the metrics: from
//! the CLI (the real binary, while the relay runs) and from the admin API.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use std::sync::Arc;

use hookfan::store::{Status, Store};
use serde_json::{Value, json};

use crate::fakes::crm::{FakeCrm, Reply};
use crate::support::{Relay, for_destination, v2_with_id, wait_deliveries};

const WAIT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// A relay with three webhook destinations, each on its own fake: `ok` answers 200, `flaky`
/// 503 (so it retries, an hour later), `refuse` 400 (so it is dead at once).
struct Scene {
    relay: Relay,
    ok: FakeCrm,
    flaky: FakeCrm,
    refuse: FakeCrm,
}

impl Scene {
    async fn start() -> Scene {
        Scene::on(None).await
    }

    /// The scene with its store at `storage` (a PostgreSQL URL), else SQLite beside the config.
    async fn on(storage: Option<&str>) -> Scene {
        let (ok, flaky, refuse) = (
            FakeCrm::start().await,
            FakeCrm::start().await,
            FakeCrm::start().await,
        );
        flaky.set_default(Reply::status(503).body("down for maintenance"));
        refuse.set_default(Reply::status(400).body("{\"error\":\"email is invalid\"}"));
        let destination = |name: &str, crm: &FakeCrm| {
            format!(
                "[destinations.{name}]\ntype = \"webhook\"\nurl = \"{}\"\n[destinations.{name}.fields]\nemail = \"{{{{ participant.email }}}}\"\n[destinations.{name}.retry]\nschedule = [\"1h\"]\n",
                crm.url("/in")
            )
        };
        let storage = storage
            .map(|url| format!("[storage]\nurl = \"{url}\"\n\n"))
            .unwrap_or_default();
        let config = format!(
            "{storage}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n\n{}",
            crate::support::config(&format!(
                "{}{}{}",
                destination("ok", &ok),
                destination("flaky", &flaky),
                destination("refuse", &refuse)
            ))
        );
        let relay = Relay::start(&config).await;
        Scene {
            relay,
            ok,
            flaky,
            refuse,
        }
    }

    fn config(&self) -> PathBuf {
        self.relay.dir.path().join("hookfan.toml")
    }

    /// A second handle on the relay's store, whichever it is.
    async fn store(&self) -> Arc<dyn Store> {
        let config = hookfan::config::Config::load(&self.config()).unwrap();
        hookfan::store::open(&config.storage.url).await.unwrap()
    }

    /// Posts a participation and waits until each destination has dealt with it.
    async fn post(&self, body: String) {
        let id: Value = serde_json::from_str(&body).unwrap();
        let id = id["id"].as_str().unwrap().to_string();
        self.relay.accept(body).await;
        let store = self.store().await;
        for (name, status) in [
            ("ok", Status::Delivered),
            ("flaky", Status::Retrying),
            ("refuse", Status::Dead),
        ] {
            let filter = hookfan::store::Filter {
                participation_id: Some(id.clone()),
                ..for_destination(name)
            };
            wait_deliveries(store.as_ref(), filter, status, 1, WAIT).await;
        }
    }

    /// `hookfan ARGS --config THIS` while the relay runs.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookfan"));
        cmd.args(args).arg("--config").arg(self.config());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.relay.admin.as_deref().unwrap())
    }

    async fn api_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .relay
            .client
            .get(self.admin(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .relay
            .client
            .post(self.admin(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        out(o),
        err(o)
    );
}

/// The id of `destination`'s delivery of participation `p`.
async fn delivery_of(store: &dyn Store, destination: &str, p: &str) -> i64 {
    store
        .list(&hookfan::store::Filter {
            participation_id: Some(p.into()),
            destination: Some(destination.into()),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_participation_and_reads_why_it_failed() {
    let s = Scene::start().await;
    s.post(v2_with_id("find-1")).await;
    s.post(v2_with_id("other-1")).await;

    let o = s
        .cli(&["deliveries", "list", "--participation", "find-1"])
        .await;
    exit(&o, 0);
    let table = out(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    let refuse = lines.iter().find(|l| l.contains("refuse")).unwrap();
    assert!(
        refuse.contains("dead") && refuse.contains("HTTP 400 Bad Request"),
        "{table}"
    );
    let flaky = lines.iter().find(|l| l.contains("flaky")).unwrap();
    assert!(flaky.contains("retrying"), "{table}");
    assert!(!table.contains("other-1"), "{table}");

    let o = s
        .cli(&["deliveries", "list", "--participation", "find-1", "--json"])
        .await;
    exit(&o, 0);
    let list: Value = serde_json::from_str(&out(&o)).unwrap();
    let mut seen: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["id"].is_i64() && d["attempts"] == 1, "{d}");
            (
                d["destination"].as_str().unwrap().into(),
                d["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("flaky".into(), "retrying".into()),
            ("ok".into(), "delivered".into()),
            ("refuse".into(), "dead".into())
        ]
    );
    let o = s
        .cli(&["deliveries", "list", "--status", "dead", "--json"])
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&out(&o))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The detail: what was received, what would be sent now, and each attempt with the answer.
    let store = s.store().await;
    let dead = delivery_of(store.as_ref(), "refuse", "find-1").await;
    let o = s.cli(&["deliveries", "show", &dead.to_string()]).await;
    exit(&o, 0);
    let text = out(&o);
    for words in [
        "dead after 1 attempt",
        "find-1 from source qualifio",
        "campaign Winter quiz 2026",
        "would send: POST http://127.0.0.1:",
        "{\"email\":\"amelie.dupont@example.org\"}",
        "#1 ",
        "HTTP 400: dead",
        "error: HTTP 400 Bad Request",
        "answer: {\"error\":\"email is invalid\"}",
    ] {
        assert!(text.contains(words), "{words:?} missing in:\n{text}");
    }
    let o = s
        .cli(&["deliveries", "show", &dead.to_string(), "--json"])
        .await;
    let detail: Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(detail["attempts"][0]["status_code"], 400);
    assert_eq!(detail["attempts"][0]["outcome"], "dead");
    assert_eq!(
        detail["record"]["fields"][0][1],
        "amelie.dupont@example.org"
    );

    // Errors name what was not found; bad usage is exit 2.
    let o = s.cli(&["deliveries", "show", "424242"]).await;
    exit(&o, 1);
    assert!(err(&o).contains("no delivery 424242"), "{}", err(&o));
    exit(&s.cli(&["deliveries", "list", "--status", "lost"]).await, 2);
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_brings_a_dead_delivery_back_to_its_destination() {
    let s = Scene::start().await;
    s.post(v2_with_id("replay-1")).await;
    let store = s.store().await;
    let dead = delivery_of(store.as_ref(), "refuse", "replay-1").await;

    // The CRM was fixed: a replay sends it again, and it lands.
    s.refuse.set_default(Reply::status(200));
    let o = s.cli(&["replay", &dead.to_string()]).await;
    exit(&o, 0);
    assert_eq!(out(&o), "replayed 1 delivery\n");
    let rows = wait_deliveries(
        store.as_ref(),
        for_destination("refuse"),
        Status::Delivered,
        1,
        WAIT,
    )
    .await;
    assert_eq!(rows[0].id, dead);
    assert_eq!(
        crate::support::attempt_summary(store.as_ref(), dead).await,
        [(1, "dead", Some(400)), (2, "delivered", Some(200))]
    );
    assert_eq!(s.refuse.received().len(), 2);

    // A delivered one only with --force; an unknown id is named.
    let o = s.cli(&["replay", &dead.to_string()]).await;
    exit(&o, 0);
    assert!(out(&o).contains("replayed 0 deliveries"), "{}", out(&o));
    assert!(out(&o).contains("--force"), "{}", out(&o));
    let o = s.cli(&["replay", &dead.to_string(), "--force"]).await;
    assert_eq!(out(&o), "replayed 1 delivery\n");
    s.refuse.wait_for(3, WAIT).await;
    let o = s.cli(&["replay", "424242"]).await;
    exit(&o, 1);
    assert!(err(&o).contains("no delivery 424242"), "{}", err(&o));

    // By status: every dead delivery of a destination.
    s.refuse.set_default(Reply::status(400));
    s.post(v2_with_id("replay-2")).await;
    s.refuse.set_default(Reply::status(200));
    let o = s
        .cli(&["replay", "--status", "dead", "--destination", "refuse"])
        .await;
    exit(&o, 0);
    assert_eq!(out(&o), "replayed 1 delivery\n");
    wait_deliveries(
        store.as_ref(),
        for_destination("refuse"),
        Status::Delivered,
        2,
        WAIT,
    )
    .await;
    // Neither ids nor --status is bad usage.
    exit(&s.cli(&["replay"]).await, 2);
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_work_stays_in_the_log_and_never_goes_out() {
    let s = Scene::start().await;
    s.post(v2_with_id("cancel-1")).await;
    let o = s.cli(&["cancel", "--destination", "flaky"]).await;
    exit(&o, 0);
    assert!(
        out(&o).starts_with("cancelled 1 delivery to flaky"),
        "{}",
        out(&o)
    );
    let store = s.store().await;
    let id = delivery_of(store.as_ref(), "flaky", "cancel-1").await;
    let (row, attempts) = store.show(id).await.unwrap().unwrap();
    assert_eq!((row.status, attempts.len()), (Status::Cancelled, 1));
    // Even made due at once, nothing claims it.
    assert!(
        store
            .claim_due("flaky", 10, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.flaky.received().len(), 1);
    // Only waiting work can be cancelled.
    exit(
        &s.cli(&["cancel", "--destination", "flaky", "--status", "dead"])
            .await,
        2,
    );
    s.relay.stop().await;
}

/// Whether any of the database's files holds `needle`.
fn in_database_files(dir: &Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("hookfan.db"))
        .filter(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_no_byte_of_the_participant_in_the_database_files() {
    let s = Scene::start().await;
    let body = |id: &str, email: &str| v2_with_id(id).replace("amelie.dupont@example.org", email);
    s.post(body("erase-me-7731", "erase.me.7731@example.org"))
        .await;
    s.post(body("keep-me-1", "keep.me.1@example.org")).await;
    let store = s.store().await;
    let hours_before = store.hourly(0).await.unwrap();
    let dir = s.relay.dir.path();
    assert!(!in_database_files(dir, "erase.me.7731@example.org").is_empty());

    let o = s.cli(&["forget", "--participation", "erase-me-7731"]).await;
    exit(&o, 0);
    assert_eq!(
        out(&o),
        "erased participation erase-me-7731: 1 notification, 3 deliveries, 3 attempts (anonymous hourly counts kept)\n"
    );
    for needle in ["erase.me.7731@example.org", "erase-me-7731"] {
        assert_eq!(
            in_database_files(dir, needle),
            Vec::<String>::new(),
            "{needle} is still in the database files"
        );
    }
    // The other participation, and the anonymous counts, are still there.
    assert!(!in_database_files(dir, "keep.me.1@example.org").is_empty());
    assert_eq!(store.hourly(0).await.unwrap(), hours_before);
    // Forgetting it again finds nothing, and says so.
    let o = s.cli(&["forget", "--participation", "erase-me-7731"]).await;
    exit(&o, 1);
    assert!(
        err(&o).contains("no notification of participation"),
        "{}",
        err(&o)
    );
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_its_token_and_does_what_the_cli_does() {
    let s = Scene::start().await;
    s.post(v2_with_id("api-1")).await;
    for path in [
        "/api/deliveries",
        "/api/stats",
        "/metrics",
        "/api/deliveries/1",
    ] {
        let r = s.relay.client.get(s.admin(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = s
            .relay
            .client
            .get(s.admin(path))
            .bearer_auth("wrong-token-0000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = s
        .relay
        .client
        .post(s.admin("/api/replay"))
        .json(&json!({"ids": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let (status, list) = s.api_get("/api/deliveries?participation=api-1").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let (_, dead) = s.api_get("/api/deliveries?status=dead").await;
    let dead_id = dead[0]["id"].as_i64().unwrap();
    assert_eq!(dead[0]["destination"], "refuse");
    let (status, detail) = s.api_get(&format!("/api/deliveries/{dead_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        detail["attempts"][0]["response"],
        "{\"error\":\"email is invalid\"}"
    );
    assert_eq!(s.api_get("/api/deliveries/424242").await.0, 404);
    assert_eq!(s.api_get("/api/deliveries?status=lost").await.0, 400);

    let (_, stats) = s.api_get("/api/stats").await;
    let health: Vec<(String, String)> = stats
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"].as_str().unwrap().into(),
                d["health"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        health,
        [
            ("ok".into(), "ok".into()),
            ("flaky".into(), "failing".into()),
            ("refuse".into(), "failing".into())
        ]
    );
    assert_eq!(stats[1]["counts"]["retrying"], 1);

    s.refuse.set_default(Reply::status(200));
    let (status, r) = s.api_post("/api/replay", json!({"ids": [dead_id]})).await;
    assert_eq!((status, &r["replayed"]), (200, &json!(1)));
    s.refuse.wait_for(2, WAIT).await;
    let (status, r) = s
        .api_post("/api/replay", json!({"ids": [dead_id, 424242]}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(r["missing"], json!([424242]));
    let (status, r) = s
        .api_post("/api/cancel", json!({"destination": "flaky"}))
        .await;
    assert_eq!((status, &r["cancelled"]), (200, &json!(1)));
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_answers_only_requests_for_a_loopback_host() {
    let relay = Relay::start(&crate::support::config(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
    ))
    .await;
    let admin = relay.admin.clone().unwrap();
    let get = |host: Option<&'static str>| {
        let mut r = relay.client.get(format!("{admin}/api/deliveries"));
        if let Some(host) = host {
            r = r.header("host", host);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status().as_u16(), 200);
    assert_eq!(
        get(Some("localhost:8081")).await.unwrap().status().as_u16(),
        200
    );
    // A page whose name was pointed at 127.0.0.1 (DNS rebinding) names itself as the host.
    for host in [
        "attacker.example",
        "attacker.example:8081",
        "127.0.0.1.attacker.example",
    ] {
        assert_eq!(
            get(Some(host)).await.unwrap().status().as_u16(),
            401,
            "{host}"
        );
    }
    let forwarded = relay
        .client
        .get(format!("{admin}/api/deliveries"))
        .header("host", "attacker.example")
        .header("x-forwarded-host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status().as_u16(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_leave_a_reachable_admin_listener_without_its_token() {
    let with_token = crate::support::config(&format!(
        "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"{ADMIN_TOKEN}\"\n"
    ));
    let relay = Relay::start(&with_token).await;
    let admin = relay.admin.clone().unwrap();
    // Moving the listener to loopback and dropping the token passes validation, but the
    // running listener stays on every address until a restart: the reload is refused.
    relay.reload(&format!(
        "[sources.eu]\nauth = \"none\"\n{}",
        crate::support::config("[admin]\nlisten = \"127.0.0.1:8081\"\n")
    ));
    // A reload is applied within milliseconds: for a second, neither its new source nor an
    // open admin listener may show.
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        let eu = relay
            .client
            .post(relay.url("/hooks/eu"))
            .body(v2_with_id("eu-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(eu.status().as_u16(), 404, "the reload was applied");
        let anonymous = relay
            .client
            .get(format!("{admin}/api/deliveries"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "the token was dropped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let with = relay
        .client
        .get(format!("{admin}/api/deliveries"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status().as_u16(), 200);
    relay.stop().await;
}

/// The value of one sample line of the exposition, e.g.
/// `hookfan_deliveries_total{destination="ok",outcome="delivered"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_deliveries_happen() {
    let s = Scene::start().await;
    let scrape = || async {
        let r = s
            .relay
            .client
            .get(s.admin("/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    };
    let before = scrape().await;
    assert_eq!(
        sample(
            &before,
            "hookfan_notifications_total{source=\"qualifio\",result=\"accepted\"}"
        ),
        None
    );
    assert_eq!(
        sample(
            &before,
            "hookfan_destination_healthy{destination=\"refuse\"}"
        ),
        Some(1.0)
    );

    s.post(v2_with_id("metrics-1")).await;
    s.post(v2_with_id("metrics-2")).await;
    let r = s
        .relay
        .client
        .post(s.relay.url("/hooks/qualifio"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let after = scrape().await;
    for (series, value) in [
        (
            "hookfan_notifications_total{source=\"qualifio\",result=\"accepted\"}",
            2.0,
        ),
        (
            "hookfan_notifications_total{source=\"qualifio\",result=\"invalid\"}",
            1.0,
        ),
        (
            "hookfan_deliveries_total{destination=\"ok\",outcome=\"delivered\"}",
            2.0,
        ),
        (
            "hookfan_deliveries_total{destination=\"flaky\",outcome=\"retry\"}",
            2.0,
        ),
        (
            "hookfan_deliveries_total{destination=\"refuse\",outcome=\"dead\"}",
            2.0,
        ),
        (
            "hookfan_delivery_duration_seconds_count{destination=\"ok\"}",
            2.0,
        ),
        (
            "hookfan_queue_depth{destination=\"flaky\",status=\"retrying\"}",
            2.0,
        ),
        (
            "hookfan_queue_depth{destination=\"refuse\",status=\"dead\"}",
            2.0,
        ),
        (
            "hookfan_queue_depth{destination=\"ok\",status=\"pending\"}",
            0.0,
        ),
        ("hookfan_destination_healthy{destination=\"ok\"}", 1.0),
        ("hookfan_destination_healthy{destination=\"refuse\"}", 0.0),
    ] {
        assert_eq!(sample(&after, series), Some(value), "{series} in:\n{after}");
    }
    let oldest = sample(
        &after,
        "hookfan_oldest_pending_seconds{destination=\"flaky\"}",
    );
    assert!(oldest.is_some_and(|s| s >= 0.0), "{after}");
    assert!(
        after.contains("# TYPE hookfan_delivery_duration_seconds histogram"),
        "{after}"
    );
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_work_stays_until_purged_by_hand_and_only_old_rows_go() {
    let s = Scene::start().await;
    s.post(v2_with_id("purge-1")).await;
    let o = s.cli(&["purge", "--dead", "--older-than", "90d"]).await;
    exit(&o, 0);
    assert_eq!(out(&o), "purged 0 deliveries\n");
    let o = s.cli(&["purge", "--dead", "--older-than", "0s"]).await;
    exit(&o, 0);
    assert_eq!(out(&o), "purged 1 delivery\n");
    let store = s.store().await;
    let mut left: Vec<(String, Status)> = store
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.destination, r.status))
        .collect();
    left.sort();
    // The delivered one waits for [storage] retention; the retrying one is never purged.
    assert_eq!(
        left,
        [
            ("flaky".into(), Status::Retrying),
            ("ok".into(), Status::Delivered)
        ]
    );
    exit(&s.cli(&["purge", "--older-than", "1d"]).await, 2);
    assert_eq!(s.ok.received().len(), 1);
    s.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_operator_finds_replays_cancels_erases_and_purges() {
    let Some(schema) = crate::backends::PgSchema::create().await else {
        return;
    };
    let s = Scene::on(Some(&schema.url)).await;
    s.post(v2_with_id("pg-1")).await;
    s.post(v2_with_id("pg-erase").replace("amelie.dupont@example.org", "pg.erase@example.org"))
        .await;

    // Find and read: the same table and detail as on SQLite.
    let o = s
        .cli(&["deliveries", "list", "--participation", "pg-1"])
        .await;
    exit(&o, 0);
    let table = out(&o);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("refuse") && l.contains("dead")),
        "{table}"
    );
    let store = s.store().await;
    let dead = delivery_of(store.as_ref(), "refuse", "pg-1").await;
    let o = s.cli(&["deliveries", "show", &dead.to_string()]).await;
    exit(&o, 0);
    assert!(
        out(&o).contains("answer: {\"error\":\"email is invalid\"}"),
        "{}",
        out(&o)
    );

    // Replay once the CRM is fixed.
    s.refuse.set_default(Reply::status(200));
    let o = s.cli(&["replay", &dead.to_string()]).await;
    exit(&o, 0);
    assert_eq!(out(&o), "replayed 1 delivery\n");
    wait_deliveries(
        store.as_ref(),
        hookfan::store::Filter {
            participation_id: Some("pg-1".into()),
            ..for_destination("refuse")
        },
        Status::Delivered,
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        crate::support::attempt_summary(store.as_ref(), dead).await,
        [(1, "dead", Some(400)), (2, "delivered", Some(200))]
    );

    // Stats, from the CLI and the API, with the hourly counts behind the page's charts.
    let o = s.cli(&["stats", "--json"]).await;
    exit(&o, 0);
    let stats: Value = serde_json::from_str(&out(&o)).unwrap();
    let flaky = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "flaky")
        .unwrap();
    assert_eq!(
        (&flaky["counts"]["retrying"], &flaky["health"]),
        (&json!(2), &json!("failing"))
    );
    let (status, api) = s.api_get("/api/stats").await;
    assert_eq!((status, api.as_array().unwrap().len()), (200, 3));
    let hours = store.hourly(0).await.unwrap();
    let ok = hours.iter().find(|h| h.destination == "ok").unwrap();
    assert_eq!((ok.delivered, ok.failed), (2, 0));

    // Cancel what should never go out.
    let o = s.cli(&["cancel", "--destination", "flaky"]).await;
    exit(&o, 0);
    assert!(
        out(&o).starts_with("cancelled 2 deliveries to flaky"),
        "{}",
        out(&o)
    );

    // Erase a participant: nothing of it is left in any table; the counts stay.
    let o = s.cli(&["forget", "--participation", "pg-erase"]).await;
    exit(&o, 0);
    assert_eq!(
        out(&o),
        "erased participation pg-erase: 1 notification, 3 deliveries, 3 attempts (anonymous hourly counts kept)\n"
    );
    let mut conn = schema.connect().await;
    for table in ["notifications", "deliveries", "attempts"] {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} t WHERE t::text LIKE '%pg-erase%' OR t::text LIKE '%pg.erase%'"
        )))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    assert_eq!(store.hourly(0).await.unwrap(), hours);

    // Purge dead and cancelled work by hand.
    let o = s
        .cli(&["purge", "--dead", "--cancelled", "--older-than", "0s"])
        .await;
    exit(&o, 0);
    assert_eq!(out(&o), "purged 1 delivery\n");
    let left: Vec<(String, Status)> = store
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.destination, r.status))
        .collect();
    assert_eq!(
        left,
        [
            ("refuse".into(), Status::Delivered),
            ("ok".into(), Status::Delivered)
        ]
    );
    s.relay.stop().await;
}

/// `hookfan migrate-store ARGS`, its output.
async fn migrate_store(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookfan"));
    cmd.arg("migrate-store").args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Everything the delivery log shows of a store: each delivery with its attempts, the stats
/// and the hourly counts.
async fn everything(store: &dyn Store) -> Value {
    let mut deliveries = Vec::new();
    for row in store
        .list(&hookfan::store::Filter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        let (_, attempts) = store.show(row.id).await.unwrap().unwrap();
        let notification = store.notification(row.notification_id).await.unwrap();
        deliveries.push(json!({"row": row, "attempts": attempts, "notification": notification}));
    }
    json!({
        "deliveries": deliveries,
        "stats": store.stats(0).await.unwrap(),
        "hourly": store.hourly(0).await.unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_moves_a_sqlite_relay_to_postgres_without_losing_work_or_history() {
    let Some(schema) = crate::backends::PgSchema::create().await else {
        return;
    };
    let s = Scene::start().await;
    s.post(v2_with_id("move-1")).await;
    s.post(v2_with_id("move-2")).await;
    let from = format!("sqlite://{}", s.relay.db().display());
    let sqlite = s.store().await;
    let _keep = s.relay.dir.clone();
    s.relay.stop().await;
    let before = everything(sqlite.as_ref()).await;

    let o = migrate_store(&["--from", &from, "--to", &schema.url]).await;
    exit(&o, 0);
    assert!(
        out(&o).starts_with(
            "copied 2 notifications, 6 deliveries (2 retrying, 2 delivered, 2 dead), 6 attempts and 3 hourly counts\n"
        ),
        "{}",
        out(&o)
    );
    let pg = hookfan::store::open(&schema.url).await.unwrap();
    assert_eq!(everything(pg.as_ref()).await, before);

    // A target that holds anything is refused, and left as it was.
    let o = migrate_store(&["--from", &from, "--to", &schema.url]).await;
    exit(&o, 1);
    assert!(err(&o).contains("--replace"), "{}", err(&o));
    // New work continues after the copied ids, and the retrying work is still due there.
    let next = pg
        .accept(crate::support::incoming(
            "{\"id\":\"after-move\"}".into(),
            &["ok"],
        ))
        .await
        .unwrap();
    assert_eq!(
        next,
        hookfan::store::Accepted::New {
            notification: 3,
            deliveries: 1
        }
    );
    assert_eq!(
        pg.pending_by_destination().await.unwrap(),
        [("flaky".to_string(), 2), ("ok".to_string(), 1)]
    );
    // --replace empties it first.
    let o = migrate_store(&["--from", &from, "--to", &schema.url, "--replace"]).await;
    exit(&o, 0);
    assert_eq!(everything(pg.as_ref()).await, before);

    // Only SQLite to PostgreSQL, and a missing file is named.
    let o = migrate_store(&["--from", &schema.url, "--to", &from]).await;
    exit(&o, 1);
    assert!(
        err(&o).contains("--from must be a SQLite store"),
        "{}",
        err(&o)
    );
    let o = migrate_store(&[
        "--from",
        "sqlite:///nowhere/hookfan.db",
        "--to",
        &schema.url,
    ])
    .await;
    exit(&o, 1);
    assert!(
        err(&o).contains("no SQLite store at /nowhere/hookfan.db"),
        "{}",
        err(&o)
    );
}
