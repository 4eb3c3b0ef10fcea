//! Namespaces pinned to files, one per pod sandbox and kind: `<dir>/<sandbox-id>`.
//!
//! A namespace lives as long as something refers to it. A new one is made on a
//! short-lived thread of its own (`unshare` of a namespace changes only the calling
//! thread, which must never be a tokio worker), the thread's
//! `/proc/self/task/<tid>/ns/<kind>` is bind-mounted onto an empty file and the thread
//! exits: the bind mount keeps the namespace alive until [`unpin`] unmounts it. The pin
//! dir is made a mount point of its own with shared propagation, as iproute2 and CNI's
//! test helpers do, so mount namespaces copied from crustd's later (shims, containers)
//! receive the unmount too and never keep a removed pod's namespace alive.
//!
//! The machinery is shared by every kind: the network namespace
//! (`crate::network::netns`), the UTS namespace with the pod's hostname ([`pin_uts`]),
//! the IPC namespace ([`pin_ipc`]), and the PID namespace pin that crust-shim's pause
//! mode makes (removed through [`unpin`] too).
//!
//! Everything here blocks for a moment (a thread spawn and join); from async code call
//! it through `tokio::task::spawn_blocking`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::store::SandboxId;

/// The kinds of namespace crust pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Network namespace.
    Net,
    /// UTS namespace (hostname).
    Uts,
    /// IPC namespace (SysV IPC, POSIX message queues).
    Ipc,
    /// PID namespace (pinned by crust-shim's pause mode, never unshared here).
    Pid,
}

impl Kind {
    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
            Kind::Ipc => CloneFlags::CLONE_NEWIPC,
            Kind::Pid => CloneFlags::CLONE_NEWPID,
        }
    }

    /// The name under `/proc/<pid>/ns/`.
    fn proc_name(self) -> &'static str {
        match self {
            Kind::Net => "net",
            Kind::Uts => "uts",
            Kind::Ipc => "ipc",
            Kind::Pid => "pid",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ns", self.proc_name())
    }
}

/// Errors pinning, entering or removing a namespace. Each names the kind and the pin's
/// path, whose last component is the sandbox id.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a pin failed.
    #[error("{kind} {path}: {op}: {source}")]
    Io {
        /// The namespace's kind.
        kind: Kind,
        /// The pin file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A system call on a pin dir, or on a pin of a kind not known, failed.
    #[error("pin {path}: {op}: {source}")]
    Path {
        /// The pin dir or pin file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pin file already holds a namespace.
    #[error("{kind} {path}: already pinned")]
    AlreadyPinned {
        /// The namespace's kind.
        kind: Kind,
        /// The pin file.
        path: PathBuf,
    },
    /// The file is not a pinned namespace.
    #[error("{kind} {path}: not a pinned namespace")]
    NotPinned {
        /// The namespace's kind.
        kind: Kind,
        /// The path given.
        path: PathBuf,
    },
    /// The helper thread panicked.
    #[error("{kind} {path}: helper thread panicked")]
    Thread {
        /// The namespace's kind.
        kind: Kind,
        /// The pin file.
        path: PathBuf,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        kind: Kind,
        path: &Path,
        op: &'static str,
        source: impl Into<io::Error>,
    ) -> Error {
        Error::Io {
            kind,
            path: path.to_owned(),
            op,
            source: source.into(),
        }
    }

    fn path(path: &Path, op: &'static str, source: impl Into<io::Error>) -> Error {
        Error::Path {
            path: path.to_owned(),
            op,
            source: source.into(),
        }
    }
}

/// Serializes making a pin dir a mount point, so two first pins at once cannot stack
/// two bind mounts on it.
static PREPARE: Mutex<()> = Mutex::new(());

/// Makes `dir` exist and be a mount point with shared propagation. Idempotent: once it
/// is a mount point, only the propagation is (re)set.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let _guard = PREPARE.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(dir).map_err(|e| Error::path(dir, "create dir", e))?;
    let share = || {
        nix::mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(Error::path(dir, "make shared", e)),
    }
    nix::mount::mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::path(dir, "bind dir onto itself", e))?;
    share().map_err(|e| Error::path(dir, "make shared", e))
}

