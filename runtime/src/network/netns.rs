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
//! The pinning machinery is shared with the pod's other namespaces
//! (`crate::pod::namespaces`); this module is its network face.
//!
//! Everything here blocks for a moment (a thread spawn and join); from async code call
//! it through `tokio::task::spawn_blocking`. The loopback interface is brought up in
//! every pod network namespace ([`loopback_up`]), as containerd and CRI-O do: most
//! cluster CNI configs (flannel's, calico's, cilium's) have no `loopback` plugin, and
//! without `lo` neither `localhost` in the pod nor port forwarding works.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

use crate::pod::namespaces::{self, Kind};
pub use crate::pod::namespaces::{Error, Result, is_pinned, prepare_dir};
use crate::store::SandboxId;

/// Creates a new network namespace pinned at `dir/<sandbox id>` and returns that path.
/// `dir` is prepared by [`prepare_dir`] first. Fails with [`Error::AlreadyPinned`] if
/// the sandbox already has one; a leftover empty file (a crash between steps) is reused.
/// Its `lo` is up.
pub fn create(dir: &Path, sandbox: &SandboxId) -> Result<PathBuf> {
    namespaces::pin_new(Kind::Net, dir, sandbox, |path| {
        loopback_up().map_err(|e| Error::io(Kind::Net, path, "bring lo up", e))
    })
}

/// Brings up `lo` in the network namespace of the calling thread (`SIOCSIFFLAGS` with
/// `IFF_UP`, as `ip link set lo up` does). Idempotent.
pub fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the request and the ifreq match (the kernel reads the name and writes
    // the flags); the socket is open for the duration of the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Unmounts and unlinks a pin. Idempotent: a missing file or a file with nothing
/// mounted on it is fine. Sockets or processes still in the namespace keep it alive;
/// the pin no longer does.
pub fn remove(path: &Path) -> Result<()> {
    namespaces::remove(Some(Kind::Net), path)
}

/// Runs `f` on a new thread that has joined the pinned namespace at `path`, and returns
/// what it returns; blocks until then. Sockets made inside `f` stay in the namespace
/// after it returns, so `f` may hand out a bound listener.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    namespaces::run_in(Kind::Net, path, f)
}

#[cfg(test)]
mod tests {
    //! These need root (CI and the dev machines run tests as root); they fail, rather
    //! than pass silently, without it.

    use std::fs;

    use nix::mount::MntFlags;

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
        // `lo` is up (and can carry traffic) with no CNI plugin having run.
        let reached = run_in(&pin, || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            std::net::TcpStream::connect(listener.local_addr()?).map(|_| ())
        })
        .unwrap();
        assert!(
            reached.is_ok(),
            "connect to 127.0.0.1 in the pod: {reached:?}"
        );

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
