//! Pod networking against the real CNI plugins: a pinned netns, Debian's bridge,
//! host-local, portmap and loopback from /usr/lib/cni (the test command installs
//! containernetworking-plugins), traffic from the host into the pod, and DEL leaving
//! nothing behind. Runs as root. All traffic stays on this machine: bridge `crustnt0`,
//! 10.86.0.0/24, veths and the pod netns; host-local keeps its reservations in the
//! test's temp dir, not the host's /var/lib/cni.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crust_runtime::config::NetworkConfig;
use crust_runtime::network::cni::{
    Attachment, CheckOutcome, Cni, PodIdentity, PortMapping, Protocol, RuntimeConfig,
};
use crust_runtime::network::netns;
use crust_runtime::store::SandboxId;
use tempfile::TempDir;
use tokio::sync::Mutex;

const BRIDGE: &str = "crustnt0";
const NETWORK: &str = "crust-nettest";
const PLUGIN_DIR: &str = "/usr/lib/cni";
const HOST_PORT: u16 = 18086;
const POD_PORT: u16 = 8080;

/// The tests share the bridge and the subnet: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Fails, with what to install, when the machine lacks what these tests need.
fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the network tests need root (netns, bridge, iptables)"
    );
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let path = Path::new(PLUGIN_DIR).join(plugin);
        assert!(
            path.is_file(),
            "{} is missing: install Debian's containernetworking-plugins \
             (apt-get install containernetworking-plugins)",
            path.display()
        );
    }
    for tool in ["ip", "iptables-save", "nsenter"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        assert!(
            found,
            "{tool} is missing: install iproute2, iptables and util-linux"
        );
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A temp state dir with a conflist, a netns dir and host-local's data dir; on drop,
/// removes leftover pins, the bridge and the netns dir's mount.
struct Net {
    dir: TempDir,
    cni: Cni,
}

impl Net {
    fn new() -> Net {
        require_prerequisites();
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        let dir = tempfile::Builder::new()
            .prefix("crust-net.")
            .tempdir()
            .unwrap();
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {
                    "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.86.0.0/24", "gateway": "10.86.0.1"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.path().join("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        });
        std::fs::write(conf_dir.join("10-nettest.conflist"), conflist.to_string()).unwrap();
        let cni = Cni::new(
            NetworkConfig {
                conf_dir,
                bin_dirs: vec![dir.path().join("no-such-bin"), PLUGIN_DIR.into()],
            },
            dir.path().join("cni-cache"),
        );
        Net { dir, cni }
    }

    fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("netns")
    }

    /// host-local's reservation files (addresses), without its bookkeeping.
    fn reservations(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam").join(NETWORK);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect()
    }

    /// Mounts under the temp dir: the netns dir itself and the pins.
    fn mounts(&self) -> usize {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.dir.path().to_str().unwrap();
        table
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(prefix)))
            .count()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.netns_dir()) {
            for e in entries.flatten() {
                let _ = netns::remove(&e.path());
            }
        }
        let _ = nix::mount::umount2(&self.netns_dir(), nix::mount::MntFlags::MNT_DETACH);
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
        sweep_rules();
    }
}

/// Deletes the nat rules and chains of this test's network that a failed test, or the
/// bridge plugin after a DEL without the netns, left: every rule commented with the
/// network's name, and the chain it jumps to.
fn sweep_rules() {
    let iptables = |args: &str| {
        Command::new("sh")
            .args(["-c", &format!("iptables -w -t nat {args}")])
            .output()
    };
    let Ok(out) = iptables("-S") else { return };
    let marker = format!("name: \\\"{NETWORK}\\\"");
    let mut chains = Vec::new();
    for rule in String::from_utf8_lossy(&out.stdout).lines() {
        if rule.starts_with("-A ") && rule.contains(&marker) {
            let _ = iptables(&format!("-D {}", &rule[3..]));
            let target = rule.split(" -j ").nth(1).unwrap_or_default().trim();
            if target.starts_with("CNI-") && !target.starts_with("CNI-HOSTPORT") {
                chains.push(target.to_owned());
            }
        }
    }
    for chain in chains {
        let _ = iptables(&format!("-F {chain}"));
        let _ = iptables(&format!("-X {chain}"));
    }
}

fn pod() -> PodIdentity {
    PodIdentity {
        name: "nettest".into(),
        namespace: "default".into(),
        uid: "0000-nettest".into(),
    }
}

fn attachment<'a>(id: &'a SandboxId, pin: &'a Path, pod: &'a PodIdentity) -> Attachment<'a> {
    Attachment {
        sandbox: id,
        netns: pin,
        pod,
        runtime: RuntimeConfig {
            port_mappings: vec![PortMapping {
                host_port: HOST_PORT,
                container_port: POD_PORT,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            }],
            ..Default::default()
        },
    }
}

fn veths_on_bridge() -> usize {
    sh("ip", &["-o", "link", "show", "master", BRIDGE])
        .lines()
        .count()
}

fn iptables_lines(id: &SandboxId) -> Vec<String> {
    sh("iptables-save", &[])
        .lines()
        .filter(|l| l.contains(id.as_str()))
        .map(str::to_owned)
        .collect()
}

