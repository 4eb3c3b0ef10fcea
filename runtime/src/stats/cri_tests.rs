use std::collections::HashMap;

use crust_proto::cri::ContainerMetadata;

use super::*;
use crate::stats::MemorySample;

fn sample() -> CgroupSample {
    CgroupSample {
        timestamp: 42,
        cpu_usage_nanos: 7_000,
        memory: MemorySample {
            usage_bytes: 100,
            working_set_bytes: 60,
            rss_bytes: 30,
            page_faults: 5,
            major_page_faults: 1,
            cache_bytes: 0,
            mapped_file_bytes: 0,
            available_bytes: Some(40),
        },
        pids: Some(3),
        pressure: Default::default(),
        detail: Default::default(),
    }
}

fn attrs(id: &str) -> ContainerAttributes {
    ContainerAttributes {
        id: id.into(),
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        labels: HashMap::new(),
        annotations: HashMap::new(),
    }
}

fn iface(name: &str, rx: u64) -> InterfaceSample {
    InterfaceSample {
        name: name.into(),
        rx_bytes: rx,
        tx_errors: 2,
        ..Default::default()
    }
}

#[test]
fn container_stats_carries_every_figure() {
    let layer = FsSample {
        timestamp: 43,
        fs_id: "/var/lib/crust/containers".into(),
        used_bytes: 4096,
        inodes_used: 3,
    };
    let s = container_stats(attrs("c1"), Some(&sample()), Some(250), Some(layer));
    assert_eq!(s.attributes.unwrap().id, "c1");
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.timestamp, 42);
    assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 7_000);
    assert_eq!(cpu.usage_nano_cores.unwrap().value, 250);
    let mem = s.memory.unwrap();
    assert_eq!(mem.timestamp, 42);
    assert_eq!(mem.usage_bytes.unwrap().value, 100);
    assert_eq!(mem.working_set_bytes.unwrap().value, 60);
    assert_eq!(mem.rss_bytes.unwrap().value, 30);
    assert_eq!(mem.page_faults.unwrap().value, 5);
    assert_eq!(mem.major_page_faults.unwrap().value, 1);
    assert_eq!(mem.available_bytes.unwrap().value, 40);
    let fs = s.writable_layer.unwrap();
    assert_eq!(fs.timestamp, 43);
    assert_eq!(fs.fs_id.unwrap().mountpoint, "/var/lib/crust/containers");
    assert_eq!(fs.used_bytes.unwrap().value, 4096);
    assert_eq!(fs.inodes_used.unwrap().value, 3);
}

#[test]
fn missing_figures_stay_unset() {
    let mut unlimited = sample();
    unlimited.memory.available_bytes = None;
    let s = container_stats(attrs("c1"), Some(&unlimited), None, None);
    assert!(s.cpu.unwrap().usage_nano_cores.is_none());
    assert!(s.memory.unwrap().available_bytes.is_none());
    assert!(s.writable_layer.is_none());

    let stopped = container_stats(attrs("c2"), None, None, None);
    assert!(stopped.cpu.is_none() && stopped.memory.is_none());
    assert_eq!(stopped.attributes.unwrap().id, "c2");
}

#[test]
fn pressure_is_reported_where_the_cgroup_has_it() {
    use crate::stats::{Pressure, Psi, PsiLine};
    let line = |avg10, total_micros| PsiLine {
        avg10,
        avg60: 0.5,
        avg300: 0.25,
        total_micros,
    };
    let mut v2 = sample();
    v2.pressure = Pressure {
        cpu: Some(Psi {
            some: line(12.5, 3),
            full: None,
        }),
        memory: Some(Psi {
            some: line(1.0, 40),
            full: Some(line(0.75, 20)),
        }),
        io: Some(Psi {
            some: line(2.0, 7),
            full: Some(line(1.0, 5)),
        }),
    };
    let s = container_stats(attrs("c1"), Some(&v2), None, None);
    let cpu = s.cpu.unwrap().psi.unwrap();
    let some = cpu.some.unwrap();
    // The kernel's microseconds in CRI's nanoseconds.
    assert_eq!(
        (some.avg10, some.avg60, some.avg300, some.total),
        (12.5, 0.5, 0.25, 3_000)
    );
    assert!(cpu.full.is_none());
    let mem = s.memory.unwrap().psi.unwrap();
    assert_eq!(mem.full.unwrap().total, 20_000);
    let io = s.io.unwrap();
    assert_eq!(io.timestamp, 42);
    assert_eq!(io.psi.unwrap().some.unwrap().total, 7_000);

    let pod = pod_stats(PodStatsInput {
        cgroup: Some(&v2),
        ..Default::default()
    });
    let linux = pod.linux.unwrap();
    assert_eq!(linux.cpu.unwrap().psi.unwrap().some.unwrap().avg10, 12.5);
    assert_eq!(
        linux.memory.unwrap().psi.unwrap().some.unwrap().total,
        40_000
    );
    assert_eq!(linux.io.unwrap().psi.unwrap().full.unwrap().total, 5_000);

    // cgroup v1: no PSI and no IO usage at all, as containerd.
    let v1 = container_stats(attrs("c1"), Some(&sample()), None, None);
    assert!(v1.cpu.unwrap().psi.is_none());
    assert!(v1.memory.unwrap().psi.is_none());
    assert!(v1.io.is_none());
}

