//! A relay started in-process on 127.0.0.1:0 with a real SQLite file, and helpers to talk to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use hookfan::config::Config;
use hookfan::store::{DeliveryRow, Filter, Incoming, SqliteStore, Status, Store, now_ms};
use sha2::Digest as _;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Once per test binary: the TLS provider reqwest needs, and logs in test output.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "hookfan=debug".into()))
            .try_init();
    });
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

/// The v2 sample with another participation id, so each test's notifications are distinct.
pub fn v2_with_id(id: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(&fixture("participation-v2.json")).unwrap();
    doc["id"] = id.into();
    doc.to_string()
}

/// The open `qualifio` source most stories post to.
pub const OPEN_SOURCE: &str = "[sources.qualifio]\nauth = \"none\"\n";

/// The preamble most delivery stories share: the open source and a short retry schedule (three
/// retries 200 ms apart, no jitter), then `rest` (the destinations).
pub fn config(rest: &str) -> String {
    format!(
        "{OPEN_SOURCE}\n[retry]\nschedule = [\"200ms\", \"200ms\", \"200ms\"]\njitter = 0.0\n\n{rest}\n"
    )
}

pub struct Relay {
    pub base: String,
    /// The admin listener's base URL, when the config has `[admin]`.
    pub admin: Option<String>,
    pub dir: Arc<TempDir>,
    pub client: reqwest::Client,
    reload: tokio::sync::mpsc::UnboundedSender<()>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hookfan::RunError>>>,
}

/// How a test's relay runs: in a new temporary folder or a given one (a restart keeps its
/// folder and database), on the store named by the config or one the test opened, over HTTP or
/// HTTPS.
pub struct RelayBuilder {
    config: String,
    dir: Option<Arc<TempDir>>,
    store: Option<Arc<dyn Store>>,
    tls: bool,
}

