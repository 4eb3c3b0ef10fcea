use std::collections::{BTreeSet, HashMap};

use crust_proto::cri::MetricType;

use super::*;
use crate::stats::{
    BlkioDevice, CfsSample, CgroupDetail, InterfaceSample, MemorySample, ProcessSample,
};

fn sample() -> CgroupSample {
    CgroupSample {
        timestamp: 1_700_000_000_500_000_000,
        cpu_usage_nanos: 2_500_000_000,
        memory: MemorySample {
            usage_bytes: 100,
            working_set_bytes: 60,
            rss_bytes: 30,
            page_faults: 5,
            major_page_faults: 1,
            cache_bytes: 40,
            mapped_file_bytes: 8,
            available_bytes: None,
        },
        pids: Some(4),
        pressure: Default::default(),
        detail: CgroupDetail {
            cpu_user_nanos: Some(2_000_000_000),
            cpu_system_nanos: Some(500_000_000),
            cfs: Some(CfsSample {
                periods: 40,
                throttled_periods: 7,
                throttled_nanos: 3_200_000_000,
            }),
            memory_failcnt: Some(2),
            memory_max_usage_bytes: Some(120),
            memory_kernel_bytes: Some(12),
            swap_bytes: Some(0),
            oom_kills: Some(1),
            pids_max: Some(0),
            processes: Some(ProcessSample {
                processes: 2,
                file_descriptors: 9,
                sockets: 1,
            }),
            blkio: vec![BlkioDevice {
                major: 8,
                minor: 0,
                name: "/dev/sda".into(),
                bytes: vec![("Read".into(), 4096), ("Write".into(), 8192)],
                ios: vec![("Read".into(), 1), ("Write".into(), 2)],
            }],
        },
    }
}

fn resources() -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 20_000,
        cpu_shares: 1024,
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 64 << 20,
        ..Default::default()
    }
}

fn layer() -> FsSample {
    FsSample {
        timestamp: 1,
        fs_id: "/var/lib/crust/containers".into(),
        used_bytes: 8192,
        inodes_used: 12,
    }
}

fn capacity() -> FsCapacity {
    FsCapacity {
        device: "/dev/vda1".into(),
        capacity_bytes: 10 << 30,
        inodes_total: 1000,
        inodes_free: 600,
    }
}

struct Fixture {
    cgroup: CgroupSample,
    net: NetworkSample,
    resources: LinuxContainerResources,
    layer: FsSample,
    capacity: FsCapacity,
}

fn fixture() -> Fixture {
    Fixture {
        cgroup: sample(),
        net: net(),
        resources: resources(),
        layer: layer(),
        capacity: capacity(),
    }
}

fn full_pod(f: &Fixture) -> PodMetricsInput<'_> {
    PodMetricsInput {
        sandbox_id: "p1",
        pod: "web",
        namespace: "default",
        cgroup: Some(&f.cgroup),
        network: Some(&f.net),
        containers: vec![
            ContainerMetricsInput {
                id: "c1",
                name: "app",
                image: "docker.io/library/busybox:latest",
                cgroup: Some(&f.cgroup),
                started_at: Some(1_699_999_990_900_000_000),
                resources: Some(&f.resources),
                layer: Some(&f.layer),
                filesystem: Some(&f.capacity),
            },
            ContainerMetricsInput {
                id: "c2",
                name: "stopped",
                image: "img",
                cgroup: None,
                ..Default::default()
            },
        ],
    }
}

fn net() -> NetworkSample {
    NetworkSample {
        timestamp: 1,
        interfaces: vec![InterfaceSample {
            name: "eth0".into(),
            rx_bytes: 10,
            tx_bytes: 20,
            ..Default::default()
        }],
    }
}

fn all(m: &PodSandboxMetrics) -> Vec<&Metric> {
    m.metrics
        .iter()
        .chain(m.container_metrics.iter().flat_map(|c| &c.metrics))
        .collect()
}

fn find<'a>(metrics: &[&'a Metric], name: &str, first_label: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|m| m.name == name && m.label_values[0] == first_label)
        .unwrap_or_else(|| panic!("no {name} for {first_label:?}"))
}

fn value(metrics: &[&Metric], name: &str, first_label: &str) -> u64 {
    find(metrics, name, first_label)
        .value
        .as_ref()
        .unwrap()
        .value
}

