//! One cgroup's CPU, memory and task counters.
//!
//! On cgroup v2, libcgroups reads them ([`libcgroups::common::create_cgroup_manager`],
//! then `stats()`). Its managers read every controller they know (hugetlb, io, PSI,
//! swap, ...) and fail as a whole when any one file is missing: a v2 cgroup without
//! the hugetlb or io controller enabled, a kernel without PSI or swap accounting. When
//! that happens the few files crust reports are read directly instead, so one missing
//! optional controller never costs kubelet its CPU and memory figures.
//!
//! On cgroup v1 those few files are always read directly, from the controllers' mount
//! points found once per process: libcgroups's v1 manager finds them again for each
//! manager, reading /proc/self/mountinfo and /proc/self/cgroup once per controller it
//! knows. That table holds every pod's mounts, so the cost grew with the pods for each
//! cgroup sampled (ListContainerStats of 300 containers took 3.5 s, nearly all in the
//! kernel rendering mountinfo).
//!
//! Creating a libcgroups manager has no side effect on the hierarchy (v2 joins paths),
//! but it logs `info` under target `libcgroups::common`: sampling silences it by
//! creating the manager under a scoped no-op subscriber. Existence is checked before
//! anything is read, so a removed cgroup is never created again.
//!
//! The figures only the metrics report ([`CgroupDetail`]) are then read directly on
//! either path (`cgroup_detail`), each on its own, so a host without one keeps the
//! rest.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libcgroups::common::{CgroupConfig, CgroupManager, CgroupSetup};
use libcgroups::stats::Stats;
use libcgroups::v1::ControllerType;

use super::cgroup_detail::{self, CgroupDetail};
use super::pressure::{self, Pressure};
use super::{Error, Result, now_nanos};

/// A cgroup's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupSample {
    /// When it was read, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// CPU time used by all its tasks since the cgroup was created, in nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Memory.
    pub memory: MemorySample,
    /// Tasks (processes and threads) in it and its children; `None` without the pids
    /// controller.
    pub pids: Option<u64>,
    /// Pressure stall information; cgroup v2 only (v1 has no per-cgroup PSI).
    pub pressure: Pressure,
    /// The figures only the metrics report.
    pub detail: CgroupDetail,
}

/// A cgroup's memory at one moment, as cadvisor and kubelet define the figures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemorySample {
    /// All memory charged to it, page cache included.
    pub usage_bytes: u64,
    /// `usage_bytes` less inactive file pages (v1 `total_inactive_file`, v2
    /// `inactive_file`), never below 0: what kubelet evicts on.
    pub working_set_bytes: u64,
    /// Anonymous memory and swap cache (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Minor page faults since creation.
    pub page_faults: u64,
    /// Major page faults since creation.
    pub major_page_faults: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: u64,
    /// Memory-mapped files (v1 `total_mapped_file`, v2 `file_mapped`).
    pub mapped_file_bytes: u64,
    /// The limit less the working set; `None` without a limit.
    pub available_bytes: Option<u64>,
}

/// Which figures a sample holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figures {
    /// What the CRI stats report: CPU time, memory, tasks (`detail` left empty).
    Stats,
    /// Those and the metrics' [`CgroupDetail`] (more files, and each process's fds).
    Metrics,
}

/// Reads the cgroup at `cgroups_path` (a cgroupfs path below the cgroup root, such as
/// `/kubepods/crust-<id>`). `Ok(None)` when it does not exist (any more). Never creates
/// it.
pub fn sample(cgroups_path: &Path, figures: Figures) -> Result<Option<CgroupSample>> {
    let dirs = Dirs::of(cgroups_path)?;
    if !dirs.exists() {
        return Ok(None);
    }
    let read = if dirs.v2 {
        through_libcgroups(cgroups_path, &dirs).or_else(|e| {
            tracing::debug!(
                cgroup = %cgroups_path.display(),
                error = %e,
                "libcgroups stats failed, reading the counters directly"
            );
            read_direct(&dirs)
        })
    } else {
        read_direct(&dirs)
    };
    let mut sample = match read {
        Ok(sample) => sample,
        Err(_) if !dirs.exists() => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: cgroups_path.to_owned(),
                source,
            });
        }
    };
    if let (true, Some(dir)) = (dirs.v2, &dirs.cpu) {
        sample.pressure = pressure::read(dir);
    }
    if figures == Figures::Stats {
        return Ok(Some(sample));
    }
    let detail = cgroup_detail::read(&dirs, sample.memory.usage_bytes);
    Ok(Some(CgroupSample { detail, ..sample }))
}

