//! PostgreSQL, for several instances sharing one queue. It behaves as the SQLite store does
//! (the same tables, words and rules), and adds what instances must share: rate windows and the
//! 429 pause (`rate`), and locks held across instances (`lock`).
//!
//! - this file: connecting, and the queue (accept, claim);
//! - `records`: recording attempts, many callers' in one statement;
//! - `log`: reading the delivery log (lists, details, stats, hourly counts);
//! - `operate`: what operators change (replay, cancel, forget, purge);
//! - `rate`: rate windows kept in PostgreSQL; `lock`: advisory locks.
//!
//! Three pools. `durable` commits wait for the write-ahead log to reach disk (`synchronous_commit
//! = on`: accepts, erasure); the others do not (`off`: a database crash can lose their last
//! fraction of a second, which means at worst a repeated delivery or call, as at-least-once
//! allows). `relaxed` (leases, rate windows, reads, operators' changes) plans at every
//! execution, never from a plan cached while the tables were smaller; `recording` records
//! attempts (`records`). No transaction or row lock is held while a destination is called: a
//! claim is one statement, and so is a group of records. When PostgreSQL cannot be reached,
//! each operation fails after [`ACQUIRE_TIMEOUT`] (accepts answer 503) and the pools connect
//! again by themselves once it is back.

use std::collections::HashMap;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, Row, SqlSafeStr};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::assemble::{claimed, total};
use super::model::*;
use super::{Schema, Store, StoreError};

mod lock;
mod log;
mod operate;
mod rate;
mod records;

pub use lock::PgLocks;
pub use rate::{PAUSE_READ_EVERY, PgLimiters};

/// The most accepts that share one commit.
const GROUP_MAX: usize = 512;
/// Group commits in flight at once: PostgreSQL has many writers, and concurrent commits share
/// write-ahead log flushes.
const GROUPS_IN_FLIGHT: usize = 4;
/// How long an operation waits for a connection before it fails (503 for an accept).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per instance: accepts and erasure, recording attempts (one statement at a time;
/// the second lets the next begin while sqlx checks the first on its way back to the pool),
/// then everything else.
const DURABLE_CONNECTIONS: u32 = 5;
const RECORDING_CONNECTIONS: u32 = 2;
const RELAXED_CONNECTIONS: u32 = 9;
/// A pooled connection idle this long is pinged before it is used again.
const PING_IF_IDLE: Duration = Duration::from_secs(1);

type Reply = oneshot::Sender<Result<Accepted, StoreError>>;

pub struct PgStore {
    /// Commits wait for the disk: accepts, erasure.
    pub(crate) durable: PgPool,
    /// Commits return before the disk: leases, rate windows, reads, operators' changes.
    pub(crate) relaxed: PgPool,
    accepts: mpsc::Sender<(Incoming, Reply)>,
    records: records::Records,
}

fn migrator() -> Migrator {
    let migration = |version, name: &str, sql: &'static str| {
        Migration::new(
            version,
            name.to_string().into(),
            MigrationType::Simple,
            sql.into_sql_str(),
            false,
        )
    };
    Migrator::with_migrations(vec![
        migration(
            1,
            "init",
            include_str!("../../../migrations/postgres/0001_init.sql"),
        ),
        migration(
            2,
            "one notification key",
            include_str!("../../../migrations/postgres/0002_one_notification_key.sql"),
        ),
        migration(
            3,
            "fewer delivery indexes",
            include_str!("../../../migrations/postgres/0003_fewer_delivery_indexes.sql"),
        ),
    ])
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PgStore {
    /// Connects, and creates or upgrades the tables (instances starting together take turns:
    /// the migrator holds an advisory lock).
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        Self::open_as(url, Schema::Upgrade).await
    }

    /// [`PgStore::open`], or with [`Schema::AsIs`] without changing the database.
    pub async fn open_as(url: &str, schema: Schema) -> Result<PgStore, StoreError> {
        let mut options = PgConnectOptions::from_str(url)?;
        if options.get_application_name().is_none() {
            // Names the relay's sessions in pg_stat_activity.
            options = options.application_name("hookfan");
        }
        let pool = |max, settings: &[(&str, &str)]| {
            PgPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(Duration::from_secs(300))
                // A connection that sat idle (the server or the network may have ended it
                // since) is pinged before use; one in steady use is not, which saves a round
                // trip per statement. One that broke while in use fails that statement, and
                // the pool replaces it.
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PING_IF_IDLE {
                            conn.ping().await?;
                        }
                        Ok(true)
                    })
                })
                .connect_lazy_with(options.clone().options(settings.iter().copied()))
        };
        let durable = pool(DURABLE_CONNECTIONS, &[("synchronous_commit", "on")]);
        // Claims and reads are planned at every execution: a plan PostgreSQL caches
        // (a generic plan) keeps the table sizes of when it was made, and one made while a new
        // database's tables were empty scans them whole until autovacuum first analyses them.
        let relaxed = pool(
            RELAXED_CONNECTIONS,
            &[
                ("synchronous_commit", "off"),
                ("plan_cache_mode", "force_custom_plan"),
            ],
        );
        // Records have a pool of their own, which caches plans (`auto`, set here so that a
        // database set otherwise does not change it): each attempt row's foreign key check is a
        // statement PostgreSQL prepares inside the trigger, and forced custom plans replanned it
        // for every row (a seventh of PostgreSQL's CPU in a drain). The record statement itself
        // is not kept prepared, so it is planned at every execution (records.rs).
        let recording = pool(
            RECORDING_CONNECTIONS,
            &[("synchronous_commit", "off"), ("plan_cache_mode", "auto")],
        );
        let migrator = migrator();
        match schema {
            Schema::Upgrade => migrator.run(&durable).await?,
            Schema::AsIs => {
                let migrated: bool =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(&durable)
                        .await?;
                let applied: i64 = if migrated {
                    sqlx::query_scalar(
                        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
                    )
                    .fetch_one(&durable)
                    .await?
                } else {
                    0
                };
                let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
                super::same_schema(applied, known)?;
            }
        }
        let (tx, rx) = mpsc::channel(4 * GROUP_MAX);
        tokio::spawn(group_commit(durable.clone(), rx));
        Ok(PgStore {
            records: records::start(recording),
            durable,
            relaxed,
            accepts: tx,
        })
    }

    /// The rate windows every instance on this database shares.
    pub fn limiters(&self) -> PgLimiters {
        PgLimiters::new(self.relaxed.clone())
    }
}

