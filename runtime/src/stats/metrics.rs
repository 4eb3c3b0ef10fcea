//! ListMetricDescriptors and ListPodSandboxMetrics: cadvisor's names for the figures
//! crust samples, so kubelet can serve `/metrics/cadvisor` from the runtime.
//!
//! Every descriptor listed is filled from a sample; a figure crust cannot measure has
//! no descriptor. Labels follow kubelet's cadvisor endpoint: `container`, `id`,
//! `image`, `name`, `namespace`, `pod`, plus a metric's own (`interface`,
//! `failure_type`, `scope`). A container's rows carry its CRI name in `container` and
//! `name`, its id in `id` and its image; the pod's own rows (the pod cgroup, the
//! network) leave `container`, `image` and `name` empty, as cadvisor does for the pod
//! cgroup, so that `container!=""` selects containers only. Values are gathered live:
//! every timestamp is 0.

use crust_proto::cri::{
    ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetrics, UInt64Value,
};

use super::{CgroupSample, NetworkSample};

const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const MEMORY_USAGE: &str = "container_memory_usage_bytes";
const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEMORY_RSS: &str = "container_memory_rss";
const MEMORY_FAILURES: &str = "container_memory_failures_total";
const THREADS: &str = "container_threads";
const RX_BYTES: &str = "container_network_receive_bytes_total";
const RX_PACKETS: &str = "container_network_receive_packets_total";
const RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
const RX_ERRORS: &str = "container_network_receive_errors_total";
const TX_BYTES: &str = "container_network_transmit_bytes_total";
const TX_PACKETS: &str = "container_network_transmit_packets_total";
const TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";
const TX_ERRORS: &str = "container_network_transmit_errors_total";

use MetricType::{Counter, Gauge};

/// Name, help, type and the labels after [`BASE_LABELS`].
const DESCRIPTORS: &[(&str, &str, MetricType, &[&str])] = &[
    (
        CPU_USAGE,
        "Cumulative cpu time consumed in seconds (whole seconds).",
        Counter,
        &[],
    ),
    (
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        Gauge,
        &[],
    ),
    (
        MEMORY_WORKING_SET,
        "Current working set in bytes.",
        Gauge,
        &[],
    ),
    (MEMORY_RSS, "Size of RSS in bytes.", Gauge, &[]),
    (
        MEMORY_FAILURES,
        "Cumulative count of memory allocation failures.",
        Counter,
        &["failure_type", "scope"],
    ),
    (
        THREADS,
        "Number of threads running inside the container.",
        Gauge,
        &[],
    ),
    (
        RX_BYTES,
        "Cumulative count of bytes received.",
        Counter,
        &["interface"],
    ),
    (
        RX_PACKETS,
        "Cumulative count of packets received.",
        Counter,
        &["interface"],
    ),
    (
        RX_DROPPED,
        "Cumulative count of packets dropped while receiving.",
        Counter,
        &["interface"],
    ),
    (
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving.",
        Counter,
        &["interface"],
    ),
    (
        TX_BYTES,
        "Cumulative count of bytes transmitted.",
        Counter,
        &["interface"],
    ),
    (
        TX_PACKETS,
        "Cumulative count of packets transmitted.",
        Counter,
        &["interface"],
    ),
    (
        TX_DROPPED,
        "Cumulative count of packets dropped while transmitting.",
        Counter,
        &["interface"],
    ),
    (
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting.",
        Counter,
        &["interface"],
    ),
];

/// The metrics [`pod_metrics`] fills. Static: kubelet reads them once.
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

/// One container of a pod, for [`pod_metrics`].
#[derive(Debug, Clone, Default)]
pub struct ContainerMetricsInput<'a> {
    /// The container id.
    pub id: &'a str,
    /// Its CRI name (metadata name).
    pub name: &'a str,
    /// Its image, as the CRI container status reports it.
    pub image: &'a str,
    /// Its cgroup; `None` when it is not running (no metrics then).
    pub cgroup: Option<&'a CgroupSample>,
}

