//! UpdateContainerResources: new cgroup limits for a created or running container,
//! applied through libcgroups to its cgroup and recorded for ContainerStatus. NRI
//! plugins see the update first and may change it.

use std::sync::Arc;

use crust_proto::cri::{
    LinuxContainerResources, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
};

use super::Context;
use super::cgroups;
use super::error::{Error, Result, blocking};
use crate::nri;
use crate::spec;
use crate::store::{Container, ContainerState};

/// Applies the new Linux resources.
pub async fn update_container_resources(
    ctx: &Arc<Context>,
    req: UpdateContainerResourcesRequest,
) -> Result<UpdateContainerResourcesResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    // The cgroup exists once the shim has created the container.
    ctx.launches.finished(&c.metadata().id).await;
    updatable(&c)?;
    let Some(linux) = req.linux else {
        return Ok(UpdateContainerResourcesResponse {});
    };
    let (linux, others) = if ctx.nri.enabled() {
        let pod = ctx.store.get_sandbox(&c.metadata().sandbox_id)?;
        let (pod, container) = (nri::convert::pod(&pod), nri::convert::container(&c));
        let asked = nri::convert::resources_to_nri(&linux);
        let (resources, others) = ctx.nri.update_container(&pod, &container, asked).await?;
        (nri::convert::resources_to_cri(&resources, linux), others)
    } else {
        (linux, Vec::new())
    };
    apply_resources(ctx, &c, linux).await?;
    if ctx.nri.enabled() {
        super::nri_host::apply_updates(ctx, others).await;
        let pod = ctx.store.get_sandbox(&c.metadata().sandbox_id)?;
        let (pod, container) = (nri::convert::pod(&pod), nri::convert::container(&c));
        ctx.nri.post_update_container(&pod, &container).await;
    }
    Ok(UpdateContainerResourcesResponse {})
}

/// Applies new Linux resources to the container's cgroup and records them.
pub async fn apply_resources(
    ctx: &Arc<Context>,
    c: &Container,
    linux: LinuxContainerResources,
) -> Result<()> {
    let id = c.metadata().id.clone();
    ctx.launches.finished(&id).await;
    let what = format!("container {id}");
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
    .await
}

/// FailedPrecondition unless `c` is created or running: the states whose resources
/// can change.
pub fn updatable(c: &Container) -> Result<()> {
    let state = c.status().state;
    if matches!(state, ContainerState::Created | ContainerState::Running) {
        return Ok(());
    }
    Err(Error::FailedPrecondition {
        what: format!("container {}", c.metadata().id),
        message: format!(
            "cannot update a container in state {}",
            state.cri().as_str_name()
        ),
    })
}
