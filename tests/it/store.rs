//! The store on its own: one suite, run on SQLite (a real file) and on PostgreSQL (a schema of
//! its own), so both keep the same promises: what a lease protects, what a commit groups, and
//! everything the operators' commands rely on (replay, cancel, stats, hourly counts, forget,
//! purge). What only instances sharing PostgreSQL need (rate windows, the 429 pause, locks) is
//! in `shared`.

use std::time::Duration;

use hookfan::store::{
    Accepted, AttemptLog, Claimed, Filter, Incoming, Next, Selection, SqliteStore, Status, Store,
    now_ms,
};

use crate::backends::{Backend, on_both_stores};

mod shared;

fn incoming(id: &str, destinations: &[&str]) -> Incoming {
    crate::support::incoming(format!("{{\"id\":\"{id}\"}}"), destinations)
}

fn delivered(delivery_id: i64, lease: &str) -> AttemptLog {
    attempt(delivery_id, lease, 1, Next::Delivered, Some(200), None)
}

fn attempt(
    delivery_id: i64,
    lease: &str,
    number: u32,
    next: Next,
    status_code: Option<u16>,
    error: Option<&str>,
) -> AttemptLog {
    AttemptLog {
        delivery_id,
        lease: lease.to_string(),
        number,
        started_at: now_ms(),
        duration_ms: 5,
        status_code,
        error: error.map(str::to_string),
        response: error.map(|e| format!("{{\"error\":\"{e}\"}}")),
        state: None,
        next,
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// Claims `destination`'s one due delivery and records `next` for it.
async fn attempt_once(
    store: &dyn Store,
    destination: &str,
    next: Next,
    error: Option<&str>,
) -> i64 {
    let c = store.claim_due(destination, 1, "w", LEASE).await.unwrap();
    assert_eq!(c.len(), 1, "one delivery of {destination} is due");
    let code = match next {
        Next::Delivered => 200,
        Next::RetryAt(_) => 503,
        Next::Dead => 400,
    };
    store
        .record(vec![attempt(
            c[0].delivery_id,
            &c[0].lease,
            c[0].attempts + 1,
            next,
            Some(code),
            error,
        )])
        .await
        .unwrap();
    c[0].delivery_id
}

on_both_stores!(
    an_attempt_that_outlived_its_lease_does_not_overwrite_the_next_one,
    records_that_arrive_together_are_each_written_once_and_only_by_the_lease_holder,
    a_record_of_many_attempts_keeps_each_attempts_own_values,
    claims_in_the_same_millisecond_have_tokens_of_their_own,
    accept_is_one_transaction_and_duplicates_add_nothing,
    repeats_that_arrive_together_are_stored_once,
    copies_that_share_a_commit_make_one_notification,
    two_instances_never_claim_the_same_delivery,
    each_claim_takes_at_most_its_limit_oldest_first,
    unclaimed_and_released_work_is_due_again_at_once,
    next_due_says_when_a_lane_should_look_again,
    purge_removes_finished_work_only,
    replay_makes_dead_work_due_with_a_fresh_schedule,
    cancel_withdraws_waiting_work_and_beats_an_attempt_in_flight,
    stats_count_each_status_with_the_last_error_and_recent_health,
    hourly_counts_outlive_purge_and_erasure,
    forget_erases_one_participation_everywhere_and_nothing_else,
    text_the_database_would_refuse_is_stored_all_the_same,
);

/// `n` notifications for `crm`; worker-a claims the first with a lease that runs out, then
/// worker-b claims all `n`: (worker-a's claim, worker-b's claims).
async fn an_outlived_claim_and_the_next(
    store: &dyn Store,
    n: usize,
) -> (Vec<Claimed>, Vec<Claimed>) {
    for i in 0..n {
        store
            .accept(incoming(&format!("p{i}"), &["crm"]))
            .await
            .unwrap();
    }
    let slow = store
        .claim_due("crm", 1, "worker-a", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The lease ran out: another worker takes the delivery over.
    let fresh = store.claim_due("crm", n, "worker-b", LEASE).await.unwrap();
    assert_eq!(fresh.len(), n);
    assert_eq!(fresh[0].delivery_id, slow[0].delivery_id);
    assert_ne!(slow[0].lease, fresh[0].lease);
    (slow, fresh)
}

async fn an_attempt_that_outlived_its_lease_does_not_overwrite_the_next_one(b: Backend) {
    let store = b.store.as_ref();
    let (slow, fresh) = an_outlived_claim_and_the_next(store, 1).await;
    assert!(
        fresh[0].in_doubt_since.is_some(),
        "the first claim was never recorded"
    );

    // The slow attempt ends and records: the delivery is not its to move, and the delivery log
    // gets no row from it (only the lease holder records).
    store
        .record(vec![delivered(slow[0].delivery_id, &slow[0].lease)])
        .await
        .unwrap();
    let (row, attempts) = store.show(slow[0].delivery_id).await.unwrap().unwrap();
    assert_eq!((row.status, attempts.len()), (Status::Pending, 0));
    assert!(
        store
            .claim_due("crm", 1, "worker-c", LEASE)
            .await
            .unwrap()
            .is_empty(),
        "still leased to worker-b"
    );

    store
        .record(vec![delivered(fresh[0].delivery_id, &fresh[0].lease)])
        .await
        .unwrap();
    let (row, _) = store.show(fresh[0].delivery_id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Delivered);
    assert!(
        store.hourly(0).await.unwrap()[0].delivered == 1,
        "only the holder's attempt is counted"
    );
}

async fn records_that_arrive_together_are_each_written_once_and_only_by_the_lease_holder(
    b: Backend,
) {
    let store = b.store.as_ref();
    let (slow, fresh) = an_outlived_claim_and_the_next(store, 20).await;

    // Every record at once. The stores write the records waiting together in one go, so one
    // statement can hold both attempts of a delivery: here they come in one call, for sure.
    let both = store.record(vec![
        delivered(slow[0].delivery_id, &slow[0].lease),
        delivered(fresh[0].delivery_id, &fresh[0].lease),
    ]);
    let rest = fresh[1..]
        .iter()
        .map(|c| store.record(vec![delivered(c.delivery_id, &c.lease)]));
    let (both, rest) = tokio::join!(both, futures_util::future::join_all(rest));
    both.unwrap();
    assert!(rest.iter().all(Result::is_ok), "{rest:?}");

    let (row, attempts) = store.show(slow[0].delivery_id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Delivered);
    assert_eq!(attempts.len(), 1, "the outlived attempt is not logged");
    for c in &fresh {
        let (row, attempts) = store.show(c.delivery_id).await.unwrap().unwrap();
        assert_eq!((row.status, attempts.len()), (Status::Delivered, 1));
    }
    assert_eq!(store.hourly(0).await.unwrap()[0].delivered, 20);
}

/// A file destination records its whole batch (up to 500) at once, more than one statement
/// carries: each attempt keeps its own outcome, code, error and next time.
async fn a_record_of_many_attempts_keeps_each_attempts_own_values(b: Backend) {
    let store = b.store.as_ref();
    const N: usize = 300;
    for i in 0..N {
        store
            .accept(incoming(&format!("p{i}"), &["crm"]))
            .await
            .unwrap();
    }
    let claimed = store.claim_due("crm", N, "w", LEASE).await.unwrap();
    assert_eq!(claimed.len(), N);
    let later = now_ms() + 3_600_000;
    let outcome = |i: usize| match i % 3 {
        0 => (Next::Delivered, Some(200), None),
        1 => (
            Next::RetryAt(later + i as i64),
            Some(503),
            Some(format!("busy {i}")),
        ),
        _ => (Next::Dead, Some(400), Some(format!("refused {i}"))),
    };
    let attempts = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (next, code, error) = outcome(i);
            attempt(c.delivery_id, &c.lease, 1, next, code, error.as_deref())
        })
        .collect();
    store.record(attempts).await.unwrap();

    for (i, c) in claimed.iter().enumerate() {
        let (next, code, error) = outcome(i);
        let (row, attempts) = store.show(c.delivery_id).await.unwrap().unwrap();
        let status = match next {
            Next::Delivered => Status::Delivered,
            Next::RetryAt(at) => {
                assert_eq!(row.next_attempt_at, at, "delivery {i}");
                Status::Retrying
            }
            Next::Dead => Status::Dead,
        };
        assert_eq!((row.status, row.attempts), (status, 1), "delivery {i}");
        assert_eq!(row.last_error, error, "delivery {i}");
        assert_eq!(attempts.len(), 1, "delivery {i}");
        assert_eq!(
            (attempts[0].status_code, &attempts[0].error),
            (code, &error),
            "delivery {i}"
        );
    }
    let hour = &store.hourly(0).await.unwrap()[0];
    assert_eq!((hour.delivered, hour.failed), (100, 200));
}

async fn claims_in_the_same_millisecond_have_tokens_of_their_own(b: Backend) {
    let store = b.store.as_ref();
    // Claim tokens were once the lease's expiry time, which two claims made in the same
    // millisecond share: the first could then record over the second. Twenty tries make a
    // same-millisecond pair all but certain.
    for i in 0..20 {
        store
            .accept(incoming(&format!("p{i}"), &["crm"]))
            .await
            .unwrap();
        // A lease of zero has expired as soon as it is taken: the next claim takes it over.
        let first = store
            .claim_due("crm", 1, "worker-a", Duration::ZERO)
            .await
            .unwrap();
        let second = store
            .claim_due("crm", 1, "worker-b", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(first[0].delivery_id, second[0].delivery_id);
        assert_ne!(first[0].lease, second[0].lease);
        store
            .record(vec![delivered(first[0].delivery_id, &first[0].lease)])
            .await
            .unwrap();
        let (row, attempts) = store.show(first[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(
            (row.status, attempts.len()),
            (Status::Pending, 0),
            "try {i}"
        );
        store
            .record(vec![delivered(second[0].delivery_id, &second[0].lease)])
            .await
            .unwrap();
        let (row, attempts) = store.show(second[0].delivery_id).await.unwrap().unwrap();
        assert_eq!(
            (row.status, attempts.len()),
            (Status::Delivered, 1),
            "try {i}"
        );
    }
}

async fn accept_is_one_transaction_and_duplicates_add_nothing(b: Backend) {
    let store = b.store.as_ref();
    let first = store
        .accept(incoming("p1", &["a", "b", "c"]))
        .await
        .unwrap();
    let Accepted::New {
        notification,
        deliveries,
    } = first
    else {
        panic!("{first:?}")
    };
    assert_eq!(deliveries, 3);
    assert_eq!(
        store
            .accept(incoming("p1", &["a", "b", "c"]))
            .await
            .unwrap(),
        Accepted::Duplicate { notification }
    );
    assert_eq!(store.list(&Filter::default()).await.unwrap().len(), 3);
    // Many at once share commits (more than one statement carries) and each gets its own answer.
    let many = futures_util::future::join_all(
        (0..300).map(|i| store.accept(incoming(&format!("m{i}"), &["a"]))),
    )
    .await;
    assert!(
        many.iter()
            .all(|r| matches!(r, Ok(Accepted::New { deliveries: 1, .. })))
    );
    assert_eq!(
        store
            .list(&Filter {
                limit: 1000,
                ..Filter::default()
            })
            .await
            .unwrap()
            .len(),
        303
    );
    // A notification routed nowhere is stored all the same.
    assert!(matches!(
        store.accept(incoming("nowhere", &[])).await.unwrap(),
        Accepted::New { deliveries: 0, .. }
    ));
    let body = store.notification(notification).await.unwrap().unwrap();
    assert_eq!(
        (body.participation_id.as_str(), body.body.as_str()),
        ("p1", "{\"id\":\"p1\"}")
    );
}

async fn repeats_that_arrive_together_are_stored_once(b: Backend) {
    // Qualifio retrying while its first try is still being committed: the same notification
    // twenty times at once, through two handles (two instances), plus a different one.
    let other = b.open_again().await;
    let mut calls = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 {
            b.store.clone()
        } else {
            other.clone()
        };
        calls.push(tokio::spawn(async move {
            store.accept(incoming("same", &["crm", "sheet"])).await
        }));
    }
    let different = b
        .store
        .accept(incoming("different", &["crm"]))
        .await
        .unwrap();
    let mut new = Vec::new();
    let mut repeats = Vec::new();
    for c in calls {
        match c.await.unwrap().unwrap() {
            Accepted::New { notification, .. } => new.push(notification),
            Accepted::Duplicate { notification } => repeats.push(notification),
        }
    }
    assert_eq!(new.len(), 1, "stored once: {new:?}");
    assert_eq!(repeats.len(), 19);
    assert!(repeats.iter().all(|n| *n == new[0]), "{repeats:?} {new:?}");
    assert!(matches!(different, Accepted::New { notification, .. } if notification != new[0]));
    let rows = b
        .store
        .list(&Filter {
            participation_id: Some("same".into()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "one delivery per destination: {rows:#?}");
}

async fn copies_that_share_a_commit_make_one_notification(b: Backend) {
    let store = b.store.clone();
    let earlier = store.accept(incoming("early", &["crm"])).await.unwrap();
    // Twenty copies of one notification, a copy of an earlier one, and distinct ones, all at
    // once: they share commits.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            let id = match i % 3 {
                0 => "same".to_string(),
                1 => "early".to_string(),
                _ => format!("distinct-{i}"),
            };
            let accepted = store
                .accept(incoming(&id, &["crm", "sheet"]))
                .await
                .unwrap();
            (id, accepted)
        });
    }
    let mut new_same = Vec::new();
    let mut dup_same = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (
                id,
                Accepted::New {
                    notification,
                    deliveries,
                },
            ) => {
                assert_ne!(
                    id, "early",
                    "a copy of an earlier notification was stored again"
                );
                assert_eq!(deliveries, 2);
                if id == "same" {
                    new_same.push(notification);
                }
            }
            (id, Accepted::Duplicate { notification }) => {
                if id == "same" {
                    dup_same.push(notification);
                } else {
                    assert_eq!(id, "early");
                    assert_eq!(
                        Accepted::New {
                            notification,
                            deliveries: 1
                        },
                        earlier
                    );
                }
            }
        }
    }
    assert_eq!(new_same.len(), 1, "{new_same:?}");
    assert!(dup_same.iter().all(|n| *n == new_same[0]));
    assert_eq!(new_same.len() + dup_same.len(), 14);
    // 1 earlier + 1 "same" + 13 distinct notifications: 1 + 2 + 26 deliveries.
    let all = store
        .list(&Filter {
            limit: 1000,
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 29);
}

