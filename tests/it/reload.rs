//! An operator changes the config while Qualifio keeps posting: destinations added, removed
//! and changed, a new source, a new certificate; SIGHUP applies it without failing a single
//! request, and a broken file is refused while the running config stays.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hookfan::store::{Status, Store};

use crate::support::{
    Relay, for_destination, free_port, serve, terminate, v2_with_id, wait_deliveries, wait_up,
};

const WAIT: Duration = Duration::from_secs(10);

/// Posts to `url` from four tasks until stopped; counts what succeeded and what failed.
struct Load {
    running: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &reqwest::Client, url: &str, auth: Option<(&str, &str)>) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let tasks = (0..4)
            .map(|task| {
                let (client, url, auth) = (client.clone(), url.to_string(), auth.clone());
                let (running, ok, failed, failures) = (
                    running.clone(),
                    ok.clone(),
                    failed.clone(),
                    failures.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0;
                    while running.load(Ordering::Relaxed) {
                        n += 1;
                        let mut request = client
                            .post(&url)
                            .body(v2_with_id(&format!("load-{task}-{n}")));
                        if let Some((user, pass)) = &auth {
                            request = request.basic_auth(user, Some(pass));
                        }
                        match request.send().await {
                            Ok(r) if r.status().as_u16() == 202 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap().push(format!("{other:?}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            running,
            ok,
            failed,
            failures,
            tasks,
        }
    }

    /// Stops, and returns (succeeded, failed).
    async fn stop(self) -> (u64, u64) {
        self.running.store(false, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn file(name: &str, fields: &str) -> String {
    format!(
        "[destinations.{name}]\ntype = \"file\"\npath = \"{name}.jsonl\"\n[destinations.{name}.fields]\n{fields}\n"
    )
}

fn lines(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_new_config_while_posts_keep_succeeding() {
    let before = crate::support::config(&format!(
        "{}{}",
        file("keep", "id = \"{{ participation.id }}\""),
        file("drop", "id = \"{{ participation.id }}\"")
    ));
    let relay = Relay::start(&before).await;
    let load = Load::start(&relay.client, &relay.url("/hooks/qualifio"), None);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // `keep` changes its mapping, `drop` goes, `added` comes, and a second source appears.
    let after = format!(
        "[sources.eu]\nauth = \"none\"\n{}",
        crate::support::config(&format!(
            "{}{}",
            file("keep", "id = \"{{ participation.id }}\"\nv = \"2\""),
            file("added", "id = \"{{ participation.id }}\"")
        ))
    );
    relay.reload(&after);
    let store = relay.store().await;
    relay.accept(v2_with_id("after-1")).await;
    // The reload is applied in the background: wait for it to show.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = relay
            .client
            .post(relay.url("/hooks/eu"))
            .body(v2_with_id(&format!("eu-{}", hookfan::store::now_ms())))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new source never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.accept(v2_with_id("after-2")).await;
    let added = wait_deliveries(
        &store,
        hookfan::store::Filter {
            participation_id: Some("after-2".into()),
            ..for_destination("added")
        },
        Status::Delivered,
        1,
        WAIT,
    )
    .await;
    assert_eq!(added.len(), 1);
    // Nothing new goes to the removed destination; the changed one maps with its new fields.
    let dropped = store
        .list(&hookfan::store::Filter {
            participation_id: Some("after-2".into()),
            ..for_destination("drop")
        })
        .await
        .unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    wait_deliveries(
        &store,
        hookfan::store::Filter {
            participation_id: Some("after-2".into()),
            ..for_destination("keep")
        },
        Status::Delivered,
        1,
        WAIT,
    )
    .await;
    let kept = lines(relay.dir.path(), "keep");
    let new_line = kept.iter().find(|l| l["id"] == "after-2").unwrap();
    assert_eq!(new_line["v"], "2", "{new_line}");

    // A broken file is refused: the running config stays (the new source still answers).
    relay.reload("[sources.qualifio]\nauth = \"none\"\n[destinations.x]\ntype = \"nope\"\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = relay
        .client
        .post(relay.url("/hooks/eu"))
        .body(v2_with_id("eu-after-broken"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let (ok, failed) = load.stop().await;
    eprintln!("requests during reloads: {ok} accepted, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0);
    relay.stop().await;
}

/// The subject of the certificate a new connection to `port` gets.
fn served_subject(port: &str) -> String {
    let mut client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pem = client.stdout.take().unwrap();
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject"])
        .stdin(pem)
        .output()
        .unwrap();
    let _ = client.wait();
    String::from_utf8_lossy(&subject.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_new_certificate_to_new_connections() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    crate::support::make_certificate(dir.path(), "first", "first.example");
    crate::support::make_certificate(dir.path(), "second", "second.example");
    let config = |name: &str| {
        format!(
            "[server.tls]\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n{}",
            crate::support::config("")
        )
    };
    let relay = Relay::with(&config("first")).dir(dir).tls().start().await;
    let port = relay.base.rsplit(':').next().unwrap().to_string();
    let port = port.trim_end_matches('/');
    let subject = tokio::task::spawn_blocking({
        let port = port.to_string();
        move || served_subject(&port)
    })
    .await
    .unwrap();
    assert!(subject.contains("first.example"), "{subject}");

    relay.reload(&config("second"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let port = port.to_string();
        let subject = tokio::task::spawn_blocking(move || served_subject(&port))
            .await
            .unwrap();
        if subject.contains("second.example") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {subject}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = relay
        .client
        .post(relay.url("/hooks/qualifio"))
        .body(v2_with_id("tls-after-reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    relay.stop().await;
}

/// Waits until the log has a line containing `text`, `n` times.
async fn wait_log(log: &Path, text: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = std::fs::read_to_string(log).unwrap_or_default();
        if all.matches(text).count() >= n {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {text:?} in:\n{all}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary_under_load_and_refuses_a_broken_file() {
    crate::support::init();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let head = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[sources.qualifio]\nbasic = {{ username = \"qualifio\", password = \"reload-pass-1234\" }}\n"
    );
    let path = dir.path().join("hookfan.toml");
    std::fs::write(
        &path,
        format!("{head}{}", file("a", "id = \"{{ participation.id }}\"")),
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let mut child = serve(dir.path(), "serve.log", &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_up(&client, &base).await;
    let load = Load::start(
        &client,
        &format!("{base}/hooks/qualifio"),
        Some(("qualifio", "reload-pass-1234")),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hup = |pid: u32| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        )
    };

    std::fs::write(
        &path,
        format!(
            "{head}{}{}",
            file("a", "id = \"{{ participation.id }}\""),
            file("b", "id = \"{{ participation.id }}\"")
        ),
    )
    .unwrap();
    hup(child.id());
    let logs = wait_log(&log, "config reloaded", 1).await;
    assert!(logs.contains("\"added\":\"[\\\"b\\\"]\""), "{logs}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&path, "this is not TOML [").unwrap();
    hup(child.id());
    let logs = wait_log(&log, "the new config is refused", 1).await;
    assert!(logs.contains("TOML syntax error"), "{logs}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ok, failed) = load.stop().await;
    eprintln!("requests during two SIGHUP reloads: {ok} accepted, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0);
    // The process still runs with the last good config: `b` gets new notifications.
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while lines(dir.path(), "b").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "b got nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminate(child).await.success());
}

/// A lane claims work ahead of its free slots; when a reload retires it, what it had claimed
/// and not started goes back at once to the new lane, rather than waiting out its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_a_retired_lane_had_claimed_ahead_goes_out_at_once_and_once() {
    let crm = crate::fakes::crm::FakeCrm::start().await;
    crm.set_default(crate::fakes::crm::Reply::status(200).delay(Duration::from_millis(100)));
    let destination = |version: &str| {
        crate::support::config(&format!(
            "[destinations.crm]\ntype = \"webhook\"\nurl = \"{}\"\nconcurrency = 1\n[destinations.crm.fields]\nid = \"{{{{ participation.id }}}}\"\nv = \"{version}\"\n",
            crm.url("/in")
        ))
    };
    let relay = Relay::start(&destination("1")).await;
    // One attempt measured, then a backlog: the lane claims it ahead, one slot sending.
    relay.accept(v2_with_id("first")).await;
    crm.wait_for(1, WAIT).await;
    for i in 0..20 {
        relay.accept(v2_with_id(&format!("ahead-{i}"))).await;
    }
    crm.wait_for(3, WAIT).await;
    relay.reload(&destination("2"));
    let store = relay.store().await;
    // Far sooner than a lease (a minute): given back, not left to expire.
    let delivered = wait_deliveries(
        &store,
        for_destination("crm"),
        Status::Delivered,
        21,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(delivered.len(), 21);
    let received = crm.received();
    assert_eq!(received.len(), 21, "a delivery went out twice");
    // The new version's mapping sent what the old lane had not started.
    let v2 = received
        .iter()
        .filter(|r| r.body.contains("\"v\":\"2\""))
        .count();
    assert!(
        v2 > 0,
        "the reload came after everything was sent: {received:?}"
    );
    relay.stop().await;
}
