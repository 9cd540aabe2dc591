//! Prometheus metrics, served at the admin listener's `/metrics`. Counters and the duration
//! histogram move as notifications and attempts happen; the queue gauges are read from the
//! store at each scrape, so they hold across restarts and instances.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::commands::log::StatsItem;
use crate::store::AttemptOutcome;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceResult {
    source: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationOutcome {
    destination: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationStatus {
    destination: String,
    status: &'static str,
}

/// What ingress did with a request, as `hookfan_notifications_total{result}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Accepted,
    Duplicate,
    Unauthorized,
    /// Not JSON, not an object, no `id`, a content type that is not JSON.
    Invalid,
    TooLarge,
    /// The headers or the body came too slowly.
    Timeout,
    /// The store could not commit, or hookfan was stopping: 503.
    Unavailable,
}

impl Received {
    /// What an answer's status says happened.
    pub fn from_status(status: u16) -> Received {
        match status {
            202 => Received::Accepted,
            200 => Received::Duplicate,
            401 => Received::Unauthorized,
            408 => Received::Timeout,
            413 => Received::TooLarge,
            500..=599 => Received::Unavailable,
            _ => Received::Invalid,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Received::Accepted => "accepted",
            Received::Duplicate => "duplicate",
            Received::Unauthorized => "unauthorized",
            Received::Invalid => "invalid",
            Received::TooLarge => "too_large",
            Received::Timeout => "timeout",
            Received::Unavailable => "unavailable",
        }
    }
}

type DurationFamily = Family<DestinationLabel, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    notifications: Family<SourceResult, Counter>,
    deliveries: Family<DestinationOutcome, Counter>,
    duration: DurationFamily,
    queue_depth: Family<DestinationStatus, Gauge>,
    oldest_pending: Family<DestinationLabel, Gauge>,
    healthy: Family<DestinationLabel, Gauge>,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let notifications = Family::<SourceResult, Counter>::default();
        registry.register(
            "hookfan_notifications",
            "Notifications received, by source and what became of them",
            notifications.clone(),
        );
        let deliveries = Family::<DestinationOutcome, Counter>::default();
        registry.register(
            "hookfan_deliveries",
            "Delivery attempts, by destination and outcome (delivered, retry, dead)",
            deliveries.clone(),
        );
        let duration: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "hookfan_delivery_duration_seconds",
            "How long delivery attempts took, by destination",
            duration.clone(),
        );
        let queue_depth = Family::<DestinationStatus, Gauge>::default();
        registry.register(
            "hookfan_queue_depth",
            "Deliveries in the store, by destination and status",
            queue_depth.clone(),
        );
        let oldest_pending = Family::<DestinationLabel, Gauge>::default();
        registry.register(
            "hookfan_oldest_pending_seconds",
            "Age of the oldest delivery still waiting (pending or retrying), by destination",
            oldest_pending.clone(),
        );
        let healthy = Family::<DestinationLabel, Gauge>::default();
        registry.register(
            "hookfan_destination_healthy",
            "1 unless every attempt of the last 15 minutes failed",
            healthy.clone(),
        );
        Metrics {
            registry,
            notifications,
            deliveries,
            duration,
            queue_depth,
            oldest_pending,
            healthy,
        }
    }

    pub fn received(&self, source: &str, what: Received) {
        self.notifications
            .get_or_create(&SourceResult {
                source: source.to_string(),
                result: what.as_str(),
            })
            .inc();
    }

    pub fn attempt(&self, destination: &str, outcome: AttemptOutcome, took: Duration) {
        self.deliveries
            .get_or_create(&DestinationOutcome {
                destination: destination.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.duration
            .get_or_create(&DestinationLabel {
                destination: destination.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges set from `stats` (read from the store now).
    pub fn encode(&self, stats: &[StatsItem]) -> String {
        self.queue_depth.clear();
        self.oldest_pending.clear();
        self.healthy.clear();
        for s in stats {
            let destination = || DestinationLabel {
                destination: s.destination.clone(),
            };
            for (status, n) in &s.counts {
                self.queue_depth
                    .get_or_create(&DestinationStatus {
                        destination: s.destination.clone(),
                        status: status.as_str(),
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            self.oldest_pending
                .get_or_create(&destination())
                .set(i64::try_from(s.oldest_pending_s.unwrap_or(0)).unwrap_or(i64::MAX));
            self.healthy
                .get_or_create(&destination())
                .set(i64::from(s.healthy()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