async fn two_instances_never_claim_the_same_delivery(b: Backend) {
    let other = b.open_again().await;
    for i in 0..60 {
        b.store
            .accept(incoming(&format!("c{i}"), &["crm"]))
            .await
            .unwrap();
    }
    // Both instances claim in small batches at the same time until nothing is due.
    let claim_all = |store: std::sync::Arc<dyn Store>, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let batch = store.claim_due("crm", 3, owner, LEASE).await.unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|c| c.delivery_id));
        }
    };
    let (a, z) = tokio::join!(
        tokio::spawn(claim_all(b.store.clone(), "instance-a")),
        tokio::spawn(claim_all(other.clone(), "instance-b"))
    );
    let (a, z) = (a.unwrap(), z.unwrap());
    let mut all: Vec<i64> = a.iter().chain(z.iter()).copied().collect();
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 60, "every delivery was claimed once");
}

/// One claim statement serves every limit a lane asks for (SQLite's is prepared once and its
/// limit bound each time): each is honoured, and what one leaves the next takes, oldest first.
/// (A guard of what the limit means; whether SQLite prepares the statement again is not seen
/// from here.)
async fn each_claim_takes_at_most_its_limit_oldest_first(b: Backend) {
    let store = b.store.as_ref();
    let mut accepted = Vec::new();
    for i in 0..6 {
        match store
            .accept(incoming(&format!("l{i}"), &["crm"]))
            .await
            .unwrap()
        {
            Accepted::New { notification, .. } => accepted.push(notification),
            other => panic!("{other:?}"),
        }
    }
    let mut taken = Vec::new();
    for (limit, expected) in [(2, 2), (1, 1), (64, 3), (5, 0)] {
        let batch = store.claim_due("crm", limit, "w", LEASE).await.unwrap();
        assert_eq!(batch.len(), expected, "a claim of up to {limit}");
        taken.extend(batch.into_iter().map(|c| c.notification_id));
    }
    assert_eq!(taken, accepted);
}

