//! The OCI runtime spec of a container, built from its CRI `ContainerConfig`, its pod's
//! `PodSandboxConfig` and its image's config: what containerd's CRI plugin does in
//! `buildLinuxSpec`, as pure functions. Everything that touches the host (the image's
//! `/etc/passwd`, host device nodes, crustd's own capabilities) comes in through the
//! request: the [`UserLookup`] and [`DeviceLookup`] traits and [`HostFacts`].
//!
//! CDI devices are added to the built spec by [`cdi`], which reads the CDI spec files.

mod caps;
pub mod cdi;
mod devices;
mod host;
mod linux;
mod lsm;
mod mounts;
mod process;
mod seccomp;
mod summary;
mod user;
pub mod validate;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crust_proto::cri::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Root, Spec};

pub use caps::DEFAULT_CAPABILITIES;
pub use devices::{DeviceLookup, HostDevice, HostDevices};
pub use host::HostFacts;
pub use linux::linux_resources;
pub use seccomp::{SeccompChoice, seccomp_choice, seccomp_localhost_path};
pub use summary::security_summary;
pub use user::{GroupEntry, PasswdEntry, RootfsUsers, UserLookup};

use crate::pod::userns::{self, PodUserns};

/// The OCI runtime spec version crust writes.
pub const OCI_VERSION: &str = "1.1.0";

/// A pod namespace a container joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodNamespace {
    /// The host's namespace (host network, host IPC, host PID): the spec leaves it out.
    Host,
    /// The pod's namespace, pinned by crustd at this nsfs path.
    Pinned(PathBuf),
}

/// The namespaces of the pod the container joins, as crustd pinned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxNamespaces {
    /// The pod's network namespace (`Host` for a host-network pod).
    pub network: PodNamespace,
    /// The pod's IPC namespace (`Host` for a host-IPC pod).
    pub ipc: PodNamespace,
    /// The pod's UTS namespace (`Host` for a host-network pod, as containerd does).
    pub uts: PodNamespace,
    /// The pod's shared PID namespace, for containers in PID mode POD; `None` when the
    /// pod has none (its containers each get their own).
    pub pid: Option<PodNamespace>,
    /// The PID namespace of the container named by `namespace_options.target_id`, for
    /// containers in PID mode TARGET; the caller looks it up.
    pub target_pid: Option<PathBuf>,
    /// The pod's own user namespace (mode POD), pinned at this path; `None` for the
    /// host's.
    pub user: Option<(PathBuf, PodUserns)>,
}

/// Host paths of the files crustd prepared for the pod. A `None` file is not mounted
/// (containerd skips files that do not exist).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    /// Bind-mounted on `/etc/hostname`.
    pub hostname: Option<PathBuf>,
    /// Bind-mounted on `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Bind-mounted on `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// The pod's shm directory, bind-mounted on `/dev/shm` (unless the pod uses host
    /// IPC: then the host's `/dev/shm` is, as containerd does).
    pub shm: Option<PathBuf>,
}

/// Everything `container_spec` needs. The caller has checked the request's paths and
/// mounts with [`validate`], created missing host paths of CRI mounts and resolved
/// their symlinks (containerd does both before building the spec), and checked the
/// propagation of their source mounts.
pub struct ContainerSpecRequest<'a> {
    /// The container id.
    pub id: &'a str,
    /// The CRI container config.
    pub config: &'a ContainerConfig,
    /// The CRI config of the container's pod.
    pub sandbox: &'a PodSandboxConfig,
    /// The image's config (Entrypoint, Cmd, Env, WorkingDir, User).
    pub image: &'a ImageConfiguration,
    /// The container's mounted root filesystem.
    pub rootfs: &'a Path,
    /// The pod's namespaces.
    pub namespaces: &'a SandboxNamespaces,
    /// The pod's hostname, resolv.conf, hosts and shm.
    pub files: &'a SandboxFiles,
    /// The container's cgroup, computed by the caller (cgroupfs: `<parent>/crust-<id>`).
    pub cgroups_path: &'a str,
    /// The users and groups of the image.
    pub users: &'a dyn UserLookup,
    /// The host's device nodes (CRI devices, privileged containers).
    pub devices: &'a dyn DeviceLookup,
    /// Facts about the host and crustd itself.
    pub host: &'a HostFacts,
    /// The content of the Localhost seccomp profile the container asks for (the file
    /// [`seccomp_localhost_path`] names), read by the caller.
    pub seccomp_localhost: Option<&'a str>,
}

