//! `shim.v1.Shim` over the task: request checks, the one mapping from task errors to
//! gRPC codes, and serving on the Unix socket until a shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crust_idle::Idle;
use crust_proto::shim::shim_server::{Shim, ShimServer};
use crust_proto::shim::{
    AttachInput, ExecInput, IoOutput, MAX_MESSAGE_BYTES, attach_input, exec_input,
};
use crust_proto::shim::{
    CheckpointRequest, CheckpointResponse, ExecSyncRequest, ExecSyncResponse, KillRequest,
    KillResponse, ReopenLogRequest, ReopenLogResponse, ResizePtyRequest, ResizePtyResponse,
    ShutdownRequest, ShutdownResponse, StartRequest, StartResponse, StateRequest, StateResponse,
    Status as ProtoStatus, WaitRequest, WaitResponse,
};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::attach::{self, AttachSpec};
use crate::exec::{self, ExecRequest};
use crate::exec_io::{self, ExecSpec};
use crate::task::{Phase, Task, TaskError};

/// Messages of output an exec or attach call may have in flight.
const OUTPUT_BACKLOG: usize = 16;

/// How long in-flight calls may finish after a shutdown before the shim exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Maps a task error to its gRPC status (the only place that does).
/// The status of a failed `call`. Its message leaves out the container's id: crustd,
/// the only client, names the container (and the call) in its own errors.
fn to_status(call: &str, err: TaskError) -> Status {
    tracing::warn!("{err}");
    let msg = err.detail(call);
    match err {
        TaskError::WrongState { .. } => Status::failed_precondition(msg),
        TaskError::Invalid { .. } => Status::invalid_argument(msg),
        TaskError::Container { .. } | TaskError::Io { .. } => Status::internal(msg),
    }
}

/// The gRPC face of one task.
#[derive(Debug)]
pub struct ShimService {
    task: Arc<Task>,
    socket: PathBuf,
}

impl ShimService {
    /// Serves `task` on `socket`.
    pub fn new(task: Arc<Task>, socket: PathBuf) -> Self {
        Self { task, socket }
    }
}

#[tonic::async_trait]
impl Shim for ShimService {
    type ExecStream = ReceiverStream<Result<IoOutput, Status>>;
    type AttachStream = ReceiverStream<Result<IoOutput, Status>>;

