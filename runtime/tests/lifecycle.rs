//! Pods and containers end to end through a real crustd, real crust-shims, Debian's
//! CNI plugins and a busybox image from the local registry: the lifecycle, logs,
//! exec, errors and idempotence, and recovery after crustd is SIGKILLed. Runs as root.
//! The pod network is bridge `crustlc0`, 10.92.0.0/24, kept in the test's temp dir.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pods::*;
use crust_proto::cri::runtime_service_client::RuntimeServiceClient;
use crust_proto::cri::*;
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

const BRIDGE: &str = "crustlc0";
const SUBNET: &str = "10.92.0.0/24";

/// The tests share the bridge: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_pod_and_its_containers_from_run_to_remove() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let config = pod_config("web", &node.logs());
    let pod = run_pod(&mut rt, &config).await;

    let pod_status = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ps = pod_status.status.unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    let ip = ps.network.unwrap().ip;
    assert!(ip.starts_with("10.92.0."), "pod ip {ip:?}");
    assert!(pod_status.info.contains_key("info"));

    // A retried run with the same config answers with the same pod; another config
    // under the same name is a conflict.
    assert_eq!(run_pod(&mut rt, &config).await, pod);
    let mut other = config.clone();
    other.hostname = "other".into();
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(other),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let mut main = container_config(
        "main",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo hello; echo oops >&2; hostname; exec sleep 1000",
        ],
    );
    // What kubelet gives a Guaranteed pod's container: root with CAP_SYS_RESOURCE
    // lowers the score below its own; without it (as on some VMs) the score stays at
    // crustd's own.
    main.linux = Some(crust_proto::cri::LinuxContainerConfig {
        resources: Some(crust_proto::cri::LinuxContainerResources {
            oom_score_adj: -997,
            ..Default::default()
        }),
        ..Default::default()
    });
    let ctr = create(&mut rt, &pod, &config, main).await;
    assert_eq!(
        status_of(&mut rt, &ctr).await,
        ContainerState::ContainerCreated
    );
    start(&mut rt, &ctr).await;
    let s = wait_state(&mut rt, &ctr, ContainerState::ContainerRunning).await;
    assert!(s.started_at > 0);
    assert_eq!(s.image.unwrap().image, IMAGE);
    let log = wait_log(Path::new(&s.log_path), "stdout F web").await;
    assert!(log.contains(" stdout F hello\n"), "{log}");
    assert!(log.contains(" stderr F oops\n"), "{log}");

    let out = exec(&mut rt, &ctr, &["cat", "/proc/1/oom_score_adj"], 10)
        .await
        .unwrap();
    let want = if can_lower_oom_score() {
        "-997\n".to_string()
    } else {
        std::fs::read_to_string("/proc/self/oom_score_adj").unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{out:?}");
    let out = exec(
        &mut rt,
        &ctr,
        &["sh", "-c", "echo hi; cat /etc/hostname; exit 3"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"hi\nweb\n"[..], 3)
    );
    let err = exec(&mut rt, &ctr, &["sleep", "30"], 1).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let out = exec(
        &mut rt,
        &ctr,
        &["sh", "-c", "ps | grep '[s]leep 30' || true"],
        10,
    )
    .await
    .unwrap();
    assert!(
        out.stdout.is_empty(),
        "the timed-out exec must be gone: {out:?}"
    );

    let listed = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod[..12].into(),
                label_selector: [("container".to_string(), "main".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, ctr);

    // The container ignores SIGTERM: the stop timeout ends in SIGKILL.
    rt.stop_container(StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let s = status(&mut rt, &ctr).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    // Stopping again, and stopping what does not exist, succeed.
    rt.stop_container(StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .unwrap();

    let done = create(&mut rt, &pod, &config, container_config("done", &["true"])).await;
    start(&mut rt, &done).await;
    let s = wait_state(&mut rt, &done, ContainerState::ContainerExited).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));

    rt.remove_container(RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&ctr), "{err:?}");
    rt.remove_container(RemoveContainerRequest { container_id: ctr })
        .await
        .unwrap();

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let ps = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxNotready as i32);
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();

    // Nothing is left: no records, no bundles, no mounts but the pin dirs themselves.
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(entries(&node.state().join("c")).is_empty());
    assert!(entries(&node.state().join("p")).is_empty());
    for kind in ["net", "uts", "ipc", "pid", "user"] {
        assert!(
            entries(&node.state().join("ns").join(kind)).is_empty(),
            "ns/{kind}"
        );
    }
    let left: Vec<String> = node
        .mounts("")
        .into_iter()
        .filter(|m| {
            !m.ends_with("/ns/net")
                && !m.ends_with("/ns/uts")
                && !m.ends_with("/ns/ipc")
                && !m.ends_with("/ns/pid")
                && !m.ends_with("/ns/user")
        })
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
    // The removed dirs went to the trash at once and are deleted from it soon after.
    let bins = [node.state().join("trash"), node.crustd.root().join("trash")];
    for _ in 0..100 {
        if bins.iter().all(|b| entries(b).is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for b in &bins {
        assert!(
            entries(b).is_empty(),
            "{} still holds {:?}",
            b.display(),
            entries(b)
        );
    }
}

/// Whether this process holds CAP_SYS_RESOURCE, which lowering an oom_score_adj needs.
fn can_lower_oom_score() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    effective & (1 << 24) != 0
}

