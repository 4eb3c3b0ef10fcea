//! ReopenContainerLog: the shim reopens the log file after kubelet rotated it.

use std::sync::Arc;

use crust_proto::cri::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use super::Context;
use super::error::{Error, Result};
use crate::store::ContainerState;

/// Reopens the log of a running container.
pub async fn reopen_container_log(
    ctx: &Arc<Context>,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let id = c.metadata().id.clone();
    let status = c.status();
    let socket = match (status.state, status.shim_socket) {
        (ContainerState::Running, Some(socket)) => socket,
        (state, _) => {
            return Err(Error::FailedPrecondition {
                what: format!("container {id}"),
                message: format!(
                    "cannot reopen the log of a container in state {}",
                    state.cri().as_str_name()
                ),
            });
        }
    };
    ctx.shims.get(id.as_str(), &socket).reopen_log().await?;
    Ok(ReopenContainerLogResponse {})
}
