//! The real binary: stopped with SIGTERM while deliveries are pending, started again, and they
//! are delivered. Its logs carry the attempts but no secrets and no participant data.

use std::time::Duration;

use hookfan::store::{SqliteStore, Status};

use crate::fakes::crm::{FakeCrm, Reply};
use crate::support::{
    for_destination, free_port, serve, terminate, v2_with_id, wait_deliveries, wait_up,
};

const PASSWORD: &str = "restart-pass-1234";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    crate::support::init();
    let crm = FakeCrm::start().await;
    crm.set_default(Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[sources.qualifio]
basic = {{ username = "qualifio", password = "{PASSWORD}" }}

[retry]
schedule = ["1s", "1s", "1s", "1s"]
jitter = 0.0

[destinations.crm]
type = "webhook"
url = "{}"
headers = {{ Authorization = "Bearer crm-secret-token" }}

[destinations.crm.fields]
email = "{{{{ participant.email }}}}"

# A mapping that fails on a participant's value: the value must stay out of the logs.
[destinations.broken]
type = "webhook"
url = "{}"

[destinations.broken.fields]
born = "{{{{ participant.email | date }}}}"

# A `when` that fails on a participant's value: that value must stay out of the logs too.
[destinations.picky]
type = "webhook"
url = "{}"
when = 'participant.email | date == "2026"'
"#,
        crm.url("/in"),
        crm.url("/broken"),
        crm.url("/picky")
    );
    std::fs::write(dir.path().join("hookfan.toml"), config).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let first = serve(dir.path(), "first.log", &[]);
    wait_up(&client, &base).await;
    let r = client
        .post(format!("{base}/hooks/qualifio"))
        .basic_auth("qualifio", Some(PASSWORD))
        .body(v2_with_id("restart-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    crm.wait_for(1, Duration::from_secs(10)).await;
    assert!(terminate(first).await.success(), "a clean stop exits 0");

    // While it was down the CRM recovered.
    crm.set_default(Reply::status(200));
    let second = serve(dir.path(), "second.log", &[]);
    wait_up(&client, &base).await;
    let got = crm.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].json()["email"], "amelie.dupont@example.org");
    let store = SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    let rows = wait_deliveries(
        &store,
        for_destination("crm"),
        Status::Delivered,
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(rows[0].attempts, 2);
    assert!(terminate(second).await.success());

    let logs = std::fs::read_to_string(dir.path().join("first.log")).unwrap()
        + &std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(logs.contains("`when` failed"), "{logs}");
    let attempts: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "attempt" && l["destination"] == "crm")
        .collect();
    assert_eq!(attempts.len(), 2, "{logs}");
    for (line, outcome, status) in [
        (&attempts[0], "retry", 503),
        (&attempts[1], "delivered", 200),
    ] {
        assert_eq!(line["destination"], "crm");
        assert_eq!(line["participation_id"], "restart-1");
        assert_eq!(line["outcome"], outcome);
        assert_eq!(line["status"], status);
        assert!(
            line["delivery_id"].is_i64()
                && line["attempt"].is_i64()
                && line["duration_ms"].is_i64(),
            "{line}"
        );
        // Everything logged during the attempt (the connector, the rate gate) is inside one
        // `attempt` span that names the delivery.
        let span = &line["span"];
        assert_eq!(span["name"], "attempt", "{line}");
        assert_eq!(span["destination"], "crm", "{line}");
        assert_eq!(span["delivery_id"], line["delivery_id"], "{line}");
        assert_eq!(span["participation_id"], "restart-1", "{line}");
        assert_eq!(span["attempt"], line["attempt"], "{line}");
    }
    for secret in [
        PASSWORD,
        "crm-secret-token",
        "amelie.dupont@example.org",
        "Amélie",
        "Dupont",
    ] {
        assert!(
            !logs.contains(secret),
            "the logs contain {secret:?}:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_task_that_dies_fails_readiness_and_the_process() {
    crate::support::init();
    let crm = FakeCrm::start().await;
    // The other destination's attempt is in flight while the relay stops: it is answered only
    // once the test has seen readiness fail.
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    crm.set_default(Reply::status(200).held(release.clone()));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[sources.qualifio]
auth = "none"

[destinations.crm]
type = "webhook"
url = "{}"
when = 'participation.id == "fault-2"'

[destinations.slow]
type = "webhook"
url = "{}"
when = 'participation.id == "fault-1"'
"#,
        crm.url("/crm"),
        crm.url("/slow")
    );
    // The crm lane panics at its first claim.
    let (child, base, client) = serve_with_fault(dir.path(), &config, "lane-panic:crm").await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // First an attempt that takes a while, then the one that makes the crm lane panic.
    for id in ["fault-1", "fault-2"] {
        let r = client
            .post(format!("{base}/hooks/qualifio"))
            .body(v2_with_id(id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        if id == "fault-1" {
            crm.wait_for(1, Duration::from_secs(5)).await;
        }
    }

    // While the slow attempt drains, readiness says why the relay is going down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status().as_u16() == 503 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("the delivery lane of crm panicked"),
        "{answer}"
    );
    release.add_permits(1);

    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        !status.success(),
        "a dead task must end serve with an error"
    );
    let logs = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let fault = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["level"] == "ERROR" && l["fault"].is_string())
        .unwrap_or_else(|| panic!("no error logged:\n{logs}"));
    assert!(
        fault["fault"]
            .as_str()
            .unwrap()
            .contains("the delivery lane of crm panicked"),
        "{fault}"
    );
    // The slow attempt was let finish before the exit.
    assert_eq!(
        crm.received().iter().filter(|r| r.path == "/slow").count(),
        1
    );
}

#[tokio::test]
async fn after_a_failed_flush_nothing_is_accepted_not_even_as_a_duplicate() {
    crate::support::init();
    let dir = tempfile::tempdir().unwrap();
    // The first flush of the write-ahead log fails (the next ones would succeed).
    let (child, base, client) = serve_with_fault(
        dir.path(),
        "[sources.qualifio]\nauth = \"none\"\n",
        "flush-once",
    )
    .await;
    let post = || {
        client
            .post(format!("{base}/hooks/qualifio"))
            .body(v2_with_id("never-flushed"))
            .send()
    };
    // The commit went through but its flush did not: 503, and the sender will try again.
    assert_eq!(post().await.unwrap().status().as_u16(), 503);
    // Its retry is not told "already stored" of a row the disk may not hold, nor is anything
    // else accepted: 503 until a restart.
    assert_eq!(post().await.unwrap().status().as_u16(), 503);
    let other = client
        .post(format!("{base}/hooks/qualifio"))
        .body(v2_with_id("after-the-failure"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 503);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    terminate(child).await;
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("cannot flush the write-ahead log to disk"),
        "{log}"
    );
}

/// The real binary on `config` (what follows its `[server]` section) in `dir`, with a fault
/// switch of debug builds (`HOOKFAN_TEST_FAULT`) on, once it answers.
async fn serve_with_fault(
    dir: &std::path::Path,
    config: &str,
    fault: &str,
) -> (std::process::Child, String, reqwest::Client) {
    let port = free_port();
    let config = format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n{config}");
    std::fs::write(dir.join("hookfan.toml"), config).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let child = serve(dir, "serve.log", &[("HOOKFAN_TEST_FAULT", fault)]);
    wait_up(&client, &base).await;
    (child, base, client)
}
