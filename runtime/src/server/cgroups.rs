//! Applying resource limits to an existing cgroup, and removing a cgroup, through
//! libcgroups, off the async thread.

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

/// Removes the cgroupfs cgroup at `path` in every hierarchy (killing what is left in
/// it); a cgroup that is gone is fine. A shim deletes its container's cgroup itself;
/// this covers a shim that died first. `hierarchies` are the host's cgroup mount
/// points (the v1 controllers, or /sys/fs/cgroup alone on v2): when the cgroup is in
/// none of them, as after a shim's delete, there is nothing to do and libcgroups (whose
/// manager reads the mount table once per controller) is not asked.
pub fn remove(what: &str, path: &std::path::Path, hierarchies: &[PathBuf]) -> Result<()> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    if !hierarchies.iter().any(|h| h.join(relative).exists()) {
        return Ok(());
    }
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_owned(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::Internal {
        what: what.to_owned(),
        message: format!("cgroup {}: {e}", path.display()),
    })?;
    manager.remove().map_err(|e| Error::Internal {
        what: what.to_owned(),
        message: format!("remove cgroup {}: {e}", path.display()),
    })
}
