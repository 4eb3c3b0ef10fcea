//! Where pods' and containers' cgroups are under each cgroup driver, applying
//! resource limits to an existing cgroup, and removing a cgroup, through libcgroups,
//! off the async thread.
//!
//! A container's cgroup is named by its OCI `cgroupsPath`, recorded with it:
//! - cgroupfs: the cgroup's path below the hierarchy root, such as
//!   `/kubepods/burstable/pod<uid>/crust-<id>`;
//! - systemd: `<slice>:crust:<id>`, the transient scope `crust-<id>.scope` in the
//!   pod's slice (as runc reads it), whose cgroup is the slice expanded the way
//!   systemd nests slices: `a-b.slice` is `/a.slice/a-b.slice`.
//!
//! The form tells the driver, so a record made under one driver is still found after a
//! restart under the other.

use std::path::{Path, PathBuf};

use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};
use oci_spec::runtime::LinuxResources;

use super::error::{Error, Result, blocking};
use crate::config::CgroupDriver;
use crate::store::SandboxMetadata;

/// The prefix of the scope units crust makes (`crust-<id>.scope`), as runc's
/// `cri-containerd` or `crio`.
pub const SCOPE_PREFIX: &str = "crust";

/// The slice that holds the pod slices crust makes for pods without a parent.
const DEFAULT_SLICE: &str = "crust.slice";

/// The cgroup, in every hierarchy, that holds the pod cgroups crust makes (cgroupfs)
/// for pods without a parent.
pub const DEFAULT_PARENT: &str = "crust";

/// A cgroup as a driver names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// A path below the cgroup root (cgroupfs).
    Fs(PathBuf),
    /// A systemd unit (a scope or a slice) in a slice.
    Unit {
        /// The slice it is in.
        slice: String,
        /// The unit's name.
        unit: String,
    },
}

impl Cgroup {
    /// Reads an OCI `cgroupsPath`: `slice:prefix:name` is a systemd unit (the scope
    /// `prefix-name.scope`, or the slice `name` when it ends in `.slice`); anything
    /// else is a cgroupfs path.
    pub fn parse(cgroups_path: &str) -> Cgroup {
        let parts: Vec<&str> = cgroups_path.split(':').collect();
        match parts[..] {
            [slice, prefix, name] => Cgroup::Unit {
                slice: slice.to_owned(),
                unit: if name.ends_with(".slice") {
                    name.to_owned()
                } else {
                    format!("{prefix}-{name}.scope")
                },
            },
            _ => Cgroup::Fs(PathBuf::from(cgroups_path)),
        }
    }

    /// The cgroup's path below the cgroup root: a unit's is its slice's expanded
    /// path joined with the unit (systemd's own cgroup root being the hierarchy's, as
    /// for the system manager on a host). `None` for a malformed slice name.
    pub fn fs_path(&self) -> Option<PathBuf> {
        match self {
            Cgroup::Fs(p) => Some(p.clone()),
            Cgroup::Unit { slice, unit } => {
                let mut path = expand_slice(slice)?;
                if unit.ends_with(".slice") {
                    // A slice's path is its own expansion, below its parent's.
                    return expand_slice(unit);
                }
                path.push(unit);
                Some(path)
            }
        }
    }

    /// The OCI `cgroupsPath` naming this cgroup; a slice unit as libcgroups' systemd
    /// manager reads one (`parent:prefix:name.slice`).
    pub fn oci(&self) -> String {
        match self {
            Cgroup::Fs(p) => p.display().to_string(),
            Cgroup::Unit { slice, unit } => match unit.strip_suffix(".scope") {
                Some(scope) => {
                    let (prefix, name) = scope.split_once('-').unwrap_or(("", scope));
                    format!("{slice}:{prefix}:{name}")
                }
                None => format!("{slice}:{SCOPE_PREFIX}:{unit}"),
            },
        }
    }
}