/// Where the host mounts what sampling reads.
#[derive(Debug)]
enum Hierarchy {
    /// cgroup v1 (legacy or hybrid): one mount per controller, if mounted.
    V1 {
        cpuacct: Option<PathBuf>,
        cpu: Option<PathBuf>,
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
        blkio: Option<PathBuf>,
    },
    /// cgroup v2: one tree.
    V2 { root: PathBuf },
}

static HIERARCHY: OnceLock<Hierarchy> = OnceLock::new();

fn hierarchy(path: &Path) -> Result<&'static Hierarchy> {
    if let Some(h) = HIERARCHY.get() {
        return Ok(h);
    }
    let setup = libcgroups::common::get_cgroup_setup().map_err(|e| Error::Setup {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mount = |c| libcgroups::v1::util::get_subsystem_mount_point(&c).ok();
    let h = match setup {
        CgroupSetup::Unified => Hierarchy::V2 {
            root: PathBuf::from(libcgroups::common::DEFAULT_CGROUP_ROOT),
        },
        CgroupSetup::Legacy | CgroupSetup::Hybrid => Hierarchy::V1 {
            cpuacct: mount(ControllerType::CpuAcct),
            cpu: mount(ControllerType::Cpu),
            memory: mount(ControllerType::Memory),
            pids: mount(ControllerType::Pids),
            blkio: mount(ControllerType::Blkio),
        },
    };
    Ok(HIERARCHY.get_or_init(|| h))
}

/// The directories of one cgroup that sampling reads; on v2 all the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dirs {
    pub(super) v2: bool,
    /// CPU time: v1 cpuacct.
    pub(super) cpu: Option<PathBuf>,
    /// CFS bandwidth: v1 cpu.
    pub(super) cfs: Option<PathBuf>,
    pub(super) memory: Option<PathBuf>,
    pub(super) pids: Option<PathBuf>,
    pub(super) blkio: Option<PathBuf>,
}

impl Dirs {
    fn of(cgroups_path: &Path) -> Result<Self> {
        let rel = relative(cgroups_path)?;
        Ok(match hierarchy(cgroups_path)? {
            Hierarchy::V1 {
                cpuacct,
                cpu,
                memory,
                pids,
                blkio,
            } => {
                let at = |mount: &Option<PathBuf>| mount.as_ref().map(|m| m.join(&rel));
                Dirs {
                    v2: false,
                    cpu: at(cpuacct),
                    cfs: at(cpu),
                    memory: at(memory),
                    pids: at(pids),
                    blkio: at(blkio),
                }
            }
            Hierarchy::V2 { root } => {
                let dir = Some(root.join(&rel));
                Dirs {
                    v2: true,
                    cpu: dir.clone(),
                    cfs: dir.clone(),
                    memory: dir.clone(),
                    pids: dir.clone(),
                    blkio: dir,
                }
            }
        })
    }

    /// Whether the cgroup exists: its memory dir, or its CPU dir without a memory
    /// controller.
    fn exists(&self) -> bool {
        self.memory
            .as_ref()
            .or(self.cpu.as_ref())
            .is_some_and(|d| d.is_dir())
    }

    /// The pids dir, if the controller is there for this cgroup.
    pub(super) fn pids_dir(&self) -> Option<&Path> {
        self.pids
            .as_deref()
            .filter(|d| d.join("pids.current").is_file())
    }
}

/// `cgroups_path` relative to a hierarchy's root; only plain components.
fn relative(cgroups_path: &Path) -> Result<PathBuf> {
    let invalid = || Error::InvalidCgroupPath {
        path: cgroups_path.to_owned(),
    };
    let mut rel = PathBuf::new();
    for c in cgroups_path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => rel.push(name),
            _ => return Err(invalid()),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(invalid());
    }
    Ok(rel)
}

/// Samples through a libcgroups manager; any failure is the caller's cue to fall back.
fn through_libcgroups(
    cgroups_path: &Path,
    dirs: &Dirs,
) -> std::result::Result<CgroupSample, Box<dyn std::error::Error>> {
    let config = CgroupConfig {
        cgroup_path: cgroups_path.to_owned(),
        systemd_cgroup: false,
        container_name: String::new(),
    };
    let quiet = tracing::subscriber::NoSubscriber::default();
    let manager = tracing::subscriber::with_default(quiet, || {
        libcgroups::common::create_cgroup_manager(config)
    })?;
    let timestamp = now_nanos();
    let stats = manager.stats()?;
    Ok(from_stats(&stats, dirs, timestamp))
}

