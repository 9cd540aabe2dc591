//! The operators' commands: read the delivery log, replay, cancel, forget, purge. They work on
//! the store the config names, whether `serve` runs or not. Exit codes: 0 done, 1 error (what
//! was not found is named), 2 bad usage (clap's own).

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use hookfan::commands::{log, operate};
use hookfan::config::Config;
use hookfan::store::{Filter, Selection, Status, Store, now_ms};

use crate::ConfigArg;

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// The delivery log, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// pending, retrying, delivered, dead or cancelled.
        #[arg(long, value_parser = status)]
        status: Option<Status>,
        #[arg(long, short)]
        destination: Option<String>,
        /// Only deliveries created within this long, e.g. 1h, 7d.
        #[arg(long, value_parser = duration)]
        since: Option<Duration>,
        /// Only this participation (Qualifio's id).
        #[arg(long)]
        participation: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// An array of objects with the table's fields (`id` is the delivery id).
        #[arg(long)]
        json: bool,
    },
    /// One delivery: the notification, what would be sent now, and every attempt.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The delivery id.
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Read the delivery log.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Make deliveries due now again, with a fresh retry schedule: by id, or all in a status.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Delivery ids.
        #[arg(required_unless_present = "status", conflicts_with_all = ["status", "destination", "since"])]
        ids: Vec<i64>,
        /// Every delivery in this status (e.g. dead).
        #[arg(long, value_parser = status)]
        status: Option<Status>,
        /// With --status: only this destination's.
        #[arg(long, short, requires = "status")]
        destination: Option<String>,
        /// With --status: only those last changed within this long, e.g. 24h.
        #[arg(long, value_parser = duration, requires = "status")]
        since: Option<Duration>,
        /// Replay delivered ones too (the destination gets them again).
        #[arg(long)]
        force: bool,
    },
    /// Cancel a destination's waiting deliveries: they are never sent, and stay in the log.
    Cancel {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, short)]
        destination: String,
        /// pending or retrying (default: both).
        #[arg(long, value_parser = waiting_status)]
        status: Option<Status>,
    },
    /// Per destination: counts by status, oldest waiting, last success and error, health.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Erase everything stored for a participation (GDPR), keeping only anonymous counts.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        /// Qualifio's participation id.
        #[arg(long)]
        participation: String,
    },
    /// Copy a SQLite store into PostgreSQL (notifications, deliveries in every status, their
    /// attempts, the hourly counts), to move to several instances. Stop `serve` first.
    MigrateStore {
        /// The SQLite store, e.g. sqlite:///var/lib/hookfan/hookfan.db (a relative path is
        /// taken from the current folder).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, e.g. postgres://hookfan@db.internal/hookfan.
        #[arg(long)]
        to: String,
        /// Empty the target first if it holds anything (otherwise it is refused).
        #[arg(long)]
        replace: bool,
    },
    /// Delete dead (and cancelled) deliveries older than a given age; delivered ones are
    /// purged hourly by `serve` after [storage] retention.
    Purge {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, required_unless_present = "cancelled")]
        dead: bool,
        #[arg(long)]
        cancelled: bool,
        /// e.g. 90d.
        #[arg(long, value_parser = duration)]
        older_than: Duration,
    },
}

fn status(text: &str) -> Result<Status, String> {
    text.parse().map_err(|_| {
        let words: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        format!("one of {}", words.join(", "))
    })
}

