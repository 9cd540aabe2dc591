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
pub mod mapping;
pub mod metrics;
pub mod payload;
pub mod random;
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

/// Opens the configured store and runs the relay until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let store = store::open(&config.storage.url).await?;
    run_with_store(config, store, listeners, shutdown).await
}

/// [`run`] with a store opened by the caller.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let mapper = Arc::new(config.mapper()?);
    let tls = match &config.server.tls {
        Some(t) => Some(tls::server_config(t).map_err(RunError::Tls)?),
        None => None,
    };
    let client = hookfan_connectors::http::client()?;
    let mut lanes = Vec::new();
    for d in config.destinations.iter().filter(|d| d.enabled) {
        let connector = d
            .connector_shared(&client, store.locks())
            .map_err(|e| RunError::Connector(d.name.clone(), e))?;
        lanes.push((d.clone(), connector));
    }
    warn_of_stranded_work(&config, store.as_ref()).await;
    let metrics = Arc::new(metrics::Metrics::new());
    let worker = Worker::new(store.clone(), mapper.clone(), lanes, metrics.clone());
    let (trigger, stop) = shutdown::channel();
    let mut worker_task = Watched::spawn("the worker", worker.clone().run(stop.clone()));
    let purge = purge_loop(store.clone(), config.storage.retention, stop);
    let mut purge_task = Watched::spawn("the purge", async {
        purge.await;
        Ok(())
    });

    let stopping = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(std::sync::OnceLock::new());
    let admin = match listeners.admin {
        Some(listener) => {
            let state = web::Data::new(
                admin::AdminState::new(
                    config.clone(),
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
        config: config.clone(),
        mapper,
        store,
        worker: worker.clone(),
        stopping: stopping.clone(),
        failed: failed.clone(),
        metrics: metrics.clone(),
        readiness: tokio::sync::Mutex::new(None),
    });
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().configure(move |cfg| ingress::routes(cfg, state))
    })
    .disable_signals()
    // Headers must arrive within read_timeout (actix answers 408); the body is bounded by the
    // source handler.
    .client_request_timeout(config.server.read_timeout)
    .shutdown_timeout(5);
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listeners.hooks, tls)?,
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
    // `run` fails, so systemd or Docker restart the process.
    let fault = tokio::select! {
        () = shutdown => None,
        ended = worker_task.join() => ended,
        ended = purge_task.join() => ended,
        ended = server_task.join() => ended,
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

async fn purge_loop(store: Arc<dyn Store>, retention: Duration, mut stop: shutdown::Shutdown) {
    loop {
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