#[test]
fn pod_stats_has_cgroup_network_processes_and_containers() {
    let net = NetworkSample {
        timestamp: 44,
        interfaces: vec![iface("net1", 1), iface("eth0", 2), iface("net2", 3)],
    };
    let pod = pod_stats(PodStatsInput {
        attributes: PodSandboxAttributes {
            id: "p1".into(),
            ..Default::default()
        },
        cgroup: Some(&sample()),
        nano_cores: Some(9),
        network: Some(&net),
        containers: vec![container_stats(attrs("c1"), None, None, None)],
    });
    assert_eq!(pod.attributes.unwrap().id, "p1");
    let linux = pod.linux.unwrap();
    assert_eq!(linux.cpu.unwrap().usage_nano_cores.unwrap().value, 9);
    assert_eq!(linux.memory.unwrap().working_set_bytes.unwrap().value, 60);
    let process = linux.process.unwrap();
    assert_eq!(
        (process.timestamp, process.process_count.unwrap().value),
        (42, 3)
    );
    let network = linux.network.unwrap();
    assert_eq!(network.timestamp, 44);
    let default = network.default_interface.unwrap();
    assert_eq!(
        (default.name.as_str(), default.rx_bytes.unwrap().value),
        ("eth0", 2)
    );
    assert_eq!(default.tx_errors.unwrap().value, 2);
    // Every interface, the default among them, as kubelet lists them from cadvisor.
    let every: Vec<_> = network
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.rx_bytes.unwrap().value))
        .collect();
    assert_eq!(every, [("net1", 1), ("eth0", 2), ("net2", 3)]);
    assert_eq!(linux.containers.len(), 1);
    assert!(pod.windows.is_none());
}

#[test]
fn first_interface_is_default_without_eth0() {
    let net = NetworkSample {
        timestamp: 1,
        interfaces: vec![iface("ens3", 1), iface("ens4", 2)],
    };
    let pod = pod_stats(PodStatsInput {
        network: Some(&net),
        ..Default::default()
    });
    let network = pod.linux.unwrap().network.unwrap();
    assert_eq!(network.default_interface.unwrap().name, "ens3");
    assert_eq!(network.interfaces.len(), 2);

    let empty = NetworkSample::default();
    let pod = pod_stats(PodStatsInput {
        network: Some(&empty),
        ..Default::default()
    });
    assert_eq!(
        pod.linux.unwrap().network,
        None,
        "no interface, no network usage"
    );
}

#[test]
fn a_pod_with_only_eth0_lists_it_among_the_interfaces() {
    let net = NetworkSample {
        timestamp: 1,
        interfaces: vec![iface("eth0", 70)],
    };
    let pod = pod_stats(PodStatsInput {
        network: Some(&net),
        ..Default::default()
    });
    let network = pod.linux.unwrap().network.unwrap();
    let eth0 = interface(&net.interfaces[0]);
    assert_eq!(network.default_interface, Some(eth0.clone()));
    assert_eq!(network.interfaces, [eth0]);
}

#[test]
fn pod_without_samples_reports_only_containers() {
    let pod = pod_stats(PodStatsInput::default());
    let linux = pod.linux.unwrap();
    assert!(linux.cpu.is_none() && linux.memory.is_none());
    assert!(linux.network.is_none() && linux.process.is_none());
}
