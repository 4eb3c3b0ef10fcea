//! Network namespaces pinned to files, one per pod sandbox: `<state>/netns/<sandbox-id>`.
//!
//! A namespace lives as long as something refers to it. [`create`] makes one on a
//! short-lived thread of its own (`unshare(CLONE_NEWNET)` changes only the calling
//! thread, which must never be a tokio worker), bind-mounts the thread's
//! `/proc/self/task/<tid>/ns/net` onto an empty file and lets the thread exit: the bind
//! mount keeps the namespace alive until [`remove`] unmounts it. The pin dir is made a
//! mount point of its own with shared propagation, as iproute2 and CNI's test helpers
//! do, so mount namespaces copied from crustd's later (shims, containers) receive the
//! unmount too and never keep a removed pod's namespace alive.
//!
//! Everything here blocks for a moment (a thread spawn and join); from async code call
//! it through `tokio::task::spawn_blocking`. The loopback interface is left down: the
//! CNI `loopback` plugin brings it up.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};

use crate::store::SandboxId;

/// Errors pinning, entering or removing a network namespace. Each names the pin's path,
/// whose last component is the sandbox id.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("netns {path}: {op}: {source}")]
    Io {
        /// The pin file (or the pin dir).
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pin file already holds a namespace.
    #[error("netns {path}: already pinned")]
    AlreadyPinned {
        /// The pin file.
        path: PathBuf,
    },
    /// The file is not a pinned network namespace.
    #[error("netns {path}: not a pinned namespace")]
    NotPinned {
        /// The path given.
        path: PathBuf,
    },
    /// The helper thread panicked.
    #[error("netns {path}: helper thread panicked")]
    Thread {
        /// The pin file.
        path: PathBuf,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

fn errno_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> Error + 'a {
    move |e| io_err(path, op)(e.into())
}

/// Serializes making the pin dir a mount point, so two first pins at once cannot stack
/// two bind mounts on it.
static PREPARE: Mutex<()> = Mutex::new(());

/// Makes `dir` exist and be a mount point with shared propagation. Idempotent: once it
/// is a mount point, only the propagation is (re)set.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    let _guard = PREPARE.lock().unwrap_or_else(|e| e.into_inner());
    fs::create_dir_all(dir).map_err(io_err(dir, "create dir"))?;
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
        Err(e) => return Err(errno_err(dir, "make shared")(e)),
    }
    nix::mount::mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errno_err(dir, "bind dir onto itself"))?;
    share().map_err(errno_err(dir, "make shared"))
}

/// Whether `path` is a pinned namespace (an nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new network namespace pinned at `dir/<sandbox id>` and returns that path.
/// `dir` is prepared by [`prepare_dir`] first. Fails with [`Error::AlreadyPinned`] if
/// the sandbox already has one; a leftover empty file (a crash between steps) is reused.
pub fn create(dir: &Path, sandbox: &SandboxId) -> Result<PathBuf> {
    prepare_dir(dir)?;
    let path = dir.join(sandbox.as_str());
    if is_pinned(&path) {
        return Err(Error::AlreadyPinned { path });
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path, "create pin file"))?;
    let pinned = std::thread::scope(|s| {
        s.spawn(|| pin_new_netns(&path))
            .join()
            .unwrap_or_else(|_| Err(Error::Thread { path: path.clone() }))
    });
    if let Err(e) = pinned {
        // Nothing is mounted on it: the unlink is all the cleanup there is.
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Runs on a thread that exits right after: its namespace is changed for good.
fn pin_new_netns(path: &Path) -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(errno_err(path, "unshare"))?;
    let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
    nix::mount::mount(
        Some(own.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(errno_err(path, "bind mount"))
}

/// Unmounts and unlinks a pin. Idempotent: a missing file or a file with nothing
/// mounted on it is fine. Sockets or processes still in the namespace keep it alive;
/// the pin no longer does.
pub fn remove(path: &Path) -> Result<()> {
    // A pin mounted twice (never by this module, but a bind can stack) is unmounted
    // until nothing is left; the bound keeps a broken mount table from looping forever.
    for _ in 0..16 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(errno_err(path, "unmount")(e)),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path, "unlink")(e)),
        _ => Ok(()),
    }
}

