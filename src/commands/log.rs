//! The delivery log as operators read it (`hookfan deliveries`, `hookfan stats`, the admin API
//! and page): the same data, as JSON-ready structs and as text.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::preview::{self, DestinationPreview};
use crate::config::Config;
use crate::payload::iso_utc;
use crate::store::{DeliveryRow, Filter, Status, Store, StoreError, now_ms};

/// A destination is `failing` when every attempt in this window failed.
pub const HEALTH_WINDOW: Duration = Duration::from_secs(15 * 60);

/// One delivery as the list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListItem {
    /// The delivery id.
    pub id: i64,
    pub participation: String,
    pub destination: String,
    pub status: Status,
    pub attempts: u32,
    /// When it is tried next (waiting deliveries only), ISO 8601 UTC.
    pub next_attempt: Option<String>,
    /// The last attempt's error, on one line.
    pub last_error: Option<String>,
    pub created: String,
    pub source: String,
    pub notification: i64,
}

impl ListItem {
    pub fn from_row(row: &DeliveryRow) -> ListItem {
        ListItem {
            id: row.id,
            participation: row.participation_id.clone(),
            destination: row.destination.clone(),
            status: row.status,
            attempts: row.attempts,
            next_attempt: row
                .status
                .is_waiting()
                .then(|| iso_utc(row.next_attempt_at)),
            last_error: row.last_error.as_deref().map(one_line),
            created: iso_utc(row.created_at),
            source: row.source.clone(),
            notification: row.notification_id,
        }
    }
}

/// The first line of a message, cut to 120 characters.
pub fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(120).collect();
    if out.len() < line.len() || text.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

pub async fn list(store: &dyn Store, filter: &Filter) -> Result<Vec<ListItem>, StoreError> {
    Ok(store
        .list(filter)
        .await?
        .iter()
        .map(ListItem::from_row)
        .collect())
}

