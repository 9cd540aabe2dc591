//! # hookfan
//!
//! Accepts Qualifio participation notifications, stores them durably, and relays each to every
//! destination whose filter matches.
//!
//! # Layout
//! - [`config`]: the TOML file → a validated [`config::Config`]; split by job into types, loading
//!   and validation.
//! - [`destinations`]: the one list of destination types. Each type lives in
//!   `hookfan-connectors` behind [`hookfan_connectors::DestinationConfig`] (its keys, checks,
//!   templates, rate limit, summary, and the [`hookfan_connectors::Connector`] it builds); a new
//!   type is a module there and one line here.
//! - [`payload`]: Qualifio's v1/v2 formats and the normalised view.
//! - [`mapping`]: minijinja templates (`fields`, `when`) and custom filters. A leaf: it takes
//!   (destination, templates) and never reads the config.
//! - [`router`]: which destinations take a notification (decided at accept time).
//! - [`store`]: the `Store` seam, its SQLite and PostgreSQL implementations, and the typed
//!   words every layer shares: [`store::Status`] of a delivery, [`store::AttemptOutcome`] of an
//!   attempt.
//! - [`ingress`]: actix-web routes: the sources' `POST`s, health and readiness.
//! - [`worker`]: per-destination lanes that claim, map, deliver and record, one tracing span per
//!   attempt; `worker::retry` decides what comes next (pure).
//! - [`commands`]: what the commands print: `check`, `preview`, and the operators' `deliveries`,
//!   `stats`, `replay`, `cancel`, `forget`, `purge`.
//! - [`admin`]: the operators' listener: JSON API, delivery-log page, metrics.
//! - [`metrics`]: Prometheus counters, histogram and gauges.
//! - [`tls`]: HTTPS served directly, from `[server.tls]`.
//!
//! [`run`] wires them: it takes its listener and a shutdown future, so tests bind port 0 and
//! stop it cleanly.

pub mod admin;
pub mod commands;
pub mod config;
pub mod destinations;
pub mod ingress;
pub mod live;
pub mod mapping;
pub mod metrics;
pub mod payload;
pub mod random;
pub mod redact;
pub mod router;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpServer, web};

use crate::config::Config;
use crate::store::Store;
use crate::worker::Worker;

/// How long after start the first purge runs.
const PURGE_FIRST: Duration = Duration::from_secs(60);
/// How often delivered work older than `[storage] retention` is purged (dead and cancelled
/// work stays until replayed or purged by an operator).
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("templates: {0}")]
    Mapping(#[from] mapping::CompileError),
    #[error("destination {0}: {1}")]
    Connector(String, hookfan_connectors::ConnectorError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("stopped because {0}")]
    TaskEnded(String),
    #[error("admin: {0}")]
    Admin(String),
}

/// The sockets the relay serves: the hooks, and the admin listener when `[admin]` is set.
pub struct Listeners {
    pub hooks: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Binds the addresses the config names.
    pub fn bind(config: &Config) -> std::io::Result<Listeners> {
        Ok(Listeners {
            hooks: std::net::TcpListener::bind(config.server.listen)?,
            admin: match &config.admin {
                Some(a) => Some(std::net::TcpListener::bind(a.listen)?),
                None => None,
            },
        })
    }
}

