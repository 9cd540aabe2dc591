//! What instances sharing PostgreSQL share besides the queue: each rate window and 429 pause
//! (kept in the database, so two instances together stay within one limit), and locks. Two
//! store handles stand for two instances.

use std::sync::Arc;
use std::time::Duration;

use hookfan::store::Store;
use hookfan_connectors::units::Rate;
use tokio::time::Instant;

use crate::backends::Backend;

/// Two instances on one new schema, or `None` when no PostgreSQL server is configured.
async fn two_instances() -> Option<(Backend, Arc<dyn Store>)> {
    let b = Backend::postgres().await?;
    let other = b.open_again().await;
    Some((b, other))
}

fn rate(text: &str) -> Option<Rate> {
    Some(Rate::parse(text).unwrap())
}

const LONGEST: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_window_is_shared_by_every_instance() {
    let Some((a, z)) = two_instances().await else {
        return;
    };
    let key = "destination:crm";
    let (ga, gz) = (
        a.store.limiters().gate(key, rate("3/1s"), LONGEST),
        z.limiters().gate(key, rate("3/1s"), LONGEST),
    );
    // Another key is another window.
    let other = z
        .limiters()
        .gate("destination:other", rate("3/1s"), LONGEST);
    let first = ga.call().await;
    let second = ga.call().await;
    let third = gz.call().await;
    let unrelated = tokio::time::timeout(Duration::from_secs(5), other.call()).await;
    assert!(unrelated.is_ok(), "another key's window is its own");
    // Three calls are in flight across the two instances: the fourth waits, on either.
    let fourth = tokio::spawn({
        let gz = gz.clone();
        async move {
            let call = gz.call().await;
            (Instant::now(), call)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth call started while three were in flight"
    );
    let ended = Instant::now();
    drop(first);
    let (started, _fourth) = tokio::time::timeout(Duration::from_secs(5), fourth)
        .await
        .expect("the fourth call starts once the first has ended and a window passed")
        .unwrap();
    // The first call counted for a whole window after its end.
    assert!(
        started - ended >= Duration::from_millis(990),
        "started {:?} after the end",
        started - ended
    );
    drop((second, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_instance_died_stops_counting_once_stale() {
    let Some((a, z)) = two_instances().await else {
        return;
    };
    let longest = Duration::from_millis(300);
    let ga = a.store.limiters().gate("k", rate("1/200ms"), longest);
    let gz = z.limiters().gate("k", rate("1/200ms"), longest);
    let t0 = Instant::now();
    // The instance dies with its call in flight: the call's end is never written.
    std::mem::forget(ga.call().await);
    let _next = tokio::time::timeout(Duration::from_secs(5), gz.call())
        .await
        .expect("the other instance goes on once the call went stale");
    // Stale after the longest call, then counted for a window.
    assert!(
        t0.elapsed() >= Duration::from_millis(490),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_429_pause_is_shared_and_a_success_breaks_the_run() {
    let Some((a, z)) = two_instances().await else {
        return;
    };
    let key = "trello-token:0123456789abcdef";
    let (ga, gz) = (
        a.store.limiters().gate(key, None, LONGEST),
        z.limiters().gate(key, None, LONGEST),
    );
    let free = |g: Arc<dyn hookfan::worker::rate::Limiter>| async move {
        tokio::time::timeout(Duration::from_millis(500), g.call())
            .await
            .is_ok()
    };
    ga.throttled(true).await;
    gz.throttled(true).await;
    // A success on either instance breaks the run of 429s.
    gz.throttled(false).await;
    ga.throttled(true).await;
    ga.throttled(true).await;
    assert!(
        free(ga.clone()).await && free(gz.clone()).await,
        "two in a row do not pause"
    );
    // The third in a row, seen by the other instance, pauses both (the first within the time
    // an instance relies on what it read).
    gz.throttled(true).await;
    assert!(
        !free(gz.clone()).await,
        "paused on the instance that saw the third"
    );
    tokio::time::sleep(hookfan::store::postgres::PAUSE_READ_EVERY).await;
    assert!(
        !free(ga.clone()).await,
        "paused on the instance that saw two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_keeps_other_instances_out_until_released_or_dropped() {
    let Some((a, z)) = two_instances().await else {
        return;
    };
    let (la, lz) = (a.store.locks().unwrap(), z.locks().unwrap());
    let held = la.lock("google-sheets-header:book:tab").await.unwrap();
    let waiting = tokio::spawn({
        let lz = lz.clone();
        async move { lz.lock("google-sheets-header:book:tab").await }
    });
    // Another key is not held.
    let other = tokio::time::timeout(Duration::from_secs(5), lz.lock("another"))
        .await
        .unwrap()
        .unwrap();
    other.release().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "two instances held one lock");
    held.release().await;
    let z_holds = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the lock passes on when released")
        .unwrap()
        .unwrap();
    // Dropped without a release (a task that failed half-way): the lock is let go all the same.
    drop(z_holds);
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        la.lock("google-sheets-header:book:tab"),
    )
    .await
    .expect("a dropped lock is let go")
    .unwrap();
    again.release().await;
    // SQLite's store is for one instance: it has no locks to share.
    let sqlite = Backend::sqlite().await;
    assert!(sqlite.store.locks().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_across_the_network_can_require_tls() {
    let Some(b) = Backend::postgres().await else {
        return;
    };
    let schema = b.schema().unwrap();
    let application = format!("tls-{}", schema.name);
    let url = format!(
        "{}&sslmode=require&application_name={application}",
        schema.url
    );
    let store = hookfan::store::open(&url).await.unwrap();
    store
        .accept(crate::support::incoming(
            "{\"id\":\"tls\"}".into(),
            &["crm"],
        ))
        .await
        .unwrap();
    let mut conn = schema.connect().await;
    let (sessions, encrypted): (i64, Option<bool>) = sqlx::query_as(
        "SELECT COUNT(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name = $1",
    )
    .bind(&application)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(sessions > 0, "the store has sessions open");
    assert_eq!(
        encrypted,
        Some(true),
        "every session of the store is encrypted (the test server must have ssl = on)"
    );
}
