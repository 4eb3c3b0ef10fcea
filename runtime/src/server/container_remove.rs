//! RemoveContainer: kills it if it still runs, then removes every trace. Removing a
//! missing container succeeds.

use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{RemoveContainerRequest, RemoveContainerResponse};

use super::Context;
use super::containers;
use super::error::Result;
use crate::nri;
use crate::store::ErrorKind;

/// Removes the container; idempotent.
pub async fn remove_container(
    ctx: &Arc<Context>,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse> {
    let c = match ctx.store.resolve_container(&req.container_id) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(RemoveContainerResponse {}),
        Err(e) => return Err(e.into()),
    };
    containers::stop(ctx, &c, Duration::ZERO).await?;
    // NRI's view of it, while its bundle is there.
    let seen = ctx.nri.enabled().then(|| {
        let pod = ctx.store.get_sandbox(&c.metadata().sandbox_id).ok();
        (
            pod.map(|p| nri::convert::pod(&p)),
            nri::convert::container(&c),
        )
    });
    containers::teardown(ctx, &c.metadata().id).await?;
    if let Some((Some(pod), container)) = seen {
        let updates = ctx.nri.remove_container(&pod, &container).await;
        super::nri_host::apply_updates(ctx, updates).await;
    }
    Ok(RemoveContainerResponse {})
}
