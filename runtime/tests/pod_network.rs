//! Pod networking through crustd at scale: 100 pods, each with a busybox httpd, reached
//! from the host at the pod IP, then stopped and removed; and a pod whose host port
//! answers through the portmap plugin. Afterwards nothing may be left: no veth, no
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
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
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
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
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
