//! Running one plugin binary as the CNI spec says: the parameters in `CNI_*`
//! environment variables, the config on stdin, the result or error object on stdout.
//! The plugin runs in a process group of its own, so a timeout kills whatever it
//! started too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{Command, Error, Result};
use super::result::PluginError;

/// The first executable file named `plugin` in `dirs`.
pub(super) fn find_plugin(dirs: &[PathBuf], plugin: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(plugin)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Spawns `cmd`, retrying a few times on ETXTBSY: a binary just written (a plugin being
/// installed, a test's fake) is busy while a process forked meanwhile still holds the
/// writer's descriptor, for the moment until it execs.
async fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// The parameters every plugin of one operation gets.
pub(super) struct Env {
    /// The sandbox id, `CNI_CONTAINERID`.
    pub container_id: String,
    /// The netns path, `CNI_NETNS`; empty when it is gone (DEL only).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_PATH`: the bin dirs joined with `:`.
    pub path: String,
    /// `CNI_ARGS`.
    pub args: String,
}

/// One plugin call.
pub(super) struct Invocation<'a> {
    /// The operation.
    pub command: Command,
    /// The plugin type, for messages.
    pub plugin: &'a str,
    /// The binary.
    pub binary: &'a Path,
    /// The `CNI_*` parameters.
    pub env: &'a Env,
    /// The config to write to stdin.
    pub stdin: Vec<u8>,
    /// How long the plugin may run.
    pub timeout: Duration,
}

/// Runs the plugin and returns its stdout when it succeeds.
pub(super) async fn invoke(inv: Invocation<'_>) -> Result<Vec<u8>> {
    let sandbox = &inv.env.container_id;
    let spawn_err = |source| Error::Spawn {
        sandbox: sandbox.clone(),
        command: inv.command,
        plugin: inv.plugin.to_owned(),
        path: inv.binary.to_owned(),
        source,
    };
    // The rest of crustd's environment stays: plugins need PATH to find iptables.
    let mut cmd = tokio::process::Command::new(inv.binary);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", &inv.env.container_id)
        .env("CNI_NETNS", &inv.env.netns)
        .env("CNI_IFNAME", &inv.env.ifname)
        .env("CNI_PATH", &inv.env.path)
        .env("CNI_ARGS", &inv.env.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = spawn(&mut cmd).await.map_err(spawn_err)?;
    let pid = child.id();
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three are piped")
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let input = inv.stdin;
    let run = async {
        let feed = async move {
            // A plugin may exit without reading all of it; its exit status tells.
            let _ = stdin.write_all(&input).await;
        };
        let (_, o, e, status) = tokio::join!(
            feed,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        o.and(e).and(status)
    };
    let status = match tokio::time::timeout(inv.timeout, run).await {
        Ok(status) => status.map_err(spawn_err)?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // Reap it; kill_on_drop and tokio's orphan reaping cover a failure here.
            let _ = child.wait().await;
            return Err(Error::Timeout {
                sandbox: sandbox.clone(),
                command: inv.command,
                plugin: inv.plugin.to_owned(),
                timeout: inv.timeout,
                stderr: String::from_utf8_lossy(&err).into_owned(),
            });
        }
    };
    if status.success() {
        if !err.is_empty() {
            tracing::debug!(
                sandbox = %sandbox, plugin = inv.plugin, command = %inv.command,
                stderr = %String::from_utf8_lossy(&err).trim(), "cni plugin stderr"
            );
        }
        return Ok(out);
    }
    let failure = PluginError::from_output(&out, &status.to_string());
    Err(Error::Plugin {
        sandbox: sandbox.clone(),
        command: inv.command,
        plugin: inv.plugin.to_owned(),
        code: failure.code,
        msg: failure.msg,
        details: failure.details,
        stderr: String::from_utf8_lossy(&err).into_owned(),
    })
}
