//! ExecSync: runs a process in the container and collects its output.
//!
//! stdout and stderr are read while the process runs, to their end: each is kept up
//! to [`OUTPUT_CAP`] and the rest read and dropped, so the process never blocks on a
//! full pipe and is not killed for printing too much. The answer must fit one message
//! (and so one CRI message to kubelet): when the two streams together are longer than
//! [`OUTPUT_CAP`], [`fit_output`] cuts them to it. On timeout the process and its
//! process group (the exec'd process leads its own session) are killed, and the answer
//! comes only once the process has been reaped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::unistd::Pid;
use oci_spec::runtime::Process;
use tokio::sync::oneshot;

use crate::container::{self, ExecOptions, InitStdio};
use crate::io::{self, FdReader};
use crate::task::{Result, Task, TaskError};

/// The most output kept per stream, and of both together in the answer: what one
/// message carries. containerd and CRI-O keep 16 MiB per stream, which kubelet, taking
/// at most 16 MiB per message, can't receive whole.
pub const OUTPUT_CAP: usize = crust_proto::shim::EXEC_SYNC_OUTPUT_BYTES;

/// How long the output may stay open after the process has exited (a background
/// child may hold it).
const IO_DRAIN: Duration = Duration::from_secs(1);

/// How long a killed process may take to be reaped before the shim answers anyway.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// An ExecSync request.
#[derive(Debug, Default)]
pub struct ExecRequest {
    /// Command and arguments.
    pub args: Vec<String>,
    /// Extra environment, "KEY=value".
    pub env: Vec<String>,
    /// Timeout; None for none.
    pub timeout: Option<Duration>,
}

/// What the process printed and how it ended.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// Standard output, capped.
    pub stdout: Vec<u8>,
    /// Standard error, capped.
    pub stderr: Vec<u8>,
    /// Exit code (128+signal when killed); -1 when it timed out and was not reaped.
    pub exit_code: i32,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// Runs `req` in the container of `task` and waits for it.
pub async fn exec_sync(task: &Task, req: ExecRequest) -> Result<ExecOutput> {
    let (env, process_file) = prepare(task, &req.args, &req.env, None)?;
    let io_err = |source| TaskError::Io {
        id: task.id().to_owned(),
        op: "exec",
        source,
    };
    let (child, shim) = io::pipes(false).map_err(io_err)?;
    let opts = ExecOptions {
        id: task.id(),
        root: task.root(),
        args: req.args,
        env,
        stdio: InitStdio::Pipes(child),
        process: process_file.as_deref(),
        seccomp: task.seccomp(),
    };
    let started = container::exec(opts);
    if let Some(file) = &process_file {
        let _ = std::fs::remove_file(file);
    }
    let pid = started.map_err(|source| TaskError::Container {
        id: task.id().to_owned(),
        op: "exec",
        source: Box::new(source),
    })?;
    // Registered before the next await: the exit can't be missed.
    let exited = task.reaper().register(pid);
    let out = FdReader::new(shim.stdout).map_err(io_err)?;
    let err = FdReader::new(shim.stderr).map_err(io_err)?;

    let mut result = ExecOutput::default();
    let (code, timed_out) = {
        let io = async {
            tokio::join!(
                read_capped(&out, &mut result.stdout),
                read_capped(&err, &mut result.stderr)
            )
        };
        tokio::pin!(io);
        let wait = wait_or_kill(pid, exited, req.timeout);
        tokio::pin!(wait);
        let mut io_done = false;
        let ended = loop {
            tokio::select! {
                _ = &mut io, if !io_done => io_done = true,
                ended = &mut wait => break ended,
            }
        };
        if !io_done && tokio::time::timeout(IO_DRAIN, &mut io).await.is_err() {
            tracing::warn!(id = task.id(), %pid, "exec output still open after exit");
        }
        ended
    };
    fit_output(&mut result.stdout, &mut result.stderr, OUTPUT_CAP);
    result.exit_code = code;
    result.timed_out = timed_out;
    Ok(result)
}

/// Cuts `stdout` and `stderr` to `cap` bytes together, keeping the start of each: a
/// stream shorter than half of `cap` stays whole and the other gets the rest; two
/// longer ones get half each.
fn fit_output(stdout: &mut Vec<u8>, stderr: &mut Vec<u8>, cap: usize) {
    if stdout.len() + stderr.len() <= cap {
        return;
    }
    let half = cap / 2;
    let err = stderr.len().min(half.max(cap.saturating_sub(stdout.len())));
    stderr.truncate(err);
    stdout.truncate(cap - err);
}

/// Waits for the exit; on timeout kills the process group and waits for the reap.
/// Returns the exit code and whether it timed out.
pub(crate) async fn wait_or_kill(
    pid: Pid,
    mut exited: oneshot::Receiver<i32>,
    timeout: Option<Duration>,
) -> (i32, bool) {
    let Some(limit) = timeout else {
        return (exited.await.unwrap_or(-1), false);
    };
    if let Ok(code) = tokio::time::timeout(limit, &mut exited).await {
        return (code.unwrap_or(-1), false);
    }
    tracing::info!(%pid, "exec timed out, killing it");
    let _ = container::signal_pid(Pid::from_raw(-pid.as_raw()), nix::libc::SIGKILL);
    let _ = container::signal_pid(pid, nix::libc::SIGKILL);
    match tokio::time::timeout(KILL_GRACE, exited).await {
        Ok(code) => (code.unwrap_or(-1), true),
        Err(_) => {
            tracing::warn!(%pid, "exec process not reaped after SIGKILL");
            (-1, true)
        }
    }
}

