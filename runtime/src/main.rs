//! crustd's command line: flags over the config file over the defaults, then serve
//! until SIGTERM or SIGINT. SIGHUP reads the config file again and applies what can
//! change without a restart (the log level, the `[registry]` table; see
//! `daemon::run`); a file that doesn't load keeps the config in use.

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
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
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
    /// Images in and out of a running crustd as archives, for nodes without a
    /// registry (its socket from --listen or the config file).
    Image {
        #[command(subcommand)]
        what: ImageCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import the images of an archive: an OCI image layout or a `docker save`
    /// archive, as tar (`-`: standard input). Prints each image recorded.
    Import {
        /// The archive, or `-`.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Export images as an OCI image layout in a tar archive (`-`: standard output).
    #[command(override_usage = "crustd image export REF... FILE|-")]
    Export {
        /// Image names or ids, then the archive to write, or `-`.
        #[arg(value_name = "REF", num_args = 2.., required = true)]
        args: Vec<String>,
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
    let file = cli
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(config::DEFAULT_FILE)).filter(|p| p.exists()));
    let config = load(&cli, file.as_deref())?;
    if let Some(Command::Image { what }) = cli.command {
        return image_command(&config.socket_path()?, what);
    }
    let log = init_logging(&config.log_level, &config.log_format)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("install SIGHUP handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
        let mut level = config.log_level.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(file) = &file else {
                    tracing::warn!("SIGHUP: crustd runs on its embedded defaults; no config file to reload");
                    continue;
                };
                let new = match load(&cli, Some(file)) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "SIGHUP: the config file does not load; the config in use stays");
                        continue;
                    }
                };
                tracing::info!(file = %file.display(), "SIGHUP: config reloaded");
                if new.log_level != level {
                    match log.set_level(&new.log_level) {
                        Ok(()) => {
                            tracing::info!(log_level = %new.log_level, "reload: log level in use");
                            level = new.log_level.clone();
                        }
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "reload: log level not changed"),
                    }
                }
                let _ = reload_tx.send(new);
            }
        });
        daemon::run(config, shutdown, reloads).await?;
        Ok(())
    })
}

/// `crustd image import|export` against the crustd serving on `socket`.
fn image_command(socket: &Path, what: ImageCommand) -> anyhow::Result<()> {
    use crust_runtime::admin;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        match what {
            ImageCommand::Import { file } => {
                let images = if file == "-" {
                    admin::import(socket, tokio::io::stdin()).await?
                } else {
                    let input = tokio::fs::File::open(&file)
                        .await
                        .with_context(|| format!("open {file}"))?;
                    admin::import(socket, input).await?
                };
                for image in images {
                    let names = image.repo_tags.iter().chain(&image.repo_digests);
                    let names: Vec<&str> = names.map(String::as_str).collect();
                    println!("imported {} {}", image.id, names.join(" "));
                }
                Ok(())
            }
            ImageCommand::Export { mut args } => {
                let file = args.pop().expect("clap requires two arguments");
                if file == "-" {
                    return admin::export(socket, args, &mut tokio::io::stdout()).await;
                }
                // Written beside the file and renamed: a failed export leaves no
                // partial archive under its name.
                let path = PathBuf::from(&file);
                let tmp = path.with_file_name(format!(
                    ".{}.partial",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ));
                let mut out = tokio::fs::File::create(&tmp)
                    .await
                    .with_context(|| format!("create {}", tmp.display()))?;
                let written = admin::export(socket, args, &mut out).await;
                if written.is_ok() {
                    out.sync_all()
                        .await
                        .with_context(|| format!("sync {}", tmp.display()))?;
                }
                drop(out);
                match written {
                    Ok(()) => tokio::fs::rename(&tmp, &path)
                        .await
                        .with_context(|| format!("rename {} to {file}", tmp.display())),
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        Err(e)
                    }
                }
            }
        }
    })
}

/// The config: `file` if any, else the defaults, with the flags over it, checked.
fn load(cli: &Cli, file: Option<&Path>) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(root) = &cli.root {
        config.root = root.clone();
    }
    if let Some(state) = &cli.state {
        config.state = state.clone();
    }
    if let Some(listen) = &cli.listen {
        config.listen = listen.clone();
    }
    if let Some(level) = &cli.log_level {
        config.log_level = level.clone();
    }
    if let Some(format) = &cli.log_format {
        config.log_format = format.clone();
    }
    config.validate()?;
    Ok(config)
}

/// The log filter in use, which a reload can replace.
struct LogControl {
    filter: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    /// RUST_LOG was set: it wins over the config's level, at start and at reloads.
    from_env: bool,
}

impl LogControl {
    fn set_level(&self, level: &str) -> anyhow::Result<()> {
        if self.from_env {
            anyhow::bail!("RUST_LOG is set and wins over log_level");
        }
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .with_context(|| format!("log_level {level:?}"))?;
        self.filter.reload(filter).context("replace the log filter")
    }
}

fn init_logging(level: &str, format: &str) -> anyhow::Result<LogControl> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let env = std::env::var("RUST_LOG").ok().filter(|e| !e.is_empty());
    let filter = match &env {
        Some(env) => tracing_subscriber::EnvFilter::try_new(env),
        None => tracing_subscriber::EnvFilter::try_new(level),
    }
    .with_context(|| format!("log_level {level:?}"))?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    if format == "json" {
        registry.with(lines.json().flatten_event(true)).init();
    } else {
        registry.with(lines).init();
    }
    Ok(LogControl {
        filter: handle,
        from_env: env.is_some(),
    })
}
