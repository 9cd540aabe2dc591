//! One attempt: map the claimed batch, hand it to the connector, decide what comes next for
//! each delivery, log it and record it.

use std::time::Duration;

use hookfan_connectors::pace::Prepaid;
use hookfan_connectors::{Attempt, Call, Outcome, Pace, Record};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::lane::Lane;
use super::{Worker, retry};
use crate::mapping;
use crate::store::{AttemptLog, Claimed, now_ms};

/// A count of attempts between their start and their record, and a signal when none is left.
#[derive(Default)]
pub(super) struct Recording {
    count: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// One attempt being counted; dropping it uncounts it.
struct Recorded<'a>(&'a Recording);

impl Recording {
    fn start(&self) -> Recorded<'_> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Recorded(self)
    }

    pub(super) async fn until_idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.0.idle.notify_waiters();
        }
    }
}

impl Worker {
    /// Maps, delivers and records one claimed batch, in one `attempt` span: every event the
    /// connector and the rate gate log carries the destination, and for a single delivery its
    /// id, participation and attempt number (a batch carries its size).
    pub(super) async fn attempt(
        &self,
        lane: &Lane,
        batch: Vec<Claimed>,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        let span = tracing::info_span!(
            "attempt",
            destination = %lane.destination.name,
            delivery_id = Empty,
            participation_id = Empty,
            attempt = Empty,
            batch = batch.len(),
        );
        if let [one] = batch.as_slice() {
            span.record("delivery_id", one.delivery_id);
            span.record("participation_id", one.participation_id.as_str());
            span.record("attempt", one.attempts + 1);
        }
        self.attempt_in_span(lane, batch, call, permit)
            .instrument(span)
            .await;
    }

