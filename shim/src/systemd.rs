//! The systemd cgroup driver's part in the shim. libcontainer, through libcgroups'
//! systemd manager, starts the container's transient scope (`crust-<id>.scope`,
//! Delegate=yes, in the pod's slice) and sets the resources systemd has unit
//! properties for. As runc's systemd manager does next, [`finish_scope`] enables every
//! controller down to the scope and writes all the spec's resources to the scope's
//! cgroup files: hugetlb and most of the `unified` map (kubelet's
//! `memory.oom.group`) have no property.
//!
//! systemd removes a scope's cgroup as soon as its last process is gone, so the
//! `oom_kill` counter of its `memory.events` can be gone by the time the shim reaps
//! the init: [`watch_oom_kills`] keeps the last value it saw change. The kernel tells
//! of a change at most once in 10 ms and drops the delayed word with the cgroup, so
//! the watch too can miss the last kill; [`crate::exit::OomCounter`] then reads the
//! pod's counter.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libcgroups::common::{CgroupManager, ControllerOpt};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

/// The unified hierarchy's mount point.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Finishes the scope libcontainer made for the process `pid`: the controllers its
/// cgroup can have are enabled from the root down, and `resources` written to its
/// files. Returns the scope's cgroup directory.
pub fn finish_scope(pid: Pid, resources: Option<&LinuxResources>) -> io::Result<PathBuf> {
    let relative = unified_cgroup(pid)?;
    let root = Path::new(ROOT);
    enable_controllers(root, &relative);
    if let Some(resources) = resources {
        let manager = libcgroups::v2::manager::Manager::new(root.to_owned(), relative.clone())
            .map_err(io::Error::other)?;
        manager
            .apply(&ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| {
                io::Error::other(format!(
                    "write resources to {}: {e}",
                    root.join(&relative).display()
                ))
            })?;
    }
    Ok(root.join(relative))
}

/// The cgroup of `pid` in the unified hierarchy, relative to its root (the `0::`
/// line of /proc/<pid>/cgroup).
fn unified_cgroup(pid: Pid) -> io::Result<PathBuf> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file)?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .ok_or_else(|| io::Error::other(format!("{file} names no cgroup v2 path")))
}

/// Enables in each cgroup above `relative` every controller it has and does not pass
/// down yet. systemd enables only those it knows (not hugetlb, rdma or misc) and
/// leaves the others alone. A controller that can't be enabled is logged and left:
/// writing a limit of it then fails with the reason.
fn enable_controllers(root: &Path, relative: &Path) {
    let mut dir = root.to_path_buf();
    for part in relative.iter() {
        let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        for c in available
            .split_whitespace()
            .filter(|c| !enabled.contains(c))
        {
            if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}")) {
                tracing::warn!(cgroup = %dir.display(), controller = c, error = %e, "enable controller");
            }
        }
        dir.push(part);
    }
}

/// Follows the `oom_kill` counter of the cgroup `dir` in a thread of its own: the
/// returned value is the last one seen, still there after systemd removed the
/// cgroup. The thread ends with the cgroup.
pub fn watch_oom_kills(dir: &Path) -> Arc<AtomicU64> {
    let seen = Arc::new(AtomicU64::new(0));
    let file = dir.join("memory.events");
    let watcher = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|i| {
        i.add_watch(&file, AddWatchFlags::IN_MODIFY)?;
        Ok(i)
    });
    let inotify = match watcher {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "watch OOM kills");
            return seen;
        }
    };
    let out = Arc::clone(&seen);
    let spawned = std::thread::Builder::new()
        .name("oom-watch".into())
        .spawn(move || {
            loop {
                let Some(n) = crate::exit::read_counter(&file) else {
                    return;
                };
                out.fetch_max(n, Ordering::Relaxed);
                match inotify.read_events() {
                    Ok(events)
                        if events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED)) =>
                    {
                        return;
                    }
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "start the OOM watch");
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_line_names_the_cgroup() {
        let own = unified_cgroup(Pid::this()).unwrap();
        assert!(!own.is_absolute());
    }

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        fs::write(&file, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n").unwrap();
        assert_eq!(crate::exit::read_counter(&file), Some(2));
        let seen = watch_oom_kills(dir.path());
        // The watcher reads the file once before it waits.
        for _ in 0..100 {
            if seen.load(Ordering::Relaxed) == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        fs::write(&file, "oom_kill 5\n").unwrap();
        for _ in 0..100 {
            if seen.load(Ordering::Relaxed) == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen.load(Ordering::Relaxed), 5, "a change is seen");
        fs::remove_file(&file).unwrap();
        assert_eq!(
            seen.load(Ordering::Relaxed),
            5,
            "and kept once the file is gone"
        );
    }
}
