//! Resource usage of pods and containers, for the CRI stats and metrics RPCs.
//!
//! Sampling reads the kernel: a cgroup's CPU, memory and task counters ([`sample`],
//! through libcgroups, on cgroup v1 and v2, with the [`CgroupDetail`] only metrics
//! report), a pod's network counters from inside its pinned network namespace
//! ([`network`]), a writable layer's disk usage ([`writable_layer`]) and the
//! filesystem it is on ([`filesystem`]). Everything that turns samples into CRI
//! messages is a pure function ([`container_stats`], [`pod_stats`], [`pod_metrics`]);
//! [`CpuRates`] keeps the one piece of state, the previous CPU sample per container or
//! pod.
//!
//! Sampling never creates, changes or removes anything: a cgroup that is gone is
//! `Ok(None)`, not an error. Every sampling function blocks (file reads, a thread join
//! for the network namespace): from async code call it through
//! `tokio::task::spawn_blocking`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

mod cgroup;
mod cgroup_detail;
mod cri;
mod fs;
mod metrics;
mod net;
mod pressure;
mod rates;

pub use cgroup::{CgroupSample, Figures, MemorySample, sample};
pub use cgroup_detail::{BlkioDevice, CfsSample, CgroupDetail, ProcessSample};
pub use cri::{PodStatsInput, container_stats, pod_stats};
pub use fs::{FsCapacity, filesystem};
pub use metrics::{ContainerMetricsInput, PodMetricsInput, metric_descriptors, pod_metrics};
pub use net::{InterfaceSample, NetworkSample, network, network_via};
pub use pressure::{Pressure, Psi, PsiLine};
pub use rates::CpuRates;

/// Errors of sampling. Each names the cgroup, namespace or directory it was reading.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cgroups path is not a plain path below the cgroup root.
    #[error("cgroup {path}: not a path below the cgroup root")]
    InvalidCgroupPath {
        /// The cgroups path given.
        path: PathBuf,
    },
    /// The host's cgroup hierarchy could not be found or understood.
    #[error("cgroup {path}: cgroup setup: {reason}")]
    Setup {
        /// The cgroups path being sampled.
        path: PathBuf,
        /// What is wrong with the host's setup.
        reason: String,
    },
    /// The cgroup exists but its counters could not be read.
    #[error("cgroup {path}: read stats: {source}")]
    Read {
        /// The cgroups path being sampled.
        path: PathBuf,
        /// The first failure.
        #[source]
        source: std::io::Error,
    },
    /// The pod's network namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] crate::network::netns::Error),
    /// The interface counters could not be read inside the namespace.
    #[error("netns {path}: read interface counters: {source}")]
    NetDev {
        /// The pinned namespace.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The writable layer could not be measured.
    #[error(transparent)]
    Layer(#[from] crust_image_store::usage::Error),
    /// The filesystem holding the writable layers could not be measured.
    #[error("filesystem of {path}: statfs: {source}")]
    Statfs {
        /// The path on it.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Disk usage of a container's writable layer at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSample {
    /// When it was measured, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The filesystem it lives on, as ImageFsInfo reports it (its `container_filesystems`
    /// mountpoint), so kubelet can match the two.
    pub fs_id: String,
    /// Bytes allocated on disk.
    pub used_bytes: u64,
    /// Distinct inodes.
    pub inodes_used: u64,
}

/// Measures a writable layer (the overlay upper dir `upper`) on the filesystem that
/// ImageFsInfo reports as `fs_id`. Symlinks are not followed, hardlinked inodes count
/// once, mounts below `upper` are skipped; a missing dir uses nothing.
pub fn writable_layer(upper: &Path, fs_id: &Path) -> Result<FsSample> {
    let usage = crust_image_store::usage::dir_usage(upper)?;
    Ok(FsSample {
        timestamp: now_nanos(),
        fs_id: fs_id.display().to_string(),
        used_bytes: usage.bytes,
        inodes_used: usage.inodes,
    })
}

/// Now, in nanoseconds since the Unix epoch.
fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_layer_counts_hardlinks_once_and_names_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let layer = writable_layer(dir.path(), Path::new("/var/lib/crust")).unwrap();
        assert_eq!(layer.fs_id, "/var/lib/crust");
        // The dir, the file (twice linked) and the symlink, not what it points to.
        assert_eq!(layer.inodes_used, 3);
        assert!(layer.used_bytes >= 10_000 && layer.used_bytes < 1_000_000);
        assert!(layer.timestamp > 0);

        let missing = writable_layer(&dir.path().join("gone"), Path::new("/x")).unwrap();
        assert_eq!((missing.used_bytes, missing.inodes_used), (0, 0));
    }
}
