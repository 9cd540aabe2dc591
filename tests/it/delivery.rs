//! After the 2xx: every matching destination gets the notification, with retries, limits and a
//! dead-letter state, and one destination's trouble never holds up another.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookfan::store::{SqliteStore, Status, Store, now_ms};
use sha2::Sha256;
use tokio::time::Instant;

use crate::fakes::crm::{FakeCrm, Reply};
use crate::support::{
    Relay, config, fixture, for_destination, incoming, leave_a_dead_claim, v2_with_id,
    wait_deliveries,
};

const WAIT: Duration = Duration::from_secs(10);

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[destinations.{name}]
type = "webhook"
url = "{url}"
{extra}

[destinations.{name}.fields]
email = "{{{{ participant.email }}}}"
"address.city" = "{{{{ participant.city | default('Namur') }}}}"
campaign = "{{{{ participation.campaign_name }}}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_fans_out_to_two_webhooks_and_a_file() {
    let (a, b) = (FakeCrm::start().await, FakeCrm::start().await);
    let file = r#"
[destinations.archive]
type = "file"
path = "archive.jsonl"

[destinations.archive.fields]
id = "{{ participation.id }}"
name = "{{ participant.firstname }} {{ participant.lastname }}"
"#;
    let cfg = config(&format!(
        "{}{}{file}",
        webhook("crm_a", &a.url("/in"), ""),
        webhook("crm_b", &b.url("/in"), "")
    ));
    let relay = Relay::start(&cfg).await;
    relay.accept(v2_with_id("fan-1")).await;

    let expected = serde_json::json!({
        "email": "amelie.dupont@example.org",
        "address": {"city": "Namur"},
        "campaign": "Winter quiz 2026",
    });
    for crm in [&a, &b] {
        let got = crm.wait_for(1, WAIT).await;
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/in");
        assert_eq!(got[0].header("content-type"), Some("application/json"));
        assert_eq!(got[0].json(), expected);
    }
    let store = relay.store().await;
    wait_deliveries(
        &store,
        for_destination("archive"),
        Status::Delivered,
        1,
        WAIT,
    )
    .await;
    let lines = std::fs::read_to_string(relay.dir.path().join("archive.jsonl")).unwrap();
    assert_eq!(
        lines,
        "{\"id\":\"fan-1\",\"name\":\"Amélie Dupont-Nguyễn\"}\n"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_that_fails_twice_gets_it_on_the_third_attempt() {
    let crm = FakeCrm::start().await;
    crm.script([
        Reply::status(503).body("down"),
        Reply::status(503).body("still down"),
    ]);
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), ""))).await;
    relay.accept(v2_with_id("retry-1")).await;

    let got = crm.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3);
    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("crm"), Status::Delivered, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 3);
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    let summary = crate::support::attempt_summary(&store, rows[0].id).await;
    assert_eq!(
        summary,
        [
            (1, "retry", Some(503)),
            (2, "retry", Some(503)),
            (3, "delivered", Some(200))
        ]
    );
    assert_eq!(attempts[0].response.as_deref(), Some("down"));
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_after_one_attempt() {
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(400).body("{\"error\":\"email is required\"}"));
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), ""))).await;
    relay.accept(v2_with_id("dead-1")).await;

    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("crm"), Status::Dead, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 400 Bad Request"));
    // The attempt row says what the log says: dead, not the connector's verdict.
    assert_eq!(
        crate::support::attempt_summary(&store, rows[0].id).await,
        [(1, "dead", Some(400))]
    );
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert_eq!(
        attempts[0].response.as_deref(),
        Some("{\"error\":\"email is required\"}")
    );
    // The schedule would have retried by now: a dead delivery is not.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(crm.received().len(), 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let crm = FakeCrm::start().await;
    crm.script([Reply::status(429).header("Retry-After", "2")]);
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), ""))).await;
    relay.accept(v2_with_id("slow-down-1")).await;

    let got = crm.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before the 2 s asked"
    );
    assert!(gap < Duration::from_secs(4), "retried after {gap:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_does_not_delay_another() {
    let (slow, fast) = (FakeCrm::start().await, FakeCrm::start().await);
    slow.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    let cfg = config(&format!(
        "{}{}",
        webhook(
            "slow",
            &slow.url("/in"),
            "timeout = \"2s\"\nconcurrency = 1"
        ),
        webhook("fast", &fast.url("/in"), "")
    ));
    let relay = Relay::start(&cfg).await;
    let started = Instant::now();
    for i in 0..3 {
        relay.accept(v2_with_id(&format!("hang-{i}"))).await;
    }
    fast.wait_for(3, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "fast waited {:?}",
        started.elapsed()
    );
    // Meanwhile the slow one is stuck on its first request.
    assert_eq!(slow.received().len(), 1);

    // Its attempt times out and is scheduled again, not lost.
    let store = relay.store().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = store.list(&for_destination("slow")).await.unwrap();
        if let Some(r) = rows.iter().find(|r| r.attempts >= 1) {
            assert_eq!(r.status, Status::Retrying);
            assert!(
                r.last_error
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("timed out"),
                "{r:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no timed-out attempt recorded: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_concurrency_hold() {
    let (limited, narrow) = (FakeCrm::start().await, FakeCrm::start().await);
    narrow.set_default(Reply::status(200).delay(Duration::from_millis(400)));
    let cfg = config(&format!(
        "{}{}",
        webhook("limited", &limited.url("/in"), "rate_limit = \"2/s\""),
        webhook("narrow", &narrow.url("/in"), "concurrency = 2"),
    ));
    let relay = Relay::start(&cfg).await;
    for i in 0..6 {
        relay.accept(v2_with_id(&format!("limit-{i}"))).await;
    }
    // A burst of 2, then one every 500 ms: the 6th no sooner than 2 s after the 1st.
    let got = limited.wait_for(6, WAIT).await;
    let spread = got[5].at - got[0].at;
    assert!(
        spread >= Duration::from_millis(1900),
        "6 calls within {spread:?}"
    );

    // Two at a time, 400 ms each: the 3rd starts only when one of the first two ends.
    let got = narrow.wait_for(6, WAIT).await;
    assert!(
        got[2].at - got[0].at >= Duration::from_millis(350),
        "{:?}",
        got[2].at - got[0].at
    );
    assert!(
        got[4].at - got[0].at >= Duration::from_millis(750),
        "{:?}",
        got[4].at - got[0].at
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_keep_their_id_across_retries() {
    let crm = FakeCrm::start().await;
    crm.script([Reply::status(500)]);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let extra = format!(
        "signing_secret = \"{secret}\"\nheaders = {{ Authorization = \"Bearer crm-token\" }}"
    );
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), &extra))).await;
    relay.accept(v2_with_id("signed-1")).await;

    let got = crm.wait_for(2, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].header("authorization"), Some("Bearer crm-token"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    for r in &got {
        let (id, ts) = (
            r.header("webhook-id").unwrap(),
            r.header("webhook-timestamp").unwrap(),
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(r.header("webhook-signature"), Some(expected.as_str()));
        let age = now_ms() / 1000 - ts.parse::<i64>().unwrap();
        assert!((0..30).contains(&age), "timestamp {ts} is {age}s old");
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_bodies_put_and_raw_bodies() {
    let (form, raw) = (FakeCrm::start().await, FakeCrm::start().await);
    let cfg = config(&format!(
        "{}{}",
        webhook(
            "form",
            &form.url("/form"),
            "method = \"PUT\"\nformat = \"form\""
        ),
        webhook("raw", &raw.url("/raw"), "body = \"raw\""),
    ));
    let relay = Relay::start(&cfg).await;
    let body = v2_with_id("shapes-1");
    relay.accept(body.clone()).await;

    let f = &form.wait_for(1, WAIT).await[0];
    assert_eq!(f.method, "PUT");
    assert_eq!(
        f.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        f.body,
        "email=amelie.dupont%40example.org&address.city=Namur&campaign=Winter+quiz+2026"
    );
    let r = &raw.wait_for(1, WAIT).await[0];
    assert_eq!(r.body, body, "the raw body is forwarded byte for byte");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_that_cannot_render_is_dead_with_its_message() {
    let crm = FakeCrm::start().await;
    let dest = format!(
        "[destinations.crm]\ntype = \"webhook\"\nurl = \"{}\"\n[destinations.crm.fields]\nborn = \"{{{{ participant.email | date('%Y') }}}}\"\n",
        crm.url("/in")
    );
    let relay = Relay::start(&config(&dest)).await;
    relay.accept(v2_with_id("render-1")).await;
    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("crm"), Status::Dead, 1, WAIT).await;
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.contains("mapping failed: field \"born\""), "{error}");
    assert!(error.contains("date"), "{error}");
    assert!(crm.received().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_attempt_before_a_delivery_goes_dead_is_recorded_as_dead() {
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(503));
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), ""))).await;
    relay.accept(v2_with_id("spent-1")).await;
    let store = relay.store().await;
    // Three retries on the schedule, then dead: the fourth attempt's row says so, as the log does.
    let rows = wait_deliveries(&store, for_destination("crm"), Status::Dead, 1, WAIT).await;
    assert_eq!(
        crate::support::attempt_summary(&store, rows[0].id).await,
        [
            (1, "retry", Some(503)),
            (2, "retry", Some(503)),
            (3, "retry", Some(503)),
            (4, "dead", Some(503))
        ]
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_by_a_killed_worker_is_taken_over() {
    let crm = FakeCrm::start().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    store
        .accept(incoming(fixture("participation-v1.json"), &["crm"]))
        .await
        .unwrap();
    leave_a_dead_claim(&store, "crm").await;
    assert!(
        store
            .claim_due("crm", 10, "someone-else", Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );

    let relay = Relay::with(&config(&webhook("crm", &crm.url("/in"), "")))
        .dir(dir)
        .start()
        .await;
    let got = crm.wait_for(1, WAIT).await;
    assert_eq!(got[0].json()["campaign"], "Test Mr.Wonderful");
    let rows = wait_deliveries(&store, for_destination("crm"), Status::Delivered, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_refuses_new_work_and_lets_attempts_in_flight_finish() {
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(200).delay(Duration::from_millis(1500)));
    let relay = Relay::start(&config(&webhook("crm", &crm.url("/in"), ""))).await;
    relay.accept(v2_with_id("drain-1")).await;
    crm.wait_for(1, WAIT).await;

    // Stop while the CRM is still answering.
    let (client, url, db) = (
        relay.client.clone(),
        relay.url("/hooks/qualifio"),
        relay.db(),
    );
    let _keep = relay.dir.clone();
    let stopping = tokio::spawn(relay.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = client
        .post(&url)
        .body(v2_with_id("drain-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status().as_u16(),
        503,
        "a stopping relay takes nothing new"
    );
    stopping.await.unwrap();

    // The attempt in flight finished and was recorded; the refused one was never stored.
    let store = SqliteStore::open(&db).await.unwrap();
    let rows = store
        .list(&hookfan::store::Filter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("delivered", 1)
    );
    assert_eq!(crm.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_is_fixed_at_accept_but_the_mapping_applies_at_delivery() {
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(503));
    let first = format!(
        "{}\n[destinations.crm.fields]\nversion = \"one\"\n",
        "[destinations.crm]\ntype = \"webhook\"\nurl = \"URL\"\nwhen = 'participation.state == \"COMPLETED\"'"
    )
    .replace("URL", &crm.url("/crm"));
    let relay = Relay::start(&config(&first)).await;
    relay.accept(v2_with_id("remap-1")).await;
    crm.wait_for(1, WAIT).await;
    let dir = relay.dir.clone();
    relay.stop().await;

    // The mapping is fixed, `when` no longer matches it, and a new destination appears.
    let second = format!(
        "[destinations.crm]\ntype = \"webhook\"\nurl = \"{}\"\nwhen = 'participation.state == \"STARTED\"'\n[destinations.crm.fields]\nversion = \"two\"\n\n{}",
        crm.url("/crm"),
        webhook("newcomer", &crm.url("/newcomer"), "")
    );
    crm.set_default(Reply::status(200));
    let relay = Relay::with(&config(&second)).dir(dir).start().await;
    let got = crm.wait_for(2, WAIT).await;
    assert_eq!(
        got[1].path, "/crm",
        "what was routed at accept is still delivered"
    );
    assert_eq!(
        got[1].json(),
        serde_json::json!({"version": "two"}),
        "with today's mapping"
    );
    // Old work is never sent to a destination added later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(crm.received().iter().all(|r| r.path != "/newcomer"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_still_running_after_the_drain_is_released_for_the_next_start() {
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    let relay = Relay::start(&config(&webhook(
        "crm",
        &crm.url("/in"),
        "timeout = \"60s\"",
    )))
    .await;
    relay.accept(v2_with_id("drain-cap-1")).await;
    crm.wait_for(1, WAIT).await;
    let (db, _keep) = (relay.db(), relay.dir.clone());
    let started = Instant::now();
    relay.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(15),
        "stopped in {took:?}"
    );

    // Not recorded, not leased: the next start claims it at once, knowing it is in doubt.
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let (status, attempts, owner, in_doubt): (String, i64, Option<String>, Option<i64>) =
        sqlx::query_as("SELECT status, attempts, lease_owner, claimed_at FROM deliveries")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts, owner), ("pending", 0, None));
    assert!(in_doubt.is_some(), "the unrecorded claim is remembered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_quiet_spell_a_burst_keeps_to_the_rate_in_every_window() {
    let crm = FakeCrm::start().await;
    let dest = webhook(
        "crm",
        &crm.url("/in"),
        "rate_limit = \"5/2s\"\nconcurrency = 8\n",
    );
    let relay = Relay::start(&config(&dest)).await;
    // Longer than the window: a bucket that starts full (and refills meanwhile) would let 5 go
    // at once and 4 more within the same 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..30 {
        relay.accept(v2_with_id(&format!("burst-{i}"))).await;
    }
    let got = crm.wait_for(30, Duration::from_secs(30)).await;
    let times: Vec<_> = got.iter().map(|r| r.at).collect();
    crate::support::assert_at_most_per_window(&times, 5, Duration::from_secs(2));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_no_torn_line_and_no_repeat_in_a_file() {
    let disk = crate::support::SmallDisk::mount("64k");
    // 12 KiB left: room for a few notifications, not for all 20.
    let filler = disk.fill(52 * 1024);
    let out = disk.path.join("archive.jsonl");
    let dest = format!(
        r#"
[destinations.archive]
type = "file"
path = "{}"
body = "raw"

[destinations.archive.retry]
schedule = ["300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]
"#,
        out.display()
    );
    let relay = Relay::start(&config(&dest)).await;
    for i in 0..20 {
        relay.accept(v2_with_id(&format!("full-{i}"))).await;
    }
    let store = relay.store().await;
    // Wait until an append failed for lack of space.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = store.list(&for_destination("archive")).await.unwrap();
        if rows.iter().any(|r| {
            r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("No space left"))
        }) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Whatever is in the file now is whole lines, each participation once.
    let ids = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| {
                let doc: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn line ({e}): {l:?}"));
                doc["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    let before = ids(&text);
    assert!(before.len() < 20, "the disk was meant to fill up");

    // Space comes back: everything lands, once.
    std::fs::remove_file(&filler).unwrap();
    wait_deliveries(
        &store,
        for_destination("archive"),
        Status::Delivered,
        20,
        WAIT,
    )
    .await;
    let mut after = ids(&std::fs::read_to_string(&out).unwrap());
    after.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("full-{i}")).collect();
    expected.sort();
    assert_eq!(after, expected);
    relay.stop().await;
}
