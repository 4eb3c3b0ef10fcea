//! A container must not reach the host beyond what its spec grants. Through a real
//! crustd and busybox from the local registry, containers of an ordinary pod try the
//! usual ways out — write a read-only path, load a kernel module, mount, change the
//! hostname without CAP_SYS_ADMIN, reach the host through /proc — and each must fail;
//! and the seccomp profiles must confine exec processes too. Runs as root.
//! The pod network is bridge `crustesc0`, 10.84.0.0/24, kept in the test's temp dir.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Crustd, mirror_config};
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;
use tempfile::TempDir;
use tonic::transport::Channel;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const BRIDGE: &str = "crustesc0";

/// A crustd with a pod network, and the clean-up of what a failed test leaves.
struct Node {
    crustd: Crustd,
    net: TempDir,
}

impl Node {
    async fn start() -> Node {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the escape tests need root"
        );
        let net = tempfile::Builder::new()
            .prefix("crust-esc.")
            .tempdir()
            .unwrap();
        let conf_dir = net.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "crust-escape",
            "plugins": [
                {
                    "type": "bridge", "bridge": BRIDGE, "isGateway": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.84.0.0/24"}]],
                        "dataDir": net.path().join("ipam"),
                    }
                }
            ]
        });
        std::fs::write(conf_dir.join("10-esc.conflist"), conflist.to_string()).unwrap();
        let extra = format!(
            "[network]\nconf_dir = {:?}\nbin_dirs = [\"/usr/lib/cni\"]\n{}",
            conf_dir,
            mirror_config()
        );
        let crustd = Crustd::start(&extra).await;
        let node = Node { crustd, net };
        node.crustd
            .images()
            .await
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull busybox");
        node
    }
}

impl Drop for Node {
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
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounts: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .collect();
        for m in mounts.into_iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

/// A running pod and a client to start containers in it.
struct Pod {
    rt: RuntimeServiceClient<Channel>,
    id: String,
    config: PodSandboxConfig,
}

impl Pod {
    async fn run(node: &Node) -> Pod {
        let mut rt = node.crustd.runtime().await;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "escape".into(),
                uid: "uid-escape".into(),
                namespace: "escape".into(),
                attempt: 0,
            }),
            hostname: "escape-pod".into(),
            ..Default::default()
        };
        let id = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        Pod { rt, id, config }
    }

    /// Creates and starts a `sleep` container with this security context and mounts;
    /// waits until it runs.
    async fn sleeper(
        &mut self,
        name: &str,
        security: LinuxContainerSecurityContext,
        mounts: Vec<Mount>,
    ) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            mounts,
            linux: Some(LinuxContainerConfig {
                security_context: Some(security),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(config),
                sandbox_config: Some(self.config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
            .into_inner()
            .container_id;
        self.rt
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e:?}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self
                .rt
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .status
                .unwrap();
            if s.state == ContainerState::ContainerRunning as i32 {
                return id;
            }
            assert!(Instant::now() < deadline, "{name} never ran: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `sh -c script` in the container: (exit code, stdout + stderr).
    async fn sh(&mut self, id: &str, script: &str) -> (i32, String) {
        let r = self
            .rt
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), script.into()],
                timeout: 20,
            })
            .await
            .unwrap_or_else(|e| panic!("exec {script:?}: {e:?}"))
            .into_inner();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        (r.exit_code, out)
    }

    /// Asserts that `script` fails in the container.
    async fn refused(&mut self, id: &str, what: &str, script: &str) -> String {
        let (code, out) = self.sh(id, script).await;
        assert_ne!(code, 0, "{what} succeeded: {script:?} printed {out:?}");
        out
    }
}

fn runtime_default() -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap()
}

