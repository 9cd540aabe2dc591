//! The SQLite store on its own, on a real file: what a lease protects, what a purge removes.

use std::time::Duration;

use hookfan::store::{
    Accepted, AttemptLog, Filter, Incoming, Next, SqliteStore, Status, Store, now_ms,
};

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    (dir, store)
}

fn incoming(id: &str, destinations: &[&str]) -> Incoming {
    crate::support::incoming(format!("{{\"id\":\"{id}\"}}"), destinations)
}

fn delivered(delivery_id: i64, lease: &str) -> AttemptLog {
    AttemptLog {
        delivery_id,
        lease: lease.to_string(),
        number: 1,
        started_at: now_ms(),
        duration_ms: 5,
        status_code: Some(200),
        error: None,
        response: None,
        state: None,
        next: Next::Delivered,
    }
}

#[tokio::test]
async fn an_attempt_that_outlived_its_lease_does_not_overwrite_the_next_one() {
    let (_dir, store) = store().await;
    store.accept(incoming("p1", &["crm"])).await.unwrap();
    let slow = store
        .claim_due("crm", 1, "worker-a", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    // The lease ran out: another worker takes the delivery over.
    let fresh = store
        .claim_due("crm", 1, "worker-b", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert_ne!(slow[0].lease, fresh[0].lease);
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
            .claim_due("crm", 1, "worker-c", Duration::from_secs(60))
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
}

#[tokio::test]
async fn claims_in_the_same_millisecond_have_tokens_of_their_own() {
    let (_dir, store) = store().await;
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

#[tokio::test]
async fn accept_is_one_transaction_and_duplicates_add_nothing() {
    let (_dir, store) = store().await;
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
    // Many at once share commits and each gets its own answer.
    let many = futures_util::future::join_all(
        (0..50).map(|i| store.accept(incoming(&format!("m{i}"), &["a"]))),
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
        53
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_that_share_a_commit_make_one_notification() {
    let (_dir, store) = store().await;
    let store = std::sync::Arc::new(store);
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

#[tokio::test]
async fn purge_removes_finished_work_only() {
    let (_dir, store) = store().await;
    store.accept(incoming("done", &["crm"])).await.unwrap();
    store.accept(incoming("waiting", &["slow"])).await.unwrap();
    let c = store
        .claim_due("crm", 1, "w", Duration::from_secs(60))
        .await
        .unwrap();
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
}

#[tokio::test]
async fn a_database_of_the_previous_version_is_upgraded_in_place() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use sqlx::{ConnectOptions as _, SqlSafeStr as _};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookfan.db");
    // The schema as the previous release left it: migrations 1 to 3.
    let old = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_string().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
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
             VALUES (1, 'q', 'p1', 'v2', 'h', '{\"id\":\"p1\"}', 3600000);
         INSERT INTO deliveries (id, notification_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES (1, 1, 'crm', 'pending', 0, 0, 0, 0), (2, 1, 'sheet', 'pending', 2, 0, 0, 0),
                    (3, 1, 'file', 'delivered', 1, 0, 0, 0);
         INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome)
             VALUES (2, 1, 3600000, 5, 'retry'), (2, 2, 3600001, 5, 'retry'), (3, 1, 7200000, 5, 'delivered');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&file).await.unwrap();
    let statuses: Vec<(i64, Status)> = store
        .list(&Filter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.status))
        .collect();
    assert_eq!(
        statuses,
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
}
