//! The exit status of the container's init process, and the exit file that keeps it
//! for crustd when the shim is gone: `<state>/exit.json`, written atomically (temp
//! file, fsync, rename, fsync of the dir) as soon as the init process has exited.
//!
//! OOM kills are read from the container's memory cgroup (v1 `memory.oom_control`,
//! v2 `memory.events`, the `oom_kill` counter) at creation and at exit, before the
//! cgroup is removed. Under the systemd driver the scope's cgroup can be gone by the
//! exit (systemd removes it with its last process, and the kernel may not have told
//! the watch of the last change yet): the pod's cgroup, whose v2 counter counts the
//! kills below it, then answers for an init killed by SIGKILL.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::wait::WaitStatus;
use serde::{Deserialize, Serialize};

pub use crust_proto::shim::EXIT_FILE;

/// How the init process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code; 128+signal for a process killed by a signal.
    pub exit_code: i32,
    /// Unix nanoseconds when the process was started; 0 if it never was.
    pub started_at: i64,
    /// Unix nanoseconds when the shim reaped the process.
    pub finished_at: i64,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
}

/// The exit code of a wait status: the code, or 128+signal; None while it runs.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Writes `<state_dir>/exit.json` atomically.
pub fn write_exit_file(state_dir: &Path, info: &ExitInfo) -> io::Result<()> {
    let path = state_dir.join(EXIT_FILE);
    let tmp = state_dir.join(format!(".{EXIT_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(info)?)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, &path)?;
    File::open(state_dir)?.sync_all()
}

/// Reads an exit file written by [`write_exit_file`].
#[cfg(test)]
pub fn read_exit_file(state_dir: &Path) -> io::Result<ExitInfo> {
    let data = fs::read(state_dir.join(EXIT_FILE))?;
    Ok(serde_json::from_slice(&data)?)
}

/// The `oom_kill` counter of one memory cgroup.
#[derive(Debug, Clone)]
pub struct OomCounter {
    /// The file holding the counter.
    file: PathBuf,
    baseline: u64,
    /// The last value a watch saw, for a cgroup removed before it is read (systemd
    /// removes a scope's as its last process exits).
    seen: Option<Arc<AtomicU64>>,
    /// The parent (pod) cgroup's v2 `memory.events` and its count at the start, for
    /// a watched cgroup gone before its last kill was seen.
    pod: Option<(PathBuf, u64)>,
}

impl OomCounter {
    /// The counter of the cgroupfs path `cgroups_path` (as in the OCI spec), read now
    /// as the baseline. `root` is the cgroup mount root, normally `/sys/fs/cgroup`.
    pub fn new(root: &Path, cgroups_path: &Path) -> Self {
        Self::start(counter_file(root, cgroups_path), None)
    }

    /// The counter of the cgroup v2 directory `dir`, followed by a watch as it
    /// changes (see [`crate::systemd::watch_oom_kills`]).
    pub fn watched(dir: &Path) -> Self {
        let pod = dir.parent().map(|p| {
            let file = p.join("memory.events");
            let count = read_counter(&file).unwrap_or(0);
            (file, count)
        });
        let seen = crate::systemd::watch_oom_kills(dir);
        let mut c = Self::start(dir.join("memory.events"), Some(seen));
        c.pod = pod;
        c
    }

    fn start(file: PathBuf, seen: Option<Arc<AtomicU64>>) -> Self {
        let mut c = Self {
            file,
            baseline: 0,
            seen,
            pod: None,
        };
        c.baseline = c.read().unwrap_or(0);
        c
    }

    /// The counter's current value, or the last one seen once the cgroup is gone.
    pub fn read(&self) -> Option<u64> {
        let now = read_counter(&self.file);
        let seen = self.seen.as_ref().map(|s| s.load(Ordering::Relaxed));
        match (now, seen) {
            (Some(n), s) => Some(n.max(s.unwrap_or(0))),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        }
    }

    /// Whether an OOM kill happened since the baseline, for an init that ended with
    /// `exit_code`. A watched cgroup already removed whose watch saw no kill
    /// answers through the pod's counter, when the init was killed by SIGKILL (what
    /// the OOM killer sends): a kill below the pod since the start is taken as this
    /// one. Another container of the pod killed by the OOM killer while this one was
    /// killed by something else would be counted here too.
    pub fn oom_killed(&self, exit_code: i32) -> bool {
        if self.read().is_some_and(|n| n > self.baseline) {
            return true;
        }
        let Some((pod_file, pod_baseline)) = &self.pod else {
            return false;
        };
        if exit_code != SIGKILL_EXIT || self.file.exists() {
            return false;
        }
        let killed = read_counter(pod_file).is_some_and(|n| n > *pod_baseline);
        if killed {
            tracing::info!(pod = %pod_file.display(), "OOM kill read from the pod's cgroup, the scope's being gone");
        }
        killed
    }
}

/// The exit code of a process killed by SIGKILL.
const SIGKILL_EXIT: i32 = 128 + nix::libc::SIGKILL;

/// The `oom_kill` counter in `file`, None if it can't be read.
pub(crate) fn read_counter(file: &Path) -> Option<u64> {
    fs::read_to_string(file)
        .ok()
        .and_then(|t| parse_oom_kill(&t))
}

fn counter_file(root: &Path, cgroups_path: &Path) -> PathBuf {
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let v1 = root.join("memory");
    if v1.is_dir() {
        v1.join(rel).join("memory.oom_control")
    } else {
        root.join(rel).join("memory.events")
    }
}

/// The `oom_kill N` line of memory.oom_control (v1) or memory.events (v2).
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        let killed = WaitStatus::Signaled(pid, Signal::SIGKILL, false);
        assert_eq!(exit_code(killed), Some(137));
        let termed = WaitStatus::Signaled(pid, Signal::SIGTERM, true);
        assert_eq!(exit_code(termed), Some(143));
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }

    #[test]
    fn parses_oom_kill_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(parse_oom_kill(v1), Some(2));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kill(v2), Some(1));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn counter_compares_with_baseline() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("memory/crust/c1");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("memory.oom_control");
        fs::write(&file, "oom_kill 1\n").unwrap();
        let c = OomCounter::new(root.path(), Path::new("/crust/c1"));
        assert!(!c.oom_killed(137));
        fs::write(&file, "oom_kill 2\n").unwrap();
        assert!(c.oom_killed(137));
        fs::remove_dir_all(&dir).unwrap();
        assert!(!c.oom_killed(137));
    }

    #[test]
    fn a_removed_scope_asks_the_pod() {
        let pod = tempfile::tempdir().unwrap();
        let scope = pod.path().join("crust-c1.scope");
        fs::create_dir(&scope).unwrap();
        fs::write(pod.path().join("memory.events"), "oom 0\noom_kill 3\n").unwrap();
        fs::write(scope.join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        let c = OomCounter::watched(&scope);
        fs::write(pod.path().join("memory.events"), "oom 1\noom_kill 4\n").unwrap();
        assert!(
            !c.oom_killed(137),
            "the scope is there and counts no kill: the kill was another's"
        );
        fs::remove_dir_all(&scope).unwrap();
        assert!(!c.oom_killed(1), "an exit of its own is no OOM kill");
        assert!(!c.oom_killed(143), "nor is a SIGTERM");
        assert!(c.oom_killed(137));
        fs::write(pod.path().join("memory.events"), "oom_kill 3\n").unwrap();
        assert!(!c.oom_killed(137), "no kill in the pod since the start");
    }

    #[test]
    fn exit_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let info = ExitInfo {
            exit_code: 137,
            started_at: 1,
            finished_at: 2,
            oom_killed: true,
        };
        write_exit_file(dir.path(), &info).unwrap();
        assert_eq!(read_exit_file(dir.path()).unwrap(), info);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [EXIT_FILE]);
    }
}
