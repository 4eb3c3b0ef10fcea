//! The container's mounts, in containerd's order: the default filesystems (minus those a
//! bind mount replaces), then the bind mounts (CRI mounts and the pod's hostname,
//! resolv.conf, hosts and shm) sorted by depth of their container path so that parents
//! mount before children.

use std::path::{Component, Path, PathBuf};

use crust_proto::cri::MountPropagation;
use oci_spec::runtime::Mount;

use super::{ContainerSpecRequest, PodNamespace, Result};

/// The mounts and the rootfs propagation they need.
pub(super) struct Mounts {
    pub mounts: Vec<Mount>,
    /// `shared` with a bidirectional mount, `slave` with a host-to-container one.
    pub rootfs_propagation: Option<String>,
}

/// A bind mount before it becomes an OCI mount.
struct Bind {
    source: PathBuf,
    destination: PathBuf,
    readonly: bool,
    recursive_readonly: bool,
    propagation: i32,
}

pub(super) fn mounts(req: &ContainerSpecRequest) -> Result<Mounts> {
    let mut binds = cri_binds(req)?;
    for extra in sandbox_binds(req) {
        if !binds.iter().any(|b| b.destination == extra.destination) {
            binds.push(extra);
        }
    }
    binds.sort_by_key(|b| b.destination.components().count());

    let mut mounts: Vec<Mount> = default_mounts(req)
        .into_iter()
        .filter(|m| {
            let dst = m.destination();
            !binds.iter().any(|b| {
                &b.destination == dst
                    || (b.destination == Path::new("/dev") && dst.starts_with("/dev"))
            })
        })
        .collect();

    let mut propagation = None;
    for bind in &binds {
        let mut options = vec!["rbind".to_string()];
        if bind.propagation == MountPropagation::PropagationBidirectional as i32 {
            options.push("rshared".into());
            // The OCI spec's names for the rootfs: libcontainer applies them recursively
            // and knows no `r` forms.
            propagation = Some("shared".to_string());
        } else if bind.propagation == MountPropagation::PropagationHostToContainer as i32 {
            options.push("rslave".into());
            if propagation.is_none() {
                propagation = Some("slave".to_string());
            }
        } else {
            options.push("rprivate".into());
        }
        options.push(match (bind.readonly, bind.recursive_readonly) {
            (true, true) => "rro".into(),
            (true, false) => "ro".into(),
            (false, _) => "rw".into(),
        });
        mounts.push(mount(&bind.destination, "bind", &bind.source, &options));
    }
    Ok(Mounts {
        mounts,
        rootfs_propagation: propagation,
    })
}

fn cri_binds(req: &ContainerSpecRequest) -> Result<Vec<Bind>> {
    let mut binds = Vec::new();
    for m in &req.config.mounts {
        // Paths and id mappings were checked before anything was made
        // (`validate::mounts`).
        let what = |reason: String| req.invalid("mounts", reason);
        if m.image.is_some() && m.host_path.is_empty() {
            return Err(super::Error::Unsupported {
                id: req.id.to_string(),
                feature: "image volume mounts",
            });
        }
        if MountPropagation::try_from(m.propagation).is_err() {
            return Err(what(format!(
                "mount on {:?}: unknown propagation {}",
                m.container_path, m.propagation
            )));
        }
        if m.recursive_read_only {
            if !req.host.mount_setattr {
                return Err(super::Error::Unsupported {
                    id: req.id.to_string(),
                    feature: "recursive read-only mounts (the kernel lacks mount_setattr)",
                });
            }
            if !m.readonly {
                return Err(what(format!(
                    "mount on {:?}: recursive read-only mount conflicts with a read-write mount",
                    m.container_path
                )));
            }
            if m.propagation != MountPropagation::PropagationPrivate as i32 {
                return Err(what(format!(
                    "mount on {:?}: recursive read-only mount needs private propagation",
                    m.container_path
                )));
            }
        }
        binds.push(Bind {
            source: PathBuf::from(&m.host_path),
            destination: clean(Path::new(&m.container_path)),
            readonly: m.readonly,
            recursive_readonly: m.recursive_read_only,
            propagation: m.propagation,
        });
    }
    Ok(binds)
}