/// What tells a running relay to stop, or to read its config file again.
pub struct Signals {
    /// Completes when the relay should stop (SIGTERM, Ctrl-C).
    pub stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Each message reads the config file again (SIGHUP).
    pub reload: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Signals {
    /// Stops when `stop` completes; never reloads.
    pub fn stop_on(stop: impl Future<Output = ()> + Send + 'static) -> Signals {
        let (_, reload) = tokio::sync::mpsc::unbounded_channel();
        Signals {
            stop: Box::pin(stop),
            reload,
        }
    }
}

/// Opens the configured store and runs the relay until told to stop.
pub async fn run(config: Config, listeners: Listeners, signals: Signals) -> Result<(), RunError> {
    let store = store::open(&config.storage.url).await?;
    run_with_store(config, store, listeners, signals).await
}

/// The connectors of the enabled destinations, sharing one HTTP client; `locks` are shared
/// with the other instances of a PostgreSQL store.
fn connectors(
    config: &Config,
    client: &reqwest::Client,
    locks: Option<Arc<dyn hookfan_connectors::Locks>>,
) -> Result<Vec<worker::Ready>, RunError> {
    config
        .destinations
        .iter()
        .filter(|d| d.enabled)
        .map(|d| {
            d.connector_shared(client, locks.clone())
                .map(|c| (d.clone(), c))
                .map_err(|e| RunError::Connector(d.name.clone(), e))
        })
        .collect()
}

/// [`run`] with a store opened by the caller.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listeners: Listeners,
    signals: Signals,
) -> Result<(), RunError> {
    let Signals {
        stop: mut stop_signal,
        mut reload,
    } = signals;
    let file = config.file.clone();
    let tls = match &config.server.tls {
        Some(t) => Some(tls::server_config(t).map_err(RunError::Tls)?),
        None => None,
    };
    let certificate = tls.as_ref().map(|(_, c)| c.clone());
    let client = hookfan_connectors::http::client()?;
    let lanes = connectors(&config, &client, store.locks())?;
    // Counting every pending delivery takes a while on a large store: readiness does not wait.
    tokio::spawn({
        let (config, store) = (config.clone(), store.clone());
        async move { warn_of_stranded_work(&config, store.as_ref()).await }
    });
    let live = live::Shared::new(live::Live::new(config)?);
    let config = live.get().config.clone();
    let metrics = Arc::new(metrics::Metrics::new());
    let (trigger, stop) = shutdown::channel();
    let worker = Worker::new(store.clone(), metrics.clone(), stop.clone());
    worker.apply(lanes, &live.get());
    let mut worker_task = Watched::spawn("the worker", worker.clone().run());
    let purge = purge_loop(store.clone(), live.clone(), stop);
    let mut purge_task = Watched::spawn("the purge", async {
        purge.await;
        Ok(())
    });

    let stopping = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::OnceLock::new());
    let admin_addr = listeners.admin.as_ref().and_then(|l| l.local_addr().ok());
    let admin = match listeners.admin {
        Some(listener) => {
            let state = web::Data::new(
                admin::AdminState::new(
                    live.clone(),
                    store.clone(),
                    metrics.clone(),
                    worker.clone(),
                )
                .map_err(RunError::Admin)?,
            );
            let server = HttpServer::new(move || {
                let state = state.clone();
                App::new().configure(move |cfg| admin::routes(cfg, state))
            })
            .workers(1)
            .disable_signals()
            .client_request_timeout(config.server.read_timeout)
            .shutdown_timeout(5)
            .listen(listener)?
            .run();
            Some(server)
        }
        None => None,
    };
    let state = web::Data::new(ingress::AppState {
        live: live.clone(),
        store: store.clone(),
        worker: worker.clone(),
        stopping: stopping.clone(),
        failed: failed.clone(),
        metrics: metrics.clone(),
        throttle: Default::default(),
        readiness: tokio::sync::Mutex::new(None),
    });
    // actix counts connections per worker thread.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().configure(move |cfg| ingress::routes(cfg, state))
    })
    .workers(workers)
    .max_connections(config.server.max_connections.div_ceil(workers))
    .disable_signals()
    // Headers must arrive within read_timeout (actix answers 408); the body is bounded by the
    // source handler.
    .client_request_timeout(config.server.read_timeout)
    .shutdown_timeout(5);
    let server = match tls {
        Some((tls, _)) => server.listen_rustls_0_23(listeners.hooks, tls)?,
        None => server.listen(listeners.hooks)?,
    }
    .run();
    let handle = server.handle();
    let admin_handle = admin.as_ref().map(|a| a.handle());
    let mut server_task = Watched::spawn("the HTTP server", async {
        // The admin listener is part of the server: either ending is a fault.
        let hooks = async { server.await.map_err(|e| e.to_string()) };
        match admin {
            Some(admin) => {
                let admin = async { admin.await.map_err(|e| format!("admin listener: {e}")) };
                tokio::select! {
                    r = hooks => r,
                    r = admin => r,
                }
            }
            None => hooks.await,
        }
    });
    tracing::info!(
        sources = config.sources.len(),
        destinations = config.destinations.iter().filter(|d| d.enabled).count(),
        "hookfan is running"
    );

    // Every background task runs until told to stop: one that ends first is a fault. Then the
    // relay stops as on a signal (503 to new notifications, in-flight attempts may finish) and
    // `run` fails, so systemd or Docker restart the process. A reload in between swaps the
    // config and the lanes, not the server: no connection is dropped.
    let fault = loop {
        tokio::select! {
            () = &mut stop_signal => break None,
            Some(()) = reload.recv() => {
                let reloaded = Reload {
                    file: &file,
                    live: &live,
                    worker: &worker,
                    store: store.as_ref(),
                    client: &client,
                    certificate: certificate.as_deref(),
                    admin_addr,
                };
                reloaded.run().await;
            }
            ended = worker_task.join() => break ended,
            ended = purge_task.join() => break ended,
            ended = server_task.join() => break ended,
        }
    };
    match &fault {
        None => {
            tracing::info!("stopping: new notifications get 503, in-flight attempts may finish")
        }
        Some(why) => {
            let _ = failed.set(why.clone());
            tracing::error!(fault = %why, "a background task ended: stopping so hookfan can be restarted");
        }
    }
    stopping.store(true, Ordering::Relaxed);
    trigger.trigger();
    let _ = worker_task.join().await;
    worker.drain().await;
    let _ = purge_task.join().await;
    if let Some(admin) = &admin_handle {
        admin.stop(true).await;
    }
    handle.stop(true).await;
    let _ = server_task.join().await;
    tracing::info!("stopped");
    match fault {
        None => Ok(()),
        Some(why) => Err(RunError::TaskEnded(why)),
    }
}

