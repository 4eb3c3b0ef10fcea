//! The pod's `/dev/shm`: one tmpfs in the sandbox's state dir that every container of
//! the pod mounts, so they share POSIX shared memory as they share the IPC namespace.
//! Like containerd, `nosuid,nodev,noexec`, mode 1777, and a size limit (containerd's
//! default is [`DEFAULT_SIZE`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// containerd's default size of a pod's `/dev/shm`: 64 MiB.
pub const DEFAULT_SIZE: u64 = 64 * 1024 * 1024;

/// Errors mounting or unmounting a pod's `/dev/shm`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("shm {path}: {op}: {source}")]
    Io {
        /// The mount point.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn err(path: &Path, op: &'static str, source: impl Into<io::Error>) -> Error {
    Error::Io {
        path: path.to_owned(),
        op,
        source: source.into(),
    }
}

/// Creates the dir `path` (if missing) and mounts a tmpfs of at most `size_bytes` on
/// it, its root owned by `owner` (uid, gid; root when `None`). Blocks for the mount;
/// from async code call it through `spawn_blocking`.
pub fn mount_shm(path: &Path, size_bytes: u64, owner: Option<(u32, u32)>) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| err(path, "create dir", e))?;
    let mut data = format!("mode=1777,size={size_bytes}");
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    nix::mount::mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| err(path, "mount tmpfs", e))
}

/// Unmounts the tmpfs at `path` (lazily: containers may still hold it) and removes the
/// dir. Idempotent: a dir with nothing mounted on it, or no dir, is fine.
pub fn unmount_shm(path: &Path) -> Result<()> {
    // A mount stacked by a retried mount_shm is unmounted too; the bound keeps a broken
    // mount table from looping forever.
    for _ in 0..16 {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(e) => return Err(err(path, "unmount", e)),
        }
    }
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(path, "remove dir", e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    //! These need root; they fail, rather than pass silently, without it.

    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    use nix::sys::statvfs::{FsFlags, statvfs};

    use super::*;

    fn mountinfo_line(path: &Path) -> Option<String> {
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let p = path.to_str().unwrap();
        table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(p))
            .map(str::to_owned)
    }

    #[test]
    fn mount_and_unmount() {
        assert!(nix::unistd::geteuid().is_root(), "shm tests need root");
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("shm");
        mount_shm(&shm, DEFAULT_SIZE, None).unwrap();
        let mounted = || mountinfo_line(&shm);
        let line = mounted().expect("mounted");
        assert_eq!(statfs(&shm).unwrap().filesystem_type(), TMPFS_MAGIC);
        let vfs = statvfs(&shm).unwrap();
        let flags = vfs.flags();
        assert!(flags.contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_NOEXEC));
        assert_eq!(vfs.blocks() * vfs.fragment_size(), DEFAULT_SIZE);
        assert!(line.contains("size=65536k"), "{line}");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&shm).unwrap().mode() & 0o7777, 0o1777);

        fs::write(shm.join("segment"), "x").unwrap();
        unmount_shm(&shm).unwrap();
        assert!(mounted().is_none());
        assert!(!shm.exists());
        // Idempotent.
        unmount_shm(&shm).unwrap();
    }

    #[test]
    fn mount_owned_by_a_user_namespace_root() {
        assert!(nix::unistd::geteuid().is_root(), "shm tests need root");
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("shm");
        mount_shm(&shm, DEFAULT_SIZE, Some((1000, 2000))).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&shm).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 2000));
        assert_eq!(meta.mode() & 0o7777, 0o1777);
        unmount_shm(&shm).unwrap();
        assert!(!shm.exists());
    }

    #[test]
    fn unmount_of_a_plain_dir() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("shm");
        fs::create_dir(&shm).unwrap();
        unmount_shm(&shm).unwrap();
        assert!(!shm.exists());
    }
}