/// The pod's files; hostname, resolv.conf and hosts are read-only with a read-only
/// rootfs, as containerd does.
fn sandbox_binds(req: &ContainerSpecRequest) -> Vec<Bind> {
    let readonly = req.security().is_some_and(|s| s.readonly_rootfs);
    let file = |source: &Option<PathBuf>, destination: &str, readonly: bool| {
        source.as_ref().map(|s| Bind {
            source: s.clone(),
            destination: PathBuf::from(destination),
            readonly,
            recursive_readonly: false,
            propagation: MountPropagation::PropagationPrivate as i32,
        })
    };
    let shm = match req.namespaces.ipc {
        PodNamespace::Host => Some(PathBuf::from("/dev/shm")),
        PodNamespace::Pinned(_) => req.files.shm.clone(),
    };
    [
        file(&req.files.hostname, "/etc/hostname", readonly),
        file(&req.files.hosts, "/etc/hosts", readonly),
        file(&req.files.resolv_conf, "/etc/resolv.conf", readonly),
        file(&shm, "/dev/shm", false),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The filesystems every container gets (containerd's defaults without `/run`, plus the
/// cgroup filesystem); `/sys` and `/sys/fs/cgroup` are writable only when privileged.
fn default_mounts(req: &ContainerSpecRequest) -> Vec<Mount> {
    let rw = if req.privileged() { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", rw]),
    ];
    mounts.extend(cgroup_mounts(req, rw));
    mounts
}

/// The container's view of /sys/fs/cgroup. On cgroup v2 the cgroup filesystem itself
/// (its own cgroup namespace shows only its subtree). On v1, what runc builds: a tmpfs
/// with each controller hierarchy of the host bind-mounted from the container's own
/// cgroup, so the container sees its cgroup and nothing else of the host's tree.
/// (libcontainer 0.7 builds the v1 view itself by reading /proc/<pid> of the host with
/// a pid of the container's PID namespace, which fails once that pid is not in use on
/// the host: crust gives it the finished mounts instead.)
fn cgroup_mounts(req: &ContainerSpecRequest, rw: &str) -> Vec<Mount> {
    let options = ["nosuid", "noexec", "nodev", "relatime", rw];
    if req.host.unified_cgroups || req.host.cgroup_v1_mounts.is_empty() {
        return vec![mount("/sys/fs/cgroup", "cgroup", "cgroup", &options)];
    }
    let own = Path::new(req.cgroups_path.trim_start_matches('/'));
    let mut mounts = vec![mount(
        "/sys/fs/cgroup",
        "tmpfs",
        "tmpfs",
        &["nosuid", "noexec", "nodev", "mode=755"],
    )];
    for point in &req.host.cgroup_v1_mounts {
        mounts.push(mount(
            point,
            "bind",
            point.join(own),
            &["rbind", "nosuid", "noexec", "nodev", rw],
        ));
    }
    mounts
}

fn mount(
    destination: impl AsRef<Path>,
    typ: &str,
    source: impl AsRef<Path>,
    options: &[impl AsRef<str>],
) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.as_ref().to_path_buf())
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.as_ref().to_path_buf()))
        .set_options(Some(
            options.iter().map(|o| o.as_ref().to_string()).collect(),
        ));
    m
}