/// One pod, for [`pod_metrics`].
#[derive(Debug, Clone, Default)]
pub struct PodMetricsInput<'a> {
    /// The sandbox id.
    pub sandbox_id: &'a str,
    /// The pod's name.
    pub pod: &'a str,
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod cgroup.
    pub cgroup: Option<&'a CgroupSample>,
    /// The pod's network; `None` for host network or when unreadable.
    pub network: Option<&'a NetworkSample>,
    /// Its containers.
    pub containers: Vec<ContainerMetricsInput<'a>>,
}

/// One pod's metrics: the pod cgroup and network as the pod's own rows, each running
/// container's cgroup as its rows.
pub fn pod_metrics(input: &PodMetricsInput<'_>) -> PodSandboxMetrics {
    let pod_labels = labels("", input.sandbox_id, "", "", input);
    let mut metrics = input
        .cgroup
        .map(|s| cgroup_metrics(&pod_labels, s))
        .unwrap_or_default();
    if let Some(net) = input.network {
        metrics.extend(network_metrics(&pod_labels, net));
    }
    let container_metrics = input
        .containers
        .iter()
        .map(|c| ContainerMetrics {
            container_id: c.id.to_owned(),
            metrics: c
                .cgroup
                .map(|s| cgroup_metrics(&labels(c.name, c.id, c.image, c.name, input), s))
                .unwrap_or_default(),
        })
        .collect();
    PodSandboxMetrics {
        pod_sandbox_id: input.sandbox_id.to_owned(),
        metrics,
        container_metrics,
    }
}

/// Values for [`BASE_LABELS`], in their order.
fn labels(
    container: &str,
    id: &str,
    image: &str,
    name: &str,
    pod: &PodMetricsInput<'_>,
) -> Vec<String> {
    [container, id, image, name, pod.namespace, pod.pod]
        .map(str::to_owned)
        .to_vec()
}

fn metric(name: &'static str, base: &[String], extra: &[&str], value: u64) -> Metric {
    let kind = DESCRIPTORS
        .iter()
        .find(|d| d.0 == name)
        .map_or(Gauge, |d| d.2);
    Metric {
        name: name.to_owned(),
        timestamp: 0,
        metric_type: kind as i32,
        label_values: base
            .iter()
            .cloned()
            .chain(extra.iter().map(|&v| v.to_owned()))
            .collect(),
        value: Some(UInt64Value { value }),
    }
}

fn cgroup_metrics(base: &[String], s: &CgroupSample) -> Vec<Metric> {
    let m = &s.memory;
    let mut out = vec![
        metric(CPU_USAGE, base, &[], s.cpu_usage_nanos / 1_000_000_000),
        metric(MEMORY_USAGE, base, &[], m.usage_bytes),
        metric(MEMORY_WORKING_SET, base, &[], m.working_set_bytes),
        metric(MEMORY_RSS, base, &[], m.rss_bytes),
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
    if let Some(tasks) = s.pids {
        out.push(metric(THREADS, base, &[], tasks));
    }
    out
}

fn network_metrics(base: &[String], net: &NetworkSample) -> Vec<Metric> {
    net.interfaces
        .iter()
        .flat_map(|i| {
            let name = [i.name.as_str()];
            [
                (RX_BYTES, i.rx_bytes),
                (RX_PACKETS, i.rx_packets),
                (RX_DROPPED, i.rx_dropped),
                (RX_ERRORS, i.rx_errors),
                (TX_BYTES, i.tx_bytes),
                (TX_PACKETS, i.tx_packets),
                (TX_DROPPED, i.tx_dropped),
                (TX_ERRORS, i.tx_errors),
            ]
            .map(|(metric_name, v)| metric(metric_name, base, &name, v))
        })
        .collect()
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
