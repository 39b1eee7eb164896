//! `registry-server`: serves the registry credential service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use registry_server::config::{AuthMode, Config, LogFormat, Overrides};

/// mimalloc: the hot path allocates per request (protobuf, metadata, audit
/// rows); it spends a fraction of glibc malloc's time on that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps container-registry credentials and hands them to orchestrators.
///
/// Configuration layers: defaults, --config FILE (TOML), REGISTRY_* environment
/// variables (REGISTRY_AUTH__MODE=jwt for nested keys), then these flags.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the embedded SQLite database and generated key [default: registry-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [default: SQLite in the data directory].
    #[arg(long)]
    database_url: Option<String>,
    /// File of base64 master keys, one per line, the first one primary.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// How callers are authenticated [default: development].
    #[arg(long, value_enum)]
    auth_mode: Option<AuthMode>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a new random master key (base64) for a key file.
    Keygen,
    /// Seals every organization's stored credentials again under the
    /// primary master key (the first of the key file), with the same
    /// configuration as the server. Resumable: run again while it reports
    /// registries remaining. On PostgreSQL it runs beside the servers; the
    /// embedded SQLite store needs the server stopped (or use the
    /// RekeyRegistries RPC).
    Rekey {
        /// At most this many registries in this run.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
}

/// The `rekey` command: a report on stdout, non-zero when a blob would not
/// open (named in the report) so a script does not remove an old key.
async fn rekey(config: &Config, limit: u64) -> ExitCode {
    match registry_server::rekey(config, limit).await {
        Ok(report) => {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "primary key {}: {} re-wrapped, {} changed meanwhile, {} failed, {} remaining",
                    report.primary_key_id,
                    report.rewrapped,
                    report.raced,
                    report.failures.len(),
                    report.remaining
                );
                for failure in &report.failures {
                    println!("failed: registry {}: {}", failure.registry_id, failure.reason);
                }
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("registry-server rekey: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Keygen) = cli.command {
        return match registry_crypto::generate_key() {
            Ok(key) => {
                #[allow(clippy::print_stdout)]
                {
                    println!("{}", key.as_str());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("registry-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        database_url: cli.database_url,
        master_key_file: cli.master_key_file,
        auth_mode: cli.auth_mode,
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("registry-server: {e}");
            return ExitCode::from(2);
        }
    };
    registry_server::telemetry::init(&config.log);
    if let Some(Command::Rekey { limit }) = cli.command {
        return rekey(&config, limit).await;
    }
    match registry_server::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("registry-server: refusing to start: {e}");
            ExitCode::FAILURE
        }
    }
}
