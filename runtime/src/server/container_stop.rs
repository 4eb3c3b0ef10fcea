//! StopContainer: the stop signal, then SIGKILL once the timeout passes; then the
//! container's shim deletes it and exits. Stopping a stopped or missing container
//! succeeds.

use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{StopContainerRequest, StopContainerResponse};

use super::Context;
use super::containers;
use super::error::Result;
use crate::store::ErrorKind;

/// Stops the container; idempotent.
pub async fn stop_container(
    ctx: &Arc<Context>,
    req: StopContainerRequest,
) -> Result<StopContainerResponse> {
    let c = match ctx.store.resolve_container(&req.container_id) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(StopContainerResponse {}),
        Err(e) => return Err(e.into()),
    };
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    containers::stop(ctx, &c, timeout).await?;
    containers::release_shim(ctx, &c).await;
    Ok(StopContainerResponse {})
}
