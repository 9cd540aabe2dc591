//! What a loaded config holds: plain data, valid by construction (see `validate`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hookfan_connectors::units::Rate;
use hookfan_connectors::{Connector, ConnectorError, DestinationConfig, Secret};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_STORAGE_URL: &str = "sqlite://hookfan.db";
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
pub const DEFAULT_CONCURRENCY: usize = 4;
/// More attempts in flight than this helps no destination, and keeps the worker's bounds sane.
pub const MAX_CONCURRENCY: usize = 1000;
pub const DEFAULT_JITTER: f64 = 0.2;
/// `10s, 1m, 5m, 30m, 2h, 6h, 12h, 24h`, then dead.
pub const DEFAULT_SCHEDULE: &[u64] = &[10, 60, 300, 1_800, 7_200, 21_600, 43_200, 86_400];

/// A loaded, valid config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; relative paths in it were resolved against its folder.
    pub file: PathBuf,
    pub server: Server,
    pub storage: Storage,
    pub retry: RetryPolicy,
    /// The operators' listener (API, delivery-log page, metrics), when `[admin]` is set.
    pub admin: Option<Admin>,
    pub sources: Vec<Source>,
    pub destinations: Vec<Destination>,
}

/// `[admin]`: its own listener, so it can stay on loopback while the hooks face the internet.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Sent as `Authorization: Bearer`, or given once on the page's login form. Required off
    /// loopback.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// The largest request body accepted, in bytes.
    pub max_body: u64,
    /// How long a request's headers, and then its body, may take to arrive (408 after).
    pub read_timeout: Duration,
    /// Connections served at once; more wait in the kernel's queue until one closes.
    pub max_connections: usize,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct Storage {
    /// `sqlite://…` with an absolute path, or `postgres://…`. May hold a password: print
    /// [`Storage::redacted_url`] instead.
    pub url: String,
    /// How long delivered and dead work is kept.
    pub retention: Duration,
}

impl Storage {
    /// The URL without its password (`postgres://user:***@host/db`), for summaries and logs.
    pub fn redacted_url(&self) -> String {
        redact_storage_url(&self.url)
    }
}

/// `Debug` shows the redacted URL: a config is printed in logs and panics.
impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("url", &self.redacted_url())
            .field("retention", &self.retention)
            .finish()
    }
}

/// Hides a database URL's password, in the user-info part and in a `password=` query parameter.
fn redact_storage_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    if !scheme.starts_with("postgres") {
        return url.to_string();
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    // The user info ends at the last '@': a password written unencoded may hold '/' or '@'.
    let before_query = match before_query.rsplit_once('@') {
        Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host_and_path}"),
            None => before_query.to_string(),
        },
        None => before_query.to_string(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{before_query}?{q}"),
        None => format!("{scheme}://{before_query}"),
    }
}

/// When failed attempts are tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay before each retry; after the last one a delivery is dead.
    pub schedule: Vec<Duration>,
    /// ±fraction applied to each delay (0.2 = ±20%).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            schedule: DEFAULT_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            jitter: DEFAULT_JITTER,
        }
    }
}

/// Where Qualifio posts, and how it proves who it is.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// The URL path, e.g. `/hooks/qualifio`.
    pub path: String,
    pub auth: Auth,
}

/// Every configured kind must pass. All empty means `auth = "none"` was stated.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub basic: Option<(String, Secret)>,
    pub token: Option<Secret>,
    pub header: Option<(String, Secret)>,
    pub hmac_secrets: Vec<Secret>,
}

impl Auth {
    /// `basic`, `token`, `header`, `hmac`, or `none`.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.basic.is_some() {
            kinds.push("basic");
        }
        if self.token.is_some() {
            kinds.push("token");
        }
        if self.header.is_some() {
            kinds.push("header");
        }
        if !self.hmac_secrets.is_empty() {
            kinds.push("hmac");
        }
        if kinds.is_empty() {
            kinds.push("none");
        }
        kinds
    }
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    /// Changes when anything about the destination changes (a reload replaces its lane then).
    pub fingerprint: String,
    /// Its `type`, e.g. `webhook`.
    pub type_name: &'static str,
    /// The type's own keys.
    pub kind: Arc<dyn DestinationConfig>,
    pub enabled: bool,
    /// The sources it takes notifications from; `None` is all.
    pub sources: Option<Vec<String>>,
    /// A minijinja expression; the destination gets a notification only when it is true.
    pub when: Option<String>,
    /// What each record renders, field name → template, in order: the `fields` table, or the
    /// type's own templates (Trello's `name`, `desc`, custom fields).
    pub fields: Vec<(String, String)>,
    pub rate_limit: Option<Rate>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

impl Destination {
    /// The configured `rate_limit`, else the one the destination type needs (Sheets, Trello).
    pub fn effective_rate_limit(&self) -> Option<Rate> {
        self.rate_limit.or_else(|| self.kind.default_rate_limit())
    }

    /// Destinations with the same key share one rate limit.
    pub fn rate_key(&self) -> String {
        self.kind
            .rate_key()
            .unwrap_or_else(|| format!("destination:{}", self.name))
    }

    pub fn takes_source(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == source))
    }

    /// Its templates, for [`crate::mapping::Mapper::new`].
    pub fn templates(&self) -> crate::mapping::Templates<'_> {
        crate::mapping::Templates {
            destination: &self.name,
            fields: &self.fields,
            when: self.when.as_deref(),
        }
    }

    /// Its connector, sharing the process's HTTP client.
    pub fn connector(
        &self,
        client: &reqwest::Client,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let names: Vec<String> = self.fields.iter().map(|(n, _)| n.clone()).collect();
        self.kind.build(client, &names)
    }

    /// Its connector in a relay whose store is shared by several instances: `locks` are held
    /// across all of them (`None`: one instance, no lock needed).
    pub fn connector_shared(
        &self,
        client: &reqwest::Client,
        locks: Option<Arc<dyn hookfan_connectors::Locks>>,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let Some(locks) = locks else {
            return self.connector(client);
        };
        let names: Vec<String> = self.fields.iter().map(|(n, _)| n.clone()).collect();
        self.kind.build_shared(client, &names, locks)
    }
}

impl Config {
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// Of the destinations holding pending work, those this config no longer names: their
    /// deliveries wait for ever unless the destination comes back.
    pub fn stranded(&self, pending: Vec<(String, u64)>) -> Vec<(String, u64)> {
        pending
            .into_iter()
            .filter(|(name, n)| *n > 0 && self.destination(name).is_none())
            .collect()
    }

    /// Every destination's templates, compiled.
    pub fn mapper(&self) -> Result<crate::mapping::Mapper, crate::mapping::CompileError> {
        crate::mapping::Mapper::new(self.destinations.iter().map(Destination::templates))
    }
}
