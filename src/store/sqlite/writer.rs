//! The one writer. SQLite takes one write at a time, and every statement through sqlx is a hop
//! to its connection thread, so writes are grouped: whatever accepts, attempt records and
//! claims wait while a transaction runs go into the next one, each kind in a few statements
//! whatever the count (accepts as bound values, up to 128 rows a statement; records as one JSON
//! array; one statement per claim, its notifications included). Every transaction commits
//! without waiting for the disk; the accepts in it are answered after the flush of the
//! write-ahead log that follows, which runs on a thread of its own while the next transaction
//! does (see [`super::flush`]). Records are answered at once (see [`Durability`]), and so are
//! claims unless an accept still waits for its flush: then they wait for it too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection as _, Sqlite, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use super::flush::{self, Flusher};
use crate::store::StoreError;
use crate::store::assemble::attempt_json;
use crate::store::model::*;

/// The most jobs that share one transaction.
pub(super) const GROUP_MAX: usize = 512;

/// How far a write must reach before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Durability {
    /// On disk (`synchronous=FULL`) when the write returns: erasures. (The writer task's
    /// accepts reach the disk by [`super::flush`] instead.)
    Fsync,
    /// In the OS (`synchronous=NORMAL`): survives a crash of the process, and the next fsync
    /// takes it to disk. Giving leases back, readiness, purges, replays and cancels use it:
    /// losing one to a power cut means at worst a repeated delivery (at-least-once allows it),
    /// or an operator's replay, cancel or purge to run again.
    Os,
    /// As `Os`, for the writer task's groups (accepts, claims, records), with statement journals
    /// kept in memory (`temp_store=MEMORY`). A statement that changes many rows inside a
    /// transaction keeps the earlier content of the pages it changes in a journal of its own,
    /// and SQLite moves one larger than 64 KiB to a temporary file: a group's 128-row statements
    /// did so nearly every group, and creating, writing and deleting that file took a large
    /// share of the writer's thread. Such a journal holds at most the pages its statement's rows
    /// fill, a few per row: about the size of what the group holds in memory already (its
    /// bodies, its attempts). Purges and operators' changes, which may change millions of rows,
    /// keep spilling to a file.
    Group,
}

/// The single writer connection, and the [`Durability`] it was last set to.
///
/// The writer task keeps the connection from one transaction to the next while no one else
/// asks for it: sqlx pings a connection each time it goes back to the pool (a round trip to
/// its thread, about half a millisecond under load), which would otherwise be paid by every
/// group. Anyone else ([`Writer::acquire`]: giving claims back, releasing leases at a stop,
/// readiness probes, purges, operators' changes) says so, and the writer task lets go after
/// its current transaction.
pub(super) struct Writer {
    pool: SqlitePool,
    mode: Mutex<Option<Durability>>,
    /// How many besides the writer task are waiting for the connection.
    wanted: AtomicUsize,
    /// Rung when someone starts waiting.
    asked: Notify,
}

impl Writer {
    pub fn new(pool: SqlitePool) -> Writer {
        Writer {
            pool,
            mode: Mutex::new(None),
            wanted: AtomicUsize::new(0),
            asked: Notify::new(),
        }
    }

    fn set_mode(&self, mode: Option<Durability>) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    fn mode(&self) -> Option<Durability> {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, set to the durability the next transaction needs, for anyone but the
    /// writer task. Each write states its own, so a failure between two writes can never leave
    /// accepts undurable.
    pub async fn acquire(
        &self,
        durability: Durability,
    ) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        let waiting = Waiting::new(&self.wanted);
        self.asked.notify_one();
        let conn = self.pool.acquire().await;
        drop(waiting);
        self.prepare(conn?, durability).await
    }

    /// Whether someone besides the writer task waits for the connection.
    fn wanted(&self) -> bool {
        self.wanted.load(Ordering::SeqCst) > 0
    }

