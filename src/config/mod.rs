//! The config file: TOML → raw structs (unknown keys denied) → `validate` (pure) → [`Config`].
//!
//! Strings may use `${VAR}` / `${VAR:-default}`. Every problem names the file, line, column and
//! key path; all problems found are reported together.

mod env;
pub mod locate;
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookfan_connectors::file::FileConfig;
use hookfan_connectors::sheets::SheetsConfig;
use hookfan_connectors::trello::{self, TrelloConfig};
use hookfan_connectors::units::{HumanDuration, Rate};
use hookfan_connectors::webhook::WebhookConfig;
use hookfan_connectors::{ConfigIssue, KeyPart, Secret};
use serde::de::DeserializeOwned;

use locate::Locator;
pub use locate::{KeyPath, Problem};
use raw::{COMMON_KEYS, RawCommon, RawConfig, RawRetry, RawSource};

/// The destination types, as `type` names them.
pub const DESTINATION_TYPES: &[&str] = &["webhook", "google_sheets", "trello", "file"];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
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
    pub sources: Vec<Source>,
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// The largest request body accepted, in bytes.
    pub max_body: u64,
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
    pub kind: DestinationKind,
    pub enabled: bool,
    /// The sources it takes notifications from; `None` is all.
    pub sources: Option<Vec<String>>,
    /// A minijinja expression; the destination gets a notification only when it is true.
    pub when: Option<String>,
    /// Field name → template, in file order.
    pub fields: Vec<(String, String)>,
    pub rate_limit: Option<Rate>,
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

/// The closed set of destination types, each with its connector's own keys.
#[derive(Clone)]
pub enum DestinationKind {
    Webhook(WebhookConfig),
    File(FileConfig),
    GoogleSheets(SheetsConfig),
    Trello(TrelloConfig),
}

/// `Debug` with a webhook URL's credentials redacted (its headers and secret are already `***`).
impl std::fmt::Debug for DestinationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DestinationKind::Webhook(c) => {
                let mut shown = c.clone();
                shown.url = hookfan_connectors::webhook::redact_url(&c.url);
                f.debug_tuple("Webhook").field(&shown).finish()
            }
            DestinationKind::File(c) => f.debug_tuple("File").field(c).finish(),
            DestinationKind::GoogleSheets(c) => f.debug_tuple("GoogleSheets").field(c).finish(),
            DestinationKind::Trello(c) => f.debug_tuple("Trello").field(c).finish(),
        }
    }
}

impl DestinationKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            DestinationKind::Webhook(_) => "webhook",
            DestinationKind::File(_) => "file",
            DestinationKind::GoogleSheets(_) => "google_sheets",
            DestinationKind::Trello(_) => "trello",
        }
    }

    /// One line for `hookfan check`, secrets redacted.
    pub fn summary(&self) -> String {
        match self {
            DestinationKind::Webhook(c) => c.summary(),
            DestinationKind::File(c) => c.summary(),
            DestinationKind::GoogleSheets(c) => c.summary(),
            DestinationKind::Trello(c) => c.summary(),
        }
    }
}

impl Destination {
    /// The configured `rate_limit`, else the one the destination type needs (Sheets, Trello).
    pub fn effective_rate_limit(&self) -> Option<Rate> {
        self.rate_limit.or(match &self.kind {
            DestinationKind::GoogleSheets(c) => Some(c.default_rate_limit()),
            DestinationKind::Trello(c) => Some(c.default_rate_limit()),
            DestinationKind::Webhook(_) | DestinationKind::File(_) => None,
        })
    }

