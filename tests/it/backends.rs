//! The two stores the store tests run on: SQLite in a temporary folder, and PostgreSQL in a
//! schema of its own (so tests run in parallel) on the server `HOOKFAN_TEST_POSTGRES_URL`
//! names. `.ci/run` sets it. Unset, PostgreSQL tests are skipped with a note; set but
//! unreachable, they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hookfan::store::Store;
use sqlx::{Connection as _, PgConnection};

pub const PG_ENV: &str = "HOOKFAN_TEST_POSTGRES_URL";

/// Runs each named test `async fn name(backend: Backend)` once per store: as `sqlite::name` and
/// `postgres::name`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::backends::Backend::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = crate::backends::Backend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;

/// The server's URL, if the tests should use one: `None` (with a note) when the variable is not
/// set.
pub fn server_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("note: {PG_ENV} is not set: skipping a PostgreSQL test");
            None
        }
    }
}

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A schema of its own on the test server, dropped with everything in it when this is
/// dropped. Its `url` makes it the connection's search path, so a store opened on it creates
/// its tables there.
pub struct PgSchema {
    pub name: String,
    pub url: String,
    server: String,
}

impl PgSchema {
    /// A new schema; `None` when no server is configured. Panics when one is configured but
    /// cannot be reached: a PostgreSQL test must fail, not pass, without its database.
    pub async fn create() -> Option<PgSchema> {
        let server = server_url()?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!(
            "hookfan_t_{now}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut conn = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("{PG_ENV} is set but PostgreSQL cannot be reached there: {e}")
        });
        drop_stale_schemas(&mut conn, now).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = with_param(&server, &format!("options[search_path]={name}"));
        Some(PgSchema { name, url, server })
    }

    /// A connection of the test's own, in the schema.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }
}

/// Schemas left by test runs that ended without dropping theirs (killed), over an hour old.
async fn drop_stale_schemas(conn: &mut PgConnection, now: u64) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut first = false;
    ONCE.call_once(|| first = true);
    if !first {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'hookfan\\_t\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for name in names {
        let made: Option<u64> = name.split('_').nth(2).and_then(|t| t.parse().ok());
        if made.is_some_and(|t| t + 3600 < now) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Dropped from async code: on a thread of its own, with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let _ = sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut conn)
                        .await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// What keeps a backend's data alive for the test.
enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema(PgSchema),
}

/// One store for one test, and how to reach it again.
pub struct Backend {
    /// The `[storage] url` of the store.
    pub url: String,
    pub store: Arc<dyn Store>,
    keep: Keep,
}

impl Backend {
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hookfan.db").display());
        let store = hookfan::store::open(&url).await.unwrap();
        Backend {
            url,
            store,
            keep: Keep::Dir(dir),
        }
    }

    /// `None` when no PostgreSQL server is configured.
    pub async fn postgres() -> Option<Backend> {
        let schema = PgSchema::create().await?;
        let store = hookfan::store::open(&schema.url).await.unwrap();
        Some(Backend {
            url: schema.url.clone(),
            store,
            keep: Keep::Schema(schema),
        })
    }

    /// Another handle on the same store, as a second instance (or a command) would open it.
    pub async fn open_again(&self) -> Arc<dyn Store> {
        hookfan::store::open(&self.url).await.unwrap()
    }

    /// The PostgreSQL schema, if this backend is one.
    pub fn schema(&self) -> Option<&PgSchema> {
        match &self.keep {
            Keep::Schema(s) => Some(s),
            Keep::Dir(_) => None,
        }
    }
}

/// Waits until `check` holds, polling; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