/// Takes every waiting accept and commits them together, a few groups at a time.
async fn group_commit(pool: PgPool, mut rx: mpsc::Receiver<(Incoming, Reply)>) {
    let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(GROUP_MAX);
        if rx.recv_many(&mut batch, GROUP_MAX).await == 0 {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_group(&pool, batch).await;
            drop(slot);
        });
    }
}

async fn commit_group(pool: &PgPool, batch: Vec<(Incoming, Reply)>) {
    let (items, replies): (Vec<Incoming>, Vec<Reply>) = batch.into_iter().unzip();
    match accept_all(pool, &items).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        // A database that cannot be reached fails them all at once (each answers 503 now, not
        // after one connection wait per item).
        Err(e) if unreachable(&e) => {
            let why = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unreachable(why.clone())));
            }
        }
        // One bad item must not fail the others: commit them one by one instead.
        Err(_) if items.len() > 1 => {
            for (item, reply) in items.into_iter().zip(replies) {
                let _ = reply.send(accept_one(pool, &item).await);
            }
        }
        Err(e) => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// Whether `e` says the database could not be reached, rather than refused what was sent.
fn unreachable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Db(
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
        )
    )
}

/// A notification's identity: the same source, id and body is a duplicate.
type Key<'a> = (&'a str, String, &'a str);

fn key(item: &Incoming) -> Key<'_> {
    (
        item.source.as_str(),
        text(&item.participation_id),
        item.body_sha256.as_str(),
    )
}

