//! Exec: checks the request, parks it for the streaming server and answers with its
//! one-time URL. When the client comes, [`run_exec`] drives the shim's streaming Exec:
//! the client's stdin and resizes go in, the output comes back, and the exit code
//! becomes the session's status. The relays here serve attach too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crust_proto::cri::{ExecRequest, ExecResponse};
use crust_proto::shim::{
    ExecInput, ExecStart, IoOutput, ResizePtyRequest, StdinClose, exec_input, io_output,
};
use futures::future::BoxFuture;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::Context;
use super::containers::running_shim;
use super::error::{Error, Result};
use crate::streaming::{self, Request, SessionError, SessionIo, TermSize};

/// Messages to a shim in flight.
const INPUT_BACKLOG: usize = 16;

/// How long a tty exec waits for the client's first terminal size before it starts:
/// client-go sends it as soon as its streams are up, and a process that starts first
/// sees a 0x0 terminal.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(200);

/// Checks which streams a remote command asks for, as kubelet's streaming server does.
pub(super) fn check_streams(
    rpc: &'static str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<()> {
    let message = if tty && stderr {
        "tty and stderr cannot both be true"
    } else if !(stdin || stdout || stderr) {
        "one of stdin, stdout, or stderr must be set"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        rpc,
        message: message.into(),
    })
}

/// Answers the URL of an exec session.
pub async fn exec(ctx: &Arc<Context>, mut req: ExecRequest) -> Result<ExecResponse> {
    crate::spec::validate::exec_command(&req.cmd).map_err(|e| Error::InvalidArgument {
        rpc: "Exec",
        message: format!("container {:?}: {e}", req.container_id),
    })?;
    check_streams("Exec", req.stdin, req.stdout, req.stderr, req.tty)?;
    let (id, _) = running_shim(ctx, &req.container_id, "exec in")?;
    req.container_id = id;
    Ok(ExecResponse {
        url: ctx.streaming.url(Request::Exec(req)),
    })
}

/// Runs the exec session of `req` with the client's `io`.
pub async fn run_exec(
    ctx: &Context,
    req: ExecRequest,
    io: SessionIo,
) -> std::result::Result<(), SessionError> {
    let failed = |e: Error| SessionError::Failed(e.to_string());
    let (id, socket) = running_shim(ctx, &req.container_id, "exec in").map_err(failed)?;
    let mut io = io;
    let mut size = TermSize {
        width: 0,
        height: 0,
    };
    if let Some(resize) = io.resize.as_mut().filter(|_| req.tty)
        && let Ok(Some(first)) = tokio::time::timeout(FIRST_SIZE_WAIT, resize.recv()).await
    {
        size = first;
    }
    tracing::debug!(id = %req.container_id, ?size, tty = req.tty, "exec session starts");
    let (tx, rx) = mpsc::channel(INPUT_BACKLOG);
    let start = ExecStart {
        args: req.cmd.clone(),
        env: Vec::new(),
        tty: req.tty,
        stdin: req.stdin,
        width: size.width.into(),
        height: size.height.into(),
    };
    let kind = |k| ExecInput { kind: Some(k) };
    let _ = tx.send(kind(exec_input::Kind::Start(start))).await;
    let relay = Relay {
        stdin: move |b: Bytes| kind(exec_input::Kind::Stdin(b.to_vec())),
        close: move || kind(exec_input::Kind::CloseStdin(StdinClose {})),
        resize: move |r| kind(exec_input::Kind::Resize(r)),
    };
    let input = tokio::spawn(relay.run(io.stdin, io.resize, tx));
    let _input = AbortOnDrop(input);
    let out = ctx
        .shims
        .get(&id, &socket)
        .exec(ReceiverStream::new(rx))
        .await
        .map_err(|e| failed(e.into()))?;
    match relay_output(out, io.stdout, io.stderr).await? {
        Some(0) => Ok(()),
        Some(code) => Err(SessionError::ExitCode(code)),
        None => Err(SessionError::Failed(format!(
            "container {id}: exec {:?}: ended without an exit status",
            req.cmd
        ))),
    }
}

/// Aborts a task when the session ends, however it ends.
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How the client's input becomes shim messages of type `I`.
pub(super) struct Relay<S, C, R> {
    pub stdin: S,
    pub close: C,
    pub resize: R,
}

