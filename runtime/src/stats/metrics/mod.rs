//! ListMetricDescriptors and ListPodSandboxMetrics: cadvisor's names for the figures
//! crust samples, so kubelet can serve `/metrics/cadvisor` from the runtime.
//!
//! Every descriptor listed is filled from a sample or the container's config; a figure
//! crust cannot measure has no descriptor, and a figure this host lacks (no swap
//! accounting, no block I/O accounted) has no rows. Labels follow kubelet's cadvisor
//! endpoint: `container`, `id`, `image`, `name`, `namespace`, `pod`, plus a metric's
//! own (`cpu`, `failure_type`/`scope`, `device`, `major`/`minor`/`operation`,
//! `interface`). A container's rows carry its CRI name in `container` and `name`, its
//! id in `id` and its image; the pod's own rows (the pod cgroup, the network) leave
//! `container`, `image` and `name` empty, as cadvisor does for the pod cgroup, so that
//! `container!=""` selects containers only. Values are gathered live: every timestamp
//! is 0.
//!
//! Units are cadvisor's, which kubelet serves unchanged: it turns each value into the
//! Prometheus sample as it comes (`float64(value)`), so a `_seconds` metric must be
//! sent in seconds, never nanoseconds. CRI carries a value as a whole number
//! (`UInt64Value`), so a duration loses its fraction: crust rounds CPU and throttled
//! time to the nearest second (0.71 s reads 1), where CRI-O and containerd truncate
//! (0.71 s reads 0, and a container that used less than a second in all shows none).
//! Instants (`container_last_seen`, `container_start_time_seconds`) are truncated, as
//! cadvisor's are.
//!
//! The families: `cgroup` (CPU, memory, processes, block I/O of a cgroup),
//! `container` (the writable layer's filesystem, the spec, the start time) and the
//! pod's network here.

use crust_proto::cri::{
    ContainerMetrics, LinuxContainerResources, Metric, PodSandboxMetrics, UInt64Value,
};

use super::{CgroupSample, FsCapacity, FsSample, NetworkSample};

mod cgroup;
mod container;
mod descriptors;

pub use descriptors::metric_descriptors;
use descriptors::*;

/// One container of a pod, for [`pod_metrics`].
#[derive(Debug, Clone, Default)]
pub struct ContainerMetricsInput<'a> {
    /// The container id.
    pub id: &'a str,
    /// Its CRI name (metadata name).
    pub name: &'a str,
    /// Its image, as the CRI container status reports it.
    pub image: &'a str,
    /// Its cgroup; `None` when it is not running (no cgroup rows then).
    pub cgroup: Option<&'a CgroupSample>,
    /// When it started, in nanoseconds since the Unix epoch; `None` before.
    pub started_at: Option<i64>,
    /// Its CRI resources (as created, or as last updated).
    pub resources: Option<&'a LinuxContainerResources>,
    /// Its writable layer's usage.
    pub layer: Option<&'a FsSample>,
    /// The filesystem the writable layer is on.
    pub filesystem: Option<&'a FsCapacity>,
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

/// One pod's metrics: the pod cgroup and network as the pod's own rows; each
/// container's cgroup (while it runs), writable layer, spec and start time as its
/// rows.
pub fn pod_metrics(input: &PodMetricsInput<'_>) -> PodSandboxMetrics {
    let pod_labels = labels("", input.sandbox_id, "", "", input);
    let mut metrics = input
        .cgroup
        .map(|s| cgroup::rows(&pod_labels, s))
        .unwrap_or_default();
    if let Some(net) = input.network {
        metrics.extend(network_rows(&pod_labels, net));
    }
    let container_metrics = input
        .containers
        .iter()
        .map(|c| {
            let base = labels(c.name, c.id, c.image, c.name, input);
            let mut rows = c.cgroup.map(|s| cgroup::rows(&base, s)).unwrap_or_default();
            rows.extend(container::rows(&base, c));
            ContainerMetrics {
                container_id: c.id.to_owned(),
                metrics: rows,
            }
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

/// One row of metric `name`: the base labels, then its own.
fn metric(name: &'static str, base: &[String], extra: &[&str], value: u64) -> Metric {
    Metric {
        name: name.to_owned(),
        timestamp: 0,
        metric_type: kind(name) as i32,
        label_values: base
            .iter()
            .cloned()
            .chain(extra.iter().map(|&v| v.to_owned()))
            .collect(),
        value: Some(UInt64Value { value }),
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A duration in nanoseconds as whole seconds, to the nearest: the best a CRI metric
/// can carry (see the module doc), half the error of truncating, and the same step at
/// every second so a counter still only grows.
fn seconds(nanos: u64) -> u64 {
    nanos / NANOS_PER_SECOND + u64::from(nanos % NANOS_PER_SECOND >= NANOS_PER_SECOND / 2)
}

/// An instant in nanoseconds since the Unix epoch as whole seconds, truncated, as
/// cadvisor reports its instants (`Time.Unix()`).
fn unix_seconds(nanos: u64) -> u64 {
    nanos / NANOS_PER_SECOND
}

fn network_rows(base: &[String], net: &NetworkSample) -> Vec<Metric> {
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
mod tests;