    /// `conn`, set to `durability`.
    ///
    /// A COMMIT that failed (a full disk, an unwritable file) leaves its transaction open, in
    /// SQLite and in sqlx's count: later writes on that connection would nest in it and never
    /// be committed. Such a connection is closed, and a fresh one opened in its place. (The
    /// writer task's own transactions, which sqlx does not count, close their connection
    /// themselves when they fail: see [`write`].)
    async fn prepare(
        &self,
        mut conn: PoolConnection<Sqlite>,
        durability: Durability,
    ) -> Result<PoolConnection<Sqlite>, sqlx::Error> {
        if !conn.is_in_transaction() {
            if self.mode() == Some(durability) {
                return Ok(conn);
            }
            // Unknown until the pragma is known to have run: a caller dropped mid-way (a
            // cancelled request) must not leave the cache saying FULL over a NORMAL connection.
            self.set_mode(None);
            if apply_durability(&mut conn, durability).await.is_ok() {
                self.set_mode(Some(durability));
                return Ok(conn);
            }
        }
        tracing::warn!(
            "the database connection was left in a failed transaction; opening a new one"
        );
        self.set_mode(None);
        conn.close_on_drop();
        drop(conn);
        let mut conn = self.pool.acquire().await?;
        apply_durability(&mut conn, durability).await?;
        self.set_mode(Some(durability));
        Ok(conn)
    }
}

/// One caller counted as waiting for the connection, until dropped (also when its future is
/// dropped mid-wait: a client gone, a stop), so the count never stays up.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn apply_durability(
    conn: &mut SqliteConnection,
    durability: Durability,
) -> Result<(), sqlx::Error> {
    let pragma = match durability {
        Durability::Fsync => "PRAGMA synchronous = FULL; PRAGMA temp_store = DEFAULT",
        Durability::Os => "PRAGMA synchronous = NORMAL; PRAGMA temp_store = DEFAULT",
        Durability::Group => "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY",
    };
    sqlx::query(pragma).execute(conn).await.map(|_| ())
}

/// What the writer is asked to do.
pub(super) enum Job {
    Accept(Incoming, oneshot::Sender<Result<Accepted, StoreError>>),
    Record(Vec<AttemptLog>, oneshot::Sender<Result<(), StoreError>>),
    Claim(Claim, oneshot::Sender<Result<Leased, StoreError>>),
}

/// A claim of up to `limit` due deliveries of `destination`, leased to `owner` until `expires`
/// under `token`.
pub(super) struct Claim {
    pub destination: String,
    pub limit: i64,
    pub owner: String,
    pub now: i64,
    pub expires: i64,
    pub token: String,
}

/// What a claim leased, a row per delivery: its `LeaseColumns`, then its notification's
/// `participation_id, body, received_at` (`None` only if the notification were missing). The
/// caller shapes them, off the writer task.
pub(super) type Leased = Vec<(
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
)>;

/// The jobs of one transaction, and where each answer goes.
#[derive(Default)]
struct Group {
    accepts: Vec<Incoming>,
    accept_replies: Vec<oneshot::Sender<Result<Accepted, StoreError>>>,
    records: Vec<Vec<AttemptLog>>,
    record_replies: Vec<oneshot::Sender<Result<(), StoreError>>>,
    claims: Vec<Claim>,
    claim_replies: Vec<oneshot::Sender<Result<Leased, StoreError>>>,
}

impl Group {
    fn len(&self) -> usize {
        self.accepts.len() + self.records.len() + self.claims.len()
    }
}

