//! crustd's command line: flags over the config file over the defaults, then serve
//! until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crust_runtime::config::{self, Config};
use crust_runtime::daemon;
use tokio::signal::unix::{SignalKind, signal};

/// crustd: a Kubernetes container runtime (CRI v1).
#[derive(Debug, Parser)]
#[command(name = "crustd", version, about)]
struct Cli {
    /// TOML config file [default: /etc/crust/config.toml where it exists, else the
    /// embedded defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/crust].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory [default: /run/crust].
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// CRI socket [default: unix:///run/crust/crust.sock].
    #[arg(long, value_name = "unix:///PATH")]
    listen: Option<String>,
    /// Log filter, e.g. info or crust_runtime=debug [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration, with a comment per field.
    Default,
}

fn main() -> ExitCode {
    // before any thread: freed memory must be returnable to the OS (see crust-idle)
    crust_idle::use_one_heap();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line without its "error: " prefix.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("crustd: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crustd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Config {
        what: ConfigCommand::Default,
    }) = cli.command
    {
        print!("{}", config::default_toml());
        return Ok(());
    }
    let default_file = Path::new(config::DEFAULT_FILE);
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if default_file.exists() => Config::load(default_file)?,
        None => Config::default(),
    };
    if let Some(root) = cli.root {
        config.root = root;
    }
    if let Some(state) = cli.state {
        config.state = state;
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(level) = cli.log_level {
        config.log_level = level;
    }
    config.validate()?;
    init_logging(&config.log_level)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        daemon::run(config, shutdown).await?;
        Ok(())
    })
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => tracing_subscriber::EnvFilter::try_new(env),
        _ => tracing_subscriber::EnvFilter::try_new(level),
    }
    .with_context(|| format!("log_level {level:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    Ok(())
}
