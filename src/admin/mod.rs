//! The operators' listener, apart from the hooks: the JSON API (`/api/…`), the delivery-log page
//! (`/`), and Prometheus metrics (`/metrics`). With a token, the API and metrics want
//! `Authorization: Bearer TOKEN`, and the page asks for it once on a login form and keeps a
//! value derived from it in an HttpOnly, SameSite=Strict cookie; form posts carry a CSRF field.
//! Without a token (allowed on loopback only) everything is open to whoever reaches the port.
//!
//! - `api`: the JSON API and metrics.
//! - `page`: the server-rendered page (minijinja templates, a little CSS, no JavaScript).
//! - `chart`: the per-destination SVG chart of the last 24 hours.

mod api;
mod chart;
mod page;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hmac::{Hmac, Mac};
use hookfan_connectors::Secret;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::live::Shared;
use crate::metrics::Metrics;
use crate::store::Store;

/// The cookie the page keeps its session in.
const SESSION_COOKIE: &str = "hookfan_admin";
/// How long a login lasts.
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every admin handler shares.
pub struct AdminState {
    /// The current config (a reload may change the token).
    live: Shared,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Told when a replay made work due, so it goes out at once.
    worker: crate::worker::Worker,
    /// Signs the CSRF field when no token is set: random, for this process's life.
    process_key: String,
    pages: page::Pages,
    /// Slows down an address whose logins keep failing, as the ingress does.
    pub throttle: crate::ingress::throttle::Throttle,
}

fn session_cookie(key: &str, issued_s: u64) -> String {
    let signed = mac(key.as_bytes(), &format!("hookfan admin session {issued_s}"));
    format!("{issued_s}.{signed}")
}

fn session_valid(key: &str, value: &str, now_s: u64) -> bool {
    let Some(issued_s) = value.split('.').next().and_then(|t| t.parse::<u64>().ok()) else {
        return false;
    };
    issued_s <= now_s
        && now_s - issued_s < SESSION_TTL.as_secs()
        && same(value, &session_cookie(key, issued_s))
}

fn mac(key: &[u8], what: &str) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(what.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl AdminState {
    pub fn new(
        live: Shared,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        worker: crate::worker::Worker,
    ) -> Result<AdminState, String> {
        Ok(AdminState {
            live,
            store,
            metrics,
            worker,
            throttle: Default::default(),
            process_key: crate::random::hex_token(32)
                .map_err(|_| "the random generator failed".to_string())?,
            pages: page::Pages::new()?,
        })
    }

    fn config(&self) -> Arc<Config> {
        self.live.get().config.clone()
    }

    fn token(&self) -> Option<Secret> {
        self.config().admin.as_ref().and_then(|a| a.token.clone())
    }

    /// What signs the session and the CSRF field: the token, else the process's own key.
    fn key(&self) -> String {
        self.token()
            .map_or_else(|| self.process_key.clone(), |t| t.expose().to_string())
    }

    /// A session cookie's value: when it was issued, signed with the token (never the token
    /// itself). It is good for [`SESSION_TTL`]; changing the token ends every session.
    fn session(&self, issued_s: u64) -> String {
        session_cookie(&self.key(), issued_s)
    }

    fn session_valid(&self, value: &str, now_s: u64) -> bool {
        session_valid(&self.key(), value, now_s)
    }

    /// The hidden field every form post must carry.
    fn csrf(&self) -> String {
        mac(self.key().as_bytes(), "hookfan admin form")
    }

    /// The API and metrics: a bearer token, when one is configured. Without one (a loopback
    /// listener) the request must name a loopback host, so a web page whose name was pointed
    /// at 127.0.0.1 (DNS rebinding) cannot read or act through an operator's browser.
    fn api_allowed(&self, req: &HttpRequest) -> bool {
        let Some(token) = self.token() else {
            return loopback_host(req);
        };
        bearer(req).is_some_and(|given| same(given, token.expose()))
    }

    /// The page: the session cookie, or the bearer token.
    fn page_allowed(&self, req: &HttpRequest) -> bool {
        self.api_allowed(req)
            || self.token().is_some()
                && cookie(req, SESSION_COOKIE).is_some_and(|c| self.session_valid(&c, now_s()))
    }

    fn login_matches(&self, req: &HttpRequest, given: &str) -> bool {
        match self.token() {
            Some(token) => same(given, token.expose()),
            None => loopback_host(req),
        }
    }

    /// A form post is ours: its CSRF field matches, and a browser's `Origin`, when sent, is
    /// this listener.
    fn form_allowed(&self, req: &HttpRequest, csrf: &str) -> bool {
        let origin_ok = match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
            None => true,
            Some(Ok(origin)) => request_host(req).is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest == host)
            }),
            Some(Err(_)) => false,
        };
        origin_ok && same(csrf, &self.csrf())
    }
}

/// Whether the `Host` a request names is this machine: `localhost` or a loopback address.
fn loopback_host(req: &HttpRequest) -> bool {
    let Some(host) = request_host(req) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `Host` the client sent (a browser sets it itself), not `connection_info`'s, which a page
/// could steer with an `X-Forwarded-Host` header.
fn request_host(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// One cookie's value from the `Cookie` header.
fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hookfan admin\""))
        .json(serde_json::json!({ "error": "unauthorized" }))
}

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig, state: web::Data<AdminState>) {
    cfg.app_data(state)
        .app_data(web::JsonConfig::default().limit(64 * 1024))
        .route("/metrics", web::get().to(api::metrics))
        .route("/api/deliveries", web::get().to(api::list))
        .route("/api/deliveries/{id}", web::get().to(api::show))
        .route("/api/replay", web::post().to(api::replay))
        .route("/api/cancel", web::post().to(api::cancel))
        .route("/api/stats", web::get().to(api::stats))
        .route("/", web::get().to(page::list))
        .route("/deliveries/{id}", web::get().to(page::show))
        .route("/deliveries/{id}/replay", web::post().to(page::replay))
        .route("/login", web::get().to(page::login_form))
        .route("/login", web::post().to(page::login))
        .route("/logout", web::post().to(page::logout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lasts_its_time_and_its_token_only() {
        let issued = 1_800_000_000;
        let cookie = session_cookie("token-a", issued);
        assert!(session_valid("token-a", &cookie, issued));
        assert!(session_valid(
            "token-a",
            &cookie,
            issued + SESSION_TTL.as_secs() - 1
        ));
        assert!(!session_valid(
            "token-a",
            &cookie,
            issued + SESSION_TTL.as_secs()
        ));
        assert!(
            !session_valid("token-b", &cookie, issued),
            "a new token ends it"
        );
        // The issue time is signed: moving it forward breaks the signature.
        let (_, signature) = cookie.split_once('.').unwrap();
        let moved = format!("{}.{signature}", issued + 3600);
        assert!(!session_valid("token-a", &moved, issued + 3600));
        assert!(!session_valid("token-a", "garbage", issued));
    }
}
