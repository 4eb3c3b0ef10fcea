//! Clients of running shims: a connection per use, closed when its [`Shim`] is dropped;
//! and the wait for a container's exit on the shim's exit socket, which holds no gRPC
//! connection. A shim that is gone shows up as [`Error::Gone`], and its exit file
//! (written before it exits) tells how the container ended.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crust_proto::shim::shim_client::ShimClient;
use crust_proto::shim::{
    AttachInput, EXIT_FILE, EXIT_SOCKET, ExecInput, IoOutput, MAX_MESSAGE_BYTES,
};
use crust_proto::shim::{
    ExecSyncRequest, ExecSyncResponse, KillRequest, ReopenLogRequest, ShutdownRequest,
    StartRequest, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{Error, Result};

/// How long one connection attempt to a shim may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Clients of the shims. A channel is opened per [`Shims::get`] rather than kept per
/// shim: a kept HTTP/2 connection costs crustd about as much memory as the rest of a
/// running container's state, for calls that come seconds or hours apart; a new one
/// over a Unix socket costs well under a millisecond.
#[derive(Debug, Default)]
pub struct Shims {
    /// How many [`Shims::wait_exit`] are pending.
    waiting: AtomicUsize,
}

/// Counts a pending [`Shims::wait_exit`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The exit file a shim writes when the container's init exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct ExitFile {
    /// Exit code; 128+signal for a killed process.
    pub exit_code: i32,
    /// Unix nanoseconds of the start; 0 if it never started.
    pub started_at: i64,
    /// Unix nanoseconds of the exit.
    pub finished_at: i64,
    /// Whether the OOM killer killed a process of the container.
    pub oom_killed: bool,
}

impl From<WaitResponse> for ExitFile {
    /// The exit a Wait call answers with; it carries no start time.
    fn from(w: WaitResponse) -> Self {
        ExitFile {
            exit_code: w.exit_code,
            started_at: 0,
            finished_at: w.finished_at,
            oom_killed: w.oom_killed,
        }
    }
}

/// The exit file in `state_dir`, if the shim wrote one.
pub fn read_exit_file(state_dir: &Path) -> Option<ExitFile> {
    let text = std::fs::read(state_dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

impl Shims {
    /// How many shims crustd waits on for their container's exit: one per running
    /// container it watches.
    pub fn waited_on(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A client for the shim of container `id` listening on `socket`.
    pub fn get(&self, id: &str, socket: &Path) -> Shim {
        // An ExecSync answer (up to the message limit) would exceed tonic's default of
        // 4 MiB; so could a long command.
        let client = ShimClient::new(connect_lazy(socket))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Shim {
            id: id.to_owned(),
            socket: socket.to_owned(),
            client,
        }
    }

    /// Waits until the init of container `id`, whose shim listens on `socket`, has
    /// exited, and returns its exit file. The shim closes its exit socket's
    /// connections once the file is written, or by dying ([`Error::Gone`] when no
    /// file is there); a shim without an exit socket is waited for with its Wait call.
    pub async fn wait_exit(&self, id: &str, socket: &Path) -> Result<ExitFile> {
        let _waiting = Waiting::new(&self.waiting);
        let dir = socket.parent().unwrap_or(Path::new("/"));
        match tokio::net::UnixStream::connect(dir.join(EXIT_SOCKET)).await {
            Ok(mut conn) => {
                let mut byte = [0u8; 1];
                // Ends at EOF or a reset; the shim never writes.
                while let Ok(1..) = conn.read(&mut byte).await {}
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && socket.exists() => {
                return Ok(self.get(id, socket).wait().await?.into());
            }
            // Refused or absent: the shim is gone; its exit file tells the rest.
            Err(_) => {}
        }
        if let Some(exit) = read_exit_file(dir) {
            return Ok(exit);
        }
        let gone = std::os::unix::net::UnixStream::connect(socket).is_err();
        let message = "exit socket closed without an exit file";
        if gone {
            return Err(Error::Gone {
                id: id.to_owned(),
                message: message.into(),
            });
        }
        Err(Error::Call {
            id: id.to_owned(),
            op: "wait",
            status: Box::new(tonic::Status::unavailable(message)),
        })
    }
}

fn connect_lazy(socket: &Path) -> Channel {
    crate::admin::unix_channel(socket, CONNECT_TIMEOUT)
}

/// One shim's API, with errors naming its container.
#[derive(Debug, Clone)]
pub struct Shim {
    id: String,
    socket: PathBuf,
    client: ShimClient<Channel>,
}

impl Shim {
    fn fail(&self, op: &'static str, status: tonic::Status) -> Error {
        if status.code() == tonic::Code::Unavailable
            && std::os::unix::net::UnixStream::connect(&self.socket).is_err()
        {
            return Error::Gone {
                id: self.id.clone(),
                message: status.message().to_owned(),
            };
        }
        Error::Call {
            id: self.id.clone(),
            op,
            status: Box::new(status),
        }
    }

    /// The init's state as the shim knows it.
    pub async fn state(&mut self) -> Result<StateResponse> {
        match self.client.state(StateRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.fail("state", s)),
        }
    }

    /// Starts the init process; returns its host pid.
    pub async fn start(&mut self) -> Result<u32> {
        match self.client.start(StartRequest {}).await {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => Err(self.fail("start", s)),
        }
    }

    /// Signals the init, or with `all` every process of the container.
    pub async fn kill(&mut self, signal: i32, all: bool) -> Result<()> {
        let req = KillRequest {
            signal: signal as u32,
            all,
        };
        match self.client.kill(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.fail("kill", s)),
        }
    }

    /// Waits for the init's exit.
    pub async fn wait(&mut self) -> Result<WaitResponse> {
        match self.client.wait(WaitRequest {}).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.fail("wait", s)),
        }
    }

    /// Runs a process in the container and collects its output.
    pub async fn exec_sync(&mut self, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
        match self.client.exec_sync(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.fail("exec", s)),
        }
    }

    /// Runs a process with streamed stdio: `input` starts with its `start` message;
    /// the answer is the output, ending with the exit.
    pub async fn exec(
        &mut self,
        input: impl tonic::IntoStreamingRequest<Message = ExecInput>,
    ) -> Result<Streaming<IoOutput>> {
        match self.client.exec(input).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.fail("exec", s)),
        }
    }

    /// Joins the init's stdio: `input` starts with its `start` message; the answer is
    /// the output until the init's output closes.
    pub async fn attach(
        &mut self,
        input: impl tonic::IntoStreamingRequest<Message = AttachInput>,
    ) -> Result<Streaming<IoOutput>> {
        match self.client.attach(input).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.fail("attach", s)),
        }
    }

    /// Reopens the container's log file.
    pub async fn reopen_log(&mut self) -> Result<()> {
        match self.client.reopen_log(ReopenLogRequest {}).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.fail("reopen log", s)),
        }
    }

    /// Checkpoints the running container with CRIU into `images`, leaving it running.
    pub async fn checkpoint(&mut self, images: &std::path::Path) -> Result<()> {
        let req = crust_proto::shim::CheckpointRequest {
            image_path: images.display().to_string(),
        };
        match self.client.checkpoint(req).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.fail("checkpoint", s)),
        }
    }

    /// Deletes the container and ends the shim; `force` kills a running one first.
    pub async fn shutdown(&mut self, force: bool) -> Result<()> {
        match self.client.shutdown(ShutdownRequest { force }).await {
            Ok(_) => Ok(()),
            Err(s) => Err(self.fail("shutdown", s)),
        }
    }
}
