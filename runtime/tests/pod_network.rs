//! Pod networking through crustd at scale: 100 pods, each with a busybox httpd, reached
//! from the host at the pod IP, then stopped and removed; a pod whose host port
//! answers through the portmap plugin; and the pod network stats of a pod reached
//! from the host. Afterwards nothing may be left: no veth, no
//! iptables rule of the network, no IP reservation, no netns pin, no mount. Runs as
//! root. The pod network is bridge `crustpn0` on 10.90.0.0/24; all traffic stays on
//! this machine.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::pods::*;
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;

const BRIDGE: &str = "crustpn0";
const SUBNET: &str = "10.90.0.0/24";
const PODS: usize = 100;
const POD_PORT: u16 = 8080;
const HOST_PORT: u16 = 18090;

/// GETs `/` from `addr`, retrying until the server answers or 10 s pass.
fn http_get(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if body.contains("200 OK") => return body,
            other => assert!(Instant::now() < deadline, "GET {addr}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Host-side traces of the pod network: veths on the bridge, nat rules naming the
/// network or the subnet, and host-local's reservations.
fn traces(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let links = Command::new("ip")
        .args(["-o", "link", "show", "master", BRIDGE])
        .output();
    if let Ok(links) = links {
        out.extend(
            String::from_utf8_lossy(&links.stdout)
                .lines()
                .map(|l| format!("veth: {l}")),
        );
    }
    for table in ["nat", "filter"] {
        let rules = Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .unwrap();
        out.extend(
            String::from_utf8_lossy(&rules.stdout)
                .lines()
                .filter(|r| r.contains(&format!("crust-{BRIDGE}")) || r.contains("10.90.0."))
                .map(|r| format!("{table}: {r}")),
        );
    }
    let ipam = node.ipam().join(format!("crust-{BRIDGE}"));
    if let Ok(dir) = std::fs::read_dir(ipam) {
        out.extend(
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .map(|n| format!("reservation: {n}")),
        );
    }
    out
}

fn httpd(name: &str) -> ContainerConfig {
    let script = format!(
        "mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p {POD_PORT} -h /www"
    );
    container_config(name, &["sh", "-c", &script])
}

async fn pod_ip(rt: &mut RuntimeServiceClient<tonic::transport::Channel>, pod: &str) -> String {
    rt.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
    .network
    .unwrap()
    .ip
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_hundred_pods_answer_at_their_ips_and_leave_nothing_behind() {
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let started = Instant::now();
    for i in 0..PODS {
        let name = format!("net-{i}");
        let config = pod_config(&name, &node.logs());
        let pod = run_pod(&mut rt, &config).await;
        let ctr = create(&mut rt, &pod, &config, httpd(&name)).await;
        start(&mut rt, &ctr).await;
        let ip = pod_ip(&mut rt, &pod).await;
        assert!(ip.starts_with("10.90.0."), "pod {name}: ip {ip:?}");
        let addr: SocketAddr = format!("{ip}:{POD_PORT}").parse().unwrap();
        let body = tokio::task::spawn_blocking(move || http_get(addr))
            .await
            .unwrap();
        assert!(body.contains(&format!("hello from {name}")), "{body}");
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        remove_pod(&mut rt, &pod).await;
    }
    println!(
        "{PODS} pods run, reached, stopped and removed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let left = traces(&node);
    assert!(left.is_empty(), "left behind: {left:#?}");
    for kind in ["net", "uts", "ipc", "pid", "user"] {
        let dir = node.state().join("ns").join(kind);
        assert!(entries(&dir).is_empty(), "pins left in {}", dir.display());
    }
    let mounts: Vec<String> = node
        .mounts("")
        .into_iter()
        .filter(|m| {
            !["/ns/net", "/ns/uts", "/ns/ipc", "/ns/pid", "/ns/user"]
                .iter()
                .any(|d| m.ends_with(d))
        })
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_host_port_reaches_the_pod_through_loopback_and_the_host_address() {
    let node = Node::start("crustpm0", "10.91.0.0/24").await;
    let mut rt = node.rt().await;
    let mut config = pod_config("ported", &node.logs());
    config.port_mappings.push(PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: i32::from(POD_PORT),
        host_port: i32::from(HOST_PORT),
        host_ip: String::new(),
    });
    let pod = run_pod(&mut rt, &config).await;
    let ctr = create(&mut rt, &pod, &config, httpd("ported")).await;
    start(&mut rt, &ctr).await;
    let host_ip = host_address();
    for addr in [
        format!("127.0.0.1:{HOST_PORT}"),
        format!("{host_ip}:{HOST_PORT}"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let body = tokio::task::spawn_blocking(move || http_get(addr))
            .await
            .unwrap();
        assert!(body.contains("hello from ported"), "{addr}: {body}");
    }
    // The pod's /etc/hosts names it at its IP.
    let ip = pod_ip(&mut rt, &pod).await;
    let hosts = exec(&mut rt, &ctr, &["cat", "/etc/hosts"], 10)
        .await
        .unwrap();
    let hosts = String::from_utf8_lossy(&hosts.stdout).into_owned();
    assert!(hosts.contains(&format!("{ip}\tported")), "{hosts}");
    remove_pod(&mut rt, &pod).await;
    let rules = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        !rules
            .lines()
            .any(|r| r.contains(&format!("--dport {HOST_PORT}"))),
        "host port rule left: {rules}"
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn localhost_answers_in_a_pod_whose_cni_config_has_no_loopback_plugin() {
    // Node's conflist has bridge and portmap only, as most cluster CNI configs.
    let node = Node::start("crustlo0", "10.95.0.0/24").await;
    let mut rt = node.rt().await;
    let config = pod_config("local", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let script = format!(
        "mkdir -p /www && echo hello on lo > /www/index.html && exec httpd -f -p 127.0.0.1:{POD_PORT} -h /www"
    );
    let ctr = create(
        &mut rt,
        &pod,
        &config,
        container_config("local", &["sh", "-c", &script]),
    )
    .await;
    start(&mut rt, &ctr).await;
    let get = format!(
        "for i in $(seq 50); do wget -qO- http://localhost:{POD_PORT}/ && exit 0; sleep 0.1; done; \
         cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; exit 1"
    );
    let out = exec(&mut rt, &ctr, &["sh", "-c", &get], 20).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "hello on lo");
    remove_pod(&mut rt, &pod).await;
}

/// A chained CNI plugin that takes its time on ADD, then hands the previous result on.
const SLOW_PLUGIN: &str = r#"#!/bin/sh
case "$CNI_COMMAND" in
ADD) sleep 3; python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))' ;;
VERSION) echo '{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}' ;;
*) cat >/dev/null ;;
esac
"#;

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_pod_being_started_is_not_listed() {
    let node = Node::start_with(
        "crustsl0",
        "10.96.0.0/24",
        Some(("crust-slow", SLOW_PLUGIN)),
    )
    .await;
    let mut rt = node.rt().await;
    let config = pod_config("slow", &node.logs());
    let mut runner = node.rt().await;
    let run = tokio::spawn(async move { run_pod(&mut runner, &config).await });
    // While RunPodSandbox has not answered, kubelet sees no pod: none NOTREADY that
    // its PLEG would take for one that died.
    let mut polls = 0;
    // Once crustd has answered, the pod is listed READY while the answer is on its way
    // to the runner: only a NOTREADY pod is wrong.
    while !run.is_finished() {
        let stats = rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats;
        let pods = list_pods(&mut rt).await;
        assert!(
            pods.iter()
                .all(|p| p.state == PodSandboxState::SandboxReady as i32),
            "listed NOTREADY while starting: {pods:?}"
        );
        assert!(stats.len() <= pods.len(), "stats while starting: {stats:?}");
        polls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        polls >= 10,
        "the plugin did not slow the start: {polls} polls"
    );
    let pod = run.await.unwrap();
    let pods = list_pods(&mut rt).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, pod);
    assert_eq!(pods[0].state, PodSandboxState::SandboxReady as i32);
    remove_pod(&mut rt, &pod).await;
}

