//! Samples into CRI stats messages. Pure functions: the RPC layer samples, then calls
//! these.

use crust_proto::cri::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, PsiData, PsiStats, UInt64Value,
};

use super::{CgroupSample, FsSample, InterfaceSample, NetworkSample, Psi, PsiLine};

/// The interface kubelet treats as the pod's own (CNI's convention, as containerd).
const DEFAULT_INTERFACE: &str = "eth0";

fn value(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// CRI's PSI: the kernel's figures, its total (microseconds) in nanoseconds, as CRI
/// has it and containerd converts it.
fn psi(psi: Option<&Psi>) -> Option<PsiStats> {
    let data = |l: &PsiLine| PsiData {
        total: l.total_micros.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    psi.map(|p| PsiStats {
        full: p.full.as_ref().map(data),
        some: Some(data(&p.some)),
    })
}

/// CRI's CPU figures: the cumulative counter and, from the second sample on, the rate
/// ([`CpuRates`](super::CpuRates)).
fn cpu(sample: &CgroupSample, nano_cores: Option<u64>) -> CpuUsage {
    CpuUsage {
        timestamp: sample.timestamp,
        usage_core_nano_seconds: value(sample.cpu_usage_nanos),
        usage_nano_cores: nano_cores.and_then(value),
        psi: psi(sample.pressure.cpu.as_ref()),
    }
}

/// CRI's IO figures, which are PSI alone: none without it (cgroup v1).
fn io(sample: &CgroupSample) -> Option<IoUsage> {
    let psi = psi(sample.pressure.io.as_ref())?;
    Some(IoUsage {
        timestamp: sample.timestamp,
        psi: Some(psi),
    })
}

fn memory(sample: &CgroupSample) -> MemoryUsage {
    let m = &sample.memory;
    MemoryUsage {
        timestamp: sample.timestamp,
        working_set_bytes: value(m.working_set_bytes),
        available_bytes: m.available_bytes.and_then(value),
        usage_bytes: value(m.usage_bytes),
        rss_bytes: value(m.rss_bytes),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
        psi: psi(sample.pressure.memory.as_ref()),
    }
}

fn filesystem(layer: FsSample) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: layer.timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: layer.fs_id,
        }),
        used_bytes: value(layer.used_bytes),
        inodes_used: value(layer.inodes_used),
    }
}

/// One container's stats. Without a cgroup sample (a container not running) CPU and
/// memory are left out rather than reported as zero; without a layer sample, the
/// writable layer is.
pub fn container_stats(
    attributes: ContainerAttributes,
    sample: Option<&CgroupSample>,
    nano_cores: Option<u64>,
    layer: Option<FsSample>,
) -> ContainerStats {
    ContainerStats {
        attributes: Some(attributes),
        cpu: sample.map(|s| cpu(s, nano_cores)),
        memory: sample.map(memory),
        writable_layer: layer.map(filesystem),
        swap: None,
        io: sample.and_then(io),
    }
}

/// What [`pod_stats`] reports on.
#[derive(Debug, Clone, Default)]
pub struct PodStatsInput<'a> {
    /// The pod.
    pub attributes: PodSandboxAttributes,
    /// The pod cgroup, which holds every container of the pod.
    pub cgroup: Option<&'a CgroupSample>,
    /// The pod's CPU rate, from [`CpuRates`](super::CpuRates) keyed by the sandbox id.
    pub nano_cores: Option<u64>,
    /// The pod's network namespace; `None` for host network or when unreadable.
    pub network: Option<&'a NetworkSample>,
    /// Its containers' stats, from [`container_stats`].
    pub containers: Vec<ContainerStats>,
}

fn interface(i: &InterfaceSample) -> NetworkInterfaceUsage {
    NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    }
}

/// `eth0` (or else the first interface) as the default, and every interface, the
/// default among them, in `interfaces`: what kubelet's summary lists when cadvisor
/// fills it, and what containerd sends. A namespace with no interface (a stopped pod's,
/// whose CNI DEL took them away) has no network usage at all, as in containerd: kubelet
/// reads the default interface of any usage it gets, and dereferences a missing one.
fn network(sample: &NetworkSample) -> Option<NetworkUsage> {
    let default = sample
        .interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .or(sample.interfaces.first())?;
    Some(NetworkUsage {
        timestamp: sample.timestamp,
        default_interface: Some(interface(default)),
        interfaces: sample.interfaces.iter().map(interface).collect(),
    })
}

/// One pod's stats: the pod cgroup's CPU, memory and task count, its network and its
/// containers.
pub fn pod_stats(input: PodStatsInput<'_>) -> PodSandboxStats {
    let cgroup = input.cgroup;
    PodSandboxStats {
        attributes: Some(input.attributes),
        linux: Some(LinuxPodSandboxStats {
            cpu: cgroup.map(|s| cpu(s, input.nano_cores)),
            memory: cgroup.map(memory),
            network: input.network.and_then(network),
            process: cgroup.and_then(|s| {
                s.pids.map(|n| ProcessUsage {
                    timestamp: s.timestamp,
                    process_count: value(n),
                })
            }),
            containers: input.containers,
            io: cgroup.and_then(io),
        }),
        windows: None,
    }
}

#[cfg(test)]
#[path = "cri_tests.rs"]
mod tests;
