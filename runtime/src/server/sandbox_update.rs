//! UpdatePodSandboxResources: kubelet tells the runtime the pod's new total resources
//! after an in-place resize. kubelet resizes the pod cgroup it made itself; crust
//! applies the new limits only to a pod cgroup it made (a pod without a
//! `cgroup_parent`). containerd passes the call on to NRI plugins only.

use std::sync::Arc;

use crust_proto::cri::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};

use super::Context;
use super::cgroups;
use super::error::{Error, Result};
use crate::spec;
use crate::store::SandboxState;

/// Applies the pod's resources where crust owns the pod cgroup.
pub async fn update_pod_sandbox_resources(
    ctx: &Arc<Context>,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse> {
    let sandbox = ctx.store.resolve_sandbox(&req.pod_sandbox_id)?;
    let m = sandbox.metadata();
    let what = format!("sandbox {}", m.id);
    if sandbox.status().state != SandboxState::Ready {
        return Err(Error::FailedPrecondition {
            what,
            message: "sandbox is not ready".into(),
        });
    }
    let pod = ctx
        .nri
        .enabled()
        .then(|| crate::nri::convert::pod(&sandbox));
    if let Some(pod) = &pod {
        let nri = crate::nri::convert::resources_to_nri;
        ctx.nri
            .update_pod_sandbox(
                pod,
                req.overhead.as_ref().map(nri),
                req.resources.as_ref().map(nri),
            )
            .await?;
    }
    let applied = apply(ctx, &sandbox, req.resources).await;
    if let Some(pod) = &pod {
        ctx.nri.post_update_pod_sandbox(pod).await;
    }
    applied
}

/// Applies the pod's new resources to a pod cgroup crust made.
async fn apply(
    ctx: &Arc<Context>,
    sandbox: &crate::store::Sandbox,
    resources: Option<crust_proto::cri::LinuxContainerResources>,
) -> Result<UpdatePodSandboxResourcesResponse> {
    let m = sandbox.metadata();
    let what = format!("sandbox {}", m.id);
    let Some(linux) = resources else {
        return Ok(UpdatePodSandboxResourcesResponse {});
    };
    if !m.cgroup_parent.trim_end_matches('/').is_empty() {
        return Ok(UpdatePodSandboxResourcesResponse {});
    }
    let resources = spec::linux_resources(m.id.as_str(), &linux, &ctx.host)?;
    let cgroup = cgroups::pod_cgroup(ctx.config.cgroup.driver, m);
    cgroups::apply(what, cgroup, resources).await?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
