//! StopPodSandbox: kills the pod's containers, ends its shared PID namespace and
//! releases its network (CNI DEL, once). Stopping a stopped or missing pod succeeds.

use std::sync::Arc;

use crust_proto::cri::{StopPodSandboxRequest, StopPodSandboxResponse};

use super::Context;
use super::error::Result;
use super::sandboxes;
use crate::store::ErrorKind;

/// Stops the pod; idempotent.
pub async fn stop_pod_sandbox(
    ctx: &Arc<Context>,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse> {
    let sandbox = match ctx.store.resolve_sandbox(&req.pod_sandbox_id) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(StopPodSandboxResponse {}),
        Err(e) => return Err(e.into()),
    };
    sandboxes::stop(ctx, &sandbox).await?;
    Ok(StopPodSandboxResponse {})
}