impl ContainerSpecRequest<'_> {
    /// The container's Linux security context, if the request has one.
    fn security(&self) -> Option<&LinuxContainerSecurityContext> {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
    }

    fn privileged(&self) -> bool {
        self.security().is_some_and(|s| s.privileged)
    }

    fn invalid(&self, field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            id: self.id.to_string(),
            field,
            reason: reason.into(),
        }
    }
}

/// What went wrong, for the gRPC layer's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (InvalidArgument).
    InvalidArgument,
    /// The request asks for a feature crust does not have yet (Unimplemented).
    Unsupported,
    /// Reading the image or the host failed (Internal).
    Internal,
}

/// Errors building a container's spec. Each names the container and the field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is invalid.
    #[error("container {id}: {field}: {reason}")]
    Invalid {
        /// The container id.
        id: String,
        /// The CRI field at fault.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// Neither the request nor the image gives a command.
    #[error("container {id}: no command specified by the request or the image")]
    NoCommand {
        /// The container id.
        id: String,
    },
    /// The user is not in the image's `/etc/passwd`.
    #[error("container {id}: user {user:?} not found in the image's /etc/passwd")]
    UserNotFound {
        /// The container id.
        id: String,
        /// The user name asked for.
        user: String,
    },
    /// The group is not in the image's `/etc/group`.
    #[error("container {id}: group {group:?} not found in the image's /etc/group")]
    GroupNotFound {
        /// The container id.
        id: String,
        /// The group name asked for.
        group: String,
    },
    /// The request asks for something crust does not support yet.
    #[error("container {id}: {feature} is not supported")]
    Unsupported {
        /// The container id.
        id: String,
        /// What is missing.
        feature: &'static str,
    },
    /// Reading a file of the image or the host failed.
    #[error("container {id}: read {path}: {source}")]
    Lookup {
        /// The container id.
        id: String,
        /// The file or device path that could not be read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The class of the error, which the gRPC layer maps to a status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. }
            | Error::NoCommand { .. }
            | Error::UserNotFound { .. }
            | Error::GroupNotFound { .. } => ErrorKind::InvalidArgument,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Lookup { .. } => ErrorKind::Internal,
        }
    }
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The OCI runtime spec of the container described by `req`.
pub fn container_spec(req: &ContainerSpecRequest) -> Result<Spec> {
    check_supported(req)?;
    if req.privileged()
        && !req
            .sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    {
        return Err(req.invalid(
            "security_context.privileged",
            "a privileged container needs a privileged pod",
        ));
    }
    let mounts = mounts::mounts(req)?;
    let mut linux = linux::linux(req)?;
    linux.set_rootfs_propagation(mounts.rootfs_propagation);

    let mut root = Root::default();
    root.set_path(req.rootfs.to_path_buf());
    root.set_readonly(Some(req.security().is_some_and(|s| s.readonly_rootfs)));

    let annotations: HashMap<String, String> = req.config.annotations.clone();

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root))
        .set_process(Some(process::process(req)?))
        // The container joins the pod's UTS namespace, which carries the hostname.
        .set_hostname(None)
        .set_domainname(None)
        .set_mounts(Some(mounts.mounts))
        .set_annotations(Some(annotations))
        .set_linux(Some(linux))
        .set_hooks(None);
    Ok(spec)
}