impl RelayBuilder {
    /// Runs in `dir` (a restart keeps the folder and its database).
    pub fn dir(mut self, dir: Arc<TempDir>) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Runs on a store the test opened itself.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Serves HTTPS (the config has a `[server.tls]`); the client trusts any certificate, as
    /// the test's is self-signed.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Writes the config into the folder, starts the relay on 127.0.0.1:0 and waits until it
    /// answers.
    pub async fn start(self) -> Relay {
        init();
        let dir = self
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let config = write_config(dir.path(), &self.config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // On the config's address, with a free port.
        let admin_listener = config
            .admin
            .as_ref()
            .map(|a| std::net::TcpListener::bind((a.listen.ip(), 0)).unwrap());
        let admin = admin_listener
            .as_ref()
            .map(|l| format!("http://127.0.0.1:{}", l.local_addr().unwrap().port()));
        let listeners = hookfan::Listeners {
            hooks: listener,
            admin: admin_listener,
        };
        let (stop, rx) = oneshot::channel::<()>();
        let (reload, reloads) = tokio::sync::mpsc::unbounded_channel();
        let signals = hookfan::Signals {
            stop: Box::pin(async {
                let _ = rx.await;
            }),
            reload: reloads,
        };
        let task = match self.store {
            Some(store) => tokio::spawn(hookfan::run_with_store(config, store, listeners, signals)),
            None => tokio::spawn(hookfan::run(config, listeners, signals)),
        };
        let (base, client) = if self.tls {
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap();
            (format!("https://localhost:{port}"), client)
        } else {
            (format!("http://127.0.0.1:{port}"), reqwest::Client::new())
        };
        // The probe keeps no connection open: a test may count them.
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .danger_accept_invalid_certs(self.tls)
            .build()
            .unwrap();
        for _ in 0..200 {
            if probe.get(format!("{base}/healthz")).send().await.is_ok() {
                return Relay {
                    base,
                    admin,
                    dir,
                    client,
                    reload,
                    stop: Some(stop),
                    task: Some(task),
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the relay did not start: {:?}", task.await);
    }
}

impl Relay {
    /// A relay on `config`, to be started after any choices ([`RelayBuilder`]).
    pub fn with(config: &str) -> RelayBuilder {
        RelayBuilder {
            config: config.to_string(),
            dir: None,
            store: None,
            tls: false,
        }
    }

    /// The usual case: `config` in a new temporary folder, over HTTP.
    pub async fn start(config: &str) -> Relay {
        Relay::with(config).start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Writes `config` over the relay's file and asks it to read it again, as SIGHUP does.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.dir.path().join("hookfan.toml"), config).unwrap();
        self.reload.send(()).unwrap();
    }

    /// Posts a notification to the open `qualifio` source and expects it accepted (202).
    pub async fn accept(&self, body: String) {
        let r = self
            .client
            .post(self.url("/hooks/qualifio"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("hookfan.db")
    }

    /// A second handle on the relay's database, to read the delivery log.
    pub async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.db()).await.unwrap()
    }

    /// Stops the relay the way SIGTERM does, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn write_config(dir: &Path, text: &str) -> Config {
    let path = dir.join("hookfan.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("test config is invalid:\n{e}"))
}

/// Waits until every delivery matching `filter` is in `status`, and there are `count` of them.
pub async fn wait_deliveries(
    store: &dyn Store,
    filter: Filter,
    status: Status,
    count: usize,
    within: Duration,
) -> Vec<DeliveryRow> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rows = store.list(&filter).await.unwrap();
        if rows.len() == count && rows.iter().all(|r| r.status == status) {
            return rows;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "expected {count} deliveries {}, got {rows:#?}",
                status.as_str()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn for_destination(name: &str) -> Filter {
    Filter {
        destination: Some(name.into()),
        ..Filter::default()
    }
}

/// Each attempt of a delivery, oldest first, as (number, outcome, HTTP status).
pub async fn attempt_summary(
    store: &dyn Store,
    delivery: i64,
) -> Vec<(u32, &'static str, Option<u16>)> {
    let (_, attempts) = store.show(delivery).await.unwrap().unwrap();
    attempts
        .into_iter()
        .map(|a| (a.number, a.outcome.as_str(), a.status_code))
        .collect()
}

/// A notification as the ingress hands it to the store: from source `qualifio`, routed to
/// `destinations`, identified and hashed from `body`.
pub fn incoming(body: String, destinations: &[&str]) -> Incoming {
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sha: String = sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Incoming {
        source: "qualifio".into(),
        participation_id: doc["id"].as_str().unwrap().into(),
        format: hookfan::payload::Format::detect(&doc).as_str(),
        body_sha256: sha,
        body,
        received_at: now_ms(),
        destinations: destinations.iter().map(|d| d.to_string()).collect(),
    }
}

/// A worker claims the due delivery of `destination` for a 1 s lease, then dies without
/// recording anything.
pub async fn leave_a_dead_claim(store: &dyn Store, destination: &str) {
    let claimed = store
        .claim_due(destination, 10, "killed-worker", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

/// No window of length `per` holds more than `count` of these times (arrivals at a fake).
pub fn assert_at_most_per_window(times: &[tokio::time::Instant], count: usize, per: Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    for (i, pair) in sorted.windows(count + 1).enumerate() {
        let spread = pair[count] - pair[0];
        assert!(
            spread >= per,
            "calls {i}..={} arrived within {spread:?}: more than {count} in {per:?}",
            i + count
        );
    }
}

/// A tmpfs of a few pages, mounted for one test and unmounted when dropped: a disk that fills
/// up for real. Needs root (CI runs as root), as `mount` does.
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cannot mount a tmpfs (the disk-full tests need root): {status}"
        );
        SmallDisk {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// Fills the disk with a file of `bytes`, to be removed when space should come back.
    pub fn fill(&self, bytes: usize) -> PathBuf {
        let filler = self.path.join("filler");
        std::fs::write(&filler, vec![b'.'; bytes]).unwrap();
        filler
    }
}

impl SmallDisk {
    /// Fills every byte left, to be removed when space should come back.
    pub fn fill_up(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler-all");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![b'.'; 4096];
        while file.write_all(&block).is_ok() {}
        // Bytes of a last partial block, if any.
        while file.write_all(b".").is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.path)
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// The real binary, for what only a process shows: signals, exit codes, its logs.

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `hookfan serve --config hookfan.toml --log-format json` in `dir`, its logs in `dir/log`, with
/// `RUST_LOG=info` unless `env` says otherwise.
pub fn serve(dir: &Path, log: &str, env: &[(&str, &str)]) -> std::process::Child {
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_hookfan"))
        .args(["serve", "--config", "hookfan.toml", "--log-format", "json"])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Waits until `base` answers `/healthz`.
pub async fn wait_up(client: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("hookfan serve did not start");
}

/// SIGTERM, as systemd or Docker would send, then the exit status.
pub async fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
}

/// A throwaway self-signed certificate (`NAME.pem`, `NAME.key`) for `cn`, made by openssl.
pub fn make_certificate(dir: &Path, name: &str, cn: &str) {
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}