async fn status_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerState {
    ContainerState::try_from(status(rt, id).await.state).unwrap()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let missing = "0".repeat(64);

    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: missing.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = rt
        .start_container(StartContainerRequest {
            container_id: missing.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{err:?}");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: missing.clone(),
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: missing.clone(),
    })
    .await
    .unwrap();

    let config = pod_config("bad", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    // An image that was never pulled: NotFound, and no container is left.
    let mut c = container_config("ghost", &["true"]);
    c.image = Some(ImageSpec {
        image: "registry.k8s.io/no-such-image:1".into(),
        ..Default::default()
    });
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A mount that is not absolute: InvalidArgument, and nothing left behind.
    let mut c = container_config("badmount", &["true"]);
    c.mounts.push(Mount {
        container_path: "relative".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    });
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c.clone()),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(entries(&node.state().join("c")).is_empty());
    assert!(node.mounts("/c/").is_empty());
    // The name is free again after the failed create.
    c.mounts.clear();
    let id = create(&mut rt, &pod, &config, c).await;
    let err = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            timeout: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "exec in a created container: {err:?}"
    );
    // A command the image does not have: the shim fails to create the container after
    // CreateContainer answered. StartContainer fails with that error, and the
    // container is EXITED with reason StartError and code 128, as containerd has it.
    let nocmd = container_config("nocmd", &["/crust-no-such-command"]);
    let nocmd = create(&mut rt, &pod, &config, nocmd).await;
    let err = rt
        .start_container(StartContainerRequest {
            container_id: nocmd.clone(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains(&nocmd), "{err:?}");
    assert!(err.message().contains("crust-no-such-command"), "{err:?}");
    let s = status(&mut rt, &nocmd).await;
    assert_eq!(s.state(), ContainerState::ContainerExited, "{s:?}");
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("StartError", 128),
        "{s:?}"
    );
    assert!(s.message.contains("crust-no-such-command"), "{s:?}");
    let again = rt
        .start_container(StartContainerRequest {
            container_id: nocmd.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.message(), err.message(), "the same answer again");
    rt.remove_container(RemoveContainerRequest {
        container_id: nocmd,
    })
    .await
    .unwrap();

    // The pod stopped right after a CreateContainer, while its shim is still creating
    // the container: the stop waits for the creation, which does not fail for the
    // pod's namespaces going under it; the container dies with the pod.
    let late = create(
        &mut rt,
        &pod,
        &config,
        container_config("late", &["sleep", "9"]),
    )
    .await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let s = status(&mut rt, &late).await;
    assert_eq!(s.state(), ContainerState::ContainerExited, "{s:?}");
    assert_ne!(s.reason, "StartError", "{s:?}");

    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert!(entries(&node.state().join("c")).is_empty());
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_sigkilled_crustd_comes_back_with_every_pod_and_container() {
    let _serial = SERIAL.lock().await;
    let mut node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let config = pod_config("survivor", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let ticker = create(
        &mut rt,
        &pod,
        &config,
        container_config(
            "ticker",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            ],
        ),
    )
    .await;
    let quitter = create(
        &mut rt,
        &pod,
        &config,
        container_config("quitter", &["sh", "-c", "sleep 2; exit 7"]),
    )
    .await;
    let waiting = create(
        &mut rt,
        &pod,
        &config,
        container_config("waiting", &["true"]),
    )
    .await;
    start(&mut rt, &ticker).await;
    start(&mut rt, &quitter).await;
    let log = PathBuf::from(status(&mut rt, &ticker).await.log_path);
    wait_log(&log, "tick 2\n").await;
    let shim_pids_before = shim_pids(&node);

    node.crustd.crash_and_restart().await;
    let mut rt = node.rt().await;
    // The quitter exits while crustd is down or right after it is back.
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        shim_pids(&node),
        shim_pids_before,
        "no shim was restarted or lost"
    );
    let s = status(&mut rt, &ticker).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let s = wait_state(&mut rt, &quitter, ContainerState::ContainerExited).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));
    assert_eq!(
        status_of(&mut rt, &waiting).await,
        ContainerState::ContainerCreated
    );
    let ps = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);

    // The log kept growing through the restart, and exec still works.
    let before = std::fs::read_to_string(&log).unwrap().lines().count();
    wait_log(&log, &format!("tick {}\n", before + 3)).await;
    let out = exec(&mut rt, &ticker, &["echo", "alive"], 10)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
    start(&mut rt, &waiting).await;
    let s = wait_state(&mut rt, &waiting, ContainerState::ContainerExited).await;
    assert_eq!(s.exit_code, 0);

    // A container that exits after the restart is seen by the new crustd's watcher.
    rt.stop_container(StopContainerRequest {
        container_id: ticker.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        status_of(&mut rt, &ticker).await,
        ContainerState::ContainerExited
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert!(
        shim_pids(&node).is_empty(),
        "every shim ends with its container"
    );
    let labels: HashMap<String, String> = HashMap::new();
    let left = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty());
}