async fn unclaimed_and_released_work_is_due_again_at_once(b: Backend) {
    let store = b.store.as_ref();
    store.accept(incoming("u1", &["crm"])).await.unwrap();
    store.accept(incoming("u2", &["crm"])).await.unwrap();
    let batch = store.claim_due("crm", 2, "w", LEASE).await.unwrap();
    assert_eq!(batch.len(), 2);
    // A batch that stopped early gives back what it did not send: due again, no attempt
    // counted, and no doubt left.
    store
        .unclaim(vec![(batch[0].delivery_id, batch[0].lease.clone())])
        .await
        .unwrap();
    let again = store.claim_due("crm", 2, "w2", LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_id, batch[0].delivery_id);
    assert_eq!((again[0].attempts, again[0].in_doubt_since), (0, None));
    // A stopping instance gives back everything it holds: the next claim sees the doubt.
    assert_eq!(store.release("w").await.unwrap(), 1);
    assert_eq!(store.release("w2").await.unwrap(), 1);
    let after = store.claim_due("crm", 2, "w3", LEASE).await.unwrap();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|c| c.in_doubt_since.is_some()),
        "{after:?}"
    );
}

async fn next_due_says_when_a_lane_should_look_again(b: Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.next_due("crm").await.unwrap(), None);
    store.accept(incoming("n1", &["crm"])).await.unwrap();
    assert!(store.next_due("crm").await.unwrap().unwrap() <= now_ms());
    let c = store.claim_due("crm", 1, "w", LEASE).await.unwrap();
    // Leased: due when the lease runs out.
    let at = store.next_due("crm").await.unwrap().unwrap();
    assert!(at > now_ms() + 50_000, "{at}");
    let retry_at = now_ms() + 30_000;
    store
        .record(vec![attempt(
            c[0].delivery_id,
            &c[0].lease,
            1,
            Next::RetryAt(retry_at),
            Some(503),
            Some("down"),
        )])
        .await
        .unwrap();
    assert_eq!(store.next_due("crm").await.unwrap(), Some(retry_at));
    assert_eq!(
        store.pending_by_destination().await.unwrap(),
        [("crm".to_string(), 1)]
    );
}

