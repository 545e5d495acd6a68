//! The `keygate` binary: argument handling over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use keygate::telemetry::log::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: under load, glibc's malloc/free
/// were about a tenth of the gateway's CPU per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// keygate: an API-key auth gateway in front of existing HTTP backends.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, long_about = None)]
struct Cli {
    /// Log format on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway in the foreground (logs to stdout).
    Run {
        /// Gateway config file.
        #[arg(long, default_value = keygate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Take over the listening sockets of the running gateway: load and
        /// check everything, wait on [server] upgrade_sock, then send the
        /// running gateway SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate config and key snapshot; exit 0 with a summary, or 1 with every error.
    Check {
        /// Gateway config file.
        #[arg(long, default_value = keygate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run the bundled demo: the gateway plus an echo upstream, with curl lines to try.
    Demo {
        /// Demo config file.
        #[arg(long, default_value = keygate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Manage keys in a snapshot file.
    #[command(subcommand)]
    Keys(Box<KeysCommand>),
    /// Probe the admin /healthz of a running gateway (for container health checks).
    Healthcheck {
        /// Gateway config file (its [admin] listen address is probed).
        #[arg(long, default_value = keygate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Probe this address instead of the config's.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key: prints the key alone on stdout (once), the record id on stderr.
    New(Box<keygate::cli::keys::NewArgs>),
    /// Mark a key revoked now.
    Revoke(keygate::cli::keys::RevokeArgs),
    /// Replace a key with a new one: both work during --grace, on one rate limit.
    Rotate(keygate::cli::keys::RotateArgs),
    /// List key metadata.
    List(keygate::cli::keys::ListArgs),
    /// Read a key on stdin and print its `sha256:<hex>` hash.
    Hash,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, upgrade } => {
            keygate::telemetry::log::init(cli.log_format);
            start(
                &config,
                keygate::server::RunOptions {
                    log_format: cli.log_format,
                    upgrade,
                    ..Default::default()
                },
            )
        }
        Command::Check { config } => match keygate::cli::check::check(&config) {
            Ok(checked) => {
                for w in &checked.warnings {
                    println!("warning: {w}");
                }
                println!("ok: {}", checked.summary);
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems.0 {
                    println!("error: {p}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Demo { config } => {
            keygate::telemetry::log::init(cli.log_format);
            match keygate::cli::demo::prepare(&config) {
                // The gateway runs on the demo's copy of the config, which
                // points at the freshly minted demo snapshot.
                Ok((demo_config, options)) => start(
                    &demo_config,
                    keygate::server::RunOptions {
                        log_format: cli.log_format,
                        ..options
                    },
                ),
                Err(e) => {
                    eprintln!("keygate demo: {:#}", anyhow::Error::from(e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keys(k) => {
            keygate::util::sys::ignore_file_size_signal();
            report(keys(*k))
        }
        Command::Healthcheck { config, admin } => {
            report(keygate::cli::healthcheck::healthcheck(&config, admin).context("healthcheck"))
        }
    }
}

fn start(config: &std::path::Path, options: keygate::server::RunOptions) -> ExitCode {
    match keygate::server::run(config, options) {
        Ok(never) => match never {},
        Err(e) => {
            // Printed plainly as well as logged, so `keygate run` in a terminal
            // shows every reason even with logs filtered.
            for line in e.to_string().lines() {
                eprintln!("keygate: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn keys(k: KeysCommand) -> anyhow::Result<()> {
    use keygate::cli::keys;
    match k {
        KeysCommand::New(args) => keys::new_key(&args).context("keys new"),
        KeysCommand::Revoke(args) => keys::revoke(&args).context("keys revoke"),
        KeysCommand::Rotate(args) => keys::rotate(&args).context("keys rotate"),
        KeysCommand::List(args) => keys::list(&args).context("keys list"),
        KeysCommand::Hash => keys::hash_stdin().context("keys hash"),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
