//! A container's own rows: its writable layer and the filesystem it is on, its spec
//! (CRI resources) and its start time.

use crust_proto::cri::Metric;

use super::descriptors::*;
use super::{ContainerMetricsInput, metric, unix_seconds};

/// Every row the container has figures for, whether it runs or not.
pub(super) fn rows(base: &[String], c: &ContainerMetricsInput<'_>) -> Vec<Metric> {
    let mut out = Vec::new();
    let device = c
        .filesystem
        .map(|f| f.device.as_str())
        .or(c.layer.map(|l| l.fs_id.as_str()));
    if let (Some(layer), Some(device)) = (c.layer, device) {
        out.push(metric(FS_USAGE, base, &[device], layer.used_bytes));
    }
    if let Some(fs) = c.filesystem {
        let device = [fs.device.as_str()];
        out.push(metric(FS_LIMIT, base, &device, fs.capacity_bytes));
        out.push(metric(FS_INODES_TOTAL, base, &device, fs.inodes_total));
        out.push(metric(FS_INODES_FREE, base, &device, fs.inodes_free));
    }
    if let Some(r) = c.resources {
        // CRI's 0 is "not set"; cadvisor reports an unlimited memory limit as 0 too.
        let positive = |v: i64| u64::try_from(v).unwrap_or(0);
        out.push(metric(SPEC_CPU_PERIOD, base, &[], positive(r.cpu_period)));
        out.push(metric(SPEC_CPU_SHARES, base, &[], positive(r.cpu_shares)));
        out.push(metric(
            SPEC_MEMORY_LIMIT,
            base,
            &[],
            positive(r.memory_limit_in_bytes),
        ));
        out.push(metric(
            SPEC_MEMORY_SWAP_LIMIT,
            base,
            &[],
            positive(r.memory_swap_limit_in_bytes),
        ));
        // As cadvisor: a quota row only when there is a quota.
        if r.cpu_quota > 0 {
            out.push(metric(SPEC_CPU_QUOTA, base, &[], positive(r.cpu_quota)));
        }
    }
    if let Some(started) = c.started_at.and_then(|t| u64::try_from(t).ok()) {
        out.push(metric(START_TIME, base, &[], unix_seconds(started)));
    }
    out
}
