//! Facts about the host and crustd that shape every container's spec, read once at
//! start-up ([`HostFacts::detect`]) so that spec generation stays pure.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Capability;

use super::caps;

/// The capability that lets a process lower an `oom_score_adj`.
const CAP_SYS_RESOURCE: u32 = 24;

/// Facts about the host and crustd itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The lowest `oom_score_adj` a container can be given: -1000 when crustd holds
    /// CAP_SYS_RESOURCE (as root on a node does), else crustd's own, since lowering
    /// the score needs it (containerd's `restrict_oom_score_adj`, automatic here).
    pub oom_score_adj_floor: i32,
    /// The capabilities crustd holds (containerd's `cap.Current()`): what a privileged
    /// container, or an `add: [ALL]`, gets.
    pub capabilities: Vec<Capability>,
    /// The node's hostname, for `HOSTNAME` when the pod gives none.
    pub hostname: String,
    /// The memory controller accounts swap (v1 `memory.memsw.*`, v2 `memory.swap.max`):
    /// then swap is limited to the memory limit, as containerd does.
    pub swap_controller: bool,
    /// A hugetlb controller exists; without one, hugepage limits are skipped (containerd's
    /// `tolerate_missing_hugetlb_controller`, on by default).
    pub hugetlb_controller: bool,
    /// The host runs cgroup v2 only: containers then get their own cgroup namespace.
    pub unified_cgroups: bool,
    /// The kernel has mount_setattr (Linux 5.12+), which recursive read-only mounts
    /// need.
    pub mount_setattr: bool,
    /// The kernel's version, major and minor (seccomp profiles allow some syscalls
    /// only from a given version on).
    pub kernel: (u32, u32),
    /// The kernel has AppArmor enabled.
    pub apparmor: bool,
    /// The kernel has SELinux enabled.
    pub selinux: bool,
    /// The host's cgroup v1 controller hierarchies under /sys/fs/cgroup, by mount point
    /// (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/cpu,cpuacct`); empty on a v2-only host.
    pub cgroup_v1_mounts: Vec<PathBuf>,
}

impl HostFacts {
    /// Where a cgroupfs cgroup has its directories: each v1 controller hierarchy, or
    /// /sys/fs/cgroup alone on a v2-only host.
    pub fn cgroup_hierarchies(&self) -> Vec<PathBuf> {
        if self.unified_cgroups {
            vec![PathBuf::from("/sys/fs/cgroup")]
        } else {
            self.cgroup_v1_mounts.clone()
        }
    }

    /// Reads the facts from `/proc` and `/sys/fs/cgroup`.
    pub fn detect() -> io::Result<HostFacts> {
        let status = fs::read_to_string("/proc/self/status")?;
        let permitted = status
            .lines()
            .find_map(|l| l.strip_prefix("CapPrm:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| io::Error::other("no CapPrm in /proc/self/status"))?;
        let own: i32 = fs::read_to_string("/proc/self/oom_score_adj")?
            .trim()
            .parse()
            .map_err(io::Error::other)?;
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| io::Error::other("no CapEff in /proc/self/status"))?;
        let floor = if effective & (1 << CAP_SYS_RESOURCE) != 0 {
            -1000
        } else {
            own
        };
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_string();
        let cgroup = Path::new("/sys/fs/cgroup");
        let unified = cgroup.join("cgroup.controllers").exists();
        let (swap, hugetlb) = if unified {
            let controllers = fs::read_to_string(cgroup.join("cgroup.controllers"))?;
            (
                swap_on_v2(cgroup),
                controllers.split_whitespace().any(|c| c == "hugetlb"),
            )
        } else {
            (
                cgroup.join("memory/memory.memsw.limit_in_bytes").exists(),
                cgroup.join("hugetlb").exists(),
            )
        };
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
        Ok(HostFacts {
            oom_score_adj_floor: floor,
            capabilities: caps::from_mask(permitted),
            hostname,
            swap_controller: swap,
            hugetlb_controller: hugetlb,
            unified_cgroups: unified,
            cgroup_v1_mounts: if unified {
                Vec::new()
            } else {
                v1_controller_mounts(&fs::read_to_string("/proc/self/mountinfo")?)
            },
            mount_setattr: kernel_at_least(&release, (5, 12)),
            kernel: kernel_version(&release),
            apparmor: fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        })
    }
}

/// The v1 controller hierarchies in a mountinfo table: `cgroup` mounts under
/// /sys/fs/cgroup with at least one resource controller (named hierarchies such as
/// `name=systemd` hold no container cgroup).
fn v1_controller_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            if right.next()? != "cgroup" {
                return None;
            }
            let super_options = right.nth(1)?;
            let controllers = super_options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .count();
            let point = PathBuf::from(left.split_whitespace().nth(4)?);
            (controllers > 0 && point.starts_with("/sys/fs/cgroup")).then_some(point)
        })
        .collect()
}

/// The v1 resource controllers a container can have a cgroup in.
const V1_CONTROLLERS: [&str; 14] = [
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
    "misc",
];

/// Whether a kernel release like `6.1.0-18-amd64` is at least `major.minor`.
fn kernel_at_least(release: &str, want: (u32, u32)) -> bool {
    kernel_version(release) >= want
}

/// The major and minor version of a kernel release like `6.1.0-18-amd64`.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor)
}

fn swap_on_v2(cgroup: &Path) -> bool {
    // Any child cgroup with memory enabled shows memory.swap.max when swap is accounted.
    fs::read_dir(cgroup)
        .map(|dir| {
            dir.flatten()
                .any(|e| e.path().join("memory.swap.max").exists())
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_from_mountinfo() {
        let table = "\
35 25 0:30 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
36 25 0:31 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
40 25 0:35 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 25 0:36 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
42 25 0:37 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        assert_eq!(
            v1_controller_mounts(table),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/net_cls,net_prio"),
                PathBuf::from("/sys/fs/cgroup/pids"),
            ]
        );
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.1.0-18-amd64", (5, 12)));
        assert!(kernel_at_least("5.12.0", (5, 12)));
        assert!(!kernel_at_least("5.10.0-28-amd64", (5, 12)));
        assert!(!kernel_at_least("garbage", (5, 12)));
        assert_eq!(kernel_version("6.1.0-18-amd64"), (6, 1));
    }

    #[test]
    fn detect_reads_this_host() {
        let facts = HostFacts::detect().unwrap();
        assert!(!facts.hostname.is_empty());
        assert!(facts.oom_score_adj_floor >= -1000 && facts.oom_score_adj_floor <= 1000);
    }
}