/// Refuses what this version cannot honour rather than silently ignoring it, and a
/// user namespace other than the pod's.
fn check_supported(req: &ContainerSpecRequest) -> Result<()> {
    let asked = req
        .security()
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    if let Some(opts) = asked {
        let field = "namespace_options.userns_options";
        let own = userns::from_options(Some(opts)).map_err(|e| req.invalid(field, e))?;
        let pod = req.namespaces.user.as_ref().map(|(_, u)| *u);
        if own != pod {
            return Err(req.invalid(
                field,
                "a container must use its pod's user namespace, with the same mappings",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use crust_proto::cri::{
        IdMapping, LinuxContainerConfig, LinuxPodSandboxConfig, NamespaceMode, NamespaceOption,
        UserNamespace,
    };
    use oci_spec::runtime::LinuxNamespaceType;

    use super::testutil::Fixture;
    use super::*;

    #[test]
    fn minimal_spec_has_root_process_and_linux() {
        let f = Fixture::new();
        let spec = f.spec().unwrap();
        assert_eq!(spec.version(), OCI_VERSION);
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/crust/c1/rootfs"));
        assert_eq!(root.readonly(), Some(false));
        assert!(spec.hostname().is_none());
        assert!(spec.process().is_some());
        assert!(spec.linux().is_some());
        assert!(spec.hooks().is_none());
    }

    #[test]
    fn readonly_rootfs() {
        let mut f = Fixture::new();
        f.security().readonly_rootfs = true;
        let spec = f.spec().unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn annotations_pass_through() {
        let mut f = Fixture::new();
        f.config
            .annotations
            .insert("example.com/a".into(), "b".into());
        let spec = f.spec().unwrap();
        assert_eq!(
            spec.annotations().as_ref().unwrap().get("example.com/a"),
            Some(&"b".to_string())
        );
    }

    #[test]
    fn privileged_container_needs_privileged_pod() {
        let mut f = Fixture::new();
        f.security().privileged = true;
        let err = f.spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().starts_with("container c1: "), "{err}");
        f.sandbox.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(Default::default()),
            ..Default::default()
        });
        f.sandbox
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .privileged = true;
        f.spec().unwrap();
    }

    fn userns_options(mode: NamespaceMode, host_id: u32) -> NamespaceOption {
        let map = vec![IdMapping {
            container_id: 0,
            host_id,
            length: 65536,
        }];
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                uids: map.clone(),
                gids: map,
            }),
            ..Default::default()
        }
    }

    fn pod_userns(host: u32) -> (PathBuf, PodUserns) {
        let map = userns::Mapping {
            container: 0,
            host,
            length: 65536,
        };
        (
            PathBuf::from("/run/crust/ns/user/p1"),
            PodUserns { uid: map, gid: map },
        )
    }

    #[test]
    fn user_namespace_of_the_pod() {
        let mut f = Fixture::new();
        f.config.linux = Some(LinuxContainerConfig::default());
        f.security().namespace_options = Some(userns_options(NamespaceMode::Pod, 1000));
        f.namespaces.user = Some(pod_userns(1000));
        let spec = f.spec().unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let user = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::User)
            .expect("a user namespace");
        assert_eq!(
            user.path().as_deref(),
            Some(Path::new("/run/crust/ns/user/p1"))
        );
        for maps in [linux.uid_mappings(), linux.gid_mappings()] {
            let maps = maps.as_ref().unwrap();
            assert_eq!(maps.len(), 1);
            assert_eq!(
                (maps[0].container_id(), maps[0].host_id(), maps[0].size()),
                (0, 1000, 65536)
            );
        }
        // Unset options inherit the pod's.
        f.security().namespace_options = None;
        assert!(
            f.spec()
                .unwrap()
                .linux()
                .as_ref()
                .unwrap()
                .uid_mappings()
                .is_some()
        );
    }

    #[test]
    fn user_namespace_other_than_the_pod_is_refused() {
        let mut f = Fixture::new();
        f.config.linux = Some(LinuxContainerConfig::default());
        // A POD user namespace in a pod without one.
        f.security().namespace_options = Some(userns_options(NamespaceMode::Pod, 1000));
        let err = f.spec().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.to_string().contains("its pod's user namespace"),
            "{err}"
        );
        // Other mappings than the pod's.
        f.namespaces.user = Some(pod_userns(2000));
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
        // The host's user namespace in a pod with its own.
        f.security().namespace_options = Some(NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(f.spec().unwrap_err().kind(), ErrorKind::InvalidArgument);
        // CONTAINER mode.
        f.security().namespace_options = Some(userns_options(NamespaceMode::Container, 2000));
        let err = f.spec().unwrap_err();
        assert!(err.to_string().contains("CONTAINER"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_json() {
        let mut f = Fixture::new();
        f.config.tty = true;
        f.config.mounts.push(crust_proto::cri::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            ..Default::default()
        });
        f.sandbox.linux = Some(LinuxPodSandboxConfig {
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            ..Default::default()
        });
        f.security().capabilities = Some(crust_proto::cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        });
        let resources = f.resources();
        resources.cpu_shares = 512;
        resources.memory_limit_in_bytes = 1 << 30;
        let spec = f.spec().unwrap();
        let json = serde_json::to_string_pretty(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        // Fields libcontainer reads under their OCI names.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["ociVersion"], OCI_VERSION);
        assert_eq!(value["process"]["terminal"], true);
        assert!(value["process"]["capabilities"]["bounding"].is_array());
        assert_eq!(value["linux"]["cgroupsPath"], "/kubepods/crust-c1");
        assert_eq!(value["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(value["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
        assert!(value["linux"]["namespaces"].is_array());
    }
}