impl<I, S, C, R> Relay<S, C, R>
where
    I: Send + 'static,
    S: Fn(Bytes) -> I + Send + 'static,
    C: Fn() -> I + Send + 'static,
    R: Fn(ResizePtyRequest) -> I + Send + 'static,
{
    /// Forwards stdin (then its close) and resizes until both have ended, keeping the
    /// shim's input open meanwhile.
    pub async fn run(
        self,
        mut stdin: Option<mpsc::Receiver<Bytes>>,
        mut resize: Option<mpsc::Receiver<TermSize>>,
        tx: mpsc::Sender<I>,
    ) {
        loop {
            let msg = tokio::select! {
                b = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => match b {
                    Some(b) => (self.stdin)(b),
                    None => {
                        stdin = None;
                        (self.close)()
                    }
                },
                s = async { resize.as_mut()?.recv().await }, if resize.is_some() => match s {
                    Some(s) => (self.resize)(ResizePtyRequest {
                        width: s.width.into(),
                        height: s.height.into(),
                    }),
                    None => {
                        resize = None;
                        continue;
                    }
                },
                else => {
                    // Nothing more to send; hold the stream open until the session ends.
                    tx.closed().await;
                    return;
                }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Copies a shim's output to the client until it ends; returns the exit code, if one
/// came.
pub(super) async fn relay_output(
    mut out: Streaming<IoOutput>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
) -> std::result::Result<Option<i32>, SessionError> {
    let mut code = None;
    loop {
        let msg = match out.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(code),
            Err(status) => return Err(SessionError::Failed(status.message().to_owned())),
        };
        let (to, data) = match msg.kind {
            Some(io_output::Kind::Stdout(b)) => (&stdout, b),
            Some(io_output::Kind::Stderr(b)) => (&stderr, b),
            Some(io_output::Kind::Exit(e)) => {
                code = Some(e.exit_code);
                continue;
            }
            None => continue,
        };
        if let Some(tx) = to {
            // A client that stopped reading one stream still gets the others.
            let _ = tx.send(Bytes::from(data)).await;
        }
    }
}

/// crustd as the streaming server's runtime.
impl streaming::Runtime for Context {
    fn exec(
        &self,
        req: ExecRequest,
        io: SessionIo,
    ) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        Box::pin(run_exec(self, req, io))
    }

    fn attach(
        &self,
        req: crust_proto::cri::AttachRequest,
        io: SessionIo,
    ) -> BoxFuture<'_, std::result::Result<(), SessionError>> {
        Box::pin(super::container_attach::run_attach(self, req, io))
    }

    fn connect(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> BoxFuture<'_, std::result::Result<TcpStream, String>> {
        let sandbox_id = sandbox_id.to_owned();
        Box::pin(async move { super::sandbox_port_forward::connect(self, &sandbox_id, port).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_choices_as_kubelet_checks_them() {
        assert!(check_streams("Exec", false, true, true, false).is_ok());
        assert!(check_streams("Exec", true, true, false, true).is_ok());
        assert!(check_streams("Exec", false, true, true, true).is_err());
        assert!(check_streams("Exec", false, false, false, false).is_err());
    }

    #[tokio::test]
    async fn relay_sends_stdin_then_its_close_and_resizes() {
        let (in_tx, in_rx) = mpsc::channel(4);
        let (rs_tx, rs_rx) = mpsc::channel(4);
        let (tx, mut rx) = mpsc::channel(8);
        let relay = Relay {
            stdin: |b: Bytes| format!("in:{}", String::from_utf8_lossy(&b)),
            close: || "close".to_owned(),
            resize: |r: ResizePtyRequest| format!("size:{}x{}", r.width, r.height),
        };
        let task = tokio::spawn(relay.run(Some(in_rx), Some(rs_rx), tx));
        in_tx.send(Bytes::from_static(b"a")).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), "in:a");
        drop(in_tx);
        assert_eq!(rx.recv().await.unwrap(), "close");
        rs_tx
            .send(TermSize {
                width: 80,
                height: 24,
            })
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), "size:80x24");
        drop(rs_tx);
        // Both inputs ended: the relay holds the stream open until the receiver goes.
        drop(rx);
        task.await.unwrap();
    }
}