async fn purge_removes_finished_work_only(b: Backend) {
    let store = b.store.as_ref();
    store.accept(incoming("done", &["crm"])).await.unwrap();
    store.accept(incoming("waiting", &["slow"])).await.unwrap();
    let c = store.claim_due("crm", 1, "w", LEASE).await.unwrap();
    store
        .record(vec![delivered(c[0].delivery_id, &c[0].lease)])
        .await
        .unwrap();

    let all = Status::ALL;
    assert_eq!(
        store.purge(all, now_ms() - 60_000).await.unwrap(),
        0,
        "nothing is old enough yet"
    );
    // Waiting work is never purged, whatever is asked.
    assert_eq!(store.purge(all, now_ms() + 1).await.unwrap(), 1);
    let left = store.list(&Filter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].participation_id.as_str(), left[0].status.as_str()),
        ("waiting", Status::Pending.as_str())
    );
    // The purged delivery's notification went with it; the waiting one's stayed.
    assert!(
        store
            .notification(c[0].notification_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .notification(left[0].notification_id)
            .await
            .unwrap()
            .is_some()
    );
}

async fn replay_makes_dead_work_due_with_a_fresh_schedule(b: Backend) {
    let store = b.store.as_ref();
    store
        .accept(incoming("r1", &["crm", "archive"]))
        .await
        .unwrap();
    let dead = attempt_once(store, "crm", Next::Dead, Some("refused")).await;
    let done = attempt_once(store, "archive", Next::Delivered, None).await;

    // By id: the dead one is due again; the delivered one is left alone without force, and an
    // unknown id is named.
    let r = store
        .replay(&Selection::Ids(vec![dead, done, 424242]), false)
        .await
        .unwrap();
    assert_eq!(
        (r.replayed, r.skipped_delivered, r.missing),
        (1, 1, vec![424242])
    );
    let c = store.claim_due("crm", 1, "w", LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    // The schedule counts from the replay: the next attempt is number 2, the first of a
    // fresh schedule.
    assert_eq!((c[0].attempts, c[0].retry_base), (1, 1));
    store
        .record(vec![attempt(
            c[0].delivery_id,
            &c[0].lease,
            2,
            Next::Dead,
            Some(400),
            Some("again"),
        )])
        .await
        .unwrap();

    // By status and destination; delivered ones with force.
    let r = store
        .replay(
            &Selection::Matching {
                status: Some(Status::Dead),
                destination: Some("crm".into()),
                since: Some(now_ms() - 60_000),
            },
            false,
        )
        .await
        .unwrap();
    assert_eq!(r.replayed, 1);
    let r = store
        .replay(&Selection::Ids(vec![done]), true)
        .await
        .unwrap();
    assert_eq!((r.replayed, r.skipped_delivered), (1, 0));
    let (row, attempts) = store.show(done).await.unwrap().unwrap();
    assert_eq!((row.status, attempts.len()), (Status::Pending, 1));
    // One in flight is left to finish.
    let in_flight = store.claim_due("archive", 1, "w", LEASE).await.unwrap();
    let r = store
        .replay(&Selection::Ids(vec![done]), true)
        .await
        .unwrap();
    assert_eq!(r.replayed, 0, "claimed: {in_flight:?}");
}

async fn cancel_withdraws_waiting_work_and_beats_an_attempt_in_flight(b: Backend) {
    let store = b.store.as_ref();
    store.accept(incoming("k1", &["crm"])).await.unwrap();
    store.accept(incoming("k2", &["crm"])).await.unwrap();
    store
        .accept(incoming("k3", &["crm", "other"]))
        .await
        .unwrap();
    attempt_once(
        store,
        "crm",
        Next::RetryAt(now_ms() + 3_600_000),
        Some("down"),
    )
    .await;
    // Only retrying ones: one.
    assert_eq!(store.cancel("crm", &[Status::Retrying]).await.unwrap(), 1);
    // One is in flight when the rest are cancelled: its attempt is not recorded over it.
    let flying = store.claim_due("crm", 1, "w", LEASE).await.unwrap();
    assert_eq!(
        store
            .cancel("crm", &[Status::Pending, Status::Retrying, Status::Dead])
            .await
            .unwrap(),
        2,
        "dead or delivered work is never cancelled"
    );
    store
        .record(vec![delivered(flying[0].delivery_id, &flying[0].lease)])
        .await
        .unwrap();
    let (row, attempts) = store.show(flying[0].delivery_id).await.unwrap().unwrap();
    assert_eq!((row.status, attempts.len()), (Status::Cancelled, 0));
    let cancelled = store
        .list(&Filter {
            status: Some(Status::Cancelled),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 3);
    assert!(
        store
            .claim_due("crm", 10, "w", LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // Another destination's work is untouched.
    assert_eq!(
        store
            .claim_due("other", 10, "w", LEASE)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn stats_count_each_status_with_the_last_error_and_recent_health(b: Backend) {
    let store = b.store.as_ref();
    let before = now_ms();
    for i in 0..4 {
        store
            .accept(incoming(&format!("s{i}"), &["crm", "sheet"]))
            .await
            .unwrap();
    }
    attempt_once(store, "crm", Next::Delivered, None).await;
    attempt_once(store, "crm", Next::Delivered, None).await;
    attempt_once(store, "crm", Next::Dead, Some("HTTP 400 first")).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    attempt_once(
        store,
        "crm",
        Next::RetryAt(now_ms() + 3_600_000),
        Some("HTTP 503 latest"),
    )
    .await;
    attempt_once(store, "sheet", Next::Dead, Some("HTTP 403")).await;
    let stats = store.stats(before).await.unwrap();
    let names: Vec<&str> = stats.iter().map(|s| s.destination.as_str()).collect();
    assert_eq!(names, ["crm", "sheet"]);
    let crm = &stats[0];
    let mut counts = crm.counts.clone();
    counts.sort();
    assert_eq!(
        counts,
        [
            (Status::Retrying, 1),
            (Status::Delivered, 2),
            (Status::Dead, 1)
        ]
    );
    assert_eq!(crm.last_error.as_deref(), Some("HTTP 503 latest"));
    assert!(crm.last_delivered_at.is_some_and(|t| t >= before));
    assert!(crm.oldest_waiting_at.is_some_and(|t| t >= before));
    assert_eq!((crm.recent_attempts, crm.recent_failures), (4, 2));
    let sheet = &stats[1];
    let mut counts = sheet.counts.clone();
    counts.sort();
    assert_eq!(counts, [(Status::Pending, 3), (Status::Dead, 1)]);
    assert_eq!((sheet.recent_attempts, sheet.recent_failures), (1, 1));
    assert_eq!(sheet.last_delivered_at, None);
    // Only attempts since the time asked for count as recent.
    let later = store.stats(now_ms() + 1).await.unwrap();
    assert!(later.iter().all(|s| s.recent_attempts == 0), "{later:?}");
}

async fn hourly_counts_outlive_purge_and_erasure(b: Backend) {
    let store = b.store.as_ref();
    store.accept(incoming("h1", &["crm"])).await.unwrap();
    store.accept(incoming("h2", &["crm"])).await.unwrap();
    store.accept(incoming("h3", &["crm"])).await.unwrap();
    attempt_once(store, "crm", Next::Delivered, None).await;
    attempt_once(store, "crm", Next::Dead, Some("no")).await;
    attempt_once(
        store,
        "crm",
        Next::RetryAt(now_ms() + 3_600_000),
        Some("later"),
    )
    .await;
    // Delivered and failed attempts per destination and hour (all three in this hour, or, at
    // an hour's last millisecond, split over two).
    let totals = |rows: &[hookfan::store::HourCount]| {
        assert!(rows.iter().all(|h| h.destination == "crm"), "{rows:?}");
        rows.iter()
            .fold((0, 0), |(d, f), h| (d + h.delivered, f + h.failed))
    };
    let hour = now_ms() / 3_600_000;
    let now = store.hourly(hour - 1).await.unwrap();
    assert_eq!(totals(&now), (1, 2));
    assert!(store.hourly(hour + 1).await.unwrap().is_empty());
    assert_eq!(store.purge(Status::ALL, now_ms() + 1).await.unwrap(), 2);
    for p in ["h1", "h2", "h3"] {
        store.forget(p).await.unwrap();
    }
    assert!(store.list(&Filter::default()).await.unwrap().is_empty());
    assert_eq!(store.hourly(hour - 1).await.unwrap(), now);
}

async fn forget_erases_one_participation_everywhere_and_nothing_else(b: Backend) {
    let store = b.store.as_ref();
    let body = |id: &str, email: &str| format!("{{\"id\":\"{id}\",\"email\":\"{email}\"}}");
    let erase = body("erase-me", "erase.me@example.org");
    store
        .accept(crate::support::incoming(erase.clone(), &["crm", "sheet"]))
        .await
        .unwrap();
    // A second notification of the same participation (its body differs).
    store
        .accept(crate::support::incoming(
            body("erase-me", "erase.me.too@example.org"),
            &["crm"],
        ))
        .await
        .unwrap();
    store
        .accept(crate::support::incoming(
            body("keep-me", "keep@example.org"),
            &["crm"],
        ))
        .await
        .unwrap();
    let c = store.claim_due("crm", 10, "w", LEASE).await.unwrap();
    let logs = c
        .iter()
        .map(|c| {
            // The destination's answer quotes the participant.
            let error = format!("{} is refused", c.participation_id);
            attempt(
                c.delivery_id,
                &c.lease,
                1,
                Next::RetryAt(now_ms() + 3_600_000),
                Some(400),
                Some(&error),
            )
        })
        .collect();
    store.record(logs).await.unwrap();
    let hours = store.hourly(0).await.unwrap();

    let f = store.forget("erase-me").await.unwrap();
    assert_eq!((f.notifications, f.deliveries, f.attempts), (2, 3, 2));
    let left = store.list(&Filter::default()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].participation_id, "keep-me");
    assert_eq!(store.hourly(0).await.unwrap(), hours);
    let again = store.forget("erase-me").await.unwrap();
    assert_eq!(again.notifications, 0);
    if let Some(schema) = b.schema() {
        // Nothing in any table of the store still holds the participant's data.
        let mut conn = schema.connect().await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(tables.len() >= 6, "{tables:?}");
        for table in tables {
            let hits: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table} t WHERE t::text LIKE '%erase%'"
            )))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            assert_eq!(hits, 0, "{table} still holds the participation");
        }
        // And the three tables were vacuumed, so their space is reused (see the README on
        // what that does and does not promise).
        let url = schema.url.clone();
        crate::backends::eventually(Duration::from_secs(5), "the tables were vacuumed", || {
            let url = url.clone();
            async move {
                let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                    .await
                    .unwrap();
                let vacuumed: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_user_tables
                     WHERE schemaname = current_schema() AND last_vacuum IS NOT NULL
                       AND relname IN ('notifications', 'deliveries', 'attempts')",
                )
                .fetch_one(&mut c)
                .await
                .unwrap();
                vacuumed == 3
            }
        })
        .await;
    }
}

