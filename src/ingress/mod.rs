//! The HTTP side: Qualifio's `POST`s on each source's path, `/healthz` and `/readyz`.

mod auth;
mod hooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{HttpResponse, web};

use crate::config::Config;
use crate::mapping::Mapper;
use crate::store::Store;
use crate::worker::Worker;

/// What every request handler shares.
pub struct AppState {
    pub config: Arc<Config>,
    pub mapper: Arc<Mapper>,
    pub store: Arc<dyn Store>,
    pub worker: Worker,
    /// Set at shutdown: new notifications get 503 so Qualifio retries elsewhere or later.
    pub stopping: Arc<AtomicBool>,
}

impl AppState {
    fn draining(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Registers the routes on an actix app.
pub fn routes(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    cfg.app_data(state.clone())
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
    for (i, source) in state.config.sources.iter().enumerate() {
        cfg.service(
            web::resource(source.path.as_str())
                .app_data(web::Data::new(i))
                .route(web::post().to(hooks::receive)),
        );
        cfg.service(
            web::resource(format!("{}/{{token}}", source.path))
                .app_data(web::Data::new(i))
                .route(web::post().to(hooks::receive)),
        );
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.draining() {
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "stopping" }));
    }
    match state.store.ready().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "store not ready");
            HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({ "status": "store unavailable" }))
        }
    }
}
