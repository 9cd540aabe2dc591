//! Raw structs → [`Config`]: defaults, checks and every problem found, each at its key. Pure:
//! nothing here reads a file or the network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hookfan_connectors::units::HumanDuration;
use hookfan_connectors::{ConfigIssue, DestinationConfig, KeyPart, KeyPath};

use super::ConfigError;
use super::load::{from_value, unlocated};
use super::locate::{Locator, Problem};
use super::raw::{self, COMMON_KEYS, RawCommon, RawConfig, RawRetry, RawSource};
use super::types::*;
use crate::destinations::{self, TypeEntry};

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

/// What tells two versions of a destination apart across a reload: its table as written (after
/// `${VAR}` substitution, so a changed secret counts) and the retry policy it inherits.
fn fingerprint(table: &toml::Table, retry: &RetryPolicy) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(toml::to_string(table).unwrap_or_default());
    hash.update(format!("{retry:?}"));
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Collects every problem while turning raw structs into a [`Config`].
pub(super) struct Validator<'a> {
    loc: &'a Locator<'a>,
    /// The config file's folder, absolute: relative paths are resolved against it.
    dir: PathBuf,
    problems: Vec<Problem>,
}

impl<'a> Validator<'a> {
    pub fn new(loc: &'a Locator<'a>, dir: PathBuf) -> Self {
        Validator {
            loc,
            dir,
            problems: Vec::new(),
        }
    }

    /// The config, or every problem found.
    pub fn config(mut self, raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
        let config = self.build(raw, file);
        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }

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

    fn build(&mut self, raw: RawConfig, file: &Path) -> Config {
        let root = KeyPath::root();
        let server = self.server(raw.server, &root.key("server"));
        let storage = self.storage(raw.storage, &root.key("storage"));
        let retry = self.retry(&raw.retry, &RetryPolicy::default(), &root.key("retry"));
        let admin = raw.admin.map(|a| self.admin(a, &root.key("admin")));
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
            admin,
            sources,
            destinations,
        }
    }

    fn admin(&mut self, raw: raw::RawAdmin, path: &KeyPath) -> Admin {
        let listen = self.address(
            raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
            &path.key("listen"),
            DEFAULT_ADMIN_LISTEN,
        );
        if raw.token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            self.problem(
                &path.key("token"),
                "must be at least 16 characters (`hookfan gen-secret` prints one)",
            );
        }
        if raw.token.is_none() && !listen.ip().is_loopback() {
            self.problem(
                &path.key("token"),
                format!(
                    "the admin listener on {listen} is reachable from other machines: set a token (or listen on 127.0.0.1)"
                ),
            );
        }
        Admin {
            listen,
            token: raw.token,
        }
    }

    /// An `IP:port` address, or a problem naming an example.
    fn address(&mut self, text: &str, path: &KeyPath, example: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.problem(
                path,
                format!(
                    "{text:?} is not an address and port, e.g. \"{example}\" or \"0.0.0.0:{}\"",
                    example.rsplit(':').next().unwrap_or_default()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn server(&mut self, raw: raw::RawServer, path: &KeyPath) -> Server {
        let listen = self.address(
            raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            &path.key("listen"),
            DEFAULT_LISTEN,
        );
        let max_body = raw.max_body.map(|s| s.0).unwrap_or(DEFAULT_MAX_BODY);
        if max_body == 0 {
            self.problem(&path.key("max_body"), "must be above zero");
        }
        let read_timeout = raw
            .read_timeout
            .map(|d| d.0)
            .unwrap_or(DEFAULT_READ_TIMEOUT);
        if read_timeout.is_zero() {
            self.problem(&path.key("read_timeout"), "must be above zero");
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=1_000_000).contains(&max_connections) {
            self.problem(
                &path.key("max_connections"),
                "must be between 1 and 1000000",
            );
        }
        let tls = raw.tls.map(|t| Tls {
            cert: self.resolve(&t.cert),
            key: self.resolve(&t.key),
        });
        Server {
            listen,
            max_body,
            read_timeout,
            max_connections,
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
            // Read as the store will read it, so `check` never calls valid what cannot connect;
            // the message never repeats the URL, which may hold a password.
            if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                let why = match e {
                    sqlx::Error::Configuration(e) => e.to_string(),
                    _ => "not a PostgreSQL URL".into(),
                };
                self.problem(
                    &path.key("url"),
                    format!("not a valid PostgreSQL URL ({why}): e.g. \"postgres://hookfan:${{PGPASSWORD}}@db.internal/hookfan\""),
                );
            }
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
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
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
        let fingerprint = fingerprint(&table, retry);
        let (common, own): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        if !common.contains_key("type") {
            self.problem(
                path,
                format!("missing `type`: one of {}", destinations::names()),
            );
            return None;
        }
        let dotted = common.get("fields").and_then(dotted_field);
        let common: RawCommon = match from_value(toml::Value::Table(common), path) {
            Ok(c) => c,
            Err(mut p) => {
                // `address.city = "…"` unquoted is a table in TOML, not a field with a dot.
                if let Some(name) = dotted
                    && p.path.parts().get(path.parts().len())
                        == Some(&KeyPart::Key("fields".into()))
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
        let Some(entry) = destinations::find(&common.kind) else {
            self.problem(
                &path.key("type"),
                format!(
                    "unknown type {:?}: valid types are {}",
                    common.kind,
                    destinations::names()
                ),
            );
            return None;
        };
        let mut kind = self.own_keys(entry, own, path)?;
        kind.resolve_paths(&|p| self.resolve(p));
        let table_fields: Vec<(String, String)> =
            common.fields.unwrap_or_default().into_iter().collect();
        for ConfigIssue { path: at, message } in kind.validate(&table_fields) {
            self.problem(&path.join(&at), message);
        }
        let templates = kind.templates(&table_fields);
        for t in &templates {
            if let Err(e) = crate::mapping::check_template(&t.source) {
                self.problem(&path.join(&t.at), format!("template error: {e}"));
            }
        }
        let fields = templates.into_iter().map(|t| (t.field, t.source)).collect();
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
            fingerprint,
            type_name: entry.name,
            kind: kind.into(),
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
    fn own_keys(
        &mut self,
        entry: &TypeEntry,
        own: toml::Table,
        path: &KeyPath,
    ) -> Option<Box<dyn DestinationConfig>> {
        match (entry.parse)(toml::Value::Table(own)) {
            Ok(c) => Some(c),
            Err(e) => {
                let mut p = unlocated(path, &e);
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
