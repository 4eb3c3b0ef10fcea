//! A crustd with a pod network on a bridge of its own and the busybox test image, and
//! the CRI calls the pod tests share. Everything a failed test leaves (shims, pid
//! holders, mounts, the bridge) is swept up on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;
use tempfile::TempDir;
use tonic::transport::Channel;

use super::{Crustd, mirror_config};

/// The image the pod tests run.
pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

/// A crustd with a pod network, and the clean-up of everything under its dirs.
pub struct Node {
    /// The daemon.
    pub crustd: Crustd,
    net: TempDir,
    bridge: &'static str,
}

impl Node {
    /// A crustd whose pod network is bridge `bridge` on `subnet` (a /24 of its own per
    /// test file), with the busybox image pulled.
    pub async fn start(bridge: &'static str, subnet: &str) -> Node {
        Node::start_with(bridge, subnet, None).await
    }

    /// The same, with a plugin of the test's own chained after the others: `plugin`
    /// is its name and a script of its own, put in a bin dir searched first.
    pub async fn start_with(
        bridge: &'static str,
        subnet: &str,
        plugin: Option<(&str, &str)>,
    ) -> Node {
        Node::start_configured(bridge, subnet, plugin, "").await
    }

    /// The same, with `config` (TOML tables, such as `[cgroup]`) added to crustd's.
    pub async fn start_configured(
        bridge: &'static str,
        subnet: &str,
        plugin: Option<(&str, &str)>,
        config: &str,
    ) -> Node {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the lifecycle tests need root"
        );
        let net = tempfile::Builder::new()
            .prefix("crust-lc.")
            .tempdir()
            .unwrap();
        let conf_dir = net.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("crust-{bridge}"),
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": net.path().join("ipam"),
                    }
                },
                // No loopback plugin, as in most cluster CNI configs: crustd brings
                // lo up itself.
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let mut conflist = conflist;
        let bin_dir = net.path().join("bin");
        if let Some((name, script)) = plugin {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&bin_dir).unwrap();
            let path = bin_dir.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, PermissionsExt::from_mode(0o755)).unwrap();
            conflist["plugins"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({ "type": name }));
        }
        std::fs::write(conf_dir.join("10-lc.conflist"), conflist.to_string()).unwrap();
        let extra = format!(
            "[network]\nconf_dir = {:?}\nbin_dirs = [{:?}, \"/usr/lib/cni\"]\n{}\n{config}",
            conf_dir,
            bin_dir,
            mirror_config()
        );
        let crustd = Crustd::start(&extra).await;
        let node = Node {
            crustd,
            net,
            bridge,
        };
        node.crustd.pull(IMAGE).await.expect("pull busybox");
        node
    }

    /// A RuntimeService client.
    pub async fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.crustd.runtime().await
    }

    /// Where pods' log directories go.
    pub fn logs(&self) -> PathBuf {
        self.net.path().join("logs")
    }

    /// crustd's state dir.
    pub fn state(&self) -> PathBuf {
        self.crustd.dir.path().join("state")
    }

    /// host-local's data dir.
    pub fn ipam(&self) -> PathBuf {
        self.net.path().join("ipam")
    }

    /// Mount points under crustd's dirs (the netns dirs count: they are bind mounts).
    pub fn mounts(&self, what: &str) -> Vec<String> {
        super::mounts_under(self.crustd.dir.path(), what)
    }
}

impl Drop for Node {
    /// Whatever a failed test left: shims and pid holders (found by their state dir
    /// on the command line), mounts, the bridge.
    fn drop(&mut self) {
        let dir = self.crustd.dir.path().to_str().unwrap().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&dir)
                    && let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>()
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        for m in self.mounts("").into_iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("ip")
            .args(["link", "del", self.bridge])
            .output();
    }
}

pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "lifecycle".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.join(name).display().to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

pub fn container_config(name: &str, cmd: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

pub async fn run_pod(rt: &mut RuntimeServiceClient<Channel>, config: &PodSandboxConfig) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .expect("run pod")
    .into_inner()
    .pod_sandbox_id
}

/// The pods crustd lists.
pub async fn list_pods(rt: &mut RuntimeServiceClient<Channel>) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list pods")
        .into_inner()
        .items
}

/// Removes a pod (stopping it first), with its containers.
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("remove pod");
}

pub async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .expect("create container")
    .into_inner()
    .container_id
}

pub async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.start_container(StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("start container");
}

pub async fn status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    rt.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("container status")
    .into_inner()
    .status
    .unwrap()
}

pub async fn exec(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

/// Waits until the container is in `state`, or fails after 20 s.
pub async fn wait_state(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    state: ContainerState,
) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(rt, id).await;
        if s.state == state as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {state:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the log file holds `needle`.
pub async fn wait_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {needle:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
