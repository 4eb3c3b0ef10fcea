//! Starting a crust-shim for a new container. The command forks the real shim
//! (detached, in its own session) and exits 0 once the container is created and the
//! socket answers, or 1 with the error as one line on stderr.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{Error, Result};

/// How long the shim may take to create a container before crustd gives up on it.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a shim needs to create a container.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// The crust-shim binary.
    pub shim: &'a Path,
    /// The container id.
    pub id: &'a str,
    /// The bundle dir with config.json.
    pub bundle: &'a Path,
    /// The container's state dir (socket, exit file, shim log).
    pub state: &'a Path,
    /// The CRI log file; `None` discards the output.
    pub log_path: Option<&'a Path>,
    /// Keep stdin open.
    pub stdin: bool,
    /// Give the container a pty.
    pub tty: bool,
    /// The container's cgroup.
    pub cgroups_path: &'a str,
    /// Use the systemd cgroup driver.
    pub systemd_cgroup: bool,
    /// Restore the container at start from these CRIU images.
    pub restore: Option<&'a Path>,
}

/// Runs the shim command and waits until the container is created.
pub async fn launch(req: &LaunchRequest<'_>) -> Result<()> {
    let mut cmd = Command::new(req.shim);
    cmd.arg("--id")
        .arg(req.id)
        .arg("--bundle")
        .arg(req.bundle)
        .arg("--state")
        .arg(req.state)
        .arg("--cgroups-path")
        .arg(req.cgroups_path);
    if let Some(log) = req.log_path {
        cmd.arg("--log-path").arg(log);
    }
    if req.stdin {
        cmd.arg("--stdin");
    }
    if req.tty {
        cmd.arg("--tty");
    }
    if req.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    if let Some(images) = req.restore {
        cmd.arg("--restore").arg(images);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let launch_err = |message: String| Error::Launch {
        id: req.id.to_owned(),
        message,
    };
    let child = cmd
        .spawn()
        .map_err(|e| launch_err(format!("run {}: {e}", req.shim.display())))?;
    let out = tokio::time::timeout(LAUNCH_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| launch_err(format!("no answer within {}s", LAUNCH_TIMEOUT.as_secs())))?
        .map_err(|e| launch_err(format!("wait for {}: {e}", req.shim.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("crust-shim: "))
        .find(|l| !l.is_empty())
        .unwrap_or("exited without a message");
    // libcontainer's error chain is generic ("failed to prepare rootfs"); the first
    // error the container's processes logged names the cause.
    let cause = first_error(&req.state.join("shim.log"));
    Err(launch_err(match cause {
        Some(cause) if !line.contains(&cause) => format!("{line} (cause: {cause})"),
        _ => line.to_owned(),
    }))
}

/// The message of the first ERROR line of a shim's log, without its timestamp.
fn first_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(" ERROR "))?;
    let message = line.split_once(" ERROR ").map_or(line, |(_, m)| m);
    Some(message.trim().to_owned())
}