/// Converts libcgroups's figures: v2 reports CPU time in microseconds, v1 in
/// nanoseconds; its pid figures are zero when the controller is missing.
fn from_stats(stats: &Stats, dirs: &Dirs, timestamp: i64) -> CgroupSample {
    let usage = stats.cpu.usage.usage_total;
    CgroupSample {
        timestamp,
        cpu_usage_nanos: if dirs.v2 {
            usage.saturating_mul(1000)
        } else {
            usage
        },
        memory: memory_sample(
            dirs.v2,
            stats.memory.memory.usage,
            stats.memory.memory.limit,
            &stats.memory.stats,
        ),
        pids: dirs.pids_dir().map(|_| stats.pids.current),
        pressure: Pressure::default(),
        detail: CgroupDetail::default(),
    }
}

/// Reads the few files crust reports, without libcgroups.
fn read_direct(dirs: &Dirs) -> io::Result<CgroupSample> {
    let missing = || io::Error::new(io::ErrorKind::NotFound, "controller not mounted");
    let cpu = dirs.cpu.as_deref().ok_or_else(missing)?;
    let mem = dirs.memory.as_deref().ok_or_else(missing)?;
    let timestamp = now_nanos();
    let (cpu_usage_nanos, usage, limit) = if dirs.v2 {
        let usec = flat_keyed(&cpu.join("cpu.stat"))?
            .get("usage_usec")
            .copied()
            .ok_or_else(|| invalid(&cpu.join("cpu.stat"), "no usage_usec"))?;
        let usage = single(&mem.join("memory.current"))?;
        (
            usec.saturating_mul(1000),
            usage,
            single(&mem.join("memory.max"))?,
        )
    } else {
        (
            single(&cpu.join("cpuacct.usage"))?,
            single(&mem.join("memory.usage_in_bytes"))?,
            single(&mem.join("memory.limit_in_bytes"))?,
        )
    };
    let stat = flat_keyed(&mem.join("memory.stat"))?;
    let pids = match dirs.pids_dir() {
        Some(d) => Some(single(&d.join("pids.current"))?),
        None => None,
    };
    Ok(CgroupSample {
        timestamp,
        cpu_usage_nanos,
        memory: memory_sample(dirs.v2, usage, limit, &stat),
        pids,
        pressure: Pressure::default(),
        detail: CgroupDetail::default(),
    })
}

/// Limits above this are "unlimited": v1 reports the largest page-aligned i64.
const UNLIMITED: u64 = 1 << 62;

/// The memory figures from usage, limit and `memory.stat`, as cadvisor computes them.
fn memory_sample(v2: bool, usage: u64, limit: u64, stat: &HashMap<String, u64>) -> MemorySample {
    let get = |v1_key: &str, v2_key: &str| {
        stat.get(if v2 { v2_key } else { v1_key })
            .copied()
            .unwrap_or(0)
    };
    let working_set = usage.saturating_sub(get("total_inactive_file", "inactive_file"));
    MemorySample {
        usage_bytes: usage,
        working_set_bytes: working_set,
        rss_bytes: get("total_rss", "anon"),
        page_faults: get("total_pgfault", "pgfault"),
        major_page_faults: get("total_pgmajfault", "pgmajfault"),
        cache_bytes: get("total_cache", "file"),
        mapped_file_bytes: get("total_mapped_file", "file_mapped"),
        available_bytes: (limit <= UNLIMITED).then(|| limit.saturating_sub(working_set)),
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn read(path: &Path) -> io::Result<String> {
    fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A file holding one number, or `max`.
pub(super) fn single(path: &Path) -> io::Result<u64> {
    let text = read(path)?;
    match text.trim() {
        "max" => Ok(u64::MAX),
        n => n.parse().map_err(|_| invalid(path, "not a number")),
    }
}

/// A file of `key value` lines.
pub(super) fn flat_keyed(path: &Path) -> io::Result<HashMap<String, u64>> {
    read(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (k, v) = line
                .split_once(' ')
                .ok_or_else(|| invalid(path, "not `key value`"))?;
            let v = v
                .trim()
                .parse()
                .map_err(|_| invalid(path, "not a number"))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
