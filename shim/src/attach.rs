//! Attach (CRI Attach): a caller joins the init's stdio. Every attach subscribes to the
//! output the log copy reads (so several attaches all see it, and the log is written
//! as before) and writes its stdin to the init's stdin. The call ends when the init's
//! output is closed, or when the caller goes away.

use std::sync::Arc;

use crust_proto::shim::{AttachInput, IoOutput, attach_input, io_output};
use tokio::sync::broadcast::error::RecvError;
use tonic::Streaming;

use crate::exec_io::Out;
use crate::log::Stream;
use crate::task::Task;

/// What the first message of an Attach asks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttachSpec {
    /// Write the caller's stdin to the init's.
    pub stdin: bool,
    /// Send the init's stdout (and its pty).
    pub stdout: bool,
    /// Send the init's stderr.
    pub stderr: bool,
    /// Close the init's stdin when this caller's stdin ends.
    pub stdin_once: bool,
}

/// Runs one Attach call to its end.
pub async fn run(task: Arc<Task>, spec: AttachSpec, input: Streaming<AttachInput>, out: Out) {
    let Some(mut rx) = task.subscribe_output() else {
        tracing::debug!(id = task.id(), "attach after the output closed");
        return;
    };
    let inputs = relay_input(&task, spec, input);
    tokio::pin!(inputs);
    let mut inputs_done = false;
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Ok((stream, data)) => {
                    let kind = match stream {
                        Stream::Stdout if spec.stdout => io_output::Kind::Stdout(data.to_vec()),
                        Stream::Stderr if spec.stderr => io_output::Kind::Stderr(data.to_vec()),
                        _ => continue,
                    };
                    if out.send(Ok(IoOutput { kind: Some(kind) })).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(id = task.id(), chunks = n, "attach fell behind, output lost");
                }
                Err(RecvError::Closed) => return,
            },
            gone = &mut inputs, if !inputs_done => {
                inputs_done = true;
                if gone {
                    return;
                }
            }
            () = out.closed() => return,
        }
    }
}

/// Copies the caller's stdin to the init's until the caller's stream ends; true if the
/// call broke off.
async fn relay_input(task: &Task, spec: AttachSpec, mut input: Streaming<AttachInput>) -> bool {
    let mut stdin = if spec.stdin { task.stdin().await } else { None };
    loop {
        let msg = match input.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                end_stdin(task, spec, &mut stdin).await;
                return false;
            }
            Err(_) => return true,
        };
        match msg.kind {
            Some(attach_input::Kind::Stdin(data)) => {
                if let Some(w) = &stdin
                    && let Err(err) = w.write_all(&data).await
                {
                    tracing::debug!(%err, "write attach stdin");
                    stdin = None;
                }
            }
            Some(attach_input::Kind::CloseStdin(_)) => end_stdin(task, spec, &mut stdin).await,
            Some(attach_input::Kind::Resize(r)) => {
                let w = u16::try_from(r.width).unwrap_or(u16::MAX);
                let h = u16::try_from(r.height).unwrap_or(u16::MAX);
                if task.has_tty() {
                    let _ = task.resize_pty(w, h);
                }
            }
            Some(attach_input::Kind::Start(_)) | None => {}
        }
    }
}

async fn end_stdin(task: &Task, spec: AttachSpec, stdin: &mut Option<Arc<crate::io::FdWriter>>) {
    if stdin.take().is_some() && spec.stdin_once {
        tracing::debug!(
            id = task.id(),
            "stdin_once attach ended: closing the init's stdin"
        );
        task.close_stdin().await;
    }
}