/// Reads to end of file, keeping at most [`OUTPUT_CAP`] bytes.
async fn read_capped(r: &FdReader, out: &mut Vec<u8>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(err) => {
                tracing::warn!(%err, "read exec output");
                return;
            }
        }
    }
}

/// The `process.consoleSize` of a terminal of (width, height).
fn console_size(terminal: Option<(u16, u16)>) -> Option<oci_spec::runtime::Box> {
    let (width, height) = terminal.filter(|&(w, h)| w > 0 && h > 0)?;
    oci_spec::runtime::BoxBuilder::default()
        .width(width)
        .height(height)
        .build()
        .ok()
}

/// What every exec does before its stdio: checks there is a command, parses `env`,
/// checks the container runs, and writes the process.json (with a terminal of
/// `terminal`'s size, if Some) when the init's process is known.
pub(crate) fn prepare(
    task: &Task,
    args: &[String],
    env: &[String],
    terminal: Option<(u16, u16)>,
) -> Result<(HashMap<String, String>, Option<PathBuf>)> {
    let invalid = |reason: String| TaskError::Invalid {
        id: task.id().to_owned(),
        op: "exec",
        reason,
    };
    if args.is_empty() {
        return Err(invalid("no command".into()));
    }
    let env = parse_env(env).map_err(invalid)?;
    task.ensure_running("exec")?;
    let process_file = match task.process() {
        Some(init) => Some(
            write_process(task, init, args, &env, terminal).map_err(|source| TaskError::Io {
                id: task.id().to_owned(),
                op: "exec",
                source,
            })?,
        ),
        None => None,
    };
    Ok((env, process_file))
}

/// Writes the exec's process.json: the init's process (user, cwd, capabilities,
/// rlimits, no_new_privileges) with `args`, `env` over the init's environment, and a
/// terminal of `size` (width, height) if `terminal` is Some (zeros: no size). Returns
/// its path, unique per exec.
pub(crate) fn write_process(
    task: &Task,
    init: &Process,
    args: &[String],
    env: &HashMap<String, String>,
    terminal: Option<(u16, u16)>,
) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut process = init.clone();
    let mut vars: Vec<String> = process.env().clone().unwrap_or_default();
    vars.retain(|kv| {
        let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        !env.contains_key(key)
    });
    vars.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    process
        .set_args(Some(args.to_vec()))
        .set_env(Some(vars))
        .set_terminal(Some(terminal.is_some()))
        .set_console_size(console_size(terminal));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = task.state_dir().join(format!("exec-{n}.json"));
    let json = serde_json::to_vec(&process).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// Parses "KEY=value" strings.
pub(crate) fn parse_env(env: &[String]) -> std::result::Result<HashMap<String, String>, String> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("invalid environment entry {kv:?}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_size_becomes_the_console_size() {
        let size = console_size(Some((100, 30))).expect("a size");
        assert_eq!((size.width(), size.height()), (100, 30));
        assert_eq!(console_size(Some((0, 0))), None);
        assert_eq!(console_size(Some((80, 0))), None);
        assert_eq!(console_size(None), None);
    }

    #[test]
    fn output_fits_the_cap_keeping_the_start_of_each_stream() {
        let fit = |out: usize, err: usize| {
            let (mut o, mut e) = (vec![b'o'; out], vec![b'e'; err]);
            fit_output(&mut o, &mut e, 10);
            (o.len(), e.len())
        };
        // Within the cap: untouched.
        assert_eq!(fit(6, 4), (6, 4));
        assert_eq!(fit(10, 0), (10, 0));
        // One stream over it alone.
        assert_eq!(fit(25, 0), (10, 0));
        assert_eq!(fit(0, 25), (0, 10));
        // A short stream stays whole; the long one gets the rest.
        assert_eq!(fit(3, 25), (3, 7));
        assert_eq!(fit(25, 5), (5, 5));
        // Two long ones: half each.
        assert_eq!(fit(8, 7), (5, 5));
        assert_eq!(fit(25, 25), (5, 5));
        // An odd cap: the extra byte goes to stdout.
        let (mut o, mut e) = (vec![b'o'; 20], vec![b'e'; 20]);
        fit_output(&mut o, &mut e, 11);
        assert_eq!((o.len(), e.len()), (6, 5));
        assert!(o.iter().all(|&b| b == b'o') && e.iter().all(|&b| b == b'e'));
    }

    #[test]
    fn parses_environment() {
        let env = parse_env(&["A=1".into(), "B=x=y".into(), "C=".into()]).unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "x=y");
        assert_eq!(env["C"], "");
        assert!(parse_env(&["=1".into()]).is_err());
        assert!(parse_env(&["NOEQ".into()]).is_err());
    }
}
