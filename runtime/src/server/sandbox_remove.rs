//! RemovePodSandbox: stops the pod if needed, removes its containers and every trace of
//! it. Removing a missing pod succeeds.

use std::sync::Arc;

use crust_proto::cri::{RemovePodSandboxRequest, RemovePodSandboxResponse};

use super::Context;
use super::error::Result;
use super::sandboxes;
use crate::store::ErrorKind;

/// Removes the pod; idempotent.
pub async fn remove_pod_sandbox(
    ctx: &Arc<Context>,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse> {
    let sandbox = match ctx.store.resolve_sandbox(&req.pod_sandbox_id) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(RemovePodSandboxResponse {}),
        Err(e) => return Err(e.into()),
    };
    // Running containers are forcibly stopped first, as CRI asks.
    sandboxes::stop(ctx, &sandbox).await?;
    sandboxes::teardown(ctx, &sandbox.metadata().id).await?;
    if ctx.nri.enabled() {
        ctx.nri
            .remove_pod_sandbox(&crate::nri::convert::pod(&sandbox))
            .await;
    }
    Ok(RemovePodSandboxResponse {})
}
