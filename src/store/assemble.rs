//! What both backends do with what they read, and the rules they share. SQLite and PostgreSQL
//! keep the same tables, words and rules; only their SQL differs. So each backend fetches plain
//! tuples in its own SQL, and these functions turn them into the model's types, once.

use std::collections::BTreeMap;

use super::model::*;

/// The columns of a delivery as the log shows it, from `deliveries d` joined with
/// `notifications n`: [`DeliveryColumns`], in this order.
pub(super) const DELIVERY_COLUMNS: &str =
    "d.id, d.notification_id, n.participation_id, n.source, d.destination, d.status,
     d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.updated_at";

/// A row of [`DELIVERY_COLUMNS`].
pub(super) type DeliveryColumns = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    i64,
);

/// `number, started_at, duration_ms, outcome, status_code, error, response` of an attempt.
pub(super) type AttemptColumns = (
    i64,
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// `id, source, participation_id, format, received_at, body` of a notification.
pub(super) type NotificationColumns = (i64, String, String, String, i64, String);

/// `destination, status, COUNT(*), MIN(created_at), MAX(updated_at)` of the deliveries
/// grouped by destination and status.
pub(super) type StatusGroup = (String, String, i64, i64, Option<i64>);

/// `destination, updated_at, last_error` of each destination's latest failed delivery still
/// retrying or dead.
pub(super) type LatestError = (String, Option<i64>, Option<String>);

/// `destination, attempts, failed attempts` since the recent time.
pub(super) type RecentAttempts = (String, i64, i64);

/// `destination, hour, delivered, failed` of the hourly counts.
pub(super) type HourColumns = (String, i64, i64, i64);

/// `id, notification_id, attempts, retry_base, state, in_doubt_since` of a leased delivery.
pub(super) type LeaseColumns = (i64, i64, i64, i64, Option<String>, Option<i64>);

/// `participation_id, body, received_at` of a leased delivery's notification.
pub(super) type ClaimedNotification = (String, std::sync::Arc<str>, i64);

/// `notifications, deliveries, attempts` an erasure is about to remove.
pub(super) type ForgetCounts = (i64, i64, i64);

/// A stored word as its enum; an unknown one is a decoding error, not a guess.
pub(super) fn word<T: std::str::FromStr<Err = UnknownWord>>(text: &str) -> Result<T, sqlx::Error> {
    text.parse()
        .map_err(|e: UnknownWord| sqlx::Error::Decode(Box::new(e)))
}

/// A count column as u32 (attempt numbers), saturating.
pub(super) fn count(n: i64) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// A count column as u64.
pub(super) fn total(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A delivery's saved state; one that no longer parses is dropped rather than failing the claim.
pub(super) fn state_from_text(text: Option<String>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

pub(super) fn delivery_row(
    (
        id,
        notification_id,
        participation_id,
        source,
        destination,
        status,
        attempts,
        next_attempt_at,
        last_error,
        created_at,
        updated_at,
    ): DeliveryColumns,
) -> Result<DeliveryRow, sqlx::Error> {
    Ok(DeliveryRow {
        id,
        notification_id,
        participation_id,
        source,
        destination,
        status: word(&status)?,
        attempts: count(attempts),
        next_attempt_at,
        last_error,
        created_at,
        updated_at,
    })
}

pub(super) fn attempt_row(
    (number, started_at, duration_ms, outcome, status_code, error, response): AttemptColumns,
) -> Result<AttemptRow, sqlx::Error> {
    Ok(AttemptRow {
        number: count(number),
        started_at,
        duration_ms,
        outcome: word(&outcome)?,
        status_code: status_code.and_then(|c| u16::try_from(c).ok()),
        error,
        response,
    })
}

pub(super) fn notification_row(
    (id, source, participation_id, format, received_at, body): NotificationColumns,
) -> NotificationRow {
    NotificationRow {
        id,
        source,
        participation_id,
        format,
        received_at,
        body,
    }
}

/// Each destination's stats from the three reads [`crate::store::Store::stats`] makes, by
/// destination name; counts in the words' order (pending, retrying, delivered, dead,
/// cancelled), whatever order the database grouped them in.
pub(super) fn destination_stats(
    groups: Vec<StatusGroup>,
    errors: Vec<LatestError>,
    recent: Vec<RecentAttempts>,
) -> Result<Vec<DestinationStats>, sqlx::Error> {
    let mut by_name: BTreeMap<String, DestinationStats> = BTreeMap::new();
    for (name, status, n, oldest, latest) in groups {
        let status: Status = word(&status)?;
        let s = slot(&mut by_name, name);
        s.counts.push((status, total(n)));
        if status.is_waiting() {
            s.oldest_waiting_at = Some(s.oldest_waiting_at.map_or(oldest, |o| o.min(oldest)));
        }
        if status == Status::Delivered {
            s.last_delivered_at = latest;
        }
    }
    for s in by_name.values_mut() {
        s.counts.sort_by_key(|(status, _)| *status);
    }
    for (name, at, error) in errors {
        let s = slot(&mut by_name, name);
        s.last_error_at = at;
        s.last_error = error;
    }
    for (name, attempts, failed) in recent {
        let s = slot(&mut by_name, name);
        s.recent_attempts = total(attempts);
        s.recent_failures = total(failed);
    }
    Ok(by_name.into_values().collect())
}

/// The stats of `destination`, made empty the first time it is seen.
fn slot(
    map: &mut BTreeMap<String, DestinationStats>,
    destination: String,
) -> &mut DestinationStats {
    map.entry(destination.clone())
        .or_insert_with(|| DestinationStats {
            destination,
            ..DestinationStats::default()
        })
}

pub(super) fn hour_count((destination, hour, delivered, failed): HourColumns) -> HourCount {
    HourCount {
        destination,
        hour,
        delivered: total(delivered),
        failed: total(failed),
    }
}

/// The ids a replay asked for that are not in the store (`found` holds those that are), in
/// the order asked; a selection by match asks for none.
pub(super) fn missing(selection: &Selection, found: &[i64]) -> Vec<i64> {
    match selection {
        Selection::Ids(asked) => asked
            .iter()
            .filter(|id| !found.contains(id))
            .copied()
            .collect(),
        Selection::Matching { .. } => Vec::new(),
    }
}

/// The status words among `statuses` that cancel may touch: only waiting work can be
/// cancelled.
pub(super) fn cancellable(statuses: &[Status]) -> Vec<&'static str> {
    statuses
        .iter()
        .filter(|s| s.is_waiting())
        .map(|s| s.as_str())
        .collect()
}

/// The status words among `statuses` that purge may delete: waiting work is never purged,
/// whatever is asked.
pub(super) fn purgeable(statuses: &[Status]) -> Vec<&'static str> {
    statuses
        .iter()
        .filter(|s| !s.is_waiting())
        .map(|s| s.as_str())
        .collect()
}

/// A delivery of `destination` leased under `lease`, with its notification, as a lane gets it.
pub(super) fn claimed(
    (delivery_id, notification_id, attempts, retry_base, state, in_doubt_since): LeaseColumns,
    (participation_id, body, received_at): ClaimedNotification,
    destination: &str,
    lease: &str,
) -> Claimed {
    Claimed {
        delivery_id,
        notification_id,
        participation_id,
        destination: destination.to_string(),
        attempts: count(attempts),
        retry_base: count(retry_base),
        state: state_from_text(state),
        body,
        received_at,
        lease: lease.to_string(),
        in_doubt_since,
    }
}

pub(super) fn forgotten((notifications, deliveries, attempts): ForgetCounts) -> Forgotten {
    Forgotten {
        notifications: total(notifications),
        deliveries: total(deliveries),
        attempts: total(attempts),
    }
}

/// One attempt as the JSON object both backends' record statements read. `text` is applied to
/// what a destination or a mapping wrote (error, response, state): PostgreSQL refuses the NUL
/// character, SQLite keeps it.
pub(super) fn attempt_json(
    a: &AttemptLog,
    now: i64,
    text: fn(&str) -> String,
) -> serde_json::Value {
    let next_at = match a.next {
        Next::RetryAt(at) => at,
        Next::Delivered | Next::Dead => now,
    };
    serde_json::json!({
        "id": a.delivery_id,
        "lease": a.lease,
        "number": a.number,
        "started_at": a.started_at,
        "duration_ms": a.duration_ms,
        "outcome": a.next.outcome().as_str(),
        "status_code": a.status_code,
        "error": a.error.as_deref().map(text),
        "response": a.response.as_deref().map(text),
        "state": a.state.as_ref().map(|s| text(&s.to_string())),
        "status": a.next.status().as_str(),
        "next_at": next_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_in_the_words_order_whatever_the_database_grouped() {
        // SQLite groups alphabetically, PostgreSQL in any order: both read the same.
        let groups = vec![
            ("crm".to_string(), "retrying".to_string(), 2, 50, Some(60)),
            ("crm".to_string(), "delivered".to_string(), 3, 10, Some(90)),
            ("crm".to_string(), "pending".to_string(), 1, 40, Some(40)),
        ];
        let errors = vec![("crm".to_string(), Some(70), Some("503".to_string()))];
        let recent = vec![("crm".to_string(), 4, 1)];
        let stats = destination_stats(groups, errors, recent).unwrap();
        assert_eq!(
            stats,
            [DestinationStats {
                destination: "crm".into(),
                counts: vec![
                    (Status::Pending, 1),
                    (Status::Retrying, 2),
                    (Status::Delivered, 3)
                ],
                oldest_waiting_at: Some(40),
                last_delivered_at: Some(90),
                last_error_at: Some(70),
                last_error: Some("503".into()),
                recent_attempts: 4,
                recent_failures: 1,
            }]
        );
    }

    #[test]
    fn an_unknown_status_is_an_error_not_a_guess() {
        let groups = vec![("crm".to_string(), "paused".to_string(), 1, 0, None)];
        assert!(destination_stats(groups, vec![], vec![]).is_err());
    }

    #[test]
    fn missing_ids_keep_the_order_asked_and_a_match_misses_none() {
        let asked = Selection::Ids(vec![7, 3, 5]);
        assert_eq!(missing(&asked, &[5]), [7, 3]);
        let matching = Selection::Matching {
            status: None,
            destination: None,
            since: None,
        };
        assert!(missing(&matching, &[]).is_empty());
    }

    #[test]
    fn cancel_touches_waiting_work_and_purge_never_does() {
        assert_eq!(cancellable(Status::ALL), ["pending", "retrying"]);
        assert_eq!(purgeable(Status::ALL), ["delivered", "dead", "cancelled"]);
    }
}
