//! UpdatePodSandboxResources: kubelet tells the runtime the pod's new total resources
//! after an in-place resize. kubelet resizes the pod cgroup it made itself; crust
//! applies the new limits only to a pod cgroup it made (a pod without a
//! `cgroup_parent`). containerd passes the call on to NRI plugins only.

use std::path::PathBuf;
use std::sync::Arc;

use crust_proto::cri::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};

use super::Context;
use super::error::{Error, Result, blocking};
use super::sandboxes;
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
    let Some(linux) = req.resources else {
        return Ok(UpdatePodSandboxResourcesResponse {});
    };
    if !m.cgroup_parent.trim_end_matches('/').is_empty() {
        return Ok(UpdatePodSandboxResourcesResponse {});
    }
    let resources = spec::linux_resources(m.id.as_str(), &linux, &ctx.host)?;
    let cgroup = PathBuf::from(sandboxes::pod_cgroup(m));
    let id = m.id.to_string();
    blocking("update pod resources", move || {
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: cgroup.clone(),
            systemd_cgroup: false,
            container_name: id,
        })
        .map_err(|e| Error::Internal {
            what: what.clone(),
            message: format!("cgroup {}: {e}", cgroup.display()),
        })?;
        manager
            .apply(&ControllerOpt {
                resources: &resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| Error::Internal {
                what,
                message: format!("apply resources to cgroup {}: {e}", cgroup.display()),
            })
    })
    .await?;
    Ok(UpdatePodSandboxResourcesResponse {})
}
