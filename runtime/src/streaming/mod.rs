//! The streaming server behind CRI Exec, Attach and PortForward. An RPC parks its
//! request under a one-time token ([`Streamer::url`]) and answers with a URL on this
//! server; the client then upgrades an HTTP request on that URL to SPDY/3.1 or to a
//! WebSocket and streams over it:
//!
//! - `/exec/<token>`, `/attach/<token>`: the remote-command protocols — SPDY with
//!   `v4.channel.k8s.io` (and v1-v3), WebSocket with `v5.channel.k8s.io`,
//!   `v4.channel.k8s.io` and `channel.k8s.io` ([`remotecommand`]).
//! - `/portforward/<token>`: SPDY with `portforward.k8s.io`, and the same SPDY tunnelled
//!   in a WebSocket (`SPDY/3.1+portforward.k8s.io`) ([`portforward`]); or WebSocket in
//!   kubelet's own protocol, fixed ports on channels (`v4.channel.k8s.io`,
//!   `v4.base64.channel.k8s.io`) ([`portforward_ws`]).
//!
//! What a session does to a container is behind the [`Runtime`] trait, so the
//! protocols can be driven without crustd's stores and shims.

pub mod http;
pub mod portforward;
pub mod portforward_ws;
pub mod remotecommand;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crust_proto::cri::{AttachRequest, ExecRequest, PortForwardRequest};
use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use self::tokens::Tokens;

/// Errors starting the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error("streaming server: listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A request parked for its streaming session.
#[derive(Debug, Clone)]
pub enum Request {
    /// CRI Exec.
    Exec(ExecRequest),
    /// CRI Attach.
    Attach(AttachRequest),
    /// CRI PortForward.
    PortForward(PortForwardRequest),
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

/// A terminal size from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of an exec or attach, as the runtime sees it. A channel that is
/// None was not asked for; a receiver that ends means the client closed that stream.
#[derive(Debug, Default)]
pub struct SessionIo {
    /// The client's stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// To the client's stdout (and the pty's output with a tty).
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// To the client's stderr.
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Terminal resizes, with a tty.
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// How an exec or attach failed, for the client's error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The command ran and exited non-zero.
    ExitCode(i32),
    /// The session could not run; the message names what failed.
    Failed(String),
}

/// What a streaming session does to containers and pods.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `req` in its container, wiring its stdio to `io`; Ok once it exited 0.
    fn exec(&self, req: ExecRequest, io: SessionIo) -> BoxFuture<'_, Result<(), SessionError>>;
    /// Joins the container's stdio until its output ends.
    fn attach(&self, req: AttachRequest, io: SessionIo) -> BoxFuture<'_, Result<(), SessionError>>;
    /// Connects to `port` on localhost inside the pod's network namespace.
    fn connect(&self, sandbox_id: &str, port: u16) -> BoxFuture<'_, Result<TcpStream, String>>;
}

/// The RPCs' side of the server: parks requests and makes their URLs.
#[derive(Debug)]
pub struct Streamer {
    tokens: Tokens,
    base: String,
}

impl Streamer {
    /// Parks `req` and returns its one-time URL.
    pub fn url(&self, req: Request) -> String {
        let path = req.path();
        let token = self.tokens.insert(req);
        format!("{}/{path}/{token}", self.base)
    }

    /// The parked requests.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

/// A bound, not yet serving, streaming server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    streamer: Arc<Streamer>,
}

impl Server {
    /// Binds `address:port` (port 0 picks a free one) with tokens that live `ttl`.
    pub async fn bind(address: &str, port: u16, ttl: Duration) -> Result<Self, Error> {
        let addr = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        let listen_err = |source| Error::Listen {
            addr: addr.clone(),
            source,
        };
        let listener = TcpListener::bind(&addr).await.map_err(listen_err)?;
        let local: SocketAddr = listener.local_addr().map_err(listen_err)?;
        let streamer = Arc::new(Streamer {
            tokens: Tokens::new(ttl),
            base: format!("http://{local}"),
        });
        Ok(Self { listener, streamer })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The RPCs' handle.
    pub fn streamer(&self) -> Arc<Streamer> {
        Arc::clone(&self.streamer)
    }

    /// Serves until the task is dropped.
    pub async fn serve(self, runtime: Arc<dyn Runtime>) {
        http::serve(self.listener, self.streamer, runtime).await
    }
}
