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
    // NRI's view of its containers, while their bundles are there.
    let containers: Vec<_> = if ctx.nri.enabled() {
        ctx.store
            .containers_of(&sandbox.metadata().id)
            .iter()
            .map(|c| crate::nri::convert::container(c))
            .collect()
    } else {
        Vec::new()
    };
    sandboxes::teardown(ctx, &sandbox.metadata().id).await?;
    if ctx.nri.enabled() {
        let pod = crate::nri::convert::pod(&sandbox);
        // The pod's containers went with it: plugins see each removed, then the pod.
        for c in &containers {
            let updates = ctx.nri.remove_container(&pod, c).await;
            super::nri_host::apply_updates(ctx, updates).await;
        }
        ctx.nri.remove_pod_sandbox(&pod).await;
    }
    Ok(RemovePodSandboxResponse {})
}
