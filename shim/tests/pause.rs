//! `crust-shim pause`: the holder of a pod's PID namespace. Needs root and util-linux's
//! `nsenter` and `unshare`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::shim_bin;
use nix::mount::MntFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{NSFS_MAGIC, statfs};
use nix::unistd::Pid;

/// The tests count crust-pause processes: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the pause tests need root"
    );
}

fn pause(pin: &Path) -> Output {
    Command::new(shim_bin())
        .args(["pause", "--pin"])
        .arg(pin)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Pids of live (not zombie) crust-pause processes.
fn pause_processes() -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| comm(p).as_deref() == Some("crust-pause") && !gone(p))
        .collect()
}

/// Whether `pid` is dead (no process, or a zombie).
fn gone(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        let state = s.rsplit_once(')').map(|(_, r)| r.trim_start());
        state.is_none_or(|r| r.starts_with(['Z', 'X']))
    })
}

fn wait_gone(pid: u32) {
    let start = Instant::now();
    while !gone(pid) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(pid), "{pid} still runs");
}

/// `sh -c script` as a new process in the pinned PID namespace (nsenter forks for a
/// PID namespace), with a /proc of its own.
fn in_pod(pin: &Path, script: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--pid={}", pin.display()))
        .args(["unshare", "--mount", "--mount-proc", "sh", "-c"])
        .arg(script);
    cmd
}

struct Pin {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Pin {
    fn new() -> Pin {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod");
        Pin { _dir: dir, path }
    }
    fn pid_file(&self) -> PathBuf {
        self.path.with_extension("pid")
    }
    fn pid(&self) -> u32 {
        fs::read_to_string(self.pid_file())
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Ok(s) = fs::read_to_string(self.pid_file())
            && let Ok(pid) = s.trim().parse::<i32>()
            && comm(pid as u32).as_deref() == Some("crust-pause")
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

#[test]
fn holds_a_pid_namespace() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pin = Pin::new();
    let out = pause(&pin.path);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let pid = pin.pid();

    // The pin is the holder's own PID namespace, in which it is PID 1.
    assert_eq!(statfs(&pin.path).unwrap().filesystem_type(), NSFS_MAGIC);
    assert_eq!(comm(pid).as_deref(), Some("crust-pause"));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
    use std::os::unix::fs::MetadataExt;
    let own = fs::metadata(format!("/proc/{pid}/ns/pid")).unwrap();
    let pinned = fs::metadata(&pin.path).unwrap();
    assert_eq!((own.dev(), own.ino()), (pinned.dev(), pinned.ino()));

    // Detached: its own session, only /dev/null open.
    let sid = nix::unistd::getsid(Some(Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(sid.as_raw() as u32, pid);
    let fds: Vec<_> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(fds.len(), 3, "{fds:?}");
    assert!(fds.iter().all(|f| f == Path::new("/dev/null")), "{fds:?}");

    // A process joining the namespace sees crust-pause as its PID 1.
    let out = in_pod(&pin.path, "cat /proc/1/comm").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "crust-pause");

    // Orphans in the namespace are reaped by it.
    let out = in_pod(&pin.path, "sleep 0.2 & echo $!").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let children = || fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let start = Instant::now();
    while !children().trim().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(children().trim(), "", "children of crust-pause are left");

    // SIGTERM ends it, and with it every process left in the namespace.
    let mut sleeper = in_pod(&pin.path, "exec sleep 100").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    wait_gone(pid);
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "{status:?}");
}

#[test]
fn a_pinned_pin_is_refused() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pin = Pin::new();
    assert!(pause(&pin.path).status.success());
    let first = pin.pid();
    let before = pause_processes();
    let out = pause(&pin.path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already pinned"), "{err}");
    assert_eq!(pause_processes(), before);
    assert_eq!(pin.pid(), first);
    assert!(!gone(first));
}

#[test]
fn a_failure_after_the_fork_leaves_nothing() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pin = Pin::new();
    // The pid file's temp file can't be created: a dir is in its way.
    let mut temp = pin.pid_file().into_os_string();
    temp.push(".tmp");
    fs::create_dir(&temp).unwrap();
    let before = pause_processes();
    let out = pause(&pin.path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("write pid file"), "{err}");
    assert_eq!(pause_processes(), before);
    assert!(!pin.path.exists());
    assert!(!pin.pid_file().exists());
}

#[test]
fn usage_errors() {
    for args in [
        &["pause"][..],
        &["pause", "--pin"],
        &["pause", "--bogus", "x"],
    ] {
        let out = Command::new(shim_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    }
    let out = Command::new(shim_bin())
        .args(["pause", "--pin", "/nonexistent/dir/pin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/dir/pin: create pin file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
