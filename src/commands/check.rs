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
            "type": d.kind.type_name(),
            "enabled": d.enabled,
            "sources": d.sources,
            "fields": d.fields.len(),
            "when": d.when,
            "rate_limit": d.rate_limit.map(|r| r.to_string()),
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
            d.kind.type_name(),
            if d.enabled { "" } else { " (disabled)" },
            d.fields.len(),
            if d.fields.len() == 1 { "" } else { "s" },
            d.when
                .as_deref()
                .map(|w| format!("`{w}`"))
                .unwrap_or_else(|| "always".into()),
            d.rate_limit
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none".into()),
            "",
            d.kind.summary(),
        ));
    }
    out
}
