//! The HTTP side: Qualifio's `POST`s on each source's path, `/healthz` and `/readyz`. The
//! sources are looked up in the current config for each request, so a reload changes them
//! without restarting the server.

mod auth;
mod head;
pub mod hooks;
pub(crate) mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};

use crate::live::Shared;
use crate::store::Store;
use crate::worker::Worker;

/// What every request handler shares.
pub struct AppState {
    /// The config and its compiled templates, as of the last (re)load.
    pub live: Shared,
    pub store: Arc<dyn Store>,
    pub worker: Worker,
    /// Set at shutdown: new notifications get 503 so Qualifio retries elsewhere or later.
    pub stopping: Arc<AtomicBool>,
    /// Set when a background task ended on its own: the relay is stopping to be restarted.
    pub failed: Arc<std::sync::OnceLock<String>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Failed authentications per peer, to slow down guessing.
    pub throttle: throttle::Throttle,
    /// The last readiness probe: `/readyz` writes to the store at most once a second, so
    /// probes (which need no credentials) cannot crowd out accepts.
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl AppState {
    fn draining(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Registers the routes on an actix app.
pub fn routes(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state)
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .default_service(web::to(hooks::receive));
}

const READY_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Some(why) = state.failed.get() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "failed", "reason": why }));
    }
    if state.draining() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "stopping" }));
    }
    let ready = {
        let mut last = state.readiness.lock().await;
        match *last {
            Some((at, ready)) if at.elapsed() < READY_CACHE => ready,
            _ => {
                let ready = match state.store.ready().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "store not ready");
                        false
                    }
                };
                *last = Some((std::time::Instant::now(), ready));
                ready
            }
        }
    };
    if ready {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "store unavailable" }))
    }
}
