//! StartContainer: once its shim has created the container (see `launches`), the shim
//! starts the container's process; crustd then watches for its exit in the background.

use std::sync::Arc;

use crust_proto::cri::{ContainerEventType, StartContainerRequest, StartContainerResponse};

use super::Context;
use super::containers;
use super::error::{Error, Result, blocking};
use super::launches;
use crate::shims;
use crate::store::{ContainerState, SandboxState, now_nanos};

/// Starts a CREATED container.
pub async fn start_container(
    ctx: &Arc<Context>,
    req: StartContainerRequest,
) -> Result<StartContainerResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let id = c.metadata().id.clone();
    ctx.launches.finished(&id).await;
    let status = c.status();
    // The shim failed to create it: that error is the answer (as containerd's).
    if status.state == ContainerState::Exited && status.reason == launches::START_ERROR {
        return Err(shims::Error::Launch {
            id: id.to_string(),
            message: status.message,
        }
        .into());
    }
    if status.state != ContainerState::Created || status.removing {
        return Err(Error::FailedPrecondition {
            what: format!("container {id}"),
            message: format!(
                "cannot start a container in state {}",
                status.state.cri().as_str_name()
            ),
        });
    }
    let sandbox = ctx.store.get_sandbox(&c.metadata().sandbox_id)?;
    if sandbox.status().state != SandboxState::Ready {
        return Err(Error::FailedPrecondition {
            what: format!("container {id}"),
            message: format!("sandbox {} is not ready", sandbox.metadata().id),
        });
    }
    let socket = status.shim_socket.ok_or_else(|| Error::Internal {
        what: format!("container {id}"),
        message: "no shim recorded".into(),
    })?;
    let nri_seen = ctx.nri.enabled().then(|| {
        (
            crate::nri::convert::pod(&sandbox),
            crate::nri::convert::container(&c),
        )
    });
    if let Some((pod, container)) = &nri_seen {
        ctx.nri.start_container(pod, container).await?;
    }
    let pid = ctx.shims.get(id.as_str(), &socket).start().await?;
    let store_ctx = Arc::clone(ctx);
    let cid = id.clone();
    blocking("record container start", move || {
        store_ctx.store.update_container(&cid, |s| {
            s.start(&cid, pid, now_nanos()).map_err(Error::from)
        })
    })
    .await?;
    containers::publish(ctx, &c, ContainerEventType::ContainerStartedEvent);
    if nri_seen.is_some() {
        let pod = crate::nri::convert::pod(&sandbox);
        ctx.nri
            .post_start_container(&pod, &crate::nri::convert::container(&c))
            .await;
    }
    containers::watch(Arc::clone(ctx), c);
    Ok(StartContainerResponse {})
}