#[test]
fn every_descriptor_is_filled_with_matching_labels() {
    let f = fixture();
    let out = pod_metrics(&full_pod(&f));
    let descriptors: HashMap<_, _> = metric_descriptors()
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    assert_eq!(descriptors.len(), DESCRIPTORS.len(), "duplicate names");
    let metrics = all(&out);
    let filled: BTreeSet<_> = metrics.iter().map(|m| m.name.as_str()).collect();
    let listed: BTreeSet<_> = descriptors.keys().map(String::as_str).collect();
    assert_eq!(filled, listed);
    for d in descriptors.values() {
        assert!(!d.help.is_empty() && !d.label_keys.is_empty(), "{}", d.name);
    }
    for m in metrics {
        let d = &descriptors[&m.name];
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        assert_eq!(m.timestamp, 0);
        // cadvisor's counters end in _total, but for failcnt; inodes_total is a gauge.
        let counter =
            (m.name.ends_with("_total") && m.name != FS_INODES_TOTAL) || m.name == MEMORY_FAILCNT;
        let kind = if counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        assert_eq!(m.metric_type, kind as i32, "{}", m.name);
    }
}

#[test]
fn values_and_labels() {
    let f = fixture();
    let out = pod_metrics(&full_pod(&f));
    assert_eq!(out.pod_sandbox_id, "p1");
    let ids: Vec<_> = out
        .container_metrics
        .iter()
        .map(|c| c.container_id.as_str())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);

    let metrics = all(&out);
    // 2.5 s of CPU, to the nearest second.
    let cpu = find(&metrics, CPU_USAGE, "app");
    assert_eq!(cpu.value.as_ref().unwrap().value, 3);
    assert_eq!(
        cpu.label_values,
        [
            "app",
            "c1",
            "docker.io/library/busybox:latest",
            "app",
            "default",
            "web",
            "total"
        ]
    );
    let pod_ws = find(&metrics, MEMORY_WORKING_SET, "");
    assert_eq!(pod_ws.label_values, ["", "p1", "", "", "default", "web"]);
    assert_eq!(pod_ws.value.as_ref().unwrap().value, 60);
    let majfault = metrics
        .iter()
        .find(|m| m.name == MEMORY_FAILURES && m.label_values[6] == "pgmajfault")
        .unwrap();
    assert_eq!(majfault.label_values[7], "hierarchy");
    assert_eq!(majfault.value.as_ref().unwrap().value, 1);
    let tx = find(&metrics, TX_BYTES, "");
    assert_eq!(tx.label_values[6], "eth0");
    assert_eq!(tx.value.as_ref().unwrap().value, 20);

    let expected = [
        (LAST_SEEN, 1_700_000_000),
        (CPU_USER, 2),
        (CPU_SYSTEM, 1),
        (CFS_PERIODS, 40),
        (CFS_THROTTLED_PERIODS, 7),
        (CFS_THROTTLED_SECONDS, 3),
        (MEMORY_CACHE, 40),
        (MEMORY_MAPPED_FILE, 8),
        (MEMORY_KERNEL, 12),
        (MEMORY_SWAP, 0),
        (MEMORY_FAILCNT, 2),
        (MEMORY_MAX_USAGE, 120),
        (OOM_EVENTS, 1),
        (THREADS, 4),
        (THREADS_MAX, 0),
        (PROCESSES, 2),
        (FILE_DESCRIPTORS, 9),
        (SOCKETS, 1),
        (SPEC_CPU_PERIOD, 100_000),
        (SPEC_CPU_QUOTA, 20_000),
        (SPEC_CPU_SHARES, 1024),
        (SPEC_MEMORY_LIMIT, 64 << 20),
        (SPEC_MEMORY_SWAP_LIMIT, 64 << 20),
        (START_TIME, 1_699_999_990),
        (FS_USAGE, 8192),
        (FS_LIMIT, 10 << 30),
        (FS_INODES_TOTAL, 1000),
        (FS_INODES_FREE, 600),
        (FS_READ_BYTES, 4096),
        (FS_WRITE_BYTES, 8192),
        (FS_READS, 1),
        (FS_WRITES, 2),
    ];
    for (name, want) in expected {
        assert_eq!(value(&metrics, name, "app"), want, "{name}");
    }
    assert_eq!(find(&metrics, FS_USAGE, "app").label_values[6], "/dev/vda1");
    let write = metrics
        .iter()
        .find(|m| m.name == BLKIO_USAGE && m.label_values[9] == "Write")
        .unwrap();
    assert_eq!(write.label_values[6..], ["/dev/sda", "8", "0", "Write"]);
    assert_eq!(write.value.as_ref().unwrap().value, 8192);
}

