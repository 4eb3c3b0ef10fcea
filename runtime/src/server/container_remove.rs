//! RemoveContainer: kills it if it still runs, then removes every trace. Removing a
//! missing container succeeds.

use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{RemoveContainerRequest, RemoveContainerResponse};

use super::Context;
use super::containers;
use super::error::Result;
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
    containers::teardown(ctx, &c.metadata().id).await?;
    Ok(RemoveContainerResponse {})
}