async fn text_the_database_would_refuse_is_stored_all_the_same(b: Backend) {
    // JSON can carry a NUL character ("\u0000"), which PostgreSQL's text refuses: a notification
    // with one in its id, or a destination answering with one, must not fail forever.
    let store = b.store.as_ref();
    let body = "{\"id\":\"nul\\u0000id\"}".to_string();
    let item = crate::support::incoming(body, &["crm"]);
    assert_eq!(item.participation_id, "nul\0id");
    assert!(matches!(
        store.accept(item.clone()).await.unwrap(),
        Accepted::New { .. }
    ));
    assert!(matches!(
        store.accept(item).await.unwrap(),
        Accepted::Duplicate { .. }
    ));
    let c = store.claim_due("crm", 1, "w", LEASE).await.unwrap();
    let mut log = attempt(
        c[0].delivery_id,
        &c[0].lease,
        1,
        Next::Dead,
        Some(400),
        Some("bad\0byte"),
    );
    log.response = Some("answer\0with a NUL".into());
    store.record(vec![log]).await.unwrap();
    let (row, attempts) = store.show(c[0].delivery_id).await.unwrap().unwrap();
    assert_eq!((row.status, attempts.len()), (Status::Dead, 1));
    assert!(
        attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("bad"))
    );
    assert_eq!(
        store
            .forget(&row.participation_id)
            .await
            .unwrap()
            .notifications,
        1
    );
}

