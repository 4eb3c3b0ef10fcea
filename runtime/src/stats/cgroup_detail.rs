//! The figures of a cgroup beyond CPU time, memory usage and tasks, for the cadvisor
//! metrics: CPU user/system split and CFS throttling, memory failures, peak, kernel,
//! swap and OOM kills, the pid limit, block I/O per device, and the processes with
//! their open file descriptors and sockets.
//!
//! Each figure is read straight from the cgroup files, on v1 and v2 alike, and is
//! `None` when this host does not have it (a controller not mounted, a kernel without
//! swap accounting or `memory.peak`): one missing file never hides the others.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::cgroup::{Dirs, flat_keyed, single};

/// Clock ticks per second of `cpuacct.stat`: USER_HZ, fixed at 100 for user space on
/// Linux (runc and cadvisor assume the same).
const USER_HZ: u64 = 100;

/// The figures [`read`] gathers, each `None` when this host does not have it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDetail {
    /// CPU time in user mode, in nanoseconds.
    pub cpu_user_nanos: Option<u64>,
    /// CPU time in kernel mode, in nanoseconds.
    pub cpu_system_nanos: Option<u64>,
    /// CFS bandwidth enforcement.
    pub cfs: Option<CfsSample>,
    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `memory.events` `max`).
    pub memory_failcnt: Option<u64>,
    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub memory_max_usage_bytes: Option<u64>,
    /// Kernel memory (v1 `memory.kmem.usage_in_bytes`, v2 `memory.stat` `kernel`).
    pub memory_kernel_bytes: Option<u64>,
    /// Swap in use (v1 `memory.memsw.usage_in_bytes` less usage, v2
    /// `memory.swap.current`).
    pub swap_bytes: Option<u64>,
    /// Processes killed by the OOM killer (`oom_kill` of v1 `memory.oom_control`, v2
    /// `memory.events`).
    pub oom_kills: Option<u64>,
    /// The pid limit; `Some(0)` when there is none (cadvisor's "infinity").
    pub pids_max: Option<u64>,
    /// Processes with their descriptors.
    pub processes: Option<ProcessSample>,
    /// Block I/O per device; empty when nothing was accounted.
    pub blkio: Vec<BlkioDevice>,
}

/// CFS bandwidth counters (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CfsSample {
    /// Enforcement periods elapsed.
    pub periods: u64,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: u64,
    /// Time throttled, in nanoseconds.
    pub throttled_nanos: u64,
}

/// The processes directly in a cgroup (`cgroup.procs`) and what they hold open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// Processes.
    pub processes: u64,
    /// Open file descriptors, summed over the processes.
    pub file_descriptors: u64,
    /// Of those, sockets.
    pub sockets: u64,
}

/// One block device's I/O by the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioDevice {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// `/dev/<name>` when the kernel names it, else `major:minor`.
    pub name: String,
    /// Bytes per operation, cadvisor's names (`Read`, `Write`, v1's `Sync`, `Async`,
    /// `Discard`, `Total`).
    pub bytes: Vec<(String, u64)>,
    /// I/O operations completed per operation, same names.
    pub ios: Vec<(String, u64)>,
}

impl BlkioDevice {
    /// The bytes of operation `op`, 0 when not reported.
    pub fn bytes_of(&self, op: &str) -> u64 {
        find(&self.bytes, op)
    }

    /// The operations of kind `op`, 0 when not reported.
    pub fn ios_of(&self, op: &str) -> u64 {
        find(&self.ios, op)
    }
}

fn find(list: &[(String, u64)], op: &str) -> u64 {
    list.iter().find(|(o, _)| o == op).map_or(0, |&(_, v)| v)
}

/// Reads what is there of the cgroup's details. Blocks.
pub(super) fn read(dirs: &Dirs, memory_usage: u64) -> CgroupDetail {
    let mut d = CgroupDetail::default();
    if let Some(cpu) = dirs.cpu.as_deref() {
        if dirs.v2 {
            let stat = flat_keyed(&cpu.join("cpu.stat")).unwrap_or_default();
            let usec = |k: &str| stat.get(k).map(|v| v.saturating_mul(1000));
            d.cpu_user_nanos = usec("user_usec");
            d.cpu_system_nanos = usec("system_usec");
            d.cfs = cfs(&stat, "throttled_usec", 1000);
        } else if let Ok(stat) = flat_keyed(&cpu.join("cpuacct.stat")) {
            let ticks = |k: &str| {
                stat.get(k)
                    .map(|t| t.saturating_mul(1_000_000_000 / USER_HZ))
            };
            d.cpu_user_nanos = ticks("user");
            d.cpu_system_nanos = ticks("system");
        }
    }
    if let Some(dir) = dirs.cfs.as_deref().filter(|_| !dirs.v2) {
        let stat = flat_keyed(&dir.join("cpu.stat")).unwrap_or_default();
        d.cfs = cfs(&stat, "throttled_time", 1);
    }
    if let Some(mem) = dirs.memory.as_deref() {
        read_memory(&mut d, mem, dirs.v2, memory_usage);
    }
    if let Some(pids) = dirs.pids_dir() {
        d.pids_max = single(&pids.join("pids.max"))
            .ok()
            .map(|m| if m == u64::MAX { 0 } else { m });
    }
    d.processes = dirs
        .memory
        .as_deref()
        .or(dirs.cpu.as_deref())
        .and_then(|dir| processes(dir, Path::new("/proc")));
    d.blkio = match (dirs.blkio.as_deref(), dirs.v2) {
        (Some(dir), true) => text(&dir.join("io.stat")).map(|t| parse_io_stat(&t)),
        (Some(dir), false) => text(&dir.join("blkio.throttle.io_service_bytes")).map(|bytes| {
            let ios = text(&dir.join("blkio.throttle.io_serviced")).unwrap_or_default();
            parse_blkio_v1(&bytes, &ios)
        }),
        (None, _) => None,
    }
    .unwrap_or_default();
    for dev in &mut d.blkio {
        dev.name = device_name(dev.major, dev.minor);
    }
    d
}

