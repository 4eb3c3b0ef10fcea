//! The metric names, help texts, types and labels, as cadvisor defines them.

use crust_proto::cri::{MetricDescriptor, MetricType};

use MetricType::{Counter, Gauge};

/// The labels every metric starts with, as kubelet's cadvisor endpoint has them.
pub(super) const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

pub(super) const LAST_SEEN: &str = "container_last_seen";
pub(super) const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
pub(super) const CPU_USER: &str = "container_cpu_user_seconds_total";
pub(super) const CPU_SYSTEM: &str = "container_cpu_system_seconds_total";
pub(super) const CFS_PERIODS: &str = "container_cpu_cfs_periods_total";
pub(super) const CFS_THROTTLED_PERIODS: &str = "container_cpu_cfs_throttled_periods_total";
pub(super) const CFS_THROTTLED_SECONDS: &str = "container_cpu_cfs_throttled_seconds_total";
pub(super) const MEMORY_CACHE: &str = "container_memory_cache";
pub(super) const MEMORY_RSS: &str = "container_memory_rss";
pub(super) const MEMORY_KERNEL: &str = "container_memory_kernel_usage";
pub(super) const MEMORY_MAPPED_FILE: &str = "container_memory_mapped_file";
pub(super) const MEMORY_SWAP: &str = "container_memory_swap";
pub(super) const MEMORY_FAILCNT: &str = "container_memory_failcnt";
pub(super) const MEMORY_USAGE: &str = "container_memory_usage_bytes";
pub(super) const MEMORY_MAX_USAGE: &str = "container_memory_max_usage_bytes";
pub(super) const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
pub(super) const MEMORY_FAILURES: &str = "container_memory_failures_total";
pub(super) const OOM_EVENTS: &str = "container_oom_events_total";
pub(super) const FS_INODES_FREE: &str = "container_fs_inodes_free";
pub(super) const FS_INODES_TOTAL: &str = "container_fs_inodes_total";
pub(super) const FS_LIMIT: &str = "container_fs_limit_bytes";
pub(super) const FS_USAGE: &str = "container_fs_usage_bytes";
pub(super) const FS_READ_BYTES: &str = "container_fs_reads_bytes_total";
pub(super) const FS_READS: &str = "container_fs_reads_total";
pub(super) const FS_WRITE_BYTES: &str = "container_fs_writes_bytes_total";
pub(super) const FS_WRITES: &str = "container_fs_writes_total";
pub(super) const BLKIO_USAGE: &str = "container_blkio_device_usage_total";
pub(super) const RX_BYTES: &str = "container_network_receive_bytes_total";
pub(super) const RX_PACKETS: &str = "container_network_receive_packets_total";
pub(super) const RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
pub(super) const RX_ERRORS: &str = "container_network_receive_errors_total";
pub(super) const TX_BYTES: &str = "container_network_transmit_bytes_total";
pub(super) const TX_PACKETS: &str = "container_network_transmit_packets_total";
pub(super) const TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";
pub(super) const TX_ERRORS: &str = "container_network_transmit_errors_total";
pub(super) const PROCESSES: &str = "container_processes";
pub(super) const THREADS: &str = "container_threads";
pub(super) const THREADS_MAX: &str = "container_threads_max";
pub(super) const FILE_DESCRIPTORS: &str = "container_file_descriptors";
pub(super) const SOCKETS: &str = "container_sockets";
pub(super) const SPEC_CPU_PERIOD: &str = "container_spec_cpu_period";
pub(super) const SPEC_CPU_QUOTA: &str = "container_spec_cpu_quota";
pub(super) const SPEC_CPU_SHARES: &str = "container_spec_cpu_shares";
pub(super) const SPEC_MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
pub(super) const SPEC_MEMORY_SWAP_LIMIT: &str = "container_spec_memory_swap_limit_bytes";
pub(super) const START_TIME: &str = "container_start_time_seconds";

const DEVICE: &[&str] = &["device"];
const INTERFACE: &[&str] = &["interface"];

