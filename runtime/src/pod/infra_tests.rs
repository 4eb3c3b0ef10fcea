//! Root tests. Most fake the holder with a `sleep` child whose (host) PID namespace is
//! pinned by hand, which is all stop/alive look at; `start_stop_with_the_shim` runs
//! the real `crust-shim pause`.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};

use nix::mount::{MntFlags, MsFlags};

use super::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "pid holder tests need root"
    );
}

struct Fake {
    dir: tempfile::TempDir,
    child: Child,
}

impl Fake {
    /// A sleeping child, its PID namespace bound onto `<dir>/pid/pin` and its pid in
    /// the pid file.
    fn new() -> Fake {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("sleep").arg("100").spawn().unwrap();
        let fake = Fake { dir, child };
        namespaces::prepare_dir(&fake.dir()).unwrap();
        fs::write(fake.pin(), "").unwrap();
        let ns = format!("/proc/{}/ns/pid", fake.child.id());
        nix::mount::mount(
            Some(ns.as_str()),
            &fake.pin(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        fs::write(pid_file(&fake.pin()), format!("{}\n", fake.child.id())).unwrap();
        fake
    }
    fn dir(&self) -> PathBuf {
        self.dir.path().join("pid")
    }
    fn pin(&self) -> PathBuf {
        self.dir().join("pin")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.pin(), MntFlags::MNT_DETACH);
        let _ = nix::mount::umount2(&self.dir(), MntFlags::MNT_DETACH);
    }
}

#[test]
fn stop_kills_the_holder_and_cleans_up() {
    let mut fake = Fake::new();
    let pin = fake.pin();
    assert!(pid_holder_alive(&pin));
    stop_pid_holder(&pin).unwrap();
    let status = fake.child.wait().unwrap();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(!pin.exists());
    assert!(!pid_file(&pin).exists());
    assert!(!pid_holder_alive(&pin));
    // Idempotent.
    stop_pid_holder(&pin).unwrap();
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let mut fake = Fake::new();
    let pin = fake.pin();
    // The pin now holds another namespace (a fresh one of this test's own making)
    // while the pid file still names the sleeping child.
    nix::mount::umount2(&pin, MntFlags::MNT_DETACH).unwrap();
    let other = namespaces::pin_ipc(&fake.dir(), &crate::store::SandboxId::generate()).unwrap();
    fs::rename(pid_file(&pin), pid_file(&other)).unwrap();
    assert!(!pid_holder_alive(&other));
    stop_pid_holder(&other).unwrap();
    assert!(
        fake.child.try_wait().unwrap().is_none(),
        "the child was killed"
    );
    assert!(!other.exists());
    assert!(!pid_file(&other).exists());
}

#[test]
fn stop_without_anything_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("nothing");
    assert!(!pid_holder_alive(&pin));
    stop_pid_holder(&pin).unwrap();
    // A torn or foreign pid file is removed, never trusted.
    fs::write(pid_file(&pin), "garbage").unwrap();
    stop_pid_holder(&pin).unwrap();
    assert!(!pid_file(&pin).exists());
}

#[test]
fn pid_file_is_beside_the_pin() {
    assert_eq!(
        pid_file(Path::new("/run/crust/pidns/abc")),
        Path::new("/run/crust/pidns/abc.pid")
    );
    let p = Path::new("/x.pid");
    assert_eq!(parse_pid(p, "42\n").unwrap(), 42);
    assert!(matches!(parse_pid(p, "0"), Err(Error::BadPidFile { .. })));
    assert!(matches!(parse_pid(p, ""), Err(Error::BadPidFile { .. })));
}

/// The shim binary: `CRUST_SHIM`, else the one cargo builds beside the test binary's
/// dir (`target/<profile>/crust-shim`); ignored by default since `cargo test -p
/// crust-runtime` alone does not build it.
fn shim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CRUST_SHIM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let shim = profile_dir.join("crust-shim");
    assert!(shim.is_file(), "build crust-shim first: {}", shim.display());
    shim
}

#[tokio::test]
#[ignore = "needs the crust-shim binary (cargo build -p crust-shim, or CRUST_SHIM)"]
async fn start_stop_with_the_shim() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pidns");
    let pin = pins.join("pod");
    let pid = start_pid_holder(&shim_bin(), &pin, None).await.unwrap();
    assert!(namespaces::is_pinned(&pin));
    assert!(pid_holder_alive(&pin));
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "crust-pause");

    // A second holder on the same pin is refused and leaves the first alone.
    let err = start_pid_holder(&shim_bin(), &pin, None).await.unwrap_err();
    assert!(matches!(err, Error::Pause { .. }), "{err}");
    assert!(pid_holder_alive(&pin));

    stop_pid_holder(&pin).unwrap();
    assert!(!pin.exists() && !pid_file(&pin).exists());
    let gone = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z')
        })
    };
    for _ in 0..100 {
        if gone() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gone(), "holder {pid} still runs");
    let _ = nix::mount::umount2(&pins, MntFlags::MNT_DETACH);
}