    async fn attempt_in_span(
        &self,
        lane: &Lane,
        batch: Vec<Claimed>,
        call: Call,
        permit: OwnedSemaphorePermit,
    ) {
        // Counted until recorded: the drain waits for records as for attempts.
        let _recording = self.recording.start();
        let destination = &lane.destination;
        let started_at = now_ms();
        let clock = Instant::now();
        let mut logs = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len());
        let mut sent = Vec::with_capacity(batch.len());
        for c in batch {
            match Self::map(lane, &c) {
                Ok(record) => {
                    records.push(record);
                    sent.push(c);
                }
                // A mapping that cannot render will not render next time either.
                Err((detail, summary)) => {
                    let attempt = Attempt::new(Outcome::failed(detail));
                    logs.push(self.finish(lane, &c, attempt, Some(summary), started_at, 0));
                }
            }
        }
        let mut unsent = Vec::new();
        if !records.is_empty() {
            let pace = Prepaid::new(call, lane.gate.as_ref());
            let mut results = self.deliver(lane, &records, &pace).await;
            drop(pace);
            let elapsed = clock.elapsed();
            lane.note_attempt(elapsed);
            let duration_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
            // A connector must answer once per record; a missing answer is a retry, not a loss.
            results.resize_with(records.len(), || {
                Attempt::new(Outcome::retry(
                    "the connector gave no outcome for this record",
                ))
            });
            let throttled = results.iter().any(|a| a.status == Some(429));
            lane.gate.throttled(throttled).await;
            for (c, attempt) in sent.iter().zip(results) {
                if attempt.outcome == Outcome::Unsent {
                    unsent.push((c.delivery_id, c.lease.clone()));
                    continue;
                }
                // Only our own words about a request that got no answer (time-outs, refused
                // connections) go to the log: a destination's message, or a value that failed
                // to convert, may quote participant data. The delivery log keeps the whole reason.
                let logged = match (&attempt.outcome, attempt.status) {
                    (Outcome::Retry { reason, .. }, None) => Some(reason.clone()),
                    _ => None,
                };
                logs.push(self.finish(lane, c, attempt, logged, started_at, duration_ms));
            }
        } else {
            // Nothing could be mapped: the call taken for it was never made.
            call.unused();
        }
        // The destination is done with: the slot is free for the next delivery while this one
        // is recorded (its lease keeps it from being claimed again meanwhile), unless too many
        // attempts already wait for their records.
        let unrecorded = lane.unrecorded.acquire().await.ok();
        drop(permit);
        lane.wake.notify_one();
        if let Err(e) = self.store.record(logs).await {
            // The leases expire and the deliveries are tried again: at least once, never lost.
            tracing::error!(destination = %destination.name, error = %e, "cannot record attempts");
        }
        drop(unrecorded);
        // The record may have made a retry due soon: the lane looks again.
        lane.wake.notify_one();
        if !unsent.is_empty() {
            tracing::debug!(
                destination = %destination.name,
                unsent = unsent.len(),
                "part of the batch was not sent; it stays due"
            );
            if let Err(e) = self.store.unclaim(unsent).await {
                tracing::error!(destination = %destination.name, error = %e, "cannot give back unsent deliveries; their leases expire");
            }
        }
    }

    /// The connector's outcomes for `records`. A connector whose work stops when dropped is
    /// given up on after its time-out (the lease was sized from that bound; the slack lets the
    /// connector's own, more precise time-out speak first). One whose work would go on (a
    /// blocking file write) is waited for, so no attempt is recorded while it may still land.
    async fn deliver(&self, lane: &Lane, records: &[Record], pace: &dyn Pace) -> Vec<Attempt> {
        let deliver = lane.connector.deliver(records, pace);
        if !lane.connector.stops_when_dropped() {
            return deliver.await;
        }
        let limit = lane.connector.timeout() + Duration::from_secs(5);
        match tokio::time::timeout(limit, deliver).await {
            Ok(results) => results,
            Err(_) => vec![
                Attempt::new(Outcome::retry(format!(
                    "timed out: no outcome within {}s",
                    limit.as_secs()
                )));
                records.len()
            ],
        }
    }

    /// The record for one claimed delivery; on failure, the whole reason (for the delivery log)
    /// and one without any value (for the log).
    fn map(lane: &Lane, c: &Claimed) -> Result<Record, (String, String)> {
        let destination = &lane.destination;
        let doc: serde_json::Value = serde_json::from_str(&c.body).map_err(|e| {
            let reason = format!("stored notification is not JSON: {e}");
            (reason.clone(), reason)
        })?;
        let ctx = mapping::context(doc, c.received_at);
        let fields = lane.mapper.fields(&destination.name, &ctx).map_err(|e| {
            (
                format!("mapping failed: {e}"),
                format!("mapping failed: field {:?}", e.field),
            )
        })?;
        Ok(Record {
            delivery_id: c.delivery_id,
            notification_id: c.notification_id,
            participation_id: c.participation_id.clone(),
            attempt: c.attempts + 1,
            fields,
            raw: c.body.clone(),
            state: c.state.clone(),
            in_doubt_since: c.in_doubt_since,
        })
    }

    /// Decides what comes next ([`retry::decide`]), logs the attempt with that word, and
    /// returns its row, which records the same word.
    fn finish(
        &self,
        lane: &Lane,
        c: &Claimed,
        attempt: Attempt,
        logged_reason: Option<String>,
        started_at: i64,
        duration_ms: i64,
    ) -> AttemptLog {
        let (destination, redactor) = (&lane.destination, &lane.redactor);
        let number = c.attempts + 1;
        let next = retry::decide(
            &destination.retry,
            // A replay restarts the schedule.
            number.saturating_sub(c.retry_base),
            &attempt.outcome,
            now_ms(),
            retry::random_unit(),
        );
        // A destination may echo our request (headers, tokens) in its answer: no configured
        // secret is stored or logged.
        let mut error = attempt.outcome.reason().map(str::to_owned);
        if !attempt.warnings.is_empty() {
            let warnings = attempt.warnings.join("; ");
            error = Some(match error {
                Some(e) => format!("{e}; {warnings}"),
                None => format!("warning: {warnings}"),
            });
        }
        self.metrics.attempt(
            &destination.name,
            next.outcome(),
            Duration::from_millis(u64::try_from(duration_ms).unwrap_or(0)),
        );
        tracing::info!(
            destination = %destination.name,
            delivery_id = c.delivery_id,
            participation_id = %c.participation_id,
            attempt = number,
            outcome = %next.outcome(),
            status = attempt.status,
            duration_ms,
            reason = logged_reason.map(|r| redactor.redact(&r)).as_deref(),
            "attempt"
        );
        AttemptLog {
            delivery_id: c.delivery_id,
            lease: c.lease.clone(),
            number,
            started_at,
            duration_ms,
            status_code: attempt.status,
            error: redactor.redact_opt(error),
            response: redactor.redact_opt(attempt.response),
            state: attempt.state,
            next,
        }
    }
}