/// The checks every unprivileged container must pass, whatever its seccomp profile.
/// `host_dir` is the host side of its read-only `/data`.
async fn no_way_out(pod: &mut Pod, id: &str, host_dir: &Path) {
    let host_name = hostname();
    // Read-only paths: a read-only volume, the kernel's tunables, the sysrq trigger.
    pod.refused(id, "write to a read-only volume", "echo x > /data/escaped")
        .await;
    assert!(!host_dir.join("escaped").exists());
    for path in [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/modprobe",
        "/proc/sysrq-trigger",
        "/sys/kernel/uevent_helper",
    ] {
        pod.refused(id, "write a host tunable", &format!("echo /x > {path}"))
            .await;
    }
    // Kernel modules: no CAP_SYS_MODULE (bit 16) in any set, and the syscall refused.
    let (_, status) = pod.sh(id, "grep ^Cap /proc/self/status").await;
    for line in status.lines() {
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(mask & (1 << 16), 0, "CAP_SYS_MODULE in {line}");
        assert_eq!(mask & (1 << 21), 0, "CAP_SYS_ADMIN in {line}");
    }
    let out = pod
        .refused(
            id,
            "load a kernel module",
            "echo garbage > /tmp/evil.ko && insmod /tmp/evil.ko",
        )
        .await;
    // EPERM, or ENOSYS on a kernel without modules; "invalid module format" would mean
    // the kernel read the file, so the load was allowed.
    assert!(!out.contains("invalid module format"), "insmod: {out}");
    // Mounting, the host's root among others.
    pod.refused(id, "mount a tmpfs", "mount -t tmpfs none /mnt")
        .await;
    pod.refused(
        id,
        "mount /proc again",
        "mkdir -p /p && mount -t proc proc /p",
    )
    .await;
    // The hostname of the pod, let alone the host's.
    pod.refused(id, "change the hostname", "hostname evil")
        .await;
    let (_, name) = pod.sh(id, "hostname").await;
    assert_eq!(name.trim(), "escape-pod");
    assert_eq!(hostname(), host_name);
    // /proc: hidden paths stay hidden, other processes' roots stay closed.
    let (_, leaked) = pod
        .sh(
            id,
            "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
               [ -e $f ] && [ \"$(head -c 1 $f | wc -c)\" != 0 ] && echo $f; \
             done; true",
        )
        .await;
    assert_eq!(leaked.trim(), "", "readable masked paths");
    // A file only the host has, through the roots of the processes the container sees.
    let secret = host_dir.with_file_name("host-secret");
    std::fs::write(&secret, "host only").unwrap();
    let out = pod
        .refused(
            id,
            "read a host file through /proc/<pid>/root",
            &format!(
                "for p in /proc/[0-9]* /proc/self/..; do \
                   cat $p/root{0} 2>/dev/null && {{ echo via $p; exit 0; }}; \
                 done; cat {0} 2>/dev/null",
                secret.display()
            ),
        )
        .await;
    assert!(!out.contains("host only"), "{out}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn containers_cannot_reach_the_host() {
    let node = Node::start().await;
    let mut pod = Pod::run(&node).await;
    let host_dir = node.net.path().join("data");
    std::fs::create_dir_all(&host_dir).unwrap();
    let volume = || {
        vec![Mount {
            container_path: "/data".into(),
            host_path: host_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }]
    };

    // The defaults kubelet gives (no seccomp profile), and RuntimeDefault.
    let plain = pod
        .sleeper("plain", LinuxContainerSecurityContext::default(), volume())
        .await;
    let confined = pod
        .sleeper(
            "confined",
            LinuxContainerSecurityContext {
                seccomp: runtime_default(),
                ..Default::default()
            },
            volume(),
        )
        .await;
    let readonly = pod
        .sleeper(
            "readonly",
            LinuxContainerSecurityContext {
                readonly_rootfs: true,
                ..Default::default()
            },
            Vec::new(),
        )
        .await;
    let admin = pod
        .sleeper(
            "admin",
            LinuxContainerSecurityContext {
                seccomp: runtime_default(),
                capabilities: Some(Capability {
                    add_capabilities: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            Vec::new(),
        )
        .await;

    no_way_out(&mut pod, &plain, &host_dir).await;
    no_way_out(&mut pod, &confined, &host_dir).await;

    // The filter holds in exec processes, and ordinary work (fork, pipes) still runs.
    let (code, out) = pod
        .sh(&confined, "grep Seccomp: /proc/self/status; ls / | wc -l")
        .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    pod.refused(&confined, "unshare a user namespace", "unshare -U true")
        .await;

    // A read-only rootfs.
    let out = pod
        .refused(&readonly, "write the read-only rootfs", "touch /escaped")
        .await;
    assert!(out.contains("Read-only file system"), "{out}");

    // CAP_SYS_ADMIN under RuntimeDefault may set the pod's hostname, never the host's.
    let before = hostname();
    let (code, out) = pod.sh(&admin, "hostname pod-renamed && hostname").await;
    assert_eq!((code, out.trim()), (0, "pod-renamed"));
    assert_eq!(hostname(), before);

    // A container created after all these execs (each took a pid in the pod's PID
    // namespace) still gets its cgroup view: libcontainer 0.7's own v1 setup would
    // read the host's /proc/<pod pid> here and fail once that pid is free on the host.
    let late = pod
        .sleeper("late", LinuxContainerSecurityContext::default(), Vec::new())
        .await;
    let (code, out) = pod.sh(&late, "ls /sys/fs/cgroup | head -1").await;
    assert_eq!(code, 0, "{out}");
}
