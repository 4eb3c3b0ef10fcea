//! Facts about the host and crustd that shape every container's spec, read once at
//! start-up ([`HostFacts::detect`]) so that spec generation stays pure.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::runtime::Capability;

use super::caps;

/// Facts about the host and crustd itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// crustd's own `oom_score_adj`: a container's lower value is raised to it, since
    /// root here may lack CAP_SYS_RESOURCE (containerd's `restrict_oom_score_adj`).
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
}

impl HostFacts {
    /// Reads the facts from `/proc` and `/sys/fs/cgroup`.
    pub fn detect() -> io::Result<HostFacts> {
        let status = fs::read_to_string("/proc/self/status")?;
        let permitted = status
            .lines()
            .find_map(|l| l.strip_prefix("CapPrm:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| io::Error::other("no CapPrm in /proc/self/status"))?;
        let floor = fs::read_to_string("/proc/self/oom_score_adj")?
            .trim()
            .parse()
            .map_err(io::Error::other)?;
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
            mount_setattr: kernel_at_least(&release, (5, 12)),
            kernel: kernel_version(&release),
            apparmor: fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        })
    }
}

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
