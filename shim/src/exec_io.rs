//! Exec with streamed stdio (CRI Exec): a process in the container whose stdin,
//! output, exit and pty size travel over one bidirectional call.
//!
//! The process gets pipes, or with a tty a new pty whose master arrives over a console
//! socket (`tty.sock` in the state dir: bound, used and removed without an `.await` in
//! between, so one name serves every exec of the single-threaded shim). The first size
//! goes in the process's `consoleSize`, which the process sets on its terminal itself
//! before the program is exec'd (libcontainer opens the pty without a size). Its output
//! goes to the caller as it comes; once the process has been reaped and its output is
//! drained (or [`IO_DRAIN`] has passed) the exit code is the last message. If the
//! caller goes away first, the process group is killed.

use std::sync::Arc;
use std::time::Duration;

use crust_proto::shim::{ExecInput, IoExit, IoOutput, exec_input, io_output};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::container::{self, ExecOptions, InitStdio};
use crate::exec::prepare;
use crate::io::{self, ConsoleSocket, FdReader, FdWriter};
use crate::task::{Result, Task, TaskError};

/// How long the output may stay open after the process has exited.
const IO_DRAIN: Duration = Duration::from_secs(1);

/// How long libcontainer's exec process may take to send its pty master.
const CONSOLE_WAIT: Duration = Duration::from_secs(5);

/// Size of one read of the process's output.
const READ_BUF: usize = 32 * 1024;

/// The sending half of the call's answer.
pub type Out = mpsc::Sender<std::result::Result<IoOutput, Status>>;

/// What the first message of an Exec asks for.
#[derive(Debug, Default)]
pub struct ExecSpec {
    /// Command and arguments.
    pub args: Vec<String>,
    /// Extra environment, "KEY=value".
    pub env: Vec<String>,
    /// A new pty for the process.
    pub tty: bool,
    /// Give it a stdin.
    pub stdin: bool,
    /// First pty size, (width, height); zeros leave the default.
    pub size: (u16, u16),
}

/// The process once started: its pid, and the shim's ends of its stdio.
struct Started {
    pid: Pid,
    exited: tokio::sync::oneshot::Receiver<i32>,
    stdin: Option<FdWriter>,
    stdout: FdReader,
    stderr: Option<FdReader>,
    pty: Option<std::os::fd::OwnedFd>,
}