/// Takes every waiting job, runs them in one transaction, answers each. A transaction that
/// fails is retried job by job, so one bad item fails only itself. (A transaction commits with
/// its last statement, so a failed one committed nothing.)
pub(super) async fn run(writer: Arc<Writer>, flusher: Flusher, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(GROUP_MAX);
    // The connection, kept between transactions until someone else asks for it.
    let mut held: Option<PoolConnection<Sqlite>> = None;
    loop {
        let got = if held.is_some() {
            // A ring whose caller already got the connection after the last group can be left
            // over: it costs one needless hand-back, no more.
            tokio::select! {
                n = rx.recv_many(&mut jobs, GROUP_MAX) => n,
                () = writer.asked.notified() => {
                    held = None;
                    continue;
                }
            }
        } else {
            rx.recv_many(&mut jobs, GROUP_MAX).await
        };
        if got == 0 {
            return;
        }
        let mut group = Group::default();
        for job in jobs.drain(..) {
            match job {
                Job::Accept(item, reply) => {
                    group.accepts.push(item);
                    group.accept_replies.push(reply);
                }
                Job::Record(attempts, reply) => {
                    group.records.push(attempts);
                    group.record_replies.push(reply);
                }
                Job::Claim(claim, reply) => {
                    group.claims.push(claim);
                    group.claim_replies.push(reply);
                }
            }
        }
        if flusher.broken().is_err() {
            // Nothing more is accepted once a flush has failed (see `flush`).
            for reply in group.accept_replies.drain(..) {
                if let Err(e) = flusher.broken() {
                    let _ = reply.send(Err(e));
                }
            }
            group.accepts.clear();
            if group.len() == 0 {
                continue;
            }
        }
        let result = write(
            &writer,
            &mut held,
            &group.accepts,
            &group.records,
            &group.claims,
        )
        .await;
        match result {
            Ok((accepted, leased)) => {
                answer_when_flushed(&flusher, group.accept_replies.into_iter().zip(accepted));
                for reply in group.record_replies {
                    let _ = reply.send(Ok(()));
                }
                answer_claims(&flusher, group.claim_replies.into_iter().zip(leased));
            }
            Err(e) if group.len() <= 1 => {
                if let Some(reply) = group.accept_replies.pop() {
                    let _ = reply.send(Err(e));
                } else if let Some(reply) = group.record_replies.pop() {
                    let _ = reply.send(Err(e));
                } else if let Some(reply) = group.claim_replies.pop() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(_) => {
                for (item, reply) in group.accepts.iter().zip(group.accept_replies) {
                    match write(&writer, &mut held, std::slice::from_ref(item), &[], &[])
                        .await
                        .and_then(|(r, _)| only(r))
                    {
                        Ok(accepted) => answer_when_flushed(&flusher, [(reply, accepted)]),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                for (attempts, reply) in group.records.iter().zip(group.record_replies) {
                    let result =
                        write(&writer, &mut held, &[], std::slice::from_ref(attempts), &[]).await;
                    let _ = reply.send(result.map(|_| ()));
                }
                for (claim, reply) in group.claims.iter().zip(group.claim_replies) {
                    match write(&writer, &mut held, &[], &[], std::slice::from_ref(claim))
                        .await
                        .and_then(|(_, l)| only(l))
                    {
                        Ok(leased) => answer_claims(&flusher, [(reply, leased)]),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
    }
}

/// Answers once the write-ahead log that holds their transaction is on disk.
fn answer_when_flushed<T: Send + 'static>(
    flusher: &Flusher,
    answers: impl IntoIterator<Item = (oneshot::Sender<Result<T, StoreError>>, T)>,
) {
    let answers: Vec<_> = answers.into_iter().collect();
    if answers.is_empty() {
        return;
    }
    flusher.after_flush(Box::new(move |flushed| {
        for (reply, answer) in answers {
            let _ = reply.send(
                flushed
                    .clone()
                    .map(|()| answer)
                    .map_err(|e| flush::failed(&e)),
            );
        }
    }));
}

/// Answers claims at once, or, while accepts wait for their flush, after it: a claim committed
/// after an accept may have leased its deliveries, which must not go out before the
/// notification is on disk.
fn answer_claims(
    flusher: &Flusher,
    answers: impl IntoIterator<Item = (oneshot::Sender<Result<Leased, StoreError>>, Leased)>,
) {
    if flusher.unflushed() {
        answer_when_flushed(flusher, answers);
    } else {
        for (reply, leased) in answers {
            let _ = reply.send(Ok(leased));
        }
    }
}

/// The one answer of a transaction of one job.
fn only<T>(answers: Vec<T>) -> Result<T, StoreError> {
    answers
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Inconsistent("a write gave no answer".into()))
}

/// One transaction: the accepts, the records, then the claims, on the held connection (taken
/// from the pool if none is held). The connection stays held unless the transaction failed or
/// someone else waits for it.
async fn write(
    writer: &Writer,
    held: &mut Option<PoolConnection<Sqlite>>,
    accepts: &[Incoming],
    records: &[Vec<AttemptLog>],
    claims: &[Claim],
) -> Result<(Vec<Accepted>, Vec<Leased>), StoreError> {
    let conn = match held.take() {
        Some(conn) => conn,
        None => writer.pool.acquire().await?,
    };
    // Accepts too: their answers wait for the flush that follows (see `flush`).
    let mut conn = writer.prepare(conn, Durability::Group).await?;
    let mut bracket = Bracket::default();
    let written = async {
        let last = records.iter().all(Vec::is_empty) && claims.is_empty();
        let accepted = accept(&mut conn, &mut bracket, accepts, last).await?;
        record(&mut conn, &mut bracket, records, claims.is_empty()).await?;
        let mut leased = Vec::with_capacity(claims.len());
        for (i, c) in claims.iter().enumerate() {
            leased.push(claim(&mut conn, &mut bracket, c, i + 1 == claims.len()).await?);
        }
        bracket.close(&mut conn).await?;
        Ok::<_, StoreError>((accepted, leased))
    }
    .await;
    match written {
        Ok(accepted) => {
            if !writer.wanted() {
                *held = Some(conn);
            }
            Ok(accepted)
        }
        Err(e) => {
            // sqlx does not know of a transaction our own statement began, so it may still be
            // open here: closing the connection rolls it back, and the next write opens another.
            conn.close_on_drop();
            writer.set_mode(None);
            Err(e)
        }
    }
}

/// BEGIN travels with a transaction's first statement and COMMIT with its last: each statement
/// is a round trip to sqlx's SQLite thread, and on a machine whose cores doze between them a
/// round trip costs more than a small group's work.
#[derive(Default)]
struct Bracket {
    begun: bool,
    committed: bool,
}

impl Bracket {
    /// `sql`, opening the transaction if it is the first and closing it if it is the `last`.
    fn wrap(&mut self, sql: &str, last: bool) -> String {
        let begin = if self.begun { "" } else { "BEGIN IMMEDIATE; " };
        self.begun = true;
        self.committed = last;
        format!("{begin}{sql}{}", if last { "; COMMIT" } else { "" })
    }

    /// Commits, unless the last statement did.
    async fn close(self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.begun && !self.committed {
            sqlx::query("COMMIT").execute(conn).await?;
        }
        Ok(())
    }
}

/// The most rows one statement carries.
const ROWS_MAX: usize = 128;

/// `count` rows cut into statements: each chunk's rows, and the size of the statement that
/// carries them, a power of two padded with rows of NULLs the statement skips. So a handful of
/// statement texts serve every group size, each prepared once and kept in sqlx's cache, and
/// the rows travel as bound values, not as a JSON text to escape and parse again.
fn chunks(count: usize) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> {
    (0..count).step_by(ROWS_MAX).map(move |start| {
        let end = (start + ROWS_MAX).min(count);
        (start..end, (end - start).next_power_of_two())
    })
}

/// `(?, ?, ?), (?, ?, ?)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// (source, participation id, body hash): what makes a notification a duplicate.
type Key = (String, String, String);

/// Stores notifications and their deliveries: two statements for up to 128 of each (one more
/// when some are duplicates of earlier ones). `last`: nothing follows in the transaction, so
/// the last delivery statement commits it (the notifications' statements never do: the
/// duplicates' ids are read after them).
async fn accept(
    conn: &mut SqliteConnection,
    bracket: &mut Bracket,
    items: &[Incoming],
    last: bool,
) -> Result<Vec<Accepted>, StoreError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut inserted: Vec<(i64, String, String, String)> = Vec::with_capacity(items.len());
    for (chunk, class) in chunks(items.len()) {
        let rows = &items[chunk];
        let sql = bracket.wrap(
            &format!(
                "INSERT INTO notifications (source, participation_id, format, body_sha256, body, received_at)
                 SELECT column1, column2, column3, column4, column5, column6 FROM (VALUES {})
                 WHERE column1 IS NOT NULL
                 ON CONFLICT (participation_id, source, body_sha256) DO NOTHING
                 RETURNING id, source, participation_id, body_sha256",
                placeholders(class, 6)
            ),
            false,
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for i in rows {
            query = query
                .bind(i.source.as_str())
                .bind(i.participation_id.as_str())
                .bind(i.format)
                .bind(i.body_sha256.as_str())
                .bind(i.body.as_str())
                .bind(i.received_at);
        }
        for _ in rows.len()..class {
            query = query
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<i64>);
        }
        inserted.extend(query.fetch_all(&mut *conn).await?);
    }
    let mut new: HashMap<Key, i64> = inserted
        .into_iter()
        .map(|(id, s, p, h)| ((s, p, h), id))
        .collect();
    let key = |i: &Incoming| {
        (
            i.source.clone(),
            i.participation_id.clone(),
            i.body_sha256.clone(),
        )
    };
    // Stored before this transaction: their ids.
    let earlier: Vec<serde_json::Value> = items
        .iter()
        .filter(|i| !new.contains_key(&key(i)))
        .map(|i| json!({"source": i.source, "pid": i.participation_id, "sha": i.body_sha256}))
        .collect();
    let mut known: HashMap<Key, i64> = HashMap::new();
    if !earlier.is_empty() {
        let found: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, source, participation_id, body_sha256 FROM notifications
             WHERE (participation_id, source, body_sha256) IN
                   (SELECT value ->> 'pid', value ->> 'source', value ->> 'sha' FROM jsonb_each(?1))",
        )
        .bind(serde_json::Value::from(earlier).to_string())
        .fetch_all(&mut *conn)
        .await?;
        known = found
            .into_iter()
            .map(|(id, s, p, h)| ((s, p, h), id))
            .collect();
    }
    let mut out = Vec::with_capacity(items.len());
    let mut deliveries = Vec::new();
    for item in items {
        let k = key(item);
        // The first of a batch's copies is new; any later copy is its duplicate.
        if let Some(id) = new.remove(&k) {
            for destination in &item.destinations {
                deliveries.push((id, destination, item.received_at));
            }
            known.insert(k, id);
            out.push(Accepted::New {
                notification: id,
                deliveries: item.destinations.len(),
            });
        } else {
            let id = known.get(&k).copied().ok_or_else(|| {
                StoreError::Inconsistent("a duplicate vanished while accepting".into())
            })?;
            out.push(Accepted::Duplicate { notification: id });
        }
    }
    let mut statements = chunks(deliveries.len()).peekable();
    while let Some((chunk, class)) = statements.next() {
        let rows = &deliveries[chunk];
        let sql = bracket.wrap(
            &format!(
                "INSERT INTO deliveries (notification_id, destination, status, attempts, next_attempt_at, created_at, updated_at)
                 SELECT column1, column2, 'pending', 0, column3, column3, column3 FROM (VALUES {})
                 WHERE column1 IS NOT NULL",
                placeholders(class, 3)
            ),
            last && statements.peek().is_none(),
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, destination, at) in rows {
            query = query.bind(*id).bind(destination.as_str()).bind(*at);
        }
        for _ in rows.len()..class {
            query = query.bind(None::<i64>).bind(None::<&str>).bind(None::<i64>);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(out)
}

/// Records the attempts of every record job and moves their deliveries on: one query of three
/// statements for any number. `last`: nothing follows in the transaction.
async fn record(
    conn: &mut SqliteConnection,
    bracket: &mut Bracket,
    attempts: &[Vec<AttemptLog>],
    last: bool,
) -> Result<(), StoreError> {
    if attempts.iter().all(Vec::is_empty) {
        return Ok(());
    }
    let now = now_ms();
    // SQLite keeps any text as it is.
    let rows: Vec<serde_json::Value> = attempts
        .iter()
        .flatten()
        .map(|a| attempt_json(a, now, str::to_owned))
        .collect();
    let batch = serde_json::Value::from(rows).to_string();
    let sql = bracket.wrap(
        // Only the claim's holder records: an attempt that outlived its lease, taken over
        // since, leaves no row and moves nothing. The counts per destination and hour are
        // anonymous, for charts that outlive purge and erasure. `jsonb_each` hands each
        // attempt over as SQLite's binary JSON, which `->>` reads in place: `json_each` hands
        // it over as text, made again for every `->>` and matched or parsed again.
        "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, status_code, error, response)
         SELECT value ->> 'id', value ->> 'number', value ->> 'started_at', value ->> 'duration_ms',
                value ->> 'outcome', value ->> 'status_code', value ->> 'error', value ->> 'response'
         FROM jsonb_each(?1) JOIN deliveries d
           ON d.id = value ->> 'id' AND d.lease_token = value ->> 'lease';
         INSERT INTO attempt_counts (destination, hour, delivered, failed)
         SELECT d.destination, (value ->> 'started_at') / 3600000,
                SUM(value ->> 'outcome' = 'delivered'), SUM(value ->> 'outcome' != 'delivered')
         FROM jsonb_each(?1) JOIN deliveries d
           ON d.id = value ->> 'id' AND d.lease_token = value ->> 'lease'
         WHERE true
         GROUP BY 1, 2
         ON CONFLICT (destination, hour) DO UPDATE SET
             delivered = delivered + excluded.delivered, failed = failed + excluded.failed;
         UPDATE deliveries SET status = x.status, attempts = x.number, next_attempt_at = x.next_at,
             last_error = x.error, state = COALESCE(x.state, deliveries.state),
             lease_owner = NULL, lease_expires_at = NULL, lease_token = NULL, claimed_at = NULL,
             in_doubt_since = NULL, updated_at = ?2
         FROM (SELECT value ->> 'id' AS id, value ->> 'lease' AS lease, value ->> 'status' AS status,
                      value ->> 'number' AS number, value ->> 'next_at' AS next_at,
                      value ->> 'error' AS error, value ->> 'state' AS state
               FROM jsonb_each(?1)) AS x
         -- A lease that expired and was claimed again belongs to the new attempt now.
         WHERE deliveries.id = x.id AND deliveries.lease_token = x.lease",
        last,
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&batch)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Leases due deliveries of one destination, soonest first, and reads their notifications, in
/// one statement that commits the transaction if it is the `last`.
async fn claim(
    conn: &mut SqliteConnection,
    bracket: &mut Bracket,
    c: &Claim,
    last: bool,
) -> Result<Leased, StoreError> {
    let sql = bracket.wrap(
        "UPDATE deliveries SET lease_owner = ?1, lease_expires_at = ?2, lease_token = ?6,
             in_doubt_since = COALESCE(in_doubt_since, claimed_at), claimed_at = ?4
         WHERE id IN (
             SELECT id FROM deliveries
             WHERE destination = ?3 AND status IN ('pending', 'retrying') AND next_attempt_at <= ?4
               AND (lease_expires_at IS NULL OR lease_expires_at <= ?4)
             ORDER BY next_attempt_at, id
             -- Not a bare `LIMIT ?5`: SQLite compiles that as the value bound, so binding
             -- another expires the statement and it is prepared again, at every claim.
             LIMIT ?5 + 0)
         -- The notification comes with its delivery: each row is a message from SQLite's
         -- thread, and a second statement would send one more per delivery.
         RETURNING id, notification_id, attempts, retry_base, state, in_doubt_since,
             (SELECT participation_id FROM notifications n WHERE n.id = deliveries.notification_id),
             (SELECT body FROM notifications n WHERE n.id = deliveries.notification_id),
             (SELECT received_at FROM notifications n WHERE n.id = deliveries.notification_id)",
        last,
    );
    let leased = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&c.owner)
        .bind(c.expires)
        .bind(&c.destination)
        .bind(c.now)
        .bind(c.limit)
        .bind(&c.token)
        .fetch_all(&mut *conn)
        .await?;
    Ok(leased)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_cut_into_a_few_statement_sizes() {
        let cut = |n| chunks(n).collect::<Vec<_>>();
        assert!(cut(0).is_empty());
        assert_eq!(cut(1), [(0..1, 1)]);
        assert_eq!(cut(5), [(0..5, 8)]);
        assert_eq!(cut(128), [(0..128, 128)]);
        assert_eq!(cut(131), [(0..128, 128), (128..131, 4)]);
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }

    /// The writer task's groups keep their statement journals in memory; every other write on
    /// the connection (a purge may change millions of rows) spills to a file again. (This
    /// checks the pragmas each mode sets, not where SQLite puts the journal.)
    #[tokio::test]
    async fn only_groups_set_temp_store_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::SqliteStore::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let writer = &store.writer;
        // (synchronous, temp_store): FULL is 2, NORMAL 1; temp_store MEMORY is 2, DEFAULT 0.
        async fn modes(conn: &mut SqliteConnection) -> (i64, i64) {
            let get = |pragma| sqlx::query_scalar::<_, i64>(pragma);
            let synchronous = get("PRAGMA synchronous").fetch_one(&mut *conn).await;
            let temp_store = get("PRAGMA temp_store").fetch_one(&mut *conn).await;
            (synchronous.unwrap(), temp_store.unwrap())
        }
        let mut conn = writer.acquire(Durability::Os).await.unwrap();
        assert_eq!(modes(&mut conn).await, (1, 0));
        let mut conn = writer.prepare(conn, Durability::Group).await.unwrap();
        assert_eq!(modes(&mut conn).await, (1, 2));
        let mut conn = writer.prepare(conn, Durability::Fsync).await.unwrap();
        assert_eq!(modes(&mut conn).await, (2, 0));
        let mut conn = writer.prepare(conn, Durability::Group).await.unwrap();
        assert_eq!(modes(&mut conn).await, (1, 2));
        let mut conn = writer.prepare(conn, Durability::Os).await.unwrap();
        assert_eq!(modes(&mut conn).await, (1, 0));
    }
}
