//! Applying resource limits to an existing cgroup through libcgroups, off the async
//! thread (UpdateContainerResources, UpdatePodSandboxResources).

use std::path::PathBuf;

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use oci_spec::runtime::LinuxResources;

use super::error::{Error, Result, blocking};

/// Applies `resources` to the cgroupfs cgroup at `path`; `what` names the object (with
/// its id) for the error.
pub async fn apply(what: String, path: PathBuf, resources: LinuxResources) -> Result<()> {
    blocking("apply cgroup resources", move || {
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: path.clone(),
            systemd_cgroup: false,
            container_name: String::new(),
        })
        .map_err(|e| Error::Internal {
            what: what.clone(),
            message: format!("cgroup {}: {e}", path.display()),
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
                message: format!("apply resources to cgroup {}: {e}", path.display()),
            })
    })
    .await
}
