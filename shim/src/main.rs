//! crust-shim runs one container for crustd and outlives crustd's restarts. It owns the
//! container's init process, its stdio and log file, exec processes and the exit
//! status, and serves `shim.v1.Shim` on a Unix socket in the container's state dir. It
//! is single-threaded by design (libcontainer clones processes that run Rust code
//! without exec) and must stay small: its memory is paid once per container.
//!
//! `crust-shim pause --pin <path>` is another mode: the holder of a pod's shared PID
//! namespace (see `pause.rs`); `crust-shim userns` makes a pod's user namespace and the
//! namespaces it owns (see `userns.rs`).
//!
//! The process crustd starts forks the real shim (its own session, stdio on /dev/null,
//! its log in `<state>/shim.log`) and exits 0 once the container is created and the
//! socket is ready, or 1 with the error as one line on stderr.

mod attach;
mod container;
mod diag;
mod exec;
mod exec_io;
mod exit;
mod io;
mod log;
mod nspin;
mod pause;
mod reaper;
mod restore;
mod server;
mod systemd;
mod task;
mod userns;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use crust_proto::shim::{EXIT_SOCKET, SOCKET};
use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, dup2, fork, pipe2, setsid};

use crate::reaper::Reaper;
use crate::task::{Task, TaskConfig};

/// Runs one container for crustd and serves shim.v1.Shim on `<state>/shim.sock`.
#[derive(Debug, Parser)]
#[command(name = "crust-shim", version)]
struct Args {
    /// Container id.
    #[arg(long)]
    id: String,
    /// OCI bundle dir: config.json and the rootfs it names.
    #[arg(long)]
    bundle: PathBuf,
    /// The container's state dir: socket, exit file, shim log, libcontainer state.
    #[arg(long)]
    state: PathBuf,
    /// CRI log file of the container; without one the output is discarded.
    #[arg(long)]
    log_path: Option<PathBuf>,
    /// Keep the container's stdin open.
    #[arg(long)]
    stdin: bool,
    /// Give the container a pty.
    #[arg(long)]
    tty: bool,
    /// cgroups path, overriding the spec's linux.cgroupsPath.
    #[arg(long)]
    cgroups_path: Option<PathBuf>,
    /// Use the systemd cgroup driver.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Restore the container at start from the CRIU images in this dir (a checkpoint's
    /// `checkpoint/`) instead of starting its process.
    #[arg(long)]
    restore: Option<PathBuf>,
    /// Level of the shim's own log.
    #[arg(long, default_value = "info")]
    log_level: tracing::Level,
}

/// Quiet time after which an idle shim gives back memory (see crust-idle): the code
/// that created and started the container is not needed again until the next call.
const IDLE_TRIM_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    // The pause mode runs before clap and tokio: it forks a process that should carry
    // as little of the shim as possible.
    let mut raw = std::env::args_os();
    match raw.nth(1) {
        Some(a) if a == "pause" => return pause::main(raw),
        Some(a) if a == "userns" => return userns::main(raw),
        Some(a) if a == "restore" => return restore::main(raw),
        _ => {}
    }
    let mut args = Args::parse();
    if let Err(err) = absolutize(&mut args) {
        eprintln!("crust-shim: {err:#}");
        return ExitCode::FAILURE;
    }
    let (ready_r, ready_w) = match pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(err) => {
            eprintln!("crust-shim: create pipe: {err}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: no other thread exists yet.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            wait_ready(ready_r, &args.state)
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            daemon(args, ready_w)
        }
        Err(err) => {
            eprintln!("crust-shim: fork: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Makes the paths absolute: the daemon runs in `/`.
fn absolutize(args: &mut Args) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("current dir")?;
    for p in [&mut args.bundle, &mut args.state] {
        *p = cwd.join(&*p);
    }
    if let Some(log) = args.log_path.as_mut().filter(|p| !p.as_os_str().is_empty()) {
        *log = cwd.join(&*log);
    }
    Ok(())
}

/// The parent: reads the daemon's one-line answer ("ok" or the error).
fn wait_ready(ready: OwnedFd, state: &Path) -> ExitCode {
    let mut line = String::new();
    let _ = BufReader::new(File::from(ready)).read_line(&mut line);
    match line.trim_end() {
        "ok" => ExitCode::SUCCESS,
        "" => {
            let log = state.join("shim.log");
            eprintln!(
                "crust-shim: exited before it was ready, see {}",
                log.display()
            );
            ExitCode::FAILURE
        }
        err => {
            eprintln!("crust-shim: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon: detaches, creates the container, reports readiness, serves.
fn daemon(args: Args, ready: OwnedFd) -> ExitCode {
    let mut ready = Some(File::from(ready));
    let res = detach(&args).and_then(|()| run(args, &mut ready));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let msg = format!("{err:#}").replace('\n', " ");
            tracing::error!("{msg}");
            if let Some(mut r) = ready {
                let _ = writeln!(r, "{msg}");
            }
            ExitCode::FAILURE
        }
    }
}

/// New session, cwd `/`, stdio on /dev/null, own log in the state dir, subreaper.
fn detach(args: &Args) -> anyhow::Result<()> {
    setsid().context("setsid")?;
    std::env::set_current_dir("/").context("chdir /")?;
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("create state dir {}", args.state.display()))?;
    let log_path = args.state.join("shim.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let null = io::dev_null().context("open /dev/null")?;
    for fd in 0..=2 {
        dup2(null.as_raw_fd(), fd).context("redirect stdio")?;
    }
    let _ = tracing::subscriber::set_global_default(diag::FileLog::new(log, args.log_level));
    nix::sys::prctl::set_child_subreaper(true).context("set child subreaper")?;
    Ok(())
}

/// Binds a Unix socket at `path`, in place of one a previous shim left.
fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))
}

/// Runs the container on a single-threaded runtime until Shutdown.
fn run(args: Args, ready: &mut Option<File>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build runtime")?;
    rt.block_on(async {
        let reaper = Reaper::start().context("install SIGCHLD handler")?;
        let cfg = TaskConfig {
            id: args.id,
            bundle: args.bundle,
            state_dir: args.state.clone(),
            log_path: args.log_path.unwrap_or_default(),
            stdin: args.stdin,
            tty: args.tty,
            cgroups_path: args.cgroups_path,
            systemd: args.systemd_cgroup,
            restore: args.restore,
        };
        let task = Task::launch(&cfg, reaper)?;
        let (socket, exit_socket) = (args.state.join(SOCKET), args.state.join(EXIT_SOCKET));
        let (listener, exit_listener) =
            match bind(&socket).and_then(|l| Ok((l, bind(&exit_socket)?))) {
                Ok(both) => both,
                Err(err) => {
                    let _ = task.shutdown(true).await;
                    return Err(err);
                }
            };
        tokio::spawn(server::serve_exit_notices(Arc::clone(&task), exit_listener));
        tracing::info!(id = task.id(), socket = %socket.display(), "created, serving");
        if let Some(mut r) = ready.take() {
            let _ = writeln!(r, "ok");
        }
        let idle = crust_idle::Idle::new();
        tokio::spawn(idle.clone().run(IDLE_TRIM_AFTER));
        idle.touch();
        server::serve(task, listener, socket, &idle).await;
        let _ = std::fs::remove_file(&exit_socket);
        tracing::info!("shim exits");
        Ok(())
    })
}