/// Runs `f` on a new thread that has joined the pinned namespace at `path`, and returns
/// what it returns; blocks until then. Sockets made inside `f` stay in the namespace
/// after it returns, so `f` may hand out a bound listener.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if !is_pinned(path) {
        return Err(Error::NotPinned {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(io_err(path, "open"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(errno_err(path, "setns"))?;
            drop(file);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Thread {
                path: path.to_owned(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    //! These need root (CI and the dev machines run tests as root); they fail, rather
    //! than pass silently, without it.

    use super::*;

    fn inode_of_ns(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    fn mounted(path: &Path) -> bool {
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let p = path.to_str().unwrap();
        table.lines().any(|l| l.split(' ').nth(4) == Some(p))
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }
        fn netns(&self) -> PathBuf {
            self.0.path().join("netns")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            // Undo prepare_dir's bind mount so the temp dir can go.
            let _ = nix::mount::umount2(&self.netns(), MntFlags::MNT_DETACH);
        }
    }

    #[test]
    fn create_enter_remove() {
        assert!(nix::unistd::geteuid().is_root(), "netns tests need root");
        let dir = Dir::new();
        let id = SandboxId::generate();
        let pin = create(&dir.netns(), &id).unwrap();
        assert_eq!(pin, dir.netns().join(id.as_str()));
        assert!(is_pinned(&pin));
        assert!(mounted(&pin));

        // A new namespace: its inode differs from ours, and only `lo` is in it.
        let inside = run_in(&pin, || inode_of_ns("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, inode_of_ns("/proc/thread-self/ns/net"));
        assert_eq!(inside, inode_of_ns(pin.to_str().unwrap()));
        let dev = run_in(&pin, || fs::read_to_string("/proc/thread-self/net/dev"))
            .unwrap()
            .unwrap();
        let names: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(names, ["lo"]);

        assert!(matches!(
            create(&dir.netns(), &id),
            Err(Error::AlreadyPinned { .. })
        ));

        remove(&pin).unwrap();
        assert!(!pin.exists());
        assert!(!mounted(&pin));
        // Idempotent.
        remove(&pin).unwrap();
        assert!(matches!(run_in(&pin, || ()), Err(Error::NotPinned { .. })));
    }

    #[test]
    fn prepare_dir_mounts_once() {
        assert!(nix::unistd::geteuid().is_root(), "netns tests need root");
        let dir = Dir::new();
        let count = || {
            let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
            let p = dir.netns();
            let p = p.to_str().unwrap().to_owned();
            table
                .lines()
                .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
                .map(|l| assert!(l.contains("shared:"), "{l}"))
                .count()
        };
        prepare_dir(&dir.netns()).unwrap();
        assert_eq!(count(), 1);
        let ids: Vec<SandboxId> = (0..3).map(|_| SandboxId::generate()).collect();
        let pins: Vec<PathBuf> = ids
            .iter()
            .map(|id| create(&dir.netns(), id).unwrap())
            .collect();
        assert_eq!(count(), 1);
        for p in &pins {
            remove(p).unwrap();
        }
    }

    #[test]
    fn leftover_empty_file_is_reused() {
        assert!(nix::unistd::geteuid().is_root(), "netns tests need root");
        let dir = Dir::new();
        let id = SandboxId::generate();
        prepare_dir(&dir.netns()).unwrap();
        fs::write(dir.netns().join(id.as_str()), "").unwrap();
        let pin = create(&dir.netns(), &id).unwrap();
        assert!(is_pinned(&pin));
        remove(&pin).unwrap();
    }
}
