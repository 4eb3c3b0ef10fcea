//! ReopenContainerLog: the shim reopens the log file after kubelet rotated it.

use std::sync::Arc;

use crust_proto::cri::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use super::Context;
use super::containers::running_shim;
use super::error::Result;

/// Reopens the log of a running container.
pub async fn reopen_container_log(
    ctx: &Arc<Context>,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse> {
    let (id, socket) = running_shim(ctx, &req.container_id, "reopen the log of")?;
    ctx.shims.get(&id, &socket).reopen_log().await?;
    Ok(ReopenContainerLogResponse {})
}
