//! A pod's user namespace (CRI `NamespaceMode` POD with uid and gid mappings).
//!
//! What CRI allows, as containerd checks it: mode NODE (the host's user namespace, no
//! mappings) or POD with exactly one uid and one gid mapping that maps container id 0;
//! CONTAINER and TARGET are refused. A POD pod's network, UTS, IPC and shared PID
//! namespaces must be owned by its user namespace, or its containers' root could not
//! mount sysfs, proc or mqueue in them; so they are all made by `crust-shim userns`
//! (and `crust-shim pause --userns`), single-threaded processes, since a
//! multi-threaded one like crustd can neither create nor join a user namespace. The
//! user namespace is pinned at `<state>/ns/user/<sandbox id>` beside the others.
//!
//! Containers join it by path with the pod's mappings in their spec. Their root
//! filesystem and volumes are made visible with the right owners by idmapped mounts
//! (`open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)` with the pinned user namespace, as
//! containerd and runc do): the image's layers become idmapped lower dirs of the
//! overlay, whose upper dir belongs to the host id of the container's root; a volume is
//! an idmapped clone of its host path, so a host file owned by root is owned by root
//! inside, and a file the container's root writes lands owned by the host's root.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crust_proto::cri::{IdMapping, NamespaceMode, PodSandboxConfig, UserNamespace};
use nix::errno::Errno;

use crate::pod::namespaces;

/// One range of ids: `length` ids from `container` inside are `host` and up outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First id inside the user namespace.
    pub container: u32,
    /// First id outside (on the host).
    pub host: u32,
    /// How many ids.
    pub length: u32,
}

impl Mapping {
    /// The `container:host:length` form crust-shim takes.
    pub fn arg(&self) -> String {
        format!("{}:{}:{}", self.container, self.host, self.length)
    }

    /// The host id of container id `id`, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container)?;
        (offset < self.length).then(|| self.host + offset)
    }
}

/// The mappings of a pod's own user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUserns {
    /// The uid mapping.
    pub uid: Mapping,
    /// The gid mapping.
    pub gid: Mapping,
}

impl PodUserns {
    /// The host uid and gid of the container's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uid.host, self.gid.host)
    }
}

fn mapping(kind: &str, maps: &[IdMapping]) -> Result<Mapping, String> {
    let [m] = maps else {
        return Err(format!(
            "user namespace mode POD needs exactly one {kind} mapping, got {}",
            maps.len()
        ));
    };
    if m.container_id != 0 {
        return Err(format!(
            "user namespace {kind} mapping must map container id 0, it starts at {}",
            m.container_id
        ));
    }
    if m.length == 0 {
        return Err(format!("user namespace {kind} mapping has length 0"));
    }
    if m.host_id.checked_add(m.length - 1).is_none() {
        return Err(format!(
            "user namespace {kind} mapping {}+{} overflows the id range",
            m.host_id, m.length
        ));
    }
    Ok(Mapping {
        container: m.container_id,
        host: m.host_id,
        length: m.length,
    })
}

