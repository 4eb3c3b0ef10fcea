//! Recovery: the daemon is SIGKILLed with pods running and started again the way
//! it was first started; how long until it answers Status ready, and until
//! ListContainers shows every container running again. Only the daemon is killed:
//! the per-container processes (shims) are left alone, as on a node where the
//! runtime crashes or is upgraded.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cri::{self, Cri};
use crate::daemon::Daemon;
use crate::procs;
use crate::stats::ms;

/// The longest wait for the old daemon to die, and for the new one to be complete.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the new daemon is asked.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// How to start the daemon again.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Its command line (program and arguments).
    pub argv: Vec<String>,
    /// Its output is appended here (else dropped).
    pub log: Option<PathBuf>,
    /// The new pid is written here.
    pub pidfile: Option<PathBuf>,
}

/// The figures of the recovery phase, in milliseconds from the new daemon's start.
#[derive(Debug, Default, Serialize)]
pub struct Recovery {
    /// Pods running when the daemon was killed.
    pub pods: usize,
    /// Their containers.
    pub containers: usize,
    /// The first answer to Status, ready or not.
    pub first_answer_ms: f64,
    /// The first Status with RuntimeReady and NetworkReady true.
    pub status_ready_ms: f64,
    /// The first ListContainers with every container running.
    pub list_complete_ms: f64,
    /// The new daemon's RSS once complete.
    pub daemon_rss_kib: Option<u64>,
}

/// Kills the daemon, starts it again with `restart`, and waits until Status is
/// ready and ListContainers shows `containers` of this run running. `cri` is then a
/// client of the new daemon, and `daemon` its process.
pub async fn recover(
    cri: &mut Cri,
    endpoint: &str,
    daemon: &mut Daemon,
    restart: &Restart,
    pods: usize,
    containers: usize,
) -> Result<Recovery> {
    let Some(old) = daemon.pid() else {
        bail!("recovery needs the daemon's pid (--daemon-pid)");
    };
    ensure!(
        !restart.argv.is_empty(),
        "recovery needs a command to restart the daemon"
    );
    let last_cpu = procs::cpu_ms(old)?;
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).with_context(|| format!("kill {old}"))?;
    let t = Instant::now();
    while procs::alive(old) {
        ensure!(
            t.elapsed() < KILL_TIMEOUT,
            "pid {old} still runs after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let start = Instant::now();
    let new = spawn(restart)?;
    daemon.replaced(new, last_cpu);
    let mut r = Recovery {
        pods,
        containers,
        ..Default::default()
    };
    let deadline = start + RECOVERY_TIMEOUT;
    let waiting = |what: &str| -> Result<()> {
        ensure!(procs::alive(new), "the restarted daemon (pid {new}) exited");
        ensure!(
            Instant::now() < deadline,
            "no {what} within {RECOVERY_TIMEOUT:?} of the restart"
        );
        Ok(())
    };

    let mut c = loop {
        if let Ok(channel) = cri::connect(endpoint).await {
            break cri.with_channel(channel);
        }
        waiting("connection")?;
        tokio::time::sleep(POLL_EVERY).await;
    };
    let mut answered = false;
    loop {
        if let Ok((_, ready)) = c.status().await {
            if !answered {
                r.first_answer_ms = ms(start.elapsed());
                answered = true;
            }
            if ready {
                r.status_ready_ms = ms(start.elapsed());
                break;
            }
        }
        waiting("ready Status")?;
        tokio::time::sleep(POLL_EVERY).await;
    }
    loop {
        if c.running_containers().await.is_ok_and(|n| n >= containers) {
            r.list_complete_ms = ms(start.elapsed());
            break;
        }
        waiting("complete ListContainers")?;
        tokio::time::sleep(POLL_EVERY).await;
    }
    r.daemon_rss_kib = daemon.rss_kib()?;
    *cri = c;
    Ok(r)
}

/// Starts the daemon in a session of its own, its output appended to the log;
/// returns its pid (also written to the pid file).
fn spawn(restart: &Restart) -> Result<u32> {
    let (program, args) = restart
        .argv
        .split_first()
        .context("empty restart command")?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    match &restart.log {
        Some(path) => {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("open {}", path.display()))?;
            cmd.stdout(log.try_clone()?).stderr(log);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {}", restart.argv.join(" ")))?;
    let pid = child.id();
    // never waited for: it outlives this benchmark
    drop(child);
    if let Some(path) = &restart.pidfile {
        std::fs::write(path, format!("{pid}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(pid)
}
