//! The pods' cgroup parents. kubelet gives every pod one (`cgroup_parent`, with the
//! cgroupfs driver `/kubepods/<qos>/pod<uid>`), and a runtime's pod stats come from
//! it (containerd's ListPodSandboxStats fails for a pod without one). kubelet makes
//! and removes those directories itself; here the runtimes make them on demand
//! (runc and crust create missing parents) and the benchmark removes them at the end.

use std::fs;
use std::path::{Path, PathBuf};

/// The top directory of the benchmark's cgroups in each hierarchy.
const TOP: &str = "crust-bench";

/// The cgroup parent of the pod `name` of the run `run`.
pub fn parent(run: &str, name: &str) -> String {
    format!("/{TOP}/{run}/pod-{name}")
}

/// The mount points of the host's cgroup hierarchies (v1 and v2).
fn hierarchies() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            let fstype = fs.split_whitespace().next()?;
            let point = mount.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Removes `dir` and the directories below it, deepest first; returns those that
/// could not be removed (a cgroup with processes or children left in it).
fn remove_tree(dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                left.extend(remove_tree(&e.path()));
            }
        }
    }
    if fs::remove_dir(dir).is_err() && dir.exists() {
        left.push(dir.to_owned());
    }
    left
}

/// Removes the cgroups of the run `run` in every hierarchy (and the top directory
/// when no other run uses it); returns the cgroups that were left because they were
/// still in use.
pub fn remove_run(run: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for h in hierarchies() {
        let top = h.join(TOP);
        let dir = top.join(run);
        if dir.exists() {
            left.extend(remove_tree(&dir));
        }
        // another run's cgroups may be there
        let _ = fs::remove_dir(&top);
    }
    left
}