/// Commits `items` in one statement (one transaction): new notifications with their deliveries.
/// Returns for each item either its new id or the id of the notification it repeats; an item
/// whose original cannot be read back gets its own error (the commit, and the others' answers,
/// stand).
async fn accept_all(
    pool: &PgPool,
    items: &[Incoming],
) -> Result<Vec<Result<Accepted, StoreError>>, StoreError> {
    // The first of several items with one key is the one stored; the others repeat it.
    let mut first: HashMap<Key<'_>, usize> = HashMap::with_capacity(items.len());
    let mut unique = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        first.entry(key(item)).or_insert_with(|| {
            unique.push(i);
            i
        });
    }
    let mut ord = Vec::with_capacity(unique.len());
    let (mut sources, mut pids, mut formats, mut shas, mut bodies, mut times) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut d_ord, mut d_name) = (vec![], vec![]);
    for &i in &unique {
        let item = &items[i];
        let n = i64::try_from(i).unwrap_or(i64::MAX);
        ord.push(n);
        sources.push(item.source.clone());
        pids.push(text(&item.participation_id));
        formats.push(item.format.to_string());
        shas.push(item.body_sha256.clone());
        bodies.push(text(&item.body));
        times.push(item.received_at);
        for d in &item.destinations {
            d_ord.push(n);
            d_name.push(d.clone());
        }
    }
    let rows = sqlx::query(
        "WITH input AS (
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::bigint[])
                 AS x(ord, source, participation_id, format, body_sha256, body, received_at)),
         inserted AS (
             INSERT INTO notifications (source, participation_id, format, body_sha256, body, received_at)
             SELECT source, participation_id, format, body_sha256, body, received_at
             FROM input ORDER BY ord
             ON CONFLICT (participation_id, source, body_sha256) DO NOTHING
             RETURNING id, source, participation_id, body_sha256),
         new AS (
             SELECT input.ord, inserted.id FROM input JOIN inserted USING (source, participation_id, body_sha256)),
         routed AS (
             INSERT INTO deliveries (notification_id, destination, status, attempts, next_attempt_at,
                                     created_at, updated_at)
             SELECT new.id, d.destination, 'pending', 0, input.received_at, input.received_at, input.received_at
             FROM unnest($8::bigint[], $9::text[]) AS d(ord, destination)
             JOIN new ON new.ord = d.ord JOIN input ON input.ord = d.ord)
         SELECT ord, id FROM new",
    )
    .bind(&ord)
    .bind(&sources)
    .bind(&pids)
    .bind(&formats)
    .bind(&shas)
    .bind(&bodies)
    .bind(&times)
    .bind(&d_ord)
    .bind(&d_name)
    .fetch_all(pool)
    .await?;
    let mut stored_now: HashMap<usize, i64> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let i = usize::try_from(row.try_get::<i64, _>("ord")?).unwrap_or(usize::MAX);
        stored_now.insert(i, row.try_get("id")?);
    }
    // The rest repeat a notification stored earlier (or by a transaction that committed while
    // this statement ran: ON CONFLICT waited for it), looked up one by one: repeats are rare,
    // and a join against `notifications` in the statement above was what made its plan depend
    // on the table's size when it was made (BENCHMARKS.md, the fifth round).
    let mut repeats: HashMap<usize, Result<i64, StoreError>> = HashMap::new();
    for &i in &unique {
        if !stored_now.contains_key(&i) {
            repeats.insert(i, original(pool, &items[i]).await);
        }
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let first = first.get(&key(item)).copied().unwrap_or(i);
        let result = match (stored_now.get(&first), repeats.get(&first)) {
            (Some(&id), _) if first == i => Ok(Accepted::New {
                notification: id,
                deliveries: item.destinations.len(),
            }),
            // A copy, within this group, of an item stored just now or of a repeat.
            (Some(&id), _) | (None, Some(&Ok(id))) => Ok(Accepted::Duplicate { notification: id }),
            (None, Some(Err(e))) => Err(StoreError::Unexpected(format!(
                "stored before, but cannot be read back: {e}"
            ))),
            (None, None) => Err(StoreError::Unexpected(
                "no outcome for a notification of a commit".into(),
            )),
        };
        out.push(result);
    }
    Ok(out)
}

/// Accepts one item on its own (after its group failed).
async fn accept_one(pool: &PgPool, item: &Incoming) -> Result<Accepted, StoreError> {
    accept_all(pool, std::slice::from_ref(item))
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            Err(StoreError::Unexpected(
                "no outcome for a notification".into(),
            ))
        })
}

/// The id of the notification `item` repeats.
async fn original(pool: &PgPool, item: &Incoming) -> Result<i64, StoreError> {
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM notifications WHERE participation_id = $1 AND source = $2 AND body_sha256 = $3",
    )
    .bind(text(&item.participation_id))
    .bind(&item.source)
    .bind(&item.body_sha256)
    .fetch_optional(pool)
    .await?;
    // Gone since the insert found it: erased (`forget`) or purged in between.
    id.ok_or_else(|| StoreError::Unexpected("it was erased or purged meanwhile".into()))
}