/// Every delivery in the log, newest first, as its id and status.
async fn statuses(store: &dyn Store) -> Vec<(i64, Status)> {
    store
        .list(&Filter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect()
}

/// A migration as an earlier release shipped it, to build the schema it left behind.
fn old(version: i64, name: &str, sql: &'static str) -> sqlx::migrate::Migration {
    use sqlx::SqlSafeStr as _;
    sqlx::migrate::Migration::new(
        version,
        name.to_string().into(),
        sqlx::migrate::MigrationType::Simple,
        sql.into_sql_str(),
        false,
    )
}

#[tokio::test]
async fn a_sqlite_database_of_the_previous_version_is_upgraded_in_place() {
    use sqlx::ConnectOptions as _;
    use sqlx::migrate::Migrator;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookfan.db");
    // The schema as the previous release left it: migrations 1 to 3.
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    Migrator::with_migrations(vec![
        old(
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        old(
            2,
            "outcome words",
            include_str!("../../migrations/sqlite/0002_outcome_words.sql"),
        ),
        old(
            3,
            "lease token",
            include_str!("../../migrations/sqlite/0003_lease_token.sql"),
        ),
    ])
    .run(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(
        "INSERT INTO notifications (id, source, participation_id, format, body_sha256, body, received_at)
             VALUES (1, 'q', 'p1', 'v2', 'h', '{\"id\":\"p1\"}', 3600000),
                    (7, 'q', 'p7', 'v2', 'h7', '{\"id\":\"p7\"}', 3600000);
         DELETE FROM notifications WHERE id = 7;
         INSERT INTO deliveries (id, notification_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES (1, 1, 'crm', 'pending', 0, 0, 0, 0), (2, 1, 'sheet', 'pending', 2, 0, 0, 0),
                    (3, 1, 'file', 'delivered', 1, 0, 0, 0);
         INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome)
             VALUES (2, 1, 3600000, 5, 'retry'), (2, 2, 3600001, 5, 'retry'), (3, 1, 7200000, 5, 'delivered');",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // `check` and the operators' commands open it as it is: they refuse it, and change nothing.
    let url = format!("sqlite://{}", file.display());
    let refused = hookfan::store::open_existing(&url).await.err().unwrap();
    assert!(
        refused.to_string().contains("version 3") && refused.to_string().contains("hookfan serve"),
        "{refused}"
    );
    let applied: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied, 3, "opening it as it is migrated it");
    drop(conn);
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let refused = hookfan::store::open_existing(&missing).await.err().unwrap();
    assert!(refused.to_string().contains("no store"), "{refused}");
    assert!(!dir.path().join("none.db").exists());

    // `serve` upgrades it.
    let store = SqliteStore::open(&file).await.unwrap();
    assert!(hookfan::store::open_existing(&url).await.is_ok());
    assert_eq!(
        statuses(&store).await,
        [
            (3, Status::Delivered),
            (2, Status::Retrying),
            (1, Status::Pending)
        ]
    );
    // The attempts were kept, and counted per hour.
    let (_, attempts) = store.show(2).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 2);
    let hours: Vec<(String, i64, u64, u64)> = store
        .hourly(0)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.destination, h.hour, h.delivered, h.failed))
        .collect();
    assert_eq!(hours, [("file".into(), 2, 1, 0), ("sheet".into(), 1, 0, 2)]);
    // And the queue works on the new schema.
    let due = store
        .claim_due("sheet", 10, "w", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(due.len(), 1);

    // The rebuilt notifications table (migration 6) still knows its duplicates, never gives an
    // id twice (7 was purged before the upgrade), and finds a participation by its one key.
    let mut again = incoming("p1", &["crm"]);
    again.source = "q".into();
    again.body_sha256 = "h".into();
    assert_eq!(
        store.accept(again).await.unwrap(),
        Accepted::Duplicate { notification: 1 }
    );
    match store.accept(incoming("p8", &["crm"])).await.unwrap() {
        Accepted::New { notification, .. } => assert!(notification > 7, "{notification}"),
        other => panic!("{other:?}"),
    }
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await
        .unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        ["notifications_received", "sqlite_autoindex_notifications_1"]
    );
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT id FROM notifications WHERE participation_id = 'p1'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|(.., detail)| detail
            .contains("USING COVERING INDEX sqlite_autoindex_notifications_1")
            || detail.contains("USING INDEX sqlite_autoindex_notifications_1")),
        "{plan:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_database_of_the_previous_version_is_upgraded_in_place() {
    use sqlx::migrate::Migrator;
    let Some(schema) = crate::backends::PgSchema::create().await else {
        return;
    };
    let mut conn = schema.connect().await;
    // The schema as the last release left it: migration 1 (2 and 3 came after it).
    Migrator::with_migrations(vec![old(
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    )])
    .run(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(
        "INSERT INTO notifications (id, source, participation_id, format, body_sha256, body, received_at)
             VALUES (1, 'q', 'p1', 'v2', 'h', '{\"id\":\"p1\"}', 0);
         INSERT INTO deliveries (id, notification_id, destination, status, attempts, next_attempt_at,
                                 last_error, created_at, updated_at)
             VALUES (1, 1, 'crm', 'pending', 0, 0, NULL, 0, 0),
                    (2, 1, 'sheet', 'dead', 5, 0, 'HTTP 500', 0, 1000),
                    (3, 1, 'file', 'delivered', 1, 0, NULL, 0, 1000);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // `serve` upgrades it (migration 2: one key for notifications; 3: fewer indexes on
    // deliveries).
    let store = hookfan::store::open(&schema.url).await.unwrap();
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'deliveries' ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let names: Vec<&str> = indexes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "deliveries_due",
            "deliveries_notification",
            "deliveries_owner",
            "deliveries_pkey",
            "deliveries_updated"
        ]
    );
    assert!(
        indexes[4].1.contains("WHERE (status <> 'pending'::text)"),
        "{indexes:?}"
    );

    // The queries that read it by status and time can use it: its condition follows from
    // theirs (with a table this small the planner would scan it, so scans are ruled out).
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .unwrap();
    for query in [
        "EXPLAIN DELETE FROM deliveries WHERE status = ANY('{delivered,dead}') AND updated_at < 5",
        "EXPLAIN SELECT DISTINCT ON (destination) destination, updated_at, last_error
         FROM deliveries WHERE last_error IS NOT NULL AND status IN ('retrying', 'dead')
         ORDER BY destination, updated_at DESC",
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(query))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("deliveries_updated")),
            "{query}: {plan:#?}"
        );
    }

    // What it served still works: the latest error, the purge, and the queue.
    let stats = store.stats(0).await.unwrap();
    let sheet = stats.iter().find(|s| s.destination == "sheet").unwrap();
    assert_eq!(sheet.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(sheet.last_error_at, Some(1000));
    assert_eq!(
        store
            .purge(&[Status::Delivered, Status::Pending], 2000)
            .await
            .unwrap(),
        1
    );
    let due = store.claim_due("crm", 10, "w", LEASE).await.unwrap();
    assert_eq!(due.len(), 1);
    store
        .record(vec![delivered(due[0].delivery_id, &due[0].lease)])
        .await
        .unwrap();
    assert_eq!(
        statuses(&*store).await,
        [(2, Status::Dead), (1, Status::Delivered)]
    );
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = 'notifications' ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            "notifications_key",
            "notifications_pkey",
            "notifications_received"
        ]
    );
}

#[tokio::test]
async fn sqlite_copies_its_write_ahead_log_into_the_database_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookfan.db");
    let store = SqliteStore::open(&file).await.unwrap();
    // Far fewer pages than the writer's own checkpoint waits for (10,000): only the background
    // checkpoint copies them into the database file.
    for i in 0..200 {
        store
            .accept(incoming(&format!("wal-{i}"), &["crm"]))
            .await
            .unwrap();
    }
    // While the store is open, the database file alone (a copy, without its log) comes to hold
    // every accepted row.
    let copy = dir.path().join("copy.db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = None;
    while seen != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database file alone holds {seen:?} of 200 notifications: the log was not copied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::copy(&file, &copy).unwrap();
        // A copy taken mid-checkpoint may be torn: it is read again next time.
        seen = count_rows(&copy).await.ok();
    }
    drop(store);
}

async fn count_rows(file: &std::path::Path) -> Result<i64, sqlx::Error> {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await?;
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications")
        .fetch_one(&mut conn)
        .await
}