/// Starts the process (no `.await` inside: the console socket and the reaper rely on
/// it).
fn start(task: &Task, spec: &ExecSpec) -> Result<Started> {
    let terminal = spec.tty.then_some(spec.size);
    let (env, process_file) = prepare(task, &spec.args, &spec.env, terminal)?;
    let io_err = |source| TaskError::Io {
        id: task.id().to_owned(),
        op: "exec",
        source,
    };
    let (stdio, console, pipes) = if spec.tty {
        let sock = ConsoleSocket::bind(&task.state_dir().join("tty.sock")).map_err(io_err)?;
        (
            InitStdio::Console(sock.path().to_path_buf()),
            Some(sock),
            None,
        )
    } else {
        let (child, shim) = io::pipes(spec.stdin).map_err(io_err)?;
        (InitStdio::Pipes(child), None, Some(shim))
    };
    let opts = ExecOptions {
        id: task.id(),
        root: task.root(),
        args: spec.args.clone(),
        env,
        stdio,
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
    let exited = task.reaper().register(pid);
    let kill_on_err = |e: std::io::Error| {
        let _ = container::signal_pid(pid, nix::libc::SIGKILL);
        io_err(e)
    };
    if let Some(shim) = pipes {
        return Ok(Started {
            pid,
            exited,
            stdin: shim
                .stdin
                .map(FdWriter::new)
                .transpose()
                .map_err(kill_on_err)?,
            stdout: FdReader::new(shim.stdout).map_err(kill_on_err)?,
            stderr: Some(FdReader::new(shim.stderr).map_err(kill_on_err)?),
            pty: None,
        });
    }
    let console = console.expect("a tty exec has a console socket");
    let master = console
        .receive_master_within(CONSOLE_WAIT)
        .map_err(kill_on_err)?;
    if process_file.is_none() && spec.size.0 > 0 && spec.size.1 > 0 {
        // Without a process.json the size could not go in consoleSize, and the
        // process may already run: size it now and tell it, as a resize would.
        let _ = io::resize(&master, spec.size.0, spec.size.1);
        let _ = container::signal_pid(Pid::from_raw(-pid.as_raw()), nix::libc::SIGWINCH);
    }
    let dup = |m: &std::os::fd::OwnedFd| m.try_clone();
    let stdin = if spec.stdin {
        Some(FdWriter::new(dup(&master).map_err(kill_on_err)?).map_err(kill_on_err)?)
    } else {
        None
    };
    Ok(Started {
        pid,
        exited,
        stdin,
        stdout: FdReader::new(dup(&master).map_err(kill_on_err)?).map_err(kill_on_err)?,
        stderr: None,
        pty: Some(master),
    })
}

/// Runs one Exec call to its end: starts the process, then relays input and output
/// until the exit has been sent or the caller is gone. An error before the start is
/// the call's answer.
pub async fn run(task: Arc<Task>, spec: ExecSpec, input: Streaming<ExecInput>, out: Out) {
    let p = match start(&task, &spec) {
        Ok(p) => p,
        Err(err) => {
            let msg = err.to_string();
            tracing::warn!("{msg}");
            let status = match err {
                TaskError::WrongState { .. } => Status::failed_precondition(msg),
                TaskError::Invalid { .. } => Status::invalid_argument(msg),
                _ => Status::internal(msg),
            };
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let pid = p.pid;
    tracing::debug!(id = task.id(), %pid, tty = spec.tty, "exec started");
    let pty = p.pty;
    let inputs = relay_input(input, p.stdin, pty.as_ref());
    let outputs = async {
        tokio::join!(pump(p.stdout, &out, true), async {
            if let Some(r) = p.stderr {
                pump(r, &out, false).await;
            }
        })
    };
    tokio::pin!(inputs, outputs);
    let mut exited = p.exited;
    let mut outputs_done = false;
    let mut inputs_done = false;
    let mut killed = false;
    let code = loop {
        tokio::select! {
            code = &mut exited => break code.unwrap_or(-1),
            _ = &mut outputs, if !outputs_done => outputs_done = true,
            gone = &mut inputs, if !inputs_done => {
                inputs_done = true;
                if gone && !killed {
                    // The caller is gone: nobody will read the output or the exit.
                    tracing::debug!(id = task.id(), %pid, "exec caller gone, killing it");
                    killed = true;
                    kill_group(pid);
                }
            }
            () = out.closed(), if !killed => {
                killed = true;
                kill_group(pid);
            }
        }
    };
    if !outputs_done && tokio::time::timeout(IO_DRAIN, &mut outputs).await.is_err() {
        tracing::warn!(id = task.id(), %pid, "exec output still open after exit");
    }
    let exit = IoOutput {
        kind: Some(io_output::Kind::Exit(IoExit { exit_code: code })),
    };
    let _ = out.send(Ok(exit)).await;
    tracing::debug!(id = task.id(), %pid, code, "exec ended");
}

fn kill_group(pid: Pid) {
    let _ = container::signal_pid(Pid::from_raw(-pid.as_raw()), nix::libc::SIGKILL);
    let _ = container::signal_pid(pid, nix::libc::SIGKILL);
}

/// Copies the caller's input to the process until the caller ends its stream; true if
/// the call broke off rather than ending cleanly.
async fn relay_input(
    mut input: Streaming<ExecInput>,
    mut stdin: Option<FdWriter>,
    pty: Option<&std::os::fd::OwnedFd>,
) -> bool {
    loop {
        let msg = match input.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                close_stdin(&mut stdin, pty).await;
                // Input ended; stay pending so the select keeps waiting for the exit.
                return false;
            }
            Err(_) => return true,
        };
        match msg.kind {
            Some(exec_input::Kind::Stdin(data)) => {
                if let Some(w) = &stdin
                    && let Err(err) = w.write_all(&data).await
                {
                    tracing::debug!(%err, "write exec stdin");
                    stdin = None;
                }
            }
            Some(exec_input::Kind::CloseStdin(_)) => close_stdin(&mut stdin, pty).await,
            Some(exec_input::Kind::Resize(r)) => {
                if let Some(pty) = pty {
                    let w = u16::try_from(r.width).unwrap_or(u16::MAX);
                    let h = u16::try_from(r.height).unwrap_or(u16::MAX);
                    let _ = io::resize(pty, w, h);
                }
            }
            Some(exec_input::Kind::Start(_)) | None => {}
        }
    }
}

/// Ends the process's stdin: a pipe is closed (end of file). A pty has no end of file
/// of its own and stays as it is, as containerd leaves it.
async fn close_stdin(stdin: &mut Option<FdWriter>, _pty: Option<&std::os::fd::OwnedFd>) {
    stdin.take();
}

/// Sends one output stream to the caller until end of file.
async fn pump(reader: FdReader, out: &Out, stdout: bool) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(%err, "read exec output");
                return;
            }
        };
        let data = buf[..n].to_vec();
        let kind = if stdout {
            io_output::Kind::Stdout(data)
        } else {
            io_output::Kind::Stderr(data)
        };
        if out.send(Ok(IoOutput { kind: Some(kind) })).await.is_err() {
            return;
        }
    }
}