    pub fn takes_source(&self, source: &str) -> bool {
        self.sources
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == source))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, substitutes `${VAR}` from the process environment, and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text, path, &|name| std::env::var(name).ok())?;
        config.check_files()?;
        Ok(config)
    }

    /// Validates a config's text without touching the file system. `file` names it in errors and
    /// anchors relative paths.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let doc = match toml::de::DeTable::parse(text) {
            Ok(doc) => doc.into_inner(),
            Err(e) => {
                let loc = Locator::new(file, text, None);
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                return Err(ConfigError::Invalid(vec![loc.at_offset(
                    offset,
                    "",
                    format!("TOML syntax error: {}", e.message().trim()),
                )]));
            }
        };
        let loc = Locator::new(file, text, Some(doc));
        let mut tree: toml::Value = match toml::from_str::<toml::Table>(text) {
            Ok(t) => toml::Value::Table(t),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                return Err(ConfigError::Invalid(vec![loc.at_offset(
                    offset,
                    "",
                    e.message().trim(),
                )]));
            }
        };
        let mut missing = Vec::new();
        env::substitute(&mut tree, &KeyPath::root(), env, &mut missing);
        if !missing.is_empty() {
            return Err(ConfigError::Invalid(
                missing
                    .into_iter()
                    .map(|m| loc.at(&m.path, m.message))
                    .collect(),
            ));
        }
        let raw: RawConfig = from_value(tree, &KeyPath::root())
            .map_err(|p| ConfigError::Invalid(vec![p.locate(&loc)]))?;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let mut v = Validator {
            loc: &loc,
            dir,
            problems: Vec::new(),
        };
        let config = v.config(raw, file);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(v.problems))
        }
    }

    /// The checks that need the file system: TLS files exist.
    fn check_files(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.server.tls else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let doc = toml::de::DeTable::parse(&text).ok().map(|d| d.into_inner());
        let loc = Locator::new(&self.file, &text, doc);
        let mut problems = Vec::new();
        for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if let Err(e) = std::fs::File::open(path) {
                problems.push(loc.at(
                    &KeyPath::root().key("server").key("tls").key(key),
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
}

/// A problem known by key path only, located later.
struct Unlocated {
    path: KeyPath,
    message: String,
}

impl Unlocated {
    fn locate(self, loc: &Locator<'_>) -> Problem {
        loc.at(&self.path, self.message)
    }
}

/// Deserializes with the key path of any error, including the key an "unknown field" names.
fn from_value<T: DeserializeOwned>(value: toml::Value, base: &KeyPath) -> Result<T, Unlocated> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = KeyPath::from_serde(base, e.path());
        let message = hide_strings(e.inner().message().trim());
        if let Some(field) = unknown_field(&message)
            && path.0.last() != Some(&locate::Seg::Key(field.clone()))
        {
            path = path.key(field);
        }
        Unlocated { path, message }
    })
}

/// serde quotes the value it refused (`invalid type: string "s3cret", expected a sequence`): a
/// secret written in the wrong shape must not be printed, so quoted strings are hidden.
fn hide_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("string (value hidden)");
        let quoted = &rest[i + "string \"".len()..];
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(j, c)| {
            let close = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            close.then_some(j + 1)
        });
        rest = end.map_or("", |j| &quoted[j..]);
    }
    out.push_str(rest);
    out
}