/// The path systemd gives a slice's cgroup: each `-` a level down, so
/// `kubepods-burstable-pod1.slice` is
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`, and
/// `-.slice` the root. `None` for a name that is not a slice's.
pub fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some(PathBuf::from("/"));
    }
    if name.is_empty() || slice.contains('/') {
        return None;
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return None;
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
        prefix.push('-');
    }
    Some(path)
}

/// The slice a pod's containers go in under the systemd driver, from kubelet's
/// `cgroup_parent`: its last component (kubelet sends
/// `kubepods-burstable-pod<uid>.slice`; a path of slices is accepted as containerd
/// does). An error message when it is no slice.
pub fn parent_slice(parent: &str) -> std::result::Result<String, String> {
    let name = parent
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if expand_slice(name).is_none() {
        return Err(format!(
            "cgroup_parent {parent:?} is not a systemd slice: the systemd cgroup driver \
             needs a name such as kubepods-burstable-pod<uid>.slice"
        ));
    }
    Ok(name.to_owned())
}

/// The pod's cgroup: the `cgroup_parent` kubelet made for it, else one crust makes
/// (cgroupfs: `/crust/pod-<id>`; systemd: the slice `crust-pod<id>.slice` in
/// `crust.slice`, which systemd makes with the pod's first scope). Its containers'
/// cgroups go below it, so it accounts for the whole pod.
pub fn pod_cgroup(driver: CgroupDriver, m: &SandboxMetadata) -> Cgroup {
    let parent = m.cgroup_parent.trim_end_matches('/');
    match driver {
        CgroupDriver::Cgroupfs if parent.is_empty() => {
            Cgroup::Fs(PathBuf::from(format!("/{DEFAULT_PARENT}/pod-{}", m.id)))
        }
        CgroupDriver::Cgroupfs => Cgroup::Fs(PathBuf::from(parent)),
        CgroupDriver::Systemd if parent.is_empty() => own_pod_slice(m),
        CgroupDriver::Systemd => {
            // RunPodSandbox checked it; a record from before keeps working as a name.
            let slice = parent_slice(parent).unwrap_or_else(|_| parent.to_owned());
            let up = slice
                .strip_suffix(".slice")
                .and_then(|s| s.rsplit_once('-'))
                .map_or_else(|| "-.slice".to_owned(), |(p, _)| format!("{p}.slice"));
            Cgroup::Unit {
                slice: up,
                unit: slice,
            }
        }
    }
}

/// The slice crust makes for a pod without a parent under the systemd driver.
fn own_pod_slice(m: &SandboxMetadata) -> Cgroup {
    Cgroup::Unit {
        slice: DEFAULT_SLICE.to_owned(),
        unit: format!(
            "{}-pod{}.slice",
            DEFAULT_SLICE.trim_end_matches(".slice"),
            m.id
        ),
    }
}

/// Stops `crust.slice`, the systemd driver's parent of the pod slices crust makes,
/// when it holds none: called as crustd stops with no pod left (not after each pod,
/// where a pod being made meanwhile would have its first scope stopped with it).
pub fn release_default_slice(hierarchies: &[PathBuf]) {
    let slice = Cgroup::Unit {
        slice: "-.slice".to_owned(),
        unit: DEFAULT_SLICE.to_owned(),
    };
    let Some(path) = slice.fs_path() else { return };
    let busy = hierarchies.iter().any(|h| {
        std::fs::read_dir(h.join(relative(&path))).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        })
    });
    if busy {
        return;
    }
    if let Err(e) = remove("crust's slice", &slice, hierarchies) {
        tracing::warn!(error = %e, "stop {DEFAULT_SLICE}");
    }
}

/// A container's OCI `cgroupsPath` under its pod's cgroup.
pub fn container_cgroups_path(pod: &Cgroup, id: &str) -> String {
    match pod {
        Cgroup::Fs(p) => format!(
            "{}/{SCOPE_PREFIX}-{id}",
            p.display().to_string().trim_end_matches('/')
        ),
        Cgroup::Unit { unit, .. } => format!("{unit}:{SCOPE_PREFIX}:{id}"),
    }
}

/// Applies `resources` to an existing cgroup; `what` names the object (with its id) for
/// the error. A systemd unit gets them as unit properties (so systemd keeps them) and
/// then in its cgroup files, as runc's systemd manager does: systemd has no property
/// for some (hugetlb, most of the `unified` map, such as `memory.oom.group`).
pub async fn apply(what: String, cgroup: Cgroup, resources: LinuxResources) -> Result<()> {
    blocking("apply cgroup resources", move || {
        let opt = ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        let fs = match &cgroup {
            Cgroup::Fs(path) => path.clone(),
            Cgroup::Unit { .. } => {
                let oci = cgroup.oci();
                manager(&what, &oci, true)?
                    .apply(&opt)
                    .map_err(|e| internal(&what, format!("set properties of {oci}: {e}")))?;
                match cgroup.fs_path() {
                    Some(p) if unified_root().join(relative(&p)).is_dir() => p,
                    // A pod slice before its first container: systemd keeps the
                    // properties for when it makes it.
                    _ => return Ok(()),
                }
            }
        };
        let oci = fs.display().to_string();
        manager(&what, &oci, false)?
            .apply(&opt)
            .map_err(|e| internal(&what, format!("apply resources to cgroup {oci}: {e}")))
    })
    .await
}

/// Removes a cgroup (killing what is left in it); one that is gone is fine. A shim
/// deletes its container's cgroup itself; this covers a shim that died first.
/// `hierarchies` are the host's cgroup mount points (the v1 controllers, or
/// /sys/fs/cgroup alone on v2): when the cgroup is in none of them, as after a shim's
/// delete, there is nothing to do and libcgroups (whose manager reads the mount table
/// once per controller, or connects to systemd) is not asked. A systemd unit is
/// stopped, which removes its cgroup.
pub fn remove(what: &str, cgroup: &Cgroup, hierarchies: &[PathBuf]) -> Result<()> {
    let Some(path) = cgroup.fs_path() else {
        return Ok(());
    };
    if !hierarchies.iter().any(|h| h.join(relative(&path)).exists()) {
        return Ok(());
    }
    let oci = cgroup.oci();
    let manager = manager(what, &oci, matches!(cgroup, Cgroup::Unit { .. }))?;
    manager
        .remove()
        .map_err(|e| internal(what, format!("remove cgroup {oci}: {e}")))
}

/// A libcgroups manager of the cgroup `cgroups_path` names.
fn manager(
    what: &str,
    cgroups_path: &str,
    systemd: bool,
) -> Result<libcgroups::common::AnyCgroupManager> {
    create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: systemd,
        container_name: what.to_owned(),
    })
    .map_err(|e| internal(what, format!("cgroup {cgroups_path}: {e}")))
}

fn internal(what: &str, message: String) -> Error {
    Error::Internal {
        what: what.to_owned(),
        message,
    }
}

/// The root of the unified hierarchy.
fn unified_root() -> &'static Path {
    Path::new("/sys/fs/cgroup")
}

/// `path` without its leading `/`, to join below a hierarchy's root.
pub fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::SandboxId;

    /// The pods' id: 64 `a`s, written `P` in the expected paths.
    fn pod(parent: &str) -> SandboxMetadata {
        let id = SandboxId::parse(&"a".repeat(64)).unwrap();
        let mut m = SandboxMetadata::new(id, Default::default(), 0);
        m.cgroup_parent = parent.to_owned();
        m
    }

    fn with_id(s: &str) -> String {
        s.replace('P', &"a".repeat(64))
    }

    #[test]
    fn cgroupfs_containers_go_under_the_pod_parent() {
        let c = |parent| {
            container_cgroups_path(&pod_cgroup(CgroupDriver::Cgroupfs, &pod(parent)), "c1")
        };
        assert_eq!(
            c("/kubepods/burstable/pod1/"),
            "/kubepods/burstable/pod1/crust-c1"
        );
        assert_eq!(c(""), with_id("/crust/pod-P/crust-c1"));
        let path = c("/kubepods/pod1");
        assert_eq!(Cgroup::parse(&path), Cgroup::Fs(PathBuf::from(&path)));
        assert_eq!(
            Cgroup::parse(&path).fs_path().unwrap(),
            PathBuf::from(&path)
        );
    }

    #[test]
    fn systemd_containers_are_scopes_in_the_pod_slice() {
        let m = pod("kubepods-burstable-pod1_2.slice");
        let path = container_cgroups_path(&pod_cgroup(CgroupDriver::Systemd, &m), "c1");
        assert_eq!(path, "kubepods-burstable-pod1_2.slice:crust:c1");
        let scope = Cgroup::parse(&path);
        assert_eq!(
            scope,
            Cgroup::Unit {
                slice: "kubepods-burstable-pod1_2.slice".into(),
                unit: "crust-c1.scope".into()
            }
        );
        assert_eq!(scope.oci(), path);
        assert_eq!(
            scope.fs_path().unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/crust-c1.scope"
            )
        );
        let slice = pod_cgroup(CgroupDriver::Systemd, &m);
        assert_eq!(
            slice.fs_path().unwrap(),
            PathBuf::from(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice"
            )
        );
        // A path of slices, as the cgroupfs form of the same parent, names its last.
        let m = pod("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3.slice");
        assert_eq!(
            container_cgroups_path(&pod_cgroup(CgroupDriver::Systemd, &m), "c1"),
            "kubepods-besteffort-pod3.slice:crust:c1"
        );
    }

    #[test]
    fn a_pod_without_parent_gets_a_slice_of_its_own() {
        let slice = pod_cgroup(CgroupDriver::Systemd, &pod(""));
        assert_eq!(slice.oci(), with_id("crust.slice:crust:crust-podP.slice"));
        assert_eq!(Cgroup::parse(&slice.oci()), slice);
        assert_eq!(
            slice.fs_path().unwrap(),
            PathBuf::from(with_id("/crust.slice/crust-podP.slice"))
        );
        assert_eq!(
            container_cgroups_path(&slice, "c1"),
            with_id("crust-podP.slice:crust:c1")
        );
        assert_eq!(
            Cgroup::parse(&with_id("crust-podP.slice:crust:c1"))
                .fs_path()
                .unwrap(),
            PathBuf::from(with_id("/crust.slice/crust-podP.slice/crust-c1.scope"))
        );
    }

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(expand_slice("-.slice").unwrap(), PathBuf::from("/"));
        let crust = Cgroup::Unit {
            slice: "-.slice".into(),
            unit: DEFAULT_SLICE.into(),
        };
        assert_eq!(crust.fs_path().unwrap(), PathBuf::from("/crust.slice"));
        assert_eq!(crust.oci(), "-.slice:crust:crust.slice");
        assert_eq!(expand_slice("a.slice").unwrap(), PathBuf::from("/a.slice"));
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            PathBuf::from("/a.slice/a-b.slice/a-b-c.slice")
        );
        for bad in [
            "a",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a/b.slice",
            "a-.slice",
        ] {
            assert_eq!(expand_slice(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_slices_are_systemd_parents() {
        assert_eq!(parent_slice("kubepods.slice").unwrap(), "kubepods.slice");
        assert_eq!(
            parent_slice("/kubepods.slice/kubepods-x.slice/").unwrap(),
            "kubepods-x.slice"
        );
        let err = parent_slice("/kubepods/burstable/pod1").unwrap_err();
        assert!(
            err.contains("\"/kubepods/burstable/pod1\" is not a systemd slice"),
            "{err}"
        );
    }
}