/// Text as PostgreSQL can store it: it refuses the NUL character, which JSON can carry
/// (`"\u0000"` in an id, a destination's answer). It becomes U+FFFD, the replacement character.
pub(crate) fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Hands `item` to the task that groups such work, and waits for its answer.
async fn through<T, R>(
    tasks: &mpsc::Sender<(T, oneshot::Sender<Result<R, StoreError>>)>,
    item: T,
) -> Result<R, StoreError> {
    let (tx, rx) = oneshot::channel();
    tasks
        .send((item, tx))
        .await
        .map_err(|_| StoreError::Closed)?;
    rx.await.map_err(|_| StoreError::Closed)?
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn accept(&self, incoming: Incoming) -> Result<Accepted, StoreError> {
        through(&self.accepts, incoming).await
    }

    async fn claim_due(
        &self,
        destination: &str,
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let expires = now.saturating_add(millis(lease));
        let token = crate::random::hex_token(16).map_err(|_| StoreError::Random)?;
        // One statement: the due rows are locked (others' locked rows skipped, so instances
        // never wait on each other), leased, and read with their notifications. No lock
        // outlives it.
        let rows: Vec<(i64, i64, i64, i64, Option<String>, Option<i64>, String, String, i64)> =
            sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM deliveries
                 WHERE destination = $1 AND status IN ('pending', 'retrying') AND next_attempt_at <= $2
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $2)
                 ORDER BY next_attempt_at, id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED),
             leased AS (
                 UPDATE deliveries d SET lease_owner = $4, lease_expires_at = $5, lease_token = $6,
                     in_doubt_since = COALESCE(d.in_doubt_since, d.claimed_at), claimed_at = $2
                 FROM due WHERE d.id = due.id
                 RETURNING d.id, d.notification_id, d.attempts, d.retry_base, d.state, d.in_doubt_since)
             SELECT l.id, l.notification_id, l.attempts, l.retry_base, l.state, l.in_doubt_since,
                    n.participation_id, n.body, n.received_at
             FROM leased l JOIN notifications n ON n.id = l.notification_id
             ORDER BY l.id",
        )
        .bind(destination)
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(owner)
        .bind(expires)
        .bind(&token)
        .fetch_all(&self.relaxed)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, nid, attempts, base, state, doubt, pid, body, at)| {
                claimed(
                    (id, nid, attempts, base, state, doubt),
                    (pid, Arc::from(body), at),
                    destination,
                    &token,
                )
            })
            .collect())
    }

    async fn next_due(&self, destination: &str) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_expires_at, 0)))
             FROM deliveries WHERE destination = $1 AND status IN ('pending', 'retrying')",
        )
        .bind(destination)
        .fetch_one(&self.relaxed)
        .await?;
        Ok(due)
    }

    async fn record(&self, attempts: Vec<AttemptLog>) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        through(&self.records, attempts).await
    }

    async fn unclaim(&self, claims: Vec<(i64, String)>) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        let (ids, leases): (Vec<i64>, Vec<String>) = claims.into_iter().unzip();
        // Nothing was sent under this claim, so it leaves no doubt behind (an earlier one stays).
        sqlx::query(
            "UPDATE deliveries d SET lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL,
                 claimed_at = NULL
             FROM unnest($1::bigint[], $2::text[]) AS x(id, lease)
             WHERE d.id = x.id AND d.lease_token = x.lease",
        )
        .bind(&ids)
        .bind(&leases)
        .execute(&self.relaxed)
        .await?;
        Ok(())
    }

    async fn release(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL
             WHERE lease_owner = $1 AND status IN ('pending', 'retrying')",
        )
        .bind(owner)
        .execute(&self.relaxed)
        .await?;
        Ok(done.rows_affected())
    }

    async fn pending_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT destination, COUNT(*) FROM deliveries WHERE status IN ('pending', 'retrying')
             GROUP BY destination ORDER BY destination",
        )
        .fetch_all(&self.relaxed)
        .await?;
        Ok(rows.into_iter().map(|(d, n)| (d, total(n))).collect())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        // A write through the pool accepts use: a standby, or a database that cannot commit,
        // is not ready.
        sqlx::query(
            "INSERT INTO health (id, checked_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(now_ms())
        .execute(&self.durable)
        .await?;
        Ok(())
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<DeliveryRow>, StoreError> {
        self.list_deliveries(filter).await
    }

    async fn show(
        &self,
        delivery_id: i64,
    ) -> Result<Option<(DeliveryRow, Vec<AttemptRow>)>, StoreError> {
        self.show_delivery(delivery_id).await
    }

    async fn notification(&self, id: i64) -> Result<Option<NotificationRow>, StoreError> {
        self.notification_row(id).await
    }

    async fn stats(&self, recent_since: i64) -> Result<Vec<DestinationStats>, StoreError> {
        self.destination_stats(recent_since).await
    }

    async fn hourly(&self, since_hour: i64) -> Result<Vec<HourCount>, StoreError> {
        self.hour_counts(since_hour).await
    }

    async fn replay(&self, selection: &Selection, force: bool) -> Result<Replayed, StoreError> {
        self.replay_deliveries(selection, force).await
    }

    async fn cancel(&self, destination: &str, statuses: &[Status]) -> Result<u64, StoreError> {
        self.cancel_deliveries(destination, statuses).await
    }

    async fn forget(&self, participation_id: &str) -> Result<Forgotten, StoreError> {
        self.forget_participation(participation_id).await
    }

    async fn purge(&self, statuses: &[Status], before: i64) -> Result<u64, StoreError> {
        self.purge_finished(statuses, before).await
    }

    fn limiters(&self) -> Arc<dyn crate::worker::rate::Limiters> {
        Arc::new(PgStore::limiters(self))
    }

    fn locks(&self) -> Option<Arc<dyn hookfan_connectors::Locks>> {
        Some(Arc::new(PgLocks::new(self.relaxed.clone())))
    }
}