/// The names in the host's /dev.
fn host_dev() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_privileged_container_with_the_hosts_dev_starts_and_leaves_it_as_it_was() {
    // A privileged pod with hostPath /dev at /dev, as device plugins run: the mount
    // is the host's /dev, in which nothing is made (no device node, no /dev/fd or
    // /dev/kcore link, which the host's /dev may already have), as runc does.
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let privileged = || LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let mut config = pod_config("hostdev", &node.logs());
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(privileged()),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, &config).await;
    let before = host_dev();
    let mut c = container_config("hostdev", &["sleep", "60"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    c.mounts = vec![Mount {
        container_path: "/dev".into(),
        host_path: "/dev".into(),
        ..Default::default()
    }];
    let id = create(&mut rt, &pod, &config, c).await;
    start(&mut rt, &id).await;
    let out = exec(&mut rt, &id, &["ls", "/dev"], 10).await.unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let mut seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(seen, host_dev(), "the container's /dev is the host's");
    assert_eq!(host_dev(), before, "nothing made in the host's /dev");
    remove_pod(&mut rt, &pod).await;
}

/// Pids of the crust-shims serving this crustd's containers.
fn shim_pids(node: &Node) -> Vec<u32> {
    let state = node.state().display().to_string();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("crust-shim")
                && cmdline.contains("--state")
                && cmdline.contains(&state))
            .then_some(pid)
        })
        .collect();
    pids.sort();
    pids
}
