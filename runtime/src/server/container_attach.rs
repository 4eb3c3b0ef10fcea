//! Attach: checks the request, parks it for the streaming server and answers with its
//! one-time URL. When the client comes, [`run_attach`] joins the init's stdio through
//! the shim's streaming Attach; it ends when the container's output closes.

use std::sync::Arc;

use bytes::Bytes;
use crust_proto::cri::{AttachRequest, AttachResponse};
use crust_proto::shim::{AttachInput, AttachStart, StdinClose, attach_input};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Context;
use super::container_exec::{AbortOnDrop, Relay, check_streams, relay_output};
use super::containers::running_shim;
use super::error::Result;
use crate::streaming::{Request, SessionError, SessionIo};

/// Answers the URL of an attach session.
pub async fn attach(ctx: &Arc<Context>, mut req: AttachRequest) -> Result<AttachResponse> {
    check_streams("Attach", req.stdin, req.stdout, req.stderr, req.tty)?;
    let (id, _) = running_shim(ctx, &req.container_id, "attach to")?;
    req.container_id = id;
    Ok(AttachResponse {
        url: ctx.streaming.url(Request::Attach(req)),
    })
}

/// Runs the attach session of `req` with the client's `io`.
pub async fn run_attach(
    ctx: &Context,
    req: AttachRequest,
    io: SessionIo,
) -> std::result::Result<(), SessionError> {
    let failed = |e: super::error::Error| SessionError::Failed(e.to_string());
    let (id, socket) = running_shim(ctx, &req.container_id, "attach to").map_err(failed)?;
    let config = ctx
        .store
        .resolve_container(&id)
        .map_err(|e| failed(e.into()))?
        .metadata()
        .config
        .clone();
    let (tx, rx) = mpsc::channel(16);
    let start = AttachStart {
        // The container only has a stdin if its config asked for one.
        stdin: req.stdin && config.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        stdin_once: config.stdin_once,
    };
    let kind = |k| AttachInput { kind: Some(k) };
    let _ = tx.send(kind(attach_input::Kind::Start(start))).await;
    let relay = Relay {
        stdin: move |b: Bytes| kind(attach_input::Kind::Stdin(b.to_vec())),
        close: move || kind(attach_input::Kind::CloseStdin(StdinClose {})),
        resize: move |r| kind(attach_input::Kind::Resize(r)),
    };
    let _input = AbortOnDrop(tokio::spawn(relay.run(io.stdin, io.resize, tx)));
    let out = ctx
        .shims
        .get(&id, &socket)
        .attach(ReceiverStream::new(rx))
        .await
        .map_err(|e| failed(e.into()))?;
    relay_output(out, io.stdout, io.stderr).await.map(drop)
}
