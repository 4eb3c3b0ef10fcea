use std::collections::{BTreeSet, HashMap};

use super::*;
use crate::stats::{InterfaceSample, MemorySample};

fn sample() -> CgroupSample {
    CgroupSample {
        timestamp: 1,
        cpu_usage_nanos: 2_500_000_000,
        memory: MemorySample {
            usage_bytes: 100,
            working_set_bytes: 60,
            rss_bytes: 30,
            page_faults: 5,
            major_page_faults: 1,
            available_bytes: None,
        },
        pids: Some(4),
    }
}

fn full_pod<'a>(s: &'a CgroupSample, net: &'a NetworkSample) -> PodMetricsInput<'a> {
    PodMetricsInput {
        sandbox_id: "p1",
        pod: "web",
        namespace: "default",
        cgroup: Some(s),
        network: Some(net),
        containers: vec![
            ContainerMetricsInput {
                id: "c1",
                name: "app",
                image: "docker.io/library/busybox:latest",
                cgroup: Some(s),
            },
            ContainerMetricsInput {
                id: "c2",
                name: "stopped",
                image: "img",
                cgroup: None,
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

#[test]
fn every_descriptor_is_filled_with_matching_labels() {
    let (s, n) = (sample(), net());
    let out = pod_metrics(&full_pod(&s, &n));
    let descriptors: HashMap<_, _> = metric_descriptors()
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    assert_eq!(descriptors.len(), DESCRIPTORS.len(), "duplicate names");
    let metrics = all(&out);
    let filled: BTreeSet<_> = metrics.iter().map(|m| m.name.as_str()).collect();
    let listed: BTreeSet<_> = descriptors.keys().map(String::as_str).collect();
    assert_eq!(filled, listed);
    for m in metrics {
        let d = &descriptors[&m.name];
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        assert_eq!(m.timestamp, 0);
        let counter = m.name.ends_with("_total");
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
    let (s, n) = (sample(), net());
    let out = pod_metrics(&full_pod(&s, &n));
    assert_eq!(out.pod_sandbox_id, "p1");
    let ids: Vec<_> = out
        .container_metrics
        .iter()
        .map(|c| c.container_id.as_str())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(out.container_metrics[1].metrics.is_empty());

    let metrics = all(&out);
    let cpu = find(&metrics, CPU_USAGE, "app");
    assert_eq!(cpu.value.as_ref().unwrap().value, 2);
    assert_eq!(
        cpu.label_values,
        [
            "app",
            "c1",
            "docker.io/library/busybox:latest",
            "app",
            "default",
            "web"
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
    assert_eq!(
        find(&metrics, THREADS, "app").value.as_ref().unwrap().value,
        4
    );
}

#[test]
fn without_pids_or_network_those_rows_are_absent() {
    let mut s = sample();
    s.pids = None;
    let input = PodMetricsInput {
        sandbox_id: "p1",
        cgroup: Some(&s),
        ..Default::default()
    };
    let out = pod_metrics(&input);
    assert!(out.metrics.iter().all(|m| m.name != THREADS));
    assert!(out.metrics.iter().all(|m| !m.name.contains("network")));
    assert!(out.metrics.iter().any(|m| m.name == CPU_USAGE));
}