/// The pod's network stats name eth0 twice, as kubelet reads them: as the default
/// interface and among all the interfaces, with the bytes of a request from the host.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn stats_list_the_pod_interfaces_with_their_traffic() {
    let node = Node::start("crustps0", "10.98.0.0/24").await;
    let mut rt = node.rt().await;
    let config = pod_config("counted", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let ctr = create(&mut rt, &pod, &config, httpd("counted")).await;
    start(&mut rt, &ctr).await;
    let ip = pod_ip(&mut rt, &pod).await;
    let addr: SocketAddr = format!("{ip}:{POD_PORT}").parse().unwrap();
    let body = tokio::task::spawn_blocking(move || http_get(addr))
        .await
        .unwrap();
    assert!(body.contains("hello from counted"), "{body}");

    let one = rt
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let listed = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    for (rpc, stats) in [
        ("PodSandboxStats", one),
        ("ListPodSandboxStats", listed[0].clone()),
    ] {
        let network = stats.linux.unwrap().network.unwrap();
        let default = network.default_interface.expect("a default interface");
        assert_eq!(default.name, "eth0", "{rpc}");
        let names: Vec<_> = network.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert!(!names.contains(&"lo"), "{rpc}: {names:?}");
        let eth0 = network
            .interfaces
            .iter()
            .find(|i| i.name == "eth0")
            .unwrap_or_else(|| panic!("{rpc}: no eth0 in {names:?}"));
        assert_eq!(eth0, &default, "{rpc}");
        // The request and its handshake came in on eth0.
        assert!(eth0.rx_bytes.unwrap().value > 0, "{rpc}: {eth0:?}");
        assert!(eth0.tx_bytes.unwrap().value > 0, "{rpc}: {eth0:?}");
    }
    remove_pod(&mut rt, &pod).await;
}

/// The host's first global IPv4 address.
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains(" crust"))
        .find_map(|l| {
            let cidr = l.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
            cidr.split('/').next().map(String::from)
        })
        .expect("the host has a global IPv4 address")
}