#[test]
fn the_pod_has_no_container_rows_and_a_stopped_container_no_cgroup_rows() {
    let f = fixture();
    let mut input = full_pod(&f);
    input.containers[1].resources = Some(&f.resources);
    input.containers[1].started_at = Some(5_000_000_000);
    let out = pod_metrics(&input);
    let pod: BTreeSet<_> = out.metrics.iter().map(|m| m.name.as_str()).collect();
    for name in [SPEC_CPU_SHARES, START_TIME, FS_USAGE, FS_LIMIT] {
        assert!(!pod.contains(name), "pod row {name}");
    }
    assert!(pod.contains(PROCESSES) && pod.contains(RX_BYTES));
    let stopped: BTreeSet<_> = out.container_metrics[1]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        stopped,
        BTreeSet::from([
            SPEC_CPU_PERIOD,
            SPEC_CPU_QUOTA,
            SPEC_CPU_SHARES,
            SPEC_MEMORY_LIMIT,
            SPEC_MEMORY_SWAP_LIMIT,
            START_TIME,
        ])
    );
}

#[test]
fn absent_figures_have_no_rows() {
    let mut s = sample();
    s.pids = None;
    s.detail = CgroupDetail::default();
    let unset = LinuxContainerResources::default();
    let input = PodMetricsInput {
        sandbox_id: "p1",
        cgroup: Some(&s),
        containers: vec![ContainerMetricsInput {
            id: "c1",
            cgroup: Some(&s),
            resources: Some(&unset),
            ..Default::default()
        }],
        ..Default::default()
    };
    let out = pod_metrics(&input);
    let metrics = all(&out);
    let names: BTreeSet<_> = metrics.iter().map(|m| m.name.as_str()).collect();
    for name in [
        THREADS,
        THREADS_MAX,
        CPU_USER,
        CFS_PERIODS,
        MEMORY_SWAP,
        MEMORY_MAX_USAGE,
        PROCESSES,
        BLKIO_USAGE,
        FS_USAGE,
        SPEC_CPU_QUOTA,
        START_TIME,
    ] {
        assert!(!names.contains(name), "{name}");
    }
    assert!(out.metrics.iter().all(|m| !m.name.contains("network")));
    assert!(names.contains(CPU_USAGE) && names.contains(LAST_SEEN));
    // Unset CRI resources read as 0, cadvisor's "no limit".
    assert_eq!(value(&metrics, SPEC_MEMORY_LIMIT, ""), 0);
}

#[test]
fn durations_round_to_the_nearest_second_and_instants_truncate() {
    // kubelet serves a CRI metric's whole number as the Prometheus value: 0.71 s of
    // CPU must read 1, not 0.
    let mut s = sample();
    s.timestamp = 1_700_000_000_999_999_999;
    s.cpu_usage_nanos = 710_000_000;
    s.detail.cpu_user_nanos = Some(1_499_999_999);
    s.detail.cpu_system_nanos = Some(1_500_000_000);
    s.detail.cfs = Some(CfsSample {
        periods: 3,
        throttled_periods: 1,
        throttled_nanos: 499_999_999,
    });
    let input = PodMetricsInput {
        sandbox_id: "p1",
        cgroup: Some(&s),
        containers: vec![ContainerMetricsInput {
            id: "c1",
            name: "app",
            cgroup: Some(&s),
            started_at: Some(1_699_999_990_999_999_999),
            ..Default::default()
        }],
        ..Default::default()
    };
    let out = pod_metrics(&input);
    let metrics = all(&out);
    for first_label in ["", "app"] {
        assert_eq!(
            value(&metrics, CPU_USAGE, first_label),
            1,
            "{first_label:?}"
        );
        assert_eq!(value(&metrics, CPU_USER, first_label), 1);
        assert_eq!(value(&metrics, CPU_SYSTEM, first_label), 2);
        assert_eq!(value(&metrics, CFS_THROTTLED_SECONDS, first_label), 0);
        // Instants are whole Unix seconds, as cadvisor's `Time.Unix()`.
        assert_eq!(value(&metrics, LAST_SEEN, first_label), 1_700_000_000);
    }
    assert_eq!(value(&metrics, START_TIME, "app"), 1_699_999_990);
}