    async fn exec(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let Some(exec_input::Kind::Start(start)) = input.message().await?.and_then(|m| m.kind)
        else {
            return Err(Status::invalid_argument(
                "exec: the first message must be start",
            ));
        };
        let spec = ExecSpec {
            args: start.args,
            env: start.env,
            tty: start.tty,
            stdin: start.stdin,
            size: (
                u16::try_from(start.width).unwrap_or(u16::MAX),
                u16::try_from(start.height).unwrap_or(u16::MAX),
            ),
        };
        let (tx, rx) = mpsc::channel(OUTPUT_BACKLOG);
        tokio::spawn(exec_io::run(Arc::clone(&self.task), spec, input, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn attach(
        &self,
        req: Request<Streaming<AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = req.into_inner();
        let Some(attach_input::Kind::Start(start)) = input.message().await?.and_then(|m| m.kind)
        else {
            return Err(Status::invalid_argument(
                "attach: the first message must be start",
            ));
        };
        let spec = AttachSpec {
            stdin: start.stdin,
            stdout: start.stdout,
            stderr: start.stderr,
            stdin_once: start.stdin_once,
        };
        let (tx, rx) = mpsc::channel(OUTPUT_BACKLOG);
        tokio::spawn(attach::run(Arc::clone(&self.task), spec, input, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn state(&self, _: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let s = self.task.snapshot();
        let status = match s.phase {
            Phase::Created => ProtoStatus::Created,
            Phase::Running => ProtoStatus::Running,
            Phase::Stopped => ProtoStatus::Stopped,
        };
        let exit = s.exit.unwrap_or_default();
        Ok(Response::new(StateResponse {
            status: status as i32,
            pid: s.pid.map_or(0, |p| p.as_raw() as u32),
            exit_code: exit.exit_code,
            started_at: s.started_at,
            finished_at: exit.finished_at,
            oom_killed: exit.oom_killed,
        }))
    }

    async fn start(&self, _: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let pid = self.task.start().map_err(|e| to_status("start", e))?;
        Ok(Response::new(StartResponse {
            pid: pid.as_raw() as u32,
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let req = req.into_inner();
        let signal = i32::try_from(req.signal)
            .map_err(|_| Status::invalid_argument(format!("invalid signal {}", req.signal)))?;
        self.task
            .kill(signal, req.all)
            .map_err(|e| to_status("kill", e))?;
        Ok(Response::new(KillResponse {}))
    }

    async fn wait(&self, _: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let exit = self.task.wait().await;
        Ok(Response::new(WaitResponse {
            exit_code: exit.exit_code,
            finished_at: exit.finished_at,
            oom_killed: exit.oom_killed,
        }))
    }

    async fn exec_sync(
        &self,
        req: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let timeout = u64::try_from(req.timeout)
            .map_err(|_| Status::invalid_argument(format!("negative timeout {}", req.timeout)))?;
        let req = ExecRequest {
            args: req.args,
            env: req.env,
            timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
        };
        let out = exec::exec_sync(&self.task, req)
            .await
            .map_err(|e| to_status("exec", e))?;
        Ok(Response::new(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
            timed_out: out.timed_out,
        }))
    }

    async fn reopen_log(
        &self,
        _: Request<ReopenLogRequest>,
    ) -> Result<Response<ReopenLogResponse>, Status> {
        self.task
            .reopen_log()
            .map_err(|e| to_status("reopen log", e))?;
        Ok(Response::new(ReopenLogResponse {}))
    }

    async fn resize_pty(
        &self,
        req: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        let req = req.into_inner();
        let w = u16::try_from(req.width).unwrap_or(u16::MAX);
        let h = u16::try_from(req.height).unwrap_or(u16::MAX);
        self.task
            .resize_pty(w, h)
            .map_err(|e| to_status("resize pty", e))?;
        Ok(Response::new(ResizePtyResponse {}))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let req = req.into_inner();
        if req.image_path.is_empty() || !req.image_path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "checkpoint: image_path {:?} is not an absolute path",
                req.image_path
            )));
        }
        let task = Arc::clone(&self.task);
        tokio::task::spawn_blocking(move || task.checkpoint(PathBuf::from(req.image_path)))
            .await
            .map_err(|e| Status::internal(format!("checkpoint: {e}")))?
            .map_err(|e| to_status("checkpoint", e))?;
        Ok(Response::new(CheckpointResponse {}))
    }

    async fn shutdown(
        &self,
        req: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.task
            .shutdown(req.into_inner().force)
            .await
            .map_err(|e| to_status("shutdown", e))?;
        let _ = std::fs::remove_file(&self.socket);
        Ok(Response::new(ShutdownResponse {}))
    }
}

/// Serves the exit socket: each connection is held open until the init has exited
/// (its exit file is written by then) or the peer closes it, and carries no data.
/// crustd waits for a container's exit on such a connection, which costs both sides
/// a socket and a task, where a pending Wait call keeps an HTTP/2 connection with its
/// buffers; a shim that dies closes it too.
pub async fn serve_exit_notices(task: Arc<Task>, listener: UnixListener) {
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(err) => {
                tracing::warn!(%err, "accept on the exit socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let task = Arc::clone(&task);
        tokio::spawn(async move {
            let mut byte = [0u8; 1];
            tokio::select! {
                _ = task.wait() => {}
                // EOF, data or an error: the peer is done with it.
                _ = conn.read(&mut byte) => {}
            }
        });
    }
}

/// Serves the task on `listener` until a Shutdown call has been answered; each call
/// touches `idle`.
pub async fn serve(task: Arc<Task>, listener: UnixListener, socket: PathBuf, idle: &Idle) {
    // Both ways: a long ExecSync command in, its output out (tonic's default would
    // refuse a request over 4 MiB).
    let service = ShimServer::new(ShimService::new(Arc::clone(&task), socket))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let stop = {
        let task = Arc::clone(&task);
        async move { task.shutdown_requested().await }
    };
    let server = tonic::transport::Server::builder()
        .layer(idle.layer())
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop);
    tokio::pin!(server);
    let grace = async {
        task.shutdown_requested().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        res = &mut server => {
            if let Err(err) = res {
                tracing::error!(%err, "serve");
            }
        }
        _ = grace => tracing::warn!("calls still open after shutdown"),
    }
}