/// The key in serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The first field written as an unquoted dotted key (`address.city`), which TOML reads as a table.
fn dotted_field(fields: &toml::Value) -> Option<String> {
    let (key, mut value) = fields.as_table()?.iter().find(|(_, v)| v.is_table())?;
    let mut name = key.clone();
    while let Some((k, v)) = value.as_table().and_then(|t| t.iter().next()) {
        name.push('.');
        name.push_str(k);
        value = v;
    }
    Some(name)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Collects every problem while turning raw structs into a [`Config`].
struct Validator<'a> {
    loc: &'a Locator<'a>,
    dir: PathBuf,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(self.loc.at(path, message));
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    fn config(&mut self, raw: RawConfig, file: &Path) -> Config {
        let root = KeyPath::root();
        let server = self.server(raw.server, &root.key("server"));
        let storage = self.storage(raw.storage, &root.key("storage"));
        let retry = self.retry(&raw.retry, &RetryPolicy::default(), &root.key("retry"));
        let sources = self.sources(raw.sources, &root.key("sources"));
        let source_names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
        let mut destinations = Vec::new();
        for (name, table) in raw.destinations {
            let path = root.key("destinations").key(name.clone());
            if let Some(d) = self.destination(name, table, &path, &retry, &source_names) {
                destinations.push(d);
            }
        }
        Config {
            file: file.to_path_buf(),
            server,
            storage,
            retry,
            sources,
            destinations,
        }
    }

    fn server(&mut self, raw: raw::RawServer, path: &KeyPath) -> Server {
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    &path.key("listen"),
                    format!("{listen_text:?} is not an address and port, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\""),
                );
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };
        let max_body = raw.max_body.map(|s| s.0).unwrap_or(DEFAULT_MAX_BODY);
        if max_body == 0 {
            self.problem(&path.key("max_body"), "must be above zero");
        }
        let tls = raw.tls.map(|t| Tls {
            cert: self.resolve(&t.cert),
            key: self.resolve(&t.key),
        });
        Server {
            listen,
            max_body,
            tls,
        }
    }

    fn storage(&mut self, raw: raw::RawStorage, path: &KeyPath) -> Storage {
        let url = raw.url.unwrap_or_else(|| DEFAULT_STORAGE_URL.into());
        let url = if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (file, query) = match rest.split_once('?') {
                Some((f, q)) => (f, Some(q)),
                None => (rest, None),
            };
            if file.is_empty() || file == ":memory:" {
                self.problem(
                    &path.key("url"),
                    "SQLite needs a file (e.g. \"sqlite://hookfan.db\"): an in-memory database would lose accepted notifications",
                );
            }
            let resolved = self.resolve(Path::new(file));
            match query {
                Some(q) => format!("sqlite://{}?{q}", resolved.display()),
                None => format!("sqlite://{}", resolved.display()),
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Caught here rather than at `serve`, so `check` never calls valid what cannot run.
            self.problem(
                &path.key("url"),
                "PostgreSQL storage is not built yet: use \"sqlite://FILE\"",
            );
            url
        } else {
            self.problem(
                &path.key("url"),
                "must start with \"sqlite://\" (a file) or \"postgres://\"",
            );
            url
        };
        let retention = raw.retention.map(|d| d.0).unwrap_or(DEFAULT_RETENTION);
        Storage { url, retention }
    }

    fn retry(&mut self, raw: &RawRetry, inherit: &RetryPolicy, path: &KeyPath) -> RetryPolicy {
        let schedule = match &raw.schedule {
            Some(s) => {
                if s.is_empty() {
                    self.problem(
                        &path.key("schedule"),
                        "needs at least one delay, e.g. [\"10s\", \"1m\"]",
                    );
                }
                for (i, d) in s.iter().enumerate() {
                    if d.0.is_zero() {
                        self.problem(&path.key("schedule").index(i), "a delay must be above zero");
                    }
                }
                s.iter().map(|d: &HumanDuration| d.0).collect()
            }
            None => inherit.schedule.clone(),
        };
        let jitter = raw.jitter.unwrap_or(inherit.jitter);
        if !(0.0..=1.0).contains(&jitter) {
            self.problem(
                &path.key("jitter"),
                "must be between 0 and 1 (0.2 means ±20%)",
            );
        }
        RetryPolicy { schedule, jitter }
    }

    fn sources(
        &mut self,
        raw: indexmap::IndexMap<String, RawSource>,
        path: &KeyPath,
    ) -> Vec<Source> {
        let mut out: Vec<Source> = Vec::new();
        if raw.is_empty() {
            self.problem(
                path,
                "no sources: add a [sources.<name>] table for Qualifio to post to",
            );
        }
        for (name, s) in raw {
            let here = path.key(name.clone());
            if !valid_name(&name) {
                self.problem(
                    &here,
                    "a source name may use letters, digits, '_' and '-' only",
                );
            }
            let url_path = s.path.clone().unwrap_or_else(|| format!("/hooks/{name}"));
            if !url_path.starts_with('/') || url_path.len() < 2 || url_path.ends_with('/') {
                self.problem(
                    &here.key("path"),
                    "must start with '/' and not end with one, e.g. \"/hooks/qualifio\"",
                );
            } else if ["/healthz", "/readyz", "/metrics"].contains(&url_path.as_str())
                || url_path.starts_with("/admin")
            {
                self.problem(&here.key("path"), format!("{url_path} is reserved"));
            } else if let Some(other) = out.iter().find(|o| {
                // `<path>/<token>` is a route too: one path under another would be swallowed.
                o.path == url_path
                    || url_path.starts_with(&format!("{}/", o.path))
                    || o.path.starts_with(&format!("{url_path}/"))
            }) {
                self.problem(
                    &here.key("path"),
                    format!(
                        "{url_path} overlaps the path of source {:?} ({}): a path may not be another's, nor lie under it",
                        other.name, other.path
                    ),
                );
            }
            let auth = self.auth(s, &here);
            out.push(Source {
                name,
                path: url_path,
                auth,
            });
        }
        out
    }

    fn auth(&mut self, s: RawSource, here: &KeyPath) -> Auth {
        let auth = Auth {
            basic: s.basic.map(|b| (b.username, b.password)),
            token: s.token,
            header: s.header.map(|h| (h.name, h.value)),
            hmac_secrets: s.hmac_secrets.unwrap_or_default(),
        };
        let configured = auth.kinds() != ["none"];
        match s.auth.as_deref() {
            None if !configured => self.problem(
                here,
                "no authentication: Qualifio must post to an authenticated URL, so set basic, token, header or hmac_secrets (or write auth = \"none\" to accept anyone)",
            ),
            Some("none") if configured => self.problem(
                &here.key("auth"),
                "auth = \"none\" contradicts the credentials also set here: remove one or the other",
            ),
            Some(other) if other != "none" => self.problem(
                &here.key("auth"),
                format!("the only value is \"none\" (got {other:?}); other kinds are set with basic, token, header or hmac_secrets"),
            ),
            _ => {}
        }
        if let Some((user, pass)) = &auth.basic {
            if user.is_empty() || user.contains(':') {
                self.problem(
                    &here.key("basic").key("username"),
                    "must be non-empty and without ':'",
                );
            }
            if pass.is_empty() {
                self.problem(&here.key("basic").key("password"), "must not be empty");
            }
        }
        if auth
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16 || t.expose().contains('/'))
        {
            self.problem(
                &here.key("token"),
                "must be at least 16 characters without '/' (it may travel in the URL path)",
            );
        }
        if let Some((name, value)) = &auth.header {
            if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(&here.key("header").key("name"), "not a valid header name");
            }
            if value.is_empty() {
                self.problem(&here.key("header").key("value"), "must not be empty");
            }
        }
        for (i, secret) in auth.hmac_secrets.iter().enumerate() {
            if secret.is_empty() {
                self.problem(&here.key("hmac_secrets").index(i), "must not be empty");
            }
        }
        auth
    }

    fn destination(
        &mut self,
        name: String,
        table: toml::Table,
        path: &KeyPath,
        retry: &RetryPolicy,
        source_names: &[String],
    ) -> Option<Destination> {
        if !valid_name(&name) {
            self.problem(
                path,
                "a destination name may use letters, digits, '_' and '-' only",
            );
        }
        let (common, own): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        if !common.contains_key("type") {
            self.problem(
                path,
                format!("missing `type`: one of {}", DESTINATION_TYPES.join(", ")),
            );
            return None;
        }
        let dotted = common.get("fields").and_then(dotted_field);
        let common: RawCommon = match from_value(toml::Value::Table(common), path) {
            Ok(c) => c,
            Err(mut p) => {
                // `address.city = "…"` unquoted is a table in TOML, not a field with a dot.
                if let Some(name) = dotted
                    && p.path.0.get(path.0.len()) == Some(&locate::Seg::Key("fields".into()))
                    && p.message.starts_with("invalid type: map")
                {
                    p.message = format!(
                        "{}: an unquoted dotted key makes a table; to name a field with a dot, quote it: \"{name}\" = \"…\"",
                        p.message
                    );
                }
                self.problems.push(p.locate(self.loc));
                return None;
            }
        };
        let mut fields: Vec<(String, String)> =
            common.fields.unwrap_or_default().into_iter().collect();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        let (kind, issues) = match common.kind.as_str() {
            "webhook" => {
                let c: WebhookConfig = self.own_keys(own, path)?;
                let issues = c.validate(&names);
                (DestinationKind::Webhook(c), issues)
            }
            "file" => {
                let mut c: FileConfig = self.own_keys(own, path)?;
                c.path = self.resolve(&c.path);
                let issues = c.validate(&names);
                (DestinationKind::File(c), issues)
            }
            "google_sheets" => {
                let mut c: SheetsConfig = self.own_keys(own, path)?;
                c.credentials = self.resolve(&c.credentials);
                let issues = c.validate(&names);
                (DestinationKind::GoogleSheets(c), issues)
            }
            "trello" => {
                let c: TrelloConfig = self.own_keys(own, path)?;
                let mut issues = c.validate();
                if !fields.is_empty() {
                    issues.push(ConfigIssue::new(
                        "fields",
                        "a trello destination has no fields: its templates are name, desc, due and custom_fields",
                    ));
                }
                (DestinationKind::Trello(c), issues)
            }
            other => {
                let message = if DESTINATION_TYPES.contains(&other) {
                    format!("type {other:?} is not available in this build")
                } else {
                    format!(
                        "unknown type {other:?}: valid types are {}",
                        DESTINATION_TYPES.join(", ")
                    )
                };
                self.problem(&path.key("type"), message);
                return None;
            }
        };
        for ConfigIssue { path: at, message } in issues {
            let at = at.into_iter().fold(path.clone(), |p, part| match part {
                KeyPart::Key(k) => p.key(k),
                KeyPart::Index(i) => p.index(i),
            });
            self.problem(&at, message);
        }
        // Trello's templates are its own keys; they render into fields like any other.
        let own_templates = matches!(kind, DestinationKind::Trello(_));
        if let DestinationKind::Trello(c) = &kind {
            fields = c.templates();
        }
        for (field, template) in &fields {
            if let Err(e) = crate::mapping::check_template(template) {
                let at = match field.strip_prefix(trello::CUSTOM_FIELD_PREFIX) {
                    Some(id) if own_templates => path.key("custom_fields").key(id).key("value"),
                    _ if own_templates => path.key(field.clone()),
                    _ => path.key("fields").key(field.clone()),
                };
                self.problem(&at, format!("template error: {e}"));
            }
        }
        if let Some(when) = &common.when
            && let Err(e) = crate::mapping::check_expression(when)
        {
            self.problem(&path.key("when"), format!("expression error: {e}"));
        }
        if let Some(list) = &common.sources {
            for (i, s) in list.iter().enumerate() {
                if !source_names.contains(s) {
                    self.problem(
                        &path.key("sources").index(i),
                        format!(
                            "no source named {s:?} (sources: {})",
                            source_names.join(", ")
                        ),
                    );
                }
            }
        }
        let concurrency = common.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            self.problem(
                &path.key("concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        let retry = match &common.retry {
            Some(r) => self.retry(r, retry, &path.key("retry")),
            None => retry.clone(),
        };
        Some(Destination {
            name,
            kind,
            enabled: common.enabled.unwrap_or(true),
            sources: common.sources,
            when: common.when,
            fields,
            rate_limit: common.rate_limit,
            concurrency,
            retry,
        })
    }

    /// Deserializes a type's own keys; an unknown key's message lists the common keys too.
    fn own_keys<T: DeserializeOwned>(&mut self, own: toml::Table, path: &KeyPath) -> Option<T> {
        match from_value(toml::Value::Table(own), path) {
            Ok(c) => Some(c),
            Err(mut p) => {
                if p.message.starts_with("unknown field") {
                    p.message = format!(
                        "{}, or a key every destination has: {}",
                        p.message,
                        COMMON_KEYS.join(", ")
                    );
                }
                self.problems.push(p.locate(self.loc));
                None
            }
        }
    }
}
