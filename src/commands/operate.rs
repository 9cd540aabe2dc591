//! What operators do to the delivery log: replay, cancel, forget, purge. Each returns what it
//! did and a line for people.

use crate::store::{Forgotten, Replayed, Status, Store, StoreError};

fn deliveries(n: u64) -> String {
    format!("{n} deliver{}", if n == 1 { "y" } else { "ies" })
}

/// `replayed 3 deliveries`, with what was left alone and why.
pub fn replayed_text(r: &Replayed) -> String {
    let mut out = format!("replayed {}\n", deliveries(r.replayed));
    if r.skipped_delivered > 0 {
        out.push_str(&format!(
            "left {} alone: delivered already (replay them with --force)\n",
            deliveries(r.skipped_delivered)
        ));
    }
    out
}

/// `no delivery 41, 42`, when some asked for were not found.
pub fn missing_text(r: &Replayed) -> Option<String> {
    (!r.missing.is_empty()).then(|| {
        let ids: Vec<String> = r.missing.iter().map(ToString::to_string).collect();
        format!(
            "no deliver{} {}",
            if ids.len() == 1 { "y" } else { "ies" },
            ids.join(", ")
        )
    })
}

/// Cancels `destination`'s waiting deliveries in `statuses` (both when empty).
pub async fn cancel(
    store: &dyn Store,
    destination: &str,
    statuses: &[Status],
) -> Result<u64, StoreError> {
    let statuses = if statuses.is_empty() {
        &[Status::Pending, Status::Retrying][..]
    } else {
        statuses
    };
    store.cancel(destination, statuses).await
}

pub fn cancelled_text(n: u64, destination: &str) -> String {
    format!(
        "cancelled {} to {destination} (kept in the delivery log as cancelled)\n",
        deliveries(n)
    )
}

pub fn forgotten_text(f: &Forgotten, participation: &str) -> String {
    format!(
        "erased participation {participation}: {} notification{}, {}, {} attempt{} (anonymous hourly counts kept)\n",
        f.notifications,
        if f.notifications == 1 { "" } else { "s" },
        deliveries(f.deliveries),
        f.attempts,
        if f.attempts == 1 { "" } else { "s" },
    )
}

pub fn purged_text(n: u64) -> String {
    format!("purged {}\n", deliveries(n))
}

/// `copied 3 notifications, 5 deliveries (4 delivered, 1 dead), 6 attempts and 2 hourly counts
/// from FILE to URL`.
pub fn copied_text(c: &crate::store::migrate::Copied, from: &str, to: &str) -> String {
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let statuses: Vec<String> = c
        .by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    format!(
        "copied {}, {}{}, {} and {}\nfrom {from}\nto {to}\n",
        plural(c.notifications, "notification", "notifications"),
        deliveries(c.deliveries),
        if statuses.is_empty() {
            String::new()
        } else {
            format!(" ({})", statuses.join(", "))
        },
        plural(c.attempts, "attempt", "attempts"),
        plural(c.hourly_counts, "hourly count", "hourly counts"),
    )
}