/// Undoes [`prepare_dir`] once no pod needs `dir`: unmounts its binds onto itself and
/// leaves it a plain dir. Idempotent; a pin still in it would keep its own mount.
pub fn release_dir(dir: &Path) -> Result<()> {
    let _guard = PREPARE.lock().unwrap_or_else(|e| e.into_inner());
    // The bound keeps a broken mount table from looping forever, as in `remove`.
    for _ in 0..16 {
        match nix::mount::umount2(dir, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::path(dir, "unmount", e)),
        }
    }
    Ok(())
}

/// Whether `path` is a pinned namespace (an nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new UTS namespace whose hostname is `hostname`, pinned at
/// `dir/<sandbox id>`, and returns that path. Fails with [`Error::AlreadyPinned`] if the
/// sandbox already has one; a leftover empty file (a crash between steps) is reused.
pub fn pin_uts(dir: &Path, sandbox: &SandboxId, hostname: &str) -> Result<PathBuf> {
    pin_new(Kind::Uts, dir, sandbox, |path| {
        nix::unistd::sethostname(hostname).map_err(|e| Error::io(Kind::Uts, path, "sethostname", e))
    })
}

/// Creates a new IPC namespace pinned at `dir/<sandbox id>` and returns that path; as
/// [`pin_uts`] otherwise.
pub fn pin_ipc(dir: &Path, sandbox: &SandboxId) -> Result<PathBuf> {
    pin_new(Kind::Ipc, dir, sandbox, |_| Ok(()))
}

/// Unmounts and unlinks a pin of any kind. Idempotent: a missing file or a file with
/// nothing mounted on it is fine. Processes still in the namespace keep it alive; the
/// pin no longer does.
pub fn unpin(path: &Path) -> Result<()> {
    remove(None, path)
}

/// Creates a new namespace of `kind` pinned at `dir/<sandbox id>`: prepares `dir`,
/// creates the pin file, unshares on a helper thread, runs `setup` there (inside the
/// new namespace) and bind-mounts the namespace onto the file.
pub(crate) fn pin_new<F>(kind: Kind, dir: &Path, sandbox: &SandboxId, setup: F) -> Result<PathBuf>
where
    F: FnOnce(&Path) -> Result<()> + Send,
{
    prepare_dir(dir)?;
    let path = dir.join(sandbox.as_str());
    if is_pinned(&path) {
        return Err(Error::AlreadyPinned { kind, path });
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(kind, &path, "create pin file", e))?;
    let pinned = std::thread::scope(|s| {
        s.spawn(|| pin_on_this_thread(kind, &path, setup))
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Thread {
                    kind,
                    path: path.clone(),
                })
            })
    });
    if let Err(e) = pinned {
        // Nothing is mounted on it: the unlink is all the cleanup there is.
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Runs on a thread that exits right after: its namespace is changed for good.
fn pin_on_this_thread<F>(kind: Kind, path: &Path, setup: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    nix::sched::unshare(kind.flag()).map_err(|e| Error::io(kind, path, "unshare", e))?;
    setup(path)?;
    let own = format!(
        "/proc/self/task/{}/ns/{}",
        nix::unistd::gettid(),
        kind.proc_name()
    );
    nix::mount::mount(
        Some(own.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::io(kind, path, "bind mount", e))
}

/// Unmounts and unlinks a pin; see [`unpin`]. `kind` only names it in errors.
pub(crate) fn remove(kind: Option<Kind>, path: &Path) -> Result<()> {
    let err = |op, e: io::Error| match kind {
        Some(kind) => Error::io(kind, path, op, e),
        None => Error::path(path, op, e),
    };
    // A pin mounted twice (never by this module, but a bind can stack) is unmounted
    // until nothing is left; the bound keeps a broken mount table from looping forever.
    for _ in 0..16 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(err("unmount", e.into())),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err("unlink", e)),
        _ => Ok(()),
    }
}

/// Runs `f` on a new thread that has joined the pinned namespace of `kind` at `path`,
/// and returns what it returns; blocks until then.
pub(crate) fn run_in<T, F>(kind: Kind, path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if !is_pinned(path) {
        return Err(Error::NotPinned {
            kind,
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(|e| Error::io(kind, path, "open", e))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, kind.flag()).map_err(|e| Error::io(kind, path, "setns", e))?;
            drop(file);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Thread {
                kind,
                path: path.to_owned(),
            })
        })
    })
}

#[cfg(test)]
#[path = "namespaces_tests.rs"]
mod tests;
