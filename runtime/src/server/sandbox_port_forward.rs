//! PortForward: checks the sandbox, parks the request for the streaming server and
//! answers with its one-time URL. Each forwarded connection is a TCP connection to
//! localhost inside the pod's network namespace ([`connect`]), or on the host for a
//! host-network pod. The socket is made on a thread that joined the namespace and
//! stays in it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{PortForwardRequest, PortForwardResponse};
use tokio::net::TcpStream;

use super::Context;
use super::error::{Error, Result};
use crate::network::netns;
use crate::store::SandboxState;
use crate::streaming::Request;

/// How long a connection to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the URL of a port-forward session.
pub async fn port_forward(
    ctx: &Arc<Context>,
    mut req: PortForwardRequest,
) -> Result<PortForwardResponse> {
    let sb = ctx.store.resolve_sandbox(&req.pod_sandbox_id)?;
    let id = sb.metadata().id.to_string();
    if sb.status().state != SandboxState::Ready {
        return Err(Error::FailedPrecondition {
            what: format!("sandbox {id}"),
            message: "cannot forward ports of a sandbox that is not ready".into(),
        });
    }
    req.pod_sandbox_id = id;
    Ok(PortForwardResponse {
        url: ctx.streaming.url(Request::PortForward(req)),
    })
}

/// Connects to localhost:`port` in the network namespace of `sandbox_id` (IPv4, then
/// IPv6). The error is the message for the client's error stream.
pub async fn connect(
    ctx: &Context,
    sandbox_id: &str,
    port: u16,
) -> std::result::Result<TcpStream, String> {
    let sb = ctx
        .store
        .resolve_sandbox(sandbox_id)
        .map_err(|e| e.to_string())?;
    let netns = sb.metadata().netns_path.clone();
    let id = sb.metadata().id.to_string();
    let dial = move || match &netns {
        Some(path) => netns::run_in(path, || connect_localhost(port))
            .map_err(|e| e.to_string())
            .and_then(|r| r),
        None => connect_localhost(port),
    };
    let std = tokio::task::spawn_blocking(dial)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            format!("failed to connect to localhost:{port} inside namespace of sandbox {id}: {e}")
        })?;
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    TcpStream::from_std(std).map_err(|e| e.to_string())
}

fn connect_localhost(port: u16) -> std::result::Result<std::net::TcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
            .map_err(|e6| format!("IPv4: {e4}, IPv6: {e6}")),
    }
}
