//! These need root (CI and the dev machines run tests as root); they fail, rather than
//! pass silently, without it.

use std::os::unix::fs::MetadataExt;

use super::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "namespace tests need root"
    );
}

fn inode_of(path: &str) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn mounted(path: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    table.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

/// A temp dir whose pin dirs are unmounted when it goes.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn sub(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        for name in ["uts", "ipc"] {
            let _ = nix::mount::umount2(&self.sub(name), MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn uts_pin_carries_the_hostname() {
    require_root();
    let dir = Dir::new();
    let id = SandboxId::generate();
    let ours = nix::unistd::gethostname().unwrap();
    let pin = pin_uts(&dir.sub("uts"), &id, "pod-host-1").unwrap();
    assert_eq!(pin, dir.sub("uts").join(id.as_str()));
    assert!(is_pinned(&pin));
    assert!(mounted(&pin));

    let inside = run_in(Kind::Uts, &pin, || {
        (
            nix::unistd::gethostname().unwrap(),
            inode_of("/proc/thread-self/ns/uts"),
        )
    })
    .unwrap();
    assert_eq!(inside.0, "pod-host-1");
    assert_eq!(inside.1, inode_of(pin.to_str().unwrap()));
    assert_ne!(inside.1, inode_of("/proc/thread-self/ns/uts"));
    // Ours is untouched.
    assert_eq!(nix::unistd::gethostname().unwrap(), ours);

    assert!(matches!(
        pin_uts(&dir.sub("uts"), &id, "other"),
        Err(Error::AlreadyPinned {
            kind: Kind::Uts,
            ..
        })
    ));

    unpin(&pin).unwrap();
    assert!(!pin.exists());
    assert!(!mounted(&pin));
    unpin(&pin).unwrap();
    assert!(matches!(
        run_in(Kind::Uts, &pin, || ()),
        Err(Error::NotPinned { .. })
    ));
}

#[test]
fn bad_hostname_leaves_nothing() {
    require_root();
    let dir = Dir::new();
    let id = SandboxId::generate();
    let long = "x".repeat(65);
    let err = pin_uts(&dir.sub("uts"), &id, &long).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                op: "sethostname",
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.sub("uts").join(id.as_str()).exists());
}

#[test]
fn ipc_pin_is_a_new_namespace() {
    require_root();
    let dir = Dir::new();
    let id = SandboxId::generate();
    let pin = pin_ipc(&dir.sub("ipc"), &id).unwrap();
    assert!(is_pinned(&pin));
    let host = inode_of("/proc/thread-self/ns/ipc");
    let pinned = inode_of(pin.to_str().unwrap());
    assert_ne!(pinned, host);
    let inside = run_in(Kind::Ipc, &pin, || inode_of("/proc/thread-self/ns/ipc")).unwrap();
    assert_eq!(inside, pinned);
    unpin(&pin).unwrap();
    unpin(&pin).unwrap();
    assert!(!pin.exists());
}

#[test]
fn unpin_of_a_plain_file_or_nothing_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leftover");
    fs::write(&file, "").unwrap();
    unpin(&file).unwrap();
    assert!(!file.exists());
    unpin(&dir.path().join("missing")).unwrap();
}