/// Name, help, type and the labels after [`BASE_LABELS`], in cadvisor's order.
pub(super) const DESCRIPTORS: &[(&str, &str, MetricType, &[&str])] = &[
    (
        LAST_SEEN,
        "Last time a container was seen by the exporter",
        Gauge,
        &[],
    ),
    (
        CPU_USER,
        "Cumulative user cpu time consumed in seconds.",
        Counter,
        &[],
    ),
    (
        CPU_SYSTEM,
        "Cumulative system cpu time consumed in seconds.",
        Counter,
        &[],
    ),
    (
        CPU_USAGE,
        "Cumulative cpu time consumed in seconds.",
        Counter,
        &["cpu"],
    ),
    (
        CFS_PERIODS,
        "Number of elapsed enforcement period intervals.",
        Counter,
        &[],
    ),
    (
        CFS_THROTTLED_PERIODS,
        "Number of throttled period intervals.",
        Counter,
        &[],
    ),
    (
        CFS_THROTTLED_SECONDS,
        "Total time duration the container has been throttled.",
        Counter,
        &[],
    ),
    (
        MEMORY_CACHE,
        "Number of bytes of page cache memory.",
        Gauge,
        &[],
    ),
    (MEMORY_RSS, "Size of RSS in bytes.", Gauge, &[]),
    (
        MEMORY_KERNEL,
        "Size of kernel memory allocated in bytes.",
        Gauge,
        &[],
    ),
    (
        MEMORY_MAPPED_FILE,
        "Size of memory mapped files in bytes.",
        Gauge,
        &[],
    ),
    (MEMORY_SWAP, "Container swap usage in bytes.", Gauge, &[]),
    (
        MEMORY_FAILCNT,
        "Number of memory usage hits limits",
        Counter,
        &[],
    ),
    (
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        Gauge,
        &[],
    ),
    (
        MEMORY_MAX_USAGE,
        "Maximum memory usage recorded in bytes",
        Gauge,
        &[],
    ),
    (
        MEMORY_WORKING_SET,
        "Current working set in bytes.",
        Gauge,
        &[],
    ),
    (
        MEMORY_FAILURES,
        "Cumulative count of memory allocation failures.",
        Counter,
        &["failure_type", "scope"],
    ),
    (
        OOM_EVENTS,
        "Count of out of memory events observed for the container",
        Counter,
        &[],
    ),
    (FS_INODES_FREE, "Number of available Inodes", Gauge, DEVICE),
    (FS_INODES_TOTAL, "Number of Inodes", Gauge, DEVICE),
    (
        FS_LIMIT,
        "Number of bytes that can be consumed by the container on this filesystem.",
        Gauge,
        DEVICE,
    ),
    (
        FS_USAGE,
        "Number of bytes that are consumed by the container on this filesystem.",
        Gauge,
        DEVICE,
    ),
    (
        FS_READ_BYTES,
        "Cumulative count of bytes read",
        Counter,
        DEVICE,
    ),
    (
        FS_READS,
        "Cumulative count of reads completed",
        Counter,
        DEVICE,
    ),
    (
        FS_WRITE_BYTES,
        "Cumulative count of bytes written",
        Counter,
        DEVICE,
    ),
    (
        FS_WRITES,
        "Cumulative count of writes completed",
        Counter,
        DEVICE,
    ),
    (
        BLKIO_USAGE,
        "Blkio Device bytes usage",
        Counter,
        &["device", "major", "minor", "operation"],
    ),
    (
        RX_BYTES,
        "Cumulative count of bytes received",
        Counter,
        INTERFACE,
    ),
    (
        RX_PACKETS,
        "Cumulative count of packets received",
        Counter,
        INTERFACE,
    ),
    (
        RX_DROPPED,
        "Cumulative count of packets dropped while receiving",
        Counter,
        INTERFACE,
    ),
    (
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving",
        Counter,
        INTERFACE,
    ),
    (
        TX_BYTES,
        "Cumulative count of bytes transmitted",
        Counter,
        INTERFACE,
    ),
    (
        TX_PACKETS,
        "Cumulative count of packets transmitted",
        Counter,
        INTERFACE,
    ),
    (
        TX_DROPPED,
        "Cumulative count of packets dropped while transmitting",
        Counter,
        INTERFACE,
    ),
    (
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting",
        Counter,
        INTERFACE,
    ),
    (
        PROCESSES,
        "Number of processes running inside the container.",
        Gauge,
        &[],
    ),
    (
        THREADS,
        "Number of threads running inside the container",
        Gauge,
        &[],
    ),
    (
        THREADS_MAX,
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        Gauge,
        &[],
    ),
    (
        FILE_DESCRIPTORS,
        "Number of open file descriptors for the container.",
        Gauge,
        &[],
    ),
    (
        SOCKETS,
        "Number of open sockets for the container.",
        Gauge,
        &[],
    ),
    (SPEC_CPU_PERIOD, "CPU period of the container.", Gauge, &[]),
    (SPEC_CPU_QUOTA, "CPU quota of the container.", Gauge, &[]),
    (SPEC_CPU_SHARES, "CPU share of the container.", Gauge, &[]),
    (
        SPEC_MEMORY_LIMIT,
        "Memory limit for the container.",
        Gauge,
        &[],
    ),
    (
        SPEC_MEMORY_SWAP_LIMIT,
        "Memory swap limit for the container.",
        Gauge,
        &[],
    ),
    (
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        Gauge,
        &[],
    ),
];

/// The metrics [`pod_metrics`](super::pod_metrics) fills. Static: kubelet reads them
/// once.
pub fn metric_descriptors() -> Vec<MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|&(name, help, _, extra)| MetricDescriptor {
            name: name.to_owned(),
            help: help.to_owned(),
            label_keys: BASE_LABELS
                .iter()
                .chain(extra)
                .map(|&k| k.to_owned())
                .collect(),
        })
        .collect()
}

/// The type of metric `name`.
pub(super) fn kind(name: &str) -> MetricType {
    DESCRIPTORS
        .iter()
        .find(|d| d.0 == name)
        .map_or(Gauge, |d| d.2)
}