fn text(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn cfs(stat: &HashMap<String, u64>, time_key: &str, to_nanos: u64) -> Option<CfsSample> {
    Some(CfsSample {
        periods: *stat.get("nr_periods")?,
        throttled_periods: *stat.get("nr_throttled")?,
        throttled_nanos: stat.get(time_key)?.saturating_mul(to_nanos),
    })
}

fn read_memory(d: &mut CgroupDetail, mem: &Path, v2: bool, usage: u64) {
    let one = |name: &str| single(&mem.join(name)).ok();
    if v2 {
        let events = flat_keyed(&mem.join("memory.events")).unwrap_or_default();
        d.memory_failcnt = events.get("max").copied();
        d.oom_kills = events.get("oom_kill").copied();
        d.memory_max_usage_bytes = one("memory.peak");
        d.swap_bytes = one("memory.swap.current");
        d.memory_kernel_bytes = flat_keyed(&mem.join("memory.stat"))
            .ok()
            .and_then(|s| s.get("kernel").copied());
    } else {
        d.memory_failcnt = one("memory.failcnt");
        d.memory_max_usage_bytes = one("memory.max_usage_in_bytes");
        d.memory_kernel_bytes = one("memory.kmem.usage_in_bytes");
        d.swap_bytes = one("memory.memsw.usage_in_bytes").map(|sw| sw.saturating_sub(usage));
        d.oom_kills = text(&mem.join("memory.oom_control")).and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("oom_kill "))
                .and_then(|v| v.trim().parse().ok())
        });
    }
}

/// Counts the processes in `dir/cgroup.procs` and their descriptors under `proc`. A
/// process that exits meanwhile counts with the descriptors seen.
pub(super) fn processes(dir: &Path, proc: &Path) -> Option<ProcessSample> {
    let procs = text(&dir.join("cgroup.procs"))?;
    let mut out = ProcessSample::default();
    for pid in procs.split_whitespace() {
        out.processes += 1;
        let Ok(fds) = fs::read_dir(proc.join(pid).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            out.file_descriptors += 1;
            let socket =
                fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
            out.sockets += u64::from(socket);
        }
    }
    Some(out)
}

/// v1 `blkio.throttle.io_service_bytes` and `io_serviced`: `major:minor Op value`
/// lines and a closing `Total value`.
pub(super) fn parse_blkio_v1(bytes: &str, ios: &str) -> Vec<BlkioDevice> {
    let mut out: Vec<BlkioDevice> = Vec::new();
    let mut add = |text: &str, is_bytes: bool| {
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(dev), Some(op), Some(v), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let (Some((major, minor)), Ok(v)) = (major_minor(dev), v.parse()) else {
                continue;
            };
            let entry = device(&mut out, major, minor);
            let list = if is_bytes {
                &mut entry.bytes
            } else {
                &mut entry.ios
            };
            list.push((op.to_owned(), v));
        }
    };
    add(bytes, true);
    add(ios, false);
    out
}

/// v2 `io.stat`: `major:minor rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…`.
pub(super) fn parse_io_stat(text: &str) -> Vec<BlkioDevice> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(major_minor) else {
            continue;
        };
        let entry = device(&mut out, major, minor);
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse() else { continue };
            let (op, is_bytes) = match k {
                "rbytes" => ("Read", true),
                "wbytes" => ("Write", true),
                "dbytes" => ("Discard", true),
                "rios" => ("Read", false),
                "wios" => ("Write", false),
                "dios" => ("Discard", false),
                _ => continue,
            };
            let list = if is_bytes {
                &mut entry.bytes
            } else {
                &mut entry.ios
            };
            list.push((op.to_owned(), v));
        }
    }
    out
}

fn major_minor(dev: &str) -> Option<(u64, u64)> {
    let (major, minor) = dev.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn device(list: &mut Vec<BlkioDevice>, major: u64, minor: u64) -> &mut BlkioDevice {
    let at = match list
        .iter()
        .position(|d| (d.major, d.minor) == (major, minor))
    {
        Some(i) => i,
        None => {
            list.push(BlkioDevice {
                major,
                minor,
                name: format!("{major}:{minor}"),
                ..Default::default()
            });
            list.len() - 1
        }
    };
    &mut list[at]
}

/// `/dev/<name>` of a block device, from its `/sys/dev/block` link; else
/// `major:minor`.
pub(super) fn device_name(major: u64, minor: u64) -> String {
    fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()
        .and_then(|t| {
            t.file_name()
                .map(|n| format!("/dev/{}", n.to_string_lossy()))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
#[path = "cgroup_detail_tests.rs"]
mod tests;
