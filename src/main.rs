//! The `hookfan` command: parses arguments, sets up logging, and calls into the library.

mod operator_cli;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookfan::commands::{self, check, preview};
use hookfan::config::Config;

#[derive(Parser)]
#[command(
    name = "hookfan",
    version,
    about = "Relays Qualifio participation webhooks to many destinations."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
pub struct ConfigArg {
    /// The config file [default: $HOOKFAN_CONFIG, else ./hookfan.toml]
    #[arg(
        long,
        short,
        env = "HOOKFAN_CONFIG",
        default_value = "hookfan.toml",
        hide_default_value = true,
        hide_env = true
    )]
    pub config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: accept notifications and deliver them.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// `pretty` for people, `json` (one object per line) for log collectors.
        #[arg(long, value_enum, default_value = "pretty")]
        log_format: LogFormat,
    },
    /// Validate the config and summarise its sources and destinations.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the summary (or the errors) as JSON.
        #[arg(long)]
        json: bool,
        /// Also prove each enabled destination works with a harmless real call.
        #[arg(long)]
        online: bool,
        /// With --online: only this destination (even if disabled).
        #[arg(long, short, requires = "online")]
        destination: Option<String>,
    },
    /// Show what each destination would receive for a payload.
    Preview {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this destination.
        #[arg(long, short)]
        destination: Option<String>,
        /// Route as if the payload came from this source (applies `sources` filters).
        #[arg(long, short)]
        source: Option<String>,
        /// Print JSON: {"destinations": [{"name", "type", "routed", "reason", "fields", …}]}.
        #[arg(long)]
        json: bool,
        /// Ask each destination what shapes its request (Sheets: show the row in the sheet's
        /// column order).
        #[arg(long)]
        online: bool,
        /// A Qualifio payload file, or - for standard input.
        payload: PathBuf,
    },
    /// Print a fresh random secret (32 bytes, hex) for a source's token or the admin token.
    GenSecret,
    #[command(flatten)]
    Operator(operator_cli::OperatorCommand),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    // Every outbound client uses rustls with ring; reqwest panics at the first client without it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => run_serve(&config.config, log_format),
        Command::Check {
            config,
            json,
            online,
            destination,
        } => run_check(&config.config, json, online, destination.as_deref()),
        Command::Preview {
            config,
            destination,
            source,
            json,
            online,
            payload,
        } => run_preview(
            &config.config,
            destination.as_deref(),
            source.as_deref(),
            json,
            online,
            &payload,
        ),
        Command::GenSecret => match hookfan::random::hex_token(32) {
            Ok(secret) => {
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("the operating system's random generator failed");
                ExitCode::FAILURE
            }
        },
        Command::Operator(command) => command.run(),
    }
}

/// Logs go to stderr; `RUST_LOG` tunes them (default `info`).
fn init_logs(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // yup-oauth2 logs its token requests and answers (a signed assertion, an access token) at
    // debug level: keep them out whatever RUST_LOG says.
    if let Ok(quiet) = "yup_oauth2=info".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run_serve(path: &std::path::Path, log_format: LogFormat) -> ExitCode {
    init_logs(log_format);
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("invalid config:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match hookfan::Listeners::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listeners.hooks.local_addr() {
        tracing::info!(%addr, config = %path.display(), "listening");
    }
    if let Some(Ok(addr)) = listeners.admin.as_ref().map(|l| l.local_addr()) {
        tracing::info!(%addr, "admin listening");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async {
        let signals = hookfan::Signals {
            stop: Box::pin(stop_signal()),
            reload: reload_signal(),
        };
        hookfan::run(config, listeners, signals).await
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Each SIGHUP (`systemctl reload`, `kill -HUP`) asks for the config file to be read again.
fn reload_signal() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot listen for SIGHUP ({e}): a config change needs a restart"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// SIGINT (Ctrl-C) or SIGTERM (systemd, Docker, Kubernetes).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn load(path: &std::path::Path, json: bool) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        if json {
            println!("{:#}", commands::config_error_json(&e));
        } else {
            eprintln!("{e}");
        }
        ExitCode::FAILURE
    })
}

/// A runtime for the commands that make network calls or read the store.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok(rt.block_on(future)),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn run_check(path: &std::path::Path, json: bool, online: bool, only: Option<&str>) -> ExitCode {
    let config = match load(path, json) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Work left by removed destinations is worth a warning, not a failed check.
    let stranded = match block_on(check::stranded(&config)) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("warning: {e}");
            Vec::new()
        }
        Err(code) => return code,
    };
    let reached = if online {
        match block_on(check::online(&config, only)) {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            Err(code) => return code,
        }
    } else {
        None
    };
    if json {
        let mut summary = check::summary_json(&config);
        summary["stranded"] = serde_json::json!(stranded);
        if let Some(r) = &reached {
            summary["online"] = serde_json::json!(r);
        }
        println!("{summary:#}");
    } else {
        print!("{}", check::summary_text(&config));
        print!("{}", check::stranded_text(&stranded));
        if let Some(r) = &reached {
            print!("{}", check::online_text(r));
        }
    }
    if reached.is_some_and(|r| r.iter().any(|x| !x.ok)) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_preview(
    path: &std::path::Path,
    only: Option<&str>,
    source: Option<&str>,
    json: bool,
    online: bool,
    payload: &std::path::Path,
) -> ExitCode {
    let config = match load(path, json) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let text = if payload.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(payload)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", payload.display());
            return ExitCode::FAILURE;
        }
    };
    let result = if online {
        match block_on(preview::preview_online(&config, &text, only, source)) {
            Ok(r) => r,
            Err(code) => return code,
        }
    } else {
        preview::preview(&config, &text, only, source)
    };
    match result {
        Ok(previews) if json => {
            println!("{:#}", preview::to_json(&previews));
            ExitCode::SUCCESS
        }
        Ok(previews) => {
            print!("{}", preview::to_text(&previews));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
