//! `hookfan check`: the config is valid, and what it sets up.

use serde_json::json;

use crate::config::Config;

/// The summary as JSON: sources with their paths and auth kinds, destinations with their type,
/// field count, `when` and rate limit. Secrets never appear.
pub fn summary_json(config: &Config) -> serde_json::Value {
    json!({
        "valid": true,
        "file": config.file.display().to_string(),
        "listen": config.server.listen.to_string(),
        "storage": config.storage.redacted_url(),
        "sources": config.sources.iter().map(|s| json!({
            "name": s.name,
            "path": s.path,
            "auth": s.auth.kinds(),
        })).collect::<Vec<_>>(),
        "destinations": config.destinations.iter().map(|d| json!({
            "name": d.name,
            "type": d.type_name,
            "enabled": d.enabled,
            "sources": d.sources,
            "fields": d.fields.len(),
            "when": d.when,
            "rate_limit": d.effective_rate_limit().map(|r| r.to_string()),
            "concurrency": d.concurrency,
            "target": d.kind.summary(),
        })).collect::<Vec<_>>(),
    })
}

/// The summary for people.
pub fn summary_text(config: &Config) -> String {
    let mut out = format!("{}: valid\n", config.file.display());
    out.push_str(&format!(
        "listen {}, storage {}\n\nsources:\n",
        config.server.listen,
        config.storage.redacted_url()
    ));
    for s in &config.sources {
        out.push_str(&format!(
            "  {:<16} POST {}  auth: {}\n",
            s.name,
            s.path,
            s.auth.kinds().join(", ")
        ));
    }
    out.push_str("\ndestinations:\n");
    if config.destinations.is_empty() {
        out.push_str("  (none)\n");
    }
    for d in &config.destinations {
        out.push_str(&format!(
            "  {:<16} {:<14}{} {} field{}, when: {}, rate limit: {}\n  {:<16} → {}\n",
            d.name,
            d.type_name,
            if d.enabled { "" } else { " (disabled)" },
            d.fields.len(),
            if d.fields.len() == 1 { "" } else { "s" },
            d.when
                .as_deref()
                .map(|w| format!("`{w}`"))
                .unwrap_or_else(|| "always".into()),
            rate_text(d),
            "",
            d.kind.summary(),
        ));
    }
    out
}

/// A destination no longer in the config whose deliveries still wait.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stranded {
    pub destination: String,
    pub pending: u64,
}

/// Reads the store the config names, when it exists (a new setup has none yet), for work left
/// by destinations removed from the config.
pub async fn stranded(config: &Config) -> Result<Vec<Stranded>, String> {
    if crate::store::sqlite_file(&config.storage.url).is_some_and(|f| !f.exists()) {
        return Ok(Vec::new());
    }
    // As it is: a check may run beside a relay of another version (systemd's reload runs it
    // before the signal), and must not upgrade the database under it.
    let store = crate::store::open_existing(&config.storage.url)
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?;
    let pending = store
        .pending_by_destination()
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?;
    Ok(config
        .stranded(pending)
        .into_iter()
        .map(|(destination, pending)| Stranded {
            destination,
            pending,
        })
        .collect())
}

pub fn stranded_text(stranded: &[Stranded]) -> String {
    if stranded.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nstranded work (destinations no longer in this file):\n");
    for s in stranded {
        out.push_str(&format!(
            "  {:<16} {} pending deliver{}: they wait until the destination is added back\n",
            s.destination,
            s.pending,
            if s.pending == 1 { "y" } else { "ies" }
        ));
    }
    out
}

/// What `check --online` found for one destination.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reached {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// How long one destination's online check may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Proves each enabled destination (or only `only`, even if disabled) works, with the harmless
/// real call its connector makes.
pub async fn online(config: &Config, only: Option<&str>) -> Result<Vec<Reached>, String> {
    if let Some(name) = only
        && config.destination(name).is_none()
    {
        return Err(format!("no destination named {name:?}"));
    }
    let client = hookfan_connectors::http::client().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in &config.destinations {
        let wanted = match only {
            Some(name) => d.name == name,
            None => d.enabled,
        };
        if !wanted {
            continue;
        }
        let result = match d.connector(&client) {
            Ok(c) => match tokio::time::timeout(CHECK_TIMEOUT, c.check()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
            },
            Err(e) => Err(e.to_string()),
        };
        out.push(match result {
            Ok(detail) => Reached {
                name: d.name.clone(),
                ok: true,
                detail,
            },
            Err(detail) => Reached {
                name: d.name.clone(),
                ok: false,
                detail,
            },
        });
    }
    Ok(out)
}

pub fn online_text(results: &[Reached]) -> String {
    let mut out = String::from("\nonline checks:\n");
    if results.is_empty() {
        out.push_str("  (no enabled destination)\n");
    }
    for r in results {
        let mut lines = r.detail.lines();
        let first = lines.next().unwrap_or_default();
        out.push_str(&format!(
            "  {:<16} {} {first}\n",
            r.name,
            if r.ok { "ok:" } else { "FAILED:" }
        ));
        for line in lines {
            out.push_str(&format!("  {:<16} {line}\n", ""));
        }
    }
    out
}

/// The rate limit that applies, saying when it is the type's default.
fn rate_text(d: &crate::config::Destination) -> String {
    match (d.rate_limit, d.effective_rate_limit()) {
        (Some(r), _) => r.to_string(),
        (None, Some(r)) => format!("{r} (default)"),
        (None, None) => "none".into(),
    }
}