/// The list as a table, newest first.
pub fn list_text(items: &[ListItem]) -> String {
    if items.is_empty() {
        return "no deliveries\n".into();
    }
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                i.participation.clone(),
                i.destination.clone(),
                i.status.to_string(),
                i.attempts.to_string(),
                i.next_attempt.clone().unwrap_or_else(|| "-".into()),
                i.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        [
            "ID",
            "PARTICIPATION",
            "DESTINATION",
            "STATUS",
            "ATTEMPTS",
            "NEXT ATTEMPT",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// Columns padded to their widest cell; the last one is left as it is.
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = head.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One attempt as the detail shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptItem {
    pub number: u32,
    pub started: String,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub outcome: crate::store::AttemptOutcome,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// The notification behind a delivery, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationSummary {
    pub id: i64,
    pub source: String,
    pub participation: String,
    pub format: String,
    pub received: String,
    pub campaign: Option<String>,
    pub state: Option<String>,
}

/// One delivery in full: what was received, what would be sent now, and every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub delivery: ListItem,
    /// The last error in full.
    pub last_error: Option<String>,
    pub notification: Option<NotificationSummary>,
    /// The mapped record and request with today's config; `None` with a reason in `note`.
    pub record: Option<DestinationPreview>,
    pub note: Option<String>,
    pub attempts: Vec<AttemptItem>,
}

pub async fn show(
    config: &Config,
    store: &dyn Store,
    delivery_id: i64,
) -> Result<Option<Detail>, StoreError> {
    let Some((row, attempts)) = store.show(delivery_id).await? else {
        return Ok(None);
    };
    let notification = store.notification(row.notification_id).await?;
    let (record, note) = match &notification {
        None => (
            None,
            Some("the notification is no longer stored".to_string()),
        ),
        Some(n) => {
            match preview::for_delivery(config, &n.body, &row.destination, n.received_at, row.id) {
                Ok(Some(p)) => (Some(p), None),
                Ok(None) => (
                    None,
                    Some(format!(
                        "destination {:?} is not in the config any more",
                        row.destination
                    )),
                ),
                Err(e) => (None, Some(e.to_string())),
            }
        }
    };
    let summary = notification.map(|n| {
        let doc: serde_json::Value = serde_json::from_str(&n.body).unwrap_or_default();
        let view = crate::payload::context(&doc, &iso_utc(n.received_at));
        let text = |key: &str| {
            view["participation"][key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        NotificationSummary {
            id: n.id,
            source: n.source,
            participation: n.participation_id,
            format: n.format,
            received: iso_utc(n.received_at),
            campaign: text("campaign_name"),
            state: text("state"),
        }
    });
    Ok(Some(Detail {
        delivery: ListItem::from_row(&row),
        last_error: row.last_error.clone(),
        notification: summary,
        record,
        note,
        attempts: attempts
            .into_iter()
            .map(|a| AttemptItem {
                number: a.number,
                started: iso_utc(a.started_at),
                duration_ms: a.duration_ms,
                status_code: a.status_code,
                outcome: a.outcome,
                error: a.error,
                response: a.response,
            })
            .collect(),
    }))
}

pub fn show_text(d: &Detail) -> String {
    let i = &d.delivery;
    let mut out = format!(
        "delivery {} to {}: {} after {} attempt{}\n",
        i.id,
        i.destination,
        i.status,
        i.attempts,
        if i.attempts == 1 { "" } else { "s" }
    );
    if let Some(next) = &i.next_attempt {
        out.push_str(&format!("  next attempt {next}\n"));
    }
    if let Some(e) = &d.last_error {
        out.push_str(&format!("  last error: {e}\n"));
    }
    out.push_str("\nnotification:\n");
    match &d.notification {
        Some(n) => {
            out.push_str(&format!(
                "  {} from source {}, received {}, format {}\n",
                n.participation, n.source, n.received, n.format
            ));
            if let Some(c) = &n.campaign {
                out.push_str(&format!("  campaign {c}\n"));
            }
            if let Some(s) = &n.state {
                out.push_str(&format!("  state {s}\n"));
            }
        }
        None => out.push_str("  (no longer stored)\n"),
    }
    out.push_str("\nwould be sent now:\n");
    match (&d.record, &d.note) {
        (Some(p), _) => {
            for line in preview::to_text(std::slice::from_ref(p)).lines().skip(1) {
                if !line.is_empty() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        (None, Some(note)) => out.push_str(&format!("  {note}\n")),
        (None, None) => {}
    }
    out.push_str("\nattempts:\n");
    if d.attempts.is_empty() {
        out.push_str("  (none yet)\n");
    }
    for a in &d.attempts {
        out.push_str(&format!(
            "  #{} {} {} ms, {}: {}\n",
            a.number,
            a.started,
            a.duration_ms,
            a.status_code
                .map_or("no answer".to_string(), |c| format!("HTTP {c}")),
            a.outcome
        ));
        if let Some(e) = &a.error {
            out.push_str(&format!("     error: {e}\n"));
        }
        if let Some(r) = &a.response {
            out.push_str(&format!("     answer: {}\n", one_line(r)));
        }
    }
    out
}

/// One destination's state, for `hookfan stats`, the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsItem {
    pub destination: String,
    /// Whether the config still names it.
    pub configured: bool,
    /// Deliveries in each status, every status listed.
    pub counts: BTreeMap<Status, u64>,
    /// How long the oldest waiting delivery has waited since it was accepted, in seconds.
    pub oldest_pending_s: Option<u64>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Attempts in the last [`HEALTH_WINDOW`], and how many failed.
    pub recent_attempts: u64,
    pub recent_failures: u64,
    /// `ok`, or `failing` when every attempt in the last 15 minutes failed.
    pub health: &'static str,
}

impl StatsItem {
    pub fn healthy(&self) -> bool {
        self.health == "ok"
    }
}

/// Every configured destination, and every other one that still holds work.
pub async fn stats(config: &Config, store: &dyn Store) -> Result<Vec<StatsItem>, StoreError> {
    let now = now_ms();
    let window = i64::try_from(HEALTH_WINDOW.as_millis()).unwrap_or(i64::MAX);
    let mut found: BTreeMap<String, crate::store::DestinationStats> = store
        .stats(now - window)
        .await?
        .into_iter()
        .map(|s| (s.destination.clone(), s))
        .collect();
    let mut out = Vec::new();
    let configured: Vec<String> = config.destinations.iter().map(|d| d.name.clone()).collect();
    let others: Vec<String> = found
        .keys()
        .filter(|k| !configured.contains(k))
        .cloned()
        .collect();
    for name in configured.iter().chain(&others) {
        let s = found.remove(name).unwrap_or_default();
        let mut counts: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        counts.extend(s.counts.iter().copied());
        let failing = s.recent_attempts > 0 && s.recent_failures == s.recent_attempts;
        out.push(StatsItem {
            destination: name.clone(),
            configured: configured.contains(name),
            counts,
            oldest_pending_s: s
                .oldest_waiting_at
                .map(|t| u64::try_from((now - t) / 1000).unwrap_or(0)),
            last_success: s.last_delivered_at.map(iso_utc),
            last_error: s.last_error.as_deref().map(one_line),
            last_error_at: s.last_error_at.map(iso_utc),
            recent_attempts: s.recent_attempts,
            recent_failures: s.recent_failures,
            health: if failing { "failing" } else { "ok" },
        });
    }
    Ok(out)
}

pub fn stats_text(items: &[StatsItem]) -> String {
    if items.is_empty() {
        return "no destinations\n".into();
    }
    let mut out = String::new();
    for s in items {
        out.push_str(&format!(
            "{}{}: {}\n",
            s.destination,
            if s.configured {
                ""
            } else {
                " (not in the config)"
            },
            s.health
        ));
        let counts: Vec<String> = s.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  {}\n", counts.join(", ")));
        if let Some(age) = s.oldest_pending_s {
            out.push_str(&format!("  oldest waiting: {}\n", age_text(age)));
        }
        out.push_str(&format!(
            "  last success: {}\n",
            s.last_success.as_deref().unwrap_or("never")
        ));
        if let (Some(e), Some(at)) = (&s.last_error, &s.last_error_at) {
            out.push_str(&format!("  last error: {at} {e}\n"));
        }
        out.push_str(&format!(
            "  last 15 minutes: {} attempt{}, {} failed\n",
            s.recent_attempts,
            if s.recent_attempts == 1 { "" } else { "s" },
            s.recent_failures
        ));
    }
    out
}

/// `3h 12m`, `45s`.
pub fn age_text(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fit_on_one_line() {
        assert_eq!(one_line("HTTP 500"), "HTTP 500");
        assert_eq!(one_line("first\nsecond"), "first…");
        assert_eq!(one_line(&"x".repeat(200)).chars().count(), 121);
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age_text(45), "45s");
        assert_eq!(age_text(125), "2m 5s");
        assert_eq!(age_text(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(age_text(2 * 86400 + 3600), "2d 1h");
    }
}
