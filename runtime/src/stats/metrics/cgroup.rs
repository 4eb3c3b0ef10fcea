//! A cgroup's rows: CPU, memory, processes and block I/O, for a pod or a container.

use crust_proto::cri::Metric;

use super::descriptors::*;
use super::{metric, seconds, unix_seconds};
use crate::stats::{BlkioDevice, CgroupSample};

/// Every row the sample has figures for.
pub(super) fn rows(base: &[String], s: &CgroupSample) -> Vec<Metric> {
    let m = &s.memory;
    let d = &s.detail;
    let one = |name, value| metric(name, base, &[], value);
    let last_seen = u64::try_from(s.timestamp).map_or(0, unix_seconds);
    let mut out = vec![
        one(LAST_SEEN, last_seen),
        // kubelet's cadvisor has per-CPU figures off: one row, `cpu="total"`.
        metric(CPU_USAGE, base, &["total"], seconds(s.cpu_usage_nanos)),
        one(MEMORY_CACHE, m.cache_bytes),
        one(MEMORY_RSS, m.rss_bytes),
        one(MEMORY_MAPPED_FILE, m.mapped_file_bytes),
        one(MEMORY_USAGE, m.usage_bytes),
        one(MEMORY_WORKING_SET, m.working_set_bytes),
        // memory.stat's fault counters include the cgroup's children.
        metric(
            MEMORY_FAILURES,
            base,
            &["pgfault", "hierarchy"],
            m.page_faults,
        ),
        metric(
            MEMORY_FAILURES,
            base,
            &["pgmajfault", "hierarchy"],
            m.major_page_faults,
        ),
    ];
    let optional = [
        (CPU_USER, d.cpu_user_nanos.map(seconds)),
        (CPU_SYSTEM, d.cpu_system_nanos.map(seconds)),
        (CFS_PERIODS, d.cfs.map(|c| c.periods)),
        (CFS_THROTTLED_PERIODS, d.cfs.map(|c| c.throttled_periods)),
        (
            CFS_THROTTLED_SECONDS,
            d.cfs.map(|c| seconds(c.throttled_nanos)),
        ),
        (MEMORY_KERNEL, d.memory_kernel_bytes),
        (MEMORY_SWAP, d.swap_bytes),
        (MEMORY_FAILCNT, d.memory_failcnt),
        (MEMORY_MAX_USAGE, d.memory_max_usage_bytes),
        (OOM_EVENTS, d.oom_kills),
        (THREADS, s.pids),
        (THREADS_MAX, d.pids_max),
        (PROCESSES, d.processes.map(|p| p.processes)),
        (FILE_DESCRIPTORS, d.processes.map(|p| p.file_descriptors)),
        (SOCKETS, d.processes.map(|p| p.sockets)),
    ];
    out.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some(one(name, value?))),
    );
    for dev in &d.blkio {
        out.extend(blkio_rows(base, dev));
    }
    out
}

/// A device's rows: cadvisor's per-filesystem counters and one usage row per
/// operation the kernel reports.
fn blkio_rows(base: &[String], dev: &BlkioDevice) -> Vec<Metric> {
    let device = [dev.name.as_str()];
    let mut out = vec![
        metric(FS_READ_BYTES, base, &device, dev.bytes_of("Read")),
        metric(FS_WRITE_BYTES, base, &device, dev.bytes_of("Write")),
        metric(FS_READS, base, &device, dev.ios_of("Read")),
        metric(FS_WRITES, base, &device, dev.ios_of("Write")),
    ];
    let (major, minor) = (dev.major.to_string(), dev.minor.to_string());
    out.extend(dev.bytes.iter().map(|(op, v)| {
        metric(
            BLKIO_USAGE,
            base,
            &[&dev.name, &major, &minor, op.as_str()],
            *v,
        )
    }));
    out
}