/// A lexically cleaned absolute path, like Go's `filepath.Clean`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::Mount as CriMount;

    use super::super::ErrorKind;
    use super::super::testutil::Fixture;
    use super::*;

    fn cri(container: &str, host: &str) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    fn mounts_of(f: &Fixture) -> Vec<Mount> {
        f.spec().unwrap().mounts().clone().unwrap()
    }

    fn find<'m>(mounts: &'m [Mount], dst: &str) -> Vec<&'m Mount> {
        mounts
            .iter()
            .filter(|m| m.destination() == Path::new(dst))
            .collect()
    }

    fn options(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap()
    }

    #[test]
    fn defaults_and_pod_files() {
        let f = Fixture::new();
        let mounts = mounts_of(&f);
        let dsts: Vec<_> = mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dsts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        let sys = find(&mounts, "/sys")[0];
        assert!(options(sys).contains(&"ro".into()));
        let cgroup = find(&mounts, "/sys/fs/cgroup")[0];
        assert_eq!(cgroup.typ().as_deref(), Some("cgroup"));
        assert!(options(cgroup).contains(&"ro".into()));
        let shm = find(&mounts, "/dev/shm")[0];
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/crust/pod/shm"))
        );
        assert_eq!(options(shm), ["rbind", "rprivate", "rw"]);
        let hosts = find(&mounts, "/etc/hosts")[0];
        assert_eq!(
            hosts.source().as_deref(),
            Some(Path::new("/run/crust/pod/hosts"))
        );
        assert_eq!(hosts.typ().as_deref(), Some("bind"));
    }

    #[test]
    fn pod_files_follow_readonly_rootfs_and_shm_stays_rw() {
        let mut f = Fixture::new();
        f.security().readonly_rootfs = true;
        let mounts = mounts_of(&f);
        for dst in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            assert_eq!(
                options(find(&mounts, dst)[0]),
                ["rbind", "rprivate", "ro"],
                "{dst}"
            );
        }
        assert_eq!(
            options(find(&mounts, "/dev/shm")[0]),
            ["rbind", "rprivate", "rw"]
        );
    }

    #[test]
    fn missing_shm_keeps_the_tmpfs_and_host_ipc_binds_the_hosts() {
        let mut f = Fixture::new();
        f.files.shm = None;
        let mounts = mounts_of(&f);
        assert_eq!(find(&mounts, "/dev/shm")[0].typ().as_deref(), Some("tmpfs"));
        f.namespaces.ipc = PodNamespace::Host;
        let mounts = mounts_of(&f);
        let shm = find(&mounts, "/dev/shm");
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].source().as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn privileged_sysfs_and_cgroupfs_are_writable() {
        let mut f = Fixture::new().privileged_pod();
        f.security().privileged = true;
        let mounts = mounts_of(&f);
        assert!(options(find(&mounts, "/sys")[0]).contains(&"rw".into()));
        assert!(options(find(&mounts, "/sys/fs/cgroup")[0]).contains(&"rw".into()));
    }

    #[test]
    fn cri_mount_overrides_pod_file_and_dev_replaces_dev_defaults() {
        let mut f = Fixture::new();
        f.config.mounts = vec![cri("/etc/hosts/", "/my/hosts"), cri("/dev", "/hostdev")];
        let mounts = mounts_of(&f);
        let hosts = find(&mounts, "/etc/hosts");
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/my/hosts")));
        assert!(find(&mounts, "/dev/pts").is_empty());
        assert!(find(&mounts, "/dev/mqueue").is_empty());
        assert_eq!(find(&mounts, "/dev").len(), 1);
        assert_eq!(find(&mounts, "/dev")[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn cri_mounts_are_sorted_parents_first() {
        let mut f = Fixture::new();
        f.files = Default::default();
        f.config.mounts = vec![
            cri("/a/b/c", "/h1"),
            cri("/a", "/h2"),
            cri("/x/y", "/h3"),
            cri("/b", "/h4"),
        ];
        let mounts = mounts_of(&f);
        let binds: Vec<_> = mounts
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(binds, ["/a", "/b", "/x/y", "/a/b/c"]);
    }

    #[test]
    fn propagation_and_readonly_options() {
        use MountPropagation::*;
        // (propagation, readonly, recursive_read_only, options or None = refused, rootfs propagation)
        let cases = [
            (
                PropagationPrivate,
                false,
                false,
                Some(["rbind", "rprivate", "rw"]),
                None,
            ),
            (
                PropagationPrivate,
                true,
                false,
                Some(["rbind", "rprivate", "ro"]),
                None,
            ),
            (
                PropagationPrivate,
                true,
                true,
                Some(["rbind", "rprivate", "rro"]),
                None,
            ),
            (
                PropagationHostToContainer,
                false,
                false,
                Some(["rbind", "rslave", "rw"]),
                Some("slave"),
            ),
            (
                PropagationHostToContainer,
                true,
                false,
                Some(["rbind", "rslave", "ro"]),
                Some("slave"),
            ),
            (
                PropagationBidirectional,
                false,
                false,
                Some(["rbind", "rshared", "rw"]),
                Some("shared"),
            ),
            (PropagationPrivate, false, true, None, None),
            (PropagationHostToContainer, true, true, None, None),
            (PropagationBidirectional, true, true, None, None),
        ];
        for (propagation, readonly, rro, want, rootfs) in cases {
            let mut f = Fixture::new();
            f.config.mounts = vec![CriMount {
                propagation: propagation as i32,
                readonly,
                recursive_read_only: rro,
                ..cri("/data", "/srv")
            }];
            let label = format!("{propagation:?} ro={readonly} rro={rro}");
            match want {
                Some(want) => {
                    let spec = f.spec().unwrap();
                    let mounts = spec.mounts().clone().unwrap();
                    assert_eq!(options(find(&mounts, "/data")[0]), want, "{label}");
                    let got = spec.linux().as_ref().unwrap().rootfs_propagation().clone();
                    assert_eq!(got.as_deref(), rootfs, "{label}");
                }
                None => {
                    let err = f.spec().unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{label}");
                    assert!(err.to_string().contains("/data"), "{err}");
                }
            }
        }
    }

    #[test]
    fn bidirectional_wins_the_rootfs_propagation() {
        let mut f = Fixture::new();
        f.config.mounts = vec![
            CriMount {
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..cri("/a", "/h")
            },
            CriMount {
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..cri("/b", "/h")
            },
        ];
        let spec = f.spec().unwrap();
        let got = spec.linux().as_ref().unwrap().rootfs_propagation().clone();
        assert_eq!(got.as_deref(), Some("shared"));
    }

    #[test]
    fn malformed_mounts_are_refused() {
        // Paths and id mappings are `validate::mounts`' (its tests), checked before
        // anything is made; what is left to the spec is the propagation.
        let mut f = Fixture::new();
        f.config.mounts = vec![CriMount {
            propagation: 7,
            ..cri("/a", "/h")
        }];
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean(Path::new("/a//b/./c/../d/")), PathBuf::from("/a/b/d"));
        assert_eq!(clean(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn cgroup_v1_is_a_tmpfs_with_the_containers_own_hierarchies() {
        let mut f = Fixture::new();
        f.host.cgroup_v1_mounts = vec![
            "/sys/fs/cgroup/memory".into(),
            "/sys/fs/cgroup/cpu,cpuacct".into(),
        ];
        let spec = f.spec().unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let root = find(&mounts, "/sys/fs/cgroup")[0];
        assert_eq!(root.typ().as_deref(), Some("tmpfs"));
        let memory = find(&mounts, "/sys/fs/cgroup/memory")[0];
        assert_eq!(memory.typ().as_deref(), Some("bind"));
        assert_eq!(
            memory.source().as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/crust-c1"))
        );
        assert!(options(memory).contains(&"ro".to_string()));
        let cpu = find(&mounts, "/sys/fs/cgroup/cpu,cpuacct")[0];
        assert_eq!(
            cpu.source().as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/kubepods/crust-c1"))
        );
        // The tmpfs comes before the hierarchies mounted on it.
        let pos = |d: &str| {
            mounts
                .iter()
                .position(|m| m.destination() == Path::new(d))
                .unwrap()
        };
        assert!(pos("/sys/fs/cgroup") < pos("/sys/fs/cgroup/memory"));
        f.host.unified_cgroups = true;
        let spec = f.spec().unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(
            find(&mounts, "/sys/fs/cgroup")[0].typ().as_deref(),
            Some("cgroup")
        );
    }
}