fn waiting_status(text: &str) -> Result<Status, String> {
    match status(text) {
        Ok(s) if s.is_waiting() => Ok(s),
        _ => Err("pending or retrying".into()),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    hookfan_connectors::units::parse_duration(text)
}

/// Milliseconds `d` ago.
fn ago(d: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl OperatorCommand {
    fn config(&self) -> Option<&ConfigArg> {
        Some(match self {
            OperatorCommand::Deliveries {
                command: DeliveriesCommand::List { config, .. },
            }
            | OperatorCommand::Deliveries {
                command: DeliveriesCommand::Show { config, .. },
            }
            | OperatorCommand::Replay { config, .. }
            | OperatorCommand::Cancel { config, .. }
            | OperatorCommand::Stats { config, .. }
            | OperatorCommand::Forget { config, .. }
            | OperatorCommand::Purge { config, .. } => config,
            OperatorCommand::MigrateStore { .. } => return None,
        })
    }

    /// Loads the config, opens its store, and runs.
    pub fn run(self) -> ExitCode {
        let Some(path) = self.config() else {
            return self.run_without_config();
        };
        let config = match Config::load(&path.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        crate::block_on(async move {
            // As it is: the relay owns the schema, and may be of another version.
            let store = match hookfan::store::open_existing(&config.storage.url).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot open the store: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match self.execute(&config, store.as_ref()).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        })
        .unwrap_or(ExitCode::FAILURE)
    }

    async fn execute(
        self,
        config: &Config,
        store: &dyn Store,
    ) -> Result<ExitCode, hookfan::store::StoreError> {
        match self {
            OperatorCommand::Deliveries { command } => match command {
                DeliveriesCommand::List {
                    status,
                    destination,
                    since,
                    participation,
                    limit,
                    json,
                    ..
                } => {
                    let filter = Filter {
                        status,
                        destination,
                        participation_id: participation,
                        since: since.map(ago),
                        limit,
                    };
                    let items = log::list(store, &filter).await?;
                    if json {
                        println!("{:#}", serde_json::json!(items));
                    } else {
                        print!("{}", log::list_text(&items));
                    }
                }
                DeliveriesCommand::Show { id, json, .. } => {
                    let Some(detail) = log::show(config, store, id).await? else {
                        eprintln!("no delivery {id}");
                        return Ok(ExitCode::FAILURE);
                    };
                    if json {
                        println!("{:#}", serde_json::json!(detail));
                    } else {
                        print!("{}", log::show_text(&detail));
                    }
                }
            },
            OperatorCommand::Replay {
                ids,
                status,
                destination,
                since,
                force,
                ..
            } => {
                let selection = match status {
                    Some(status) => Selection::Matching {
                        status: Some(status),
                        destination,
                        since: since.map(ago),
                    },
                    None => Selection::Ids(ids),
                };
                let replayed = store.replay(&selection, force).await?;
                print!("{}", operate::replayed_text(&replayed));
                if let Some(missing) = operate::missing_text(&replayed) {
                    eprintln!("{missing}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            OperatorCommand::Cancel {
                destination,
                status,
                ..
            } => {
                let statuses: Vec<Status> = status.into_iter().collect();
                let n = operate::cancel(store, &destination, &statuses).await?;
                print!("{}", operate::cancelled_text(n, &destination));
            }
            OperatorCommand::Stats { json, .. } => {
                let items = log::stats(config, store).await?;
                if json {
                    println!("{:#}", serde_json::json!(items));
                } else {
                    print!("{}", log::stats_text(&items));
                }
            }
            OperatorCommand::Forget { participation, .. } => {
                let forgotten = store.forget(&participation).await?;
                print!("{}", operate::forgotten_text(&forgotten, &participation));
                if forgotten.notifications == 0 {
                    eprintln!("no notification of participation {participation:?}");
                    return Ok(ExitCode::FAILURE);
                }
            }
            OperatorCommand::MigrateStore { .. } => return Ok(self.run_without_config()),
            OperatorCommand::Purge {
                dead,
                cancelled,
                older_than,
                ..
            } => {
                let mut statuses = Vec::new();
                if dead {
                    statuses.push(Status::Dead);
                }
                if cancelled {
                    statuses.push(Status::Cancelled);
                }
                let n = store.purge(&statuses, ago(older_than)).await?;
                print!("{}", operate::purged_text(n));
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl OperatorCommand {
    /// The commands that name their stores themselves.
    fn run_without_config(self) -> ExitCode {
        let OperatorCommand::MigrateStore { from, to, replace } = self else {
            return ExitCode::FAILURE;
        };
        crate::block_on(migrate_store(from, to, replace)).unwrap_or(ExitCode::FAILURE)
    }
}

/// `hookfan migrate-store`: SQLite → PostgreSQL.
async fn migrate_store(from: String, to: String, replace: bool) -> ExitCode {
    let shown = |url: &str| {
        hookfan::config::Storage {
            url: url.to_string(),
            retention: Duration::ZERO,
        }
        .redacted_url()
    };
    let Some(file) = hookfan::store::sqlite_file(&from) else {
        eprintln!(
            "--from must be a SQLite store (sqlite://FILE), not {}",
            shown(&from)
        );
        return ExitCode::FAILURE;
    };
    if !hookfan::store::postgres::is_postgres_url(&to) {
        eprintln!(
            "--to must be a PostgreSQL database (postgres://…), not {}",
            shown(&to)
        );
        return ExitCode::FAILURE;
    }
    if !file.exists() {
        eprintln!("no SQLite store at {}", file.display());
        return ExitCode::FAILURE;
    }
    let source = match hookfan::store::SqliteStore::open(&file).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let target = match hookfan::store::PgStore::open(&to).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open {}: {e}", shown(&to));
            return ExitCode::FAILURE;
        }
    };
    match hookfan::store::migrate::sqlite_to_postgres(&source, &target, replace).await {
        Ok(copied) => {
            print!(
                "{}",
                operate::copied_text(&copied, &file.display().to_string(), &shown(&to))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nothing was copied: {e}");
            ExitCode::FAILURE
        }
    }
}