/// Connects to `addr` and reads what the pod's server says.
fn fetch(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_reach_del_with_real_plugins() {
    let _serial = SERIAL.lock().await;
    let net = Net::new();
    let id = SandboxId::generate();
    let pin = netns::create(&net.netns_dir(), &id).unwrap();
    let pod = pod();
    let att = attachment(&id, &pin, &pod);

    let status = net.cni.add(&att).await.unwrap();
    let IpAddr::V4(ip) = status.ips[0] else {
        panic!("no IPv4 pod IP: {status:?}")
    };
    assert!(ip.octets()[..3] == [10, 86, 0] && ip != Ipv4Addr::new(10, 86, 0, 1));
    assert!(net.cni.cache_file(&id).is_file());
    match net.cni.check(&att).await {
        Ok(outcome) => assert_eq!(outcome, CheckOutcome::Passed),
        // containernetworking/plugins#819: portmap up to 1.1 (Debian's) checks for IPv6
        // rules an IPv4-only pod never got. bridge and host-local have passed by then.
        Err(e) if e.to_string().contains("plugin portmap") && e.to_string().contains("ipv6") => {}
        Err(e) => panic!("{e}"),
    }

    // Inside the pod: eth0 has the address, lo is up (the loopback plugin did it).
    let pin_arg = format!("--net={}", pin.display());
    let addrs = sh(
        "nsenter",
        &[&pin_arg, "ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    );
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    let lo = sh("nsenter", &[&pin_arg, "ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    assert_eq!(veths_on_bridge(), 1);
    assert_eq!(net.reservations(), [ip.to_string()]);
    assert!(
        !iptables_lines(&id).is_empty(),
        "portmap and masquerade rules name the id"
    );

    // A server in the pod, reached from the host at the pod IP and through the host port.
    let listener = netns::run_in(&pin, || TcpListener::bind(("0.0.0.0", POD_PORT)))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"hello from the pod").unwrap();
        }
    });
    let direct = tokio::task::spawn_blocking(move || fetch(SocketAddr::new(ip.into(), POD_PORT)));
    assert_eq!(direct.await.unwrap(), "hello from the pod");
    let host_port = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), HOST_PORT);
    let mapped = tokio::task::spawn_blocking(move || fetch(host_port));
    assert_eq!(mapped.await.unwrap(), "hello from the pod");
    server.join().unwrap();

    net.cni.del(&att).await.unwrap();
    assert_eq!(veths_on_bridge(), 0);
    assert!(net.reservations().is_empty(), "{:?}", net.reservations());
    assert_eq!(iptables_lines(&id), Vec::<String>::new());
    assert!(!net.cni.cache_file(&id).exists());
    // DEL again, as a retried StopPodSandbox does.
    net.cni.del(&att).await.unwrap();

    netns::remove(&pin).unwrap();
    assert!(!pin.exists());
    assert_eq!(net.mounts(), 1, "only the netns dir's own mount is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_after_the_netns_is_gone_releases_the_address() {
    let _serial = SERIAL.lock().await;
    let net = Net::new();
    let id = SandboxId::generate();
    let pin = netns::create(&net.netns_dir(), &id).unwrap();
    let pod = pod();
    let att = attachment(&id, &pin, &pod);
    net.cni.add(&att).await.unwrap();

    netns::remove(&pin).unwrap();
    net.cni.del(&att).await.unwrap();
    assert!(net.reservations().is_empty(), "{:?}", net.reservations());
    assert_eq!(veths_on_bridge(), 0);
    // portmap removed its rules. The bridge plugin (up to at least 1.1) finds the
    // addresses to unmasquerade on the pod's interface, so with the netns gone its
    // masquerade rule stays (Net's drop sweeps it): the sandbox lifecycle must DEL
    // before it removes the pin.
    let left = iptables_lines(&id);
    assert!(
        left.iter()
            .all(|l| !l.contains("dnat name") && !l.contains("DNAT")),
        "portmap rules left: {left:?}"
    );
    assert!(!net.cni.cache_file(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_cycles_leak_nothing() {
    let _serial = SERIAL.lock().await;
    let net = Net::new();
    let pod = pod();
    let links_before = sh("ip", &["-o", "link"]).lines().count();
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = SandboxId::generate();
        let pin = netns::create(&net.netns_dir(), &id).unwrap();
        let att = attachment(&id, &pin, &pod);
        let status = net.cni.add(&att).await.unwrap();
        assert!(!status.ips.is_empty());
        net.cni.del(&att).await.unwrap();
        netns::remove(&pin).unwrap();
        ids.push(id);
    }
    assert_eq!(veths_on_bridge(), 0);
    // The bridge is the one link more than before.
    let links_after = sh("ip", &["-o", "link"]).lines().count();
    assert!(
        links_after <= links_before + 1,
        "{links_before} -> {links_after}"
    );
    assert!(net.reservations().is_empty(), "{:?}", net.reservations());
    let rules = sh("iptables-save", &[]);
    for id in &ids {
        assert!(!rules.contains(id.as_str()), "rules of {id} left:\n{rules}");
    }
    assert_eq!(net.mounts(), 1, "only the netns dir's own mount is left");
    assert_eq!(std::fs::read_dir(net.netns_dir()).unwrap().count(), 0);
    let cache = std::fs::read_dir(net.dir.path().join("cni-cache")).unwrap();
    assert_eq!(cache.count(), 0);
}
