//! Where crustd keeps each pod's and container's files. Everything here is derived from
//! the root and state dirs and an id, so nothing but the ids needs to be persisted to
//! find them again after a restart.
//!
//! ```text
//! <state>/ns/{net,uts,ipc,pid}/<sandbox id>   pinned pod namespaces (+ pid holder's .pid)
//! <state>/ns/user/<sandbox id>                pinned user namespace of a pod that has one
//! <state>/p/<sandbox id>/                     hostname, resolv.conf, hosts, shm (tmpfs)
//! <state>/c/<container id>/                   bundle and shim state: config.json, rootfs
//!                                             (overlay mount), shim.sock, exit.json,
//!                                             idmap/ (idmapped clones, user namespaces)
//! <state>/cni-cache/                          what CNI ADD used, for DEL
//! <state>/trash/, <root>/trash/               removed dirs being deleted (emptied at start)
//! <root>/containers/<container id>/           writable layer: upper, work
//! ```

use std::path::{Path, PathBuf};

use crate::store::{ContainerId, SandboxId};

/// The layout under crustd's root and state dirs.
#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
    state: PathBuf,
}

impl Paths {
    /// The layout under `root` (persistent) and `state` (gone on reboot).
    pub fn new(root: &Path, state: &Path) -> Paths {
        Paths {
            root: root.to_owned(),
            state: state.to_owned(),
        }
    }

    /// Pinned network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.state.join("ns/net")
    }

    /// Pinned UTS namespaces.
    pub fn uts_dir(&self) -> PathBuf {
        self.state.join("ns/uts")
    }

    /// Pinned IPC namespaces.
    pub fn ipc_dir(&self) -> PathBuf {
        self.state.join("ns/ipc")
    }

    /// Pinned PID namespaces of pods that share one.
    pub fn pid_dir(&self) -> PathBuf {
        self.state.join("ns/pid")
    }

    /// Pinned user namespaces of pods that have their own.
    pub fn user_dir(&self) -> PathBuf {
        self.state.join("ns/user")
    }

    /// A sandbox's pinned user namespace.
    pub fn user_pin(&self, id: &SandboxId) -> PathBuf {
        self.user_dir().join(id.as_str())
    }

    /// A sandbox's pinned network namespace.
    pub fn netns_pin(&self, id: &SandboxId) -> PathBuf {
        self.netns_dir().join(id.as_str())
    }

    /// A sandbox's pinned PID namespace.
    pub fn pid_pin(&self, id: &SandboxId) -> PathBuf {
        self.pid_dir().join(id.as_str())
    }

    /// A sandbox's pinned UTS namespace.
    pub fn uts_pin(&self, id: &SandboxId) -> PathBuf {
        self.uts_dir().join(id.as_str())
    }

    /// A sandbox's pinned IPC namespace.
    pub fn ipc_pin(&self, id: &SandboxId) -> PathBuf {
        self.ipc_dir().join(id.as_str())
    }

    /// The sandboxes' file dirs.
    pub fn sandbox_dir_root(&self) -> PathBuf {
        self.state.join("p")
    }

    /// A sandbox's files: hostname, resolv.conf, hosts, shm.
    pub fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir_root().join(id.as_str())
    }

    /// The containers' bundle dirs.
    pub fn container_dir_root(&self) -> PathBuf {
        self.state.join("c")
    }

    /// A container's bundle and shim state.
    pub fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.container_dir_root().join(id.as_str())
    }

    /// A container's root filesystem mount point.
    pub fn rootfs(&self, id: &ContainerId) -> PathBuf {
        self.container_dir(id).join("rootfs")
    }

    /// Where a container's idmapped clones (of its image layers and volumes) are
    /// mounted before they go into its rootfs and spec.
    pub fn idmap_dir(&self, id: &ContainerId) -> PathBuf {
        self.container_dir(id).join("idmap")
    }

    /// The containers' writable layers (ImageFsInfo's container filesystem).
    pub fn layer_root(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// A container's writable layer: `upper` and `work`.
    pub fn layer_dir(&self, id: &ContainerId) -> PathBuf {
        self.layer_root().join(id.as_str())
    }

    /// Where removed directories of the state dir are deleted (see `trash`).
    pub fn state_trash(&self) -> PathBuf {
        self.state.join("trash")
    }

    /// Where removed directories of the root dir are deleted (see `trash`).
    pub fn root_trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// The CNI result cache.
    pub fn cni_cache(&self) -> PathBuf {
        self.state.join("cni-cache")
    }
}