/// Reading the config file again while running.
struct Reload<'a> {
    file: &'a std::path::Path,
    live: &'a live::Shared,
    worker: &'a Worker,
    store: &'a dyn Store,
    client: &'a reqwest::Client,
    certificate: Option<&'a tls::Certificate>,
    /// Where the admin listener is bound: it stays there until a restart.
    admin_addr: Option<std::net::SocketAddr>,
}

impl Reload<'_> {
    /// Loads and checks the file; a valid one takes effect for every request and attempt that
    /// starts from now on, an invalid one is refused (with the reason logged) and the running
    /// config stays. What only a restart can change is named in a warning.
    async fn run(&self) {
        tracing::info!(config = %self.file.display(), "reloading the config");
        let new = match Config::load(self.file) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("the new config is refused; the running one stays:\n{e}");
                return;
            }
        };
        let old = self.live.get().config.clone();
        let restart = needs_restart(&old, &new);
        let applied = match self.apply(new) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "the new config is refused; the running one stays");
                return;
            }
        };
        tracing::info!(
            added = ?applied.added,
            changed = ?applied.changed,
            removed = ?applied.removed,
            "config reloaded"
        );
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "these changes take effect at the next restart");
        }
    }

    /// Everything is read and built first; only then is anything swapped, so a refused
    /// reload changes nothing.
    fn apply(&self, new: Config) -> Result<worker::Applied, RunError> {
        // The listener keeps its address, so the check a start makes is made against it.
        if let Some(addr) = self.admin_addr
            && !addr.ip().is_loopback()
            && new.admin.as_ref().and_then(|a| a.token.as_ref()).is_none()
        {
            return Err(RunError::Admin(format!(
                "the admin listener on {addr} runs until a restart and is reachable from other machines: the new config must keep its token"
            )));
        }
        let certificate = match (self.certificate, &new.server.tls) {
            (Some(certificate), Some(tls)) => {
                let key = tls::Certificate::read(tls).map_err(RunError::Tls)?;
                Some((certificate, key))
            }
            _ => None,
        };
        let lanes = connectors(&new, self.client, self.store.locks())?;
        let live = live::Live::new(new)?;
        if let Some((certificate, key)) = certificate {
            certificate.swap(key);
        }
        let applied = self.worker.apply(lanes, &live);
        self.live.set(live);
        Ok(applied)
    }
}

/// The keys whose change a reload cannot apply.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.server.listen != new.server.listen {
        out.push("server.listen");
    }
    if old.server.max_connections != new.server.max_connections {
        out.push("server.max_connections");
    }
    if old.server.read_timeout != new.server.read_timeout {
        out.push("server.read_timeout (for headers; the body takes the new one)");
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        out.push("server.tls (HTTPS on or off; new certificates take effect at once)");
    }
    if old.storage.url != new.storage.url {
        out.push("storage.url");
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        out.push("admin.listen");
    }
    out
}

/// A background task `run` watches: it should end only when told to.
struct Watched {
    name: &'static str,
    handle: tokio::task::JoinHandle<Result<(), String>>,
    ended: bool,
}

impl Watched {
    fn spawn(
        name: &'static str,
        task: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> Watched {
        Watched {
            name,
            handle: tokio::spawn(task),
            ended: false,
        }
    }

    /// Waits for the task to end and says how it did; at once (nothing) if it already had.
    async fn join(&mut self) -> Option<String> {
        if self.ended {
            return None;
        }
        let result = (&mut self.handle).await;
        self.ended = true;
        Some(match result {
            Ok(Ok(())) => format!("{} ended", self.name),
            Ok(Err(e)) => format!("{}: {e}", self.name),
            Err(e) if e.is_panic() => format!("{} panicked", self.name),
            Err(_) => format!("{} was cancelled", self.name),
        })
    }
}

/// Names each destination removed from the config that still has pending deliveries.
async fn warn_of_stranded_work(config: &Config, store: &dyn Store) {
    match store.pending_by_destination().await {
        Ok(pending) => {
            for (destination, pending) in config.stranded(pending) {
                tracing::warn!(
                    %destination,
                    pending,
                    "a destination no longer in the config has pending deliveries: they wait until it is added back"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count pending deliveries"),
    }
}

async fn purge_loop(store: Arc<dyn Store>, live: live::Shared, mut stop: shutdown::Shutdown) {
    // Not at start: a purge of a large store holds the writer, and readiness waits for it.
    tokio::select! {
        _ = tokio::time::sleep(PURGE_FIRST) => {}
        _ = stop.wait() => return,
    }
    loop {
        // Read each time: a reload may have changed it.
        let retention = live.get().config.storage.retention;
        let before = store::now_ms()
            .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        match store.purge(&[store::Status::Delivered], before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged old deliveries"),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stop.wait() => return,
        }
    }
}
