//! UpdateContainerResources: new cgroup limits for a created or running container,
//! applied through libcgroups to its cgroup and recorded for ContainerStatus.

use std::sync::Arc;

use crust_proto::cri::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};

use super::Context;
use super::cgroups;
use super::error::{Error, Result, blocking};
use crate::spec;
use crate::store::ContainerState;

/// Applies the new Linux resources.
pub async fn update_container_resources(
    ctx: &Arc<Context>,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let id = c.metadata().id.clone();
    let what = format!("container {id}");
    let state = c.status().state;
    if !matches!(state, ContainerState::Created | ContainerState::Running) {
        return Err(Error::FailedPrecondition {
            what,
            message: format!(
                "cannot update a container in state {}",
                state.cri().as_str_name()
            ),
        });
    }
    let Some(linux) = req.linux else {
        return Ok(UpdateContainerResourcesResponse {});
    };
    let resources = spec::linux_resources(id.as_str(), &linux, &ctx.host)?;
    let cgroup = cgroups::Cgroup::parse(&c.metadata().cgroups_path);
    cgroups::apply(what, cgroup, resources).await?;
    let store_ctx = Arc::clone(ctx);
    blocking("record container resources", move || {
        store_ctx.store.update_container(&id, |s| {
            s.resources = Some(linux);
            Ok::<_, Error>(())
        })
    })
    .await?;
    Ok(UpdateContainerResourcesResponse {})
}