/// The user namespace a CRI `UserNamespace` asks for: `None` for the host's (mode NODE,
/// or no options). Errors say what is wrong, for an InvalidArgument.
pub fn from_options(opts: Option<&UserNamespace>) -> Result<Option<PodUserns>, String> {
    let Some(opts) = opts else {
        return Ok(None);
    };
    match NamespaceMode::try_from(opts.mode) {
        Ok(NamespaceMode::Node) => {
            if !opts.uids.is_empty() || !opts.gids.is_empty() {
                return Err("user namespace mode NODE takes no mappings".into());
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => Ok(Some(PodUserns {
            uid: mapping("uid", &opts.uids)?,
            gid: mapping("gid", &opts.gids)?,
        })),
        Ok(mode) => Err(format!(
            "user namespace mode {} is not supported (only NODE and POD)",
            mode.as_str_name()
        )),
        Err(_) => Err(format!("unknown user namespace mode {}", opts.mode)),
    }
}

/// The user namespace of a pod, validated: also refuses a pod user namespace with a
/// host network, IPC or PID namespace (kubelet never asks for one; the host's
/// namespaces are not owned by the pod's user namespace).
pub fn of_pod(config: &PodSandboxConfig) -> Result<Option<PodUserns>, String> {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let userns = from_options(opts.and_then(|o| o.userns_options.as_ref()))?;
    if let (Some(_), Some(o)) = (&userns, opts) {
        for (name, mode) in [("network", o.network), ("ipc", o.ipc), ("pid", o.pid)] {
            if mode == NamespaceMode::Node as i32 {
                return Err(format!(
                    "user namespace mode POD cannot be combined with the host's {name} namespace"
                ));
            }
        }
    }
    Ok(userns)
}

/// Errors making a pod's user namespace or its idmapped mounts. Each names the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// crust-shim could not be run.
    #[error("user namespace {pin}: run {shim}: {source}")]
    Spawn {
        /// The user namespace pin.
        pin: PathBuf,
        /// The shim binary.
        shim: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `crust-shim userns` failed; `message` is what it said on stderr.
    #[error("user namespace {pin}: crust-shim userns {status}: {message}")]
    Shim {
        /// The user namespace pin.
        pin: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its error line.
        message: String,
    },
    /// An idmapped mount could not be made or removed.
    #[error("idmapped mount {path}: {op}: {source}")]
    Mount {
        /// The source or target.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `lo` of the pod's network namespace could not be brought up.
    #[error("network namespace {pin}: bring lo up: {source}")]
    Loopback {
        /// The network namespace pin.
        pin: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Preparing a pin dir failed.
    #[error(transparent)]
    Pin(#[from] namespaces::Error),
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where `crust-shim userns` pins what it makes for one pod.
#[derive(Debug, Clone)]
pub struct PodPins {
    /// The user namespace.
    pub user: PathBuf,
    /// The network namespace.
    pub net: PathBuf,
    /// The UTS namespace, with its hostname.
    pub uts: PathBuf,
    /// The IPC namespace.
    pub ipc: PathBuf,
}

/// Makes the pod's user namespace with `userns`'s mappings and its network, UTS (with
/// `hostname`) and IPC namespaces owned by it, each pinned at its path in `pins`. On
/// failure nothing is left pinned.
pub async fn create(shim: &Path, pins: &PodPins, userns: &PodUserns, hostname: &str) -> Result<()> {
    for pin in [&pins.user, &pins.net, &pins.uts, &pins.ipc] {
        if let Some(dir) = pin.parent() {
            let dir = dir.to_owned();
            tokio::task::spawn_blocking(move || namespaces::prepare_dir(&dir))
                .await
                .map_err(|e| Error::Spawn {
                    pin: pins.user.clone(),
                    shim: shim.to_owned(),
                    source: io::Error::other(e),
                })??;
        }
    }
    let out = tokio::process::Command::new(shim)
        .arg("userns")
        .arg("--user")
        .arg(&pins.user)
        .args([
            "--uid-map",
            &userns.uid.arg(),
            "--gid-map",
            &userns.gid.arg(),
        ])
        .arg("--net")
        .arg(&pins.net)
        .arg("--uts")
        .arg(&pins.uts)
        .args(["--hostname", hostname])
        .arg("--ipc")
        .arg(&pins.ipc)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Error::Spawn {
            pin: pins.user.clone(),
            shim: shim.to_owned(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let message = text.trim().lines().last().unwrap_or_default();
        return Err(Error::Shim {
            pin: pins.user.clone(),
            status: out.status,
            message: message.trim_start_matches("crust-shim: ").to_owned(),
        });
    }
    // The network namespace's `lo`, up as in every pod (`network::netns`): crustd's
    // root may join and configure it, as the owner of the pod's user namespace.
    let net = pins.net.clone();
    let up = tokio::task::spawn_blocking(move || {
        crate::network::netns::run_in(&net, crate::network::netns::loopback_up)
    })
    .await
    .map_err(|e| Error::Loopback {
        pin: pins.net.clone(),
        source: io::Error::other(e),
    })??;
    up.map_err(|source| Error::Loopback {
        pin: pins.net.clone(),
        source,
    })
}

/// Whether idmapped mounts work on `dir`'s filesystem: makes a throwaway user namespace
/// (and the namespaces a pod would get) pinned at `pins`, idmaps a detached clone of
/// `dir` with it and removes the pins. For the runtime handler's `user_namespaces`
/// feature.
pub async fn probe(shim: &Path, pins: &PodPins, dir: &Path) -> Result<()> {
    let map = Mapping {
        container: 0,
        host: 1 << 16,
        length: 1 << 16,
    };
    let userns = PodUserns { uid: map, gid: map };
    let all = [&pins.user, &pins.net, &pins.uts, &pins.ipc];
    // A probe that a crash cut short left its pins.
    for pin in all {
        namespaces::unpin(pin)?;
    }
    let made = create(shim, pins, &userns, "probe").await;
    let tried = match &made {
        Ok(()) => {
            let (user, probed) = (pins.user.clone(), dir.to_owned());
            tokio::task::spawn_blocking(move || {
                let ns = open_userns(&user)?;
                let tree = open_tree(&probed, false)?;
                set_idmap(&tree, &ns, &probed, false)
            })
            .await
            .unwrap_or_else(|e| {
                Err(Error::Mount {
                    path: dir.to_owned(),
                    op: "probe",
                    source: io::Error::other(e),
                })
            })
        }
        Err(_) => Ok(()),
    };
    for pin in all {
        let _ = namespaces::unpin(pin);
    }
    made?;
    tried
}

// The new mount API, not wrapped by nix 0.29 (values from <linux/mount.h> and
// <linux/fcntl.h>).
const OPEN_TREE_CLONE: u32 = 1;
const OPEN_TREE_CLOEXEC: u32 = nix::libc::O_CLOEXEC as u32;
const AT_RECURSIVE: u32 = 0x8000;
const AT_EMPTY_PATH: u32 = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| Error::Mount {
        path: path.to_owned(),
        op,
        source: e.into(),
    }
}

/// Opens a pinned user namespace.
pub fn open_userns(pin: &Path) -> Result<File> {
    File::open(pin).map_err(|source| Error::Mount {
        path: pin.to_owned(),
        op: "open user namespace",
        source,
    })
}

/// A detached clone of the mount tree at `path` (with its submounts if `recursive`).
fn open_tree(path: &Path, recursive: bool) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| mount_err(path, "open_tree")(Errno::EINVAL))?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: a plain system call with a valid C string; the fd it returns is owned.
    let fd = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_open_tree,
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            flags as nix::libc::c_uint,
        )
    };
    let fd = Errno::result(fd).map_err(mount_err(path, "open_tree"))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Idmaps the detached mount `tree` with the user namespace `userns`.
fn set_idmap(tree: &OwnedFd, userns: &File, path: &Path, recursive: bool) -> Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = AT_EMPTY_PATH;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: a plain system call; `attr` outlives it and its size is passed.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags as nix::libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(mount_err(path, "mount_setattr idmap"))
}

/// Attaches the detached mount `tree` at `target`.
fn move_mount(tree: &OwnedFd, target: &Path) -> Result<()> {
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| mount_err(target, "move_mount")(Errno::EINVAL))?;
    // SAFETY: a plain system call with a valid fd and C string.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH as nix::libc::c_uint,
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(mount_err(target, "move_mount"))
}

/// Mounts an idmapped clone of `source` (recursively, with its submounts) on `target`,
/// which must exist (a dir for a dir, a file for a file).
pub fn idmapped_bind(source: &Path, target: &Path, userns: &File) -> Result<()> {
    let tree = open_tree(source, true)?;
    set_idmap(&tree, userns, source, true)?;
    move_mount(&tree, target)
}

/// Unmounts every staging mount under `dir` (entries of idmapped clones) and removes
/// `dir`. Idempotent. Never recurses into a mount: the staging entries are empty dirs
/// or files once unmounted.
pub fn remove_staging(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        for _ in 0..16 {
            match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(Errno::EINVAL | Errno::ENOENT) => break,
                Err(e) => return Err(e.into()),
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&path)?,
            Ok(_) => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "userns_tests.rs"]
mod tests;
