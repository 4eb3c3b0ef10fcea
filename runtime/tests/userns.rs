//! A pod with its own user namespace (CRI NamespaceMode POD), end to end through a real
//! crustd, crust-shims, Debian's CNI plugins and busybox from the local registry: the
//! container sees the pod's mapping, the image's files and a root-owned host volume
//! belong to its root, what its root writes lands owned by the host's root on the
//! volume (idmapped mount) and by the mapped id in its writable layer, it can't do what
//! the host's root can, an exec'd process runs inside the user namespace too, and
//! nothing (pin, mount) is left once the pod is removed, also after crustd was
//! SIGKILLed in between. Runs as root. The container reports through its log.
//! The pod network is bridge `crustuns0`, 10.93.0.0/24, kept in the test's temp dir.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::pods::*;
use crust_proto::cri::*;

const BRIDGE: &str = "crustuns0";
const SUBNET: &str = "10.93.0.0/24";

/// The host ids of the pod's ids 0..65536.
const HOST_ID: u32 = 200_000;
const LENGTH: u32 = 65_536;

/// The tests share the bridge: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn userns_options() -> NamespaceOption {
    let map = vec![IdMapping {
        container_id: 0,
        host_id: HOST_ID,
        length: LENGTH,
    }];
    NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: map.clone(),
            gids: map,
        }),
        ..Default::default()
    }
}

/// A pod with its own user namespace, mapped as `userns_options` says.
fn userns_pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    let mut config = pod_config(name, logs);
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(userns_options()),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// A container's Linux config joining its pod's user namespace, as kubelet sends it.
fn userns_container_linux() -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(userns_options()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What the probe container prints, one line per check.
const PROBE: &str = "\
    cat /proc/self/uid_map; cat /proc/self/gid_map; id -u; id -g; \
    stat -c %u:%g /bin /etc/hosts /etc/hostname /dev/shm /data /data/host-file; \
    cat /data/host-file; \
    echo hi > /data/written && echo wrote-volume; \
    echo hi > /written && echo wrote-rootfs; \
    cat /proc/sys/kernel/hostname; \
    ls /sys/class/net | grep -c lo; \
    stat -c %u /data/secret; \
    cat /data/secret 2>/dev/null || echo no-secret; \
    mknod /tmp/null c 1 3 2>/dev/null && echo MKNOD || echo no-mknod; \
    (echo 3 > /proc/sys/vm/drop_caches) 2>/dev/null && echo DROP || echo no-drop; \
    stat -c %u:%g /ro-file; cat /ro-file; \
    (echo x >> /ro-file) 2>/dev/null && echo RO-WRITTEN || echo ro-refused; \
    echo done";

/// The lines a CRI log file holds, without timestamps and stream tags.
fn log_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn a_pod_user_namespace_maps_ids_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().await;
    let mut node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.runtime_handlers[0]
            .features
            .as_ref()
            .unwrap()
            .user_namespaces,
        "the handler claims user namespaces:\n{}",
        node.crustd.log()
    );

    // A volume: a root-owned dir with a root file and a file of an unmapped host uid.
    let volume = tempfile::Builder::new()
        .prefix("crust-uns-vol.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(volume.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let host_file = volume.path().join("host-file");
    std::fs::write(&host_file, "from the host\n").unwrap();
    let secret = volume.path().join("secret");
    std::fs::write(&secret, "unmapped owner\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(HOST_ID + LENGTH + 1), Some(0)).unwrap();
    std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();

    let config = userns_pod_config("userns", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let state = node.state();
    let user_pin = state.join("ns/user").join(&pod);
    assert!(user_pin.exists(), "user namespace pinned");

    let namespaced = |mut ctr: ContainerConfig| {
        ctr.mounts = vec![
            Mount {
                container_path: "/data".into(),
                host_path: volume.path().display().to_string(),
                ..Default::default()
            },
            // A read-only file volume.
            Mount {
                container_path: "/ro-file".into(),
                host_path: host_file.display().to_string(),
                readonly: true,
                ..Default::default()
            },
        ];
        ctr.linux = userns_container_linux();
        ctr
    };
    let probe = create(
        &mut rt,
        &pod,
        &config,
        namespaced(container_config("probe", &["sh", "-c", PROBE])),
    )
    .await;
    // The volume's idmapped clone is gone from the host once the container holds it:
    // once its shim has created it, which StartContainer waits for.
    start(&mut rt, &probe).await;
    assert_eq!(node.mounts("idmap"), Vec::<String>::new());
    let exited = wait_state(&mut rt, &probe, ContainerState::ContainerExited).await;
    let log = std::fs::read_to_string(&exited.log_path).unwrap();
    assert_eq!(exited.exit_code, 0, "{log}");
    let lines = log_lines(&log);
    let fields = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let mapping = format!("0 {HOST_ID} {LENGTH}");
    let mut want: Vec<String> = vec![mapping.clone(), mapping, "0".into(), "0".into()];
    // The image's files, the pod's files and the volume belong to the container's root.
    want.extend(std::iter::repeat_n("0:0".to_string(), 6));
    want.extend(
        [
            "from the host",
            "wrote-volume",
            "wrote-rootfs",
            // proc and sysfs work: the namespaces are owned by the pod's user namespace.
            "userns",
            "1",
            // What the host's root could do, the container's root can't: read a file of
            // an unmapped owner (shown as the overflow id), make a device node, write a
            // host-wide sysctl.
            "65534",
            "no-secret",
            "no-mknod",
            "no-drop",
            "0:0",
            "from the host",
            "ro-refused",
            "done",
        ]
        .map(String::from),
    );
    assert_eq!(
        lines.iter().map(|l| fields(l)).collect::<Vec<_>>(),
        want,
        "{log}"
    );
    // Written by the container's root: owned by the host's root on the volume, by the
    // mapped id in the writable layer.
    assert_eq!(owner(&volume.path().join("written")), (0, 0));
    let layers = node.crustd.root().join("containers").join(&probe);
    assert_eq!(owner(&layers.join("upper/written")), (HOST_ID, HOST_ID));
    assert_eq!(owner(&layers.join("upper")), (HOST_ID, HOST_ID));
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "unmapped owner\n"
    );

    // An exec'd process runs inside the pod's user namespace too, as the container's
    // root: the same mapping, and the file of an unmapped owner stays unreadable.
    let id = create(
        &mut rt,
        &pod,
        &config,
        namespaced(container_config("main", &["sleep", "3600"])),
    )
    .await;
    start(&mut rt, &id).await;
    wait_state(&mut rt, &id, ContainerState::ContainerRunning).await;
    let script = "id -u; cat /proc/self/uid_map; stat -c %u /data/secret; \
                  cat /data/secret 2>/dev/null || echo no-secret";
    let out = exec(&mut rt, &id, &["sh", "-c", script], 10).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.exit_code, 0, "{out:?}");
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "0",
            "0",
            &HOST_ID.to_string(),
            &LENGTH.to_string(),
            "65534",
            "no-secret"
        ],
        "{stdout}"
    );

    // A container asking for other mappings than its pod's is refused.
    let mut other = container_config("other", &["true"]);
    let mut opts = userns_options();
    opts.userns_options.as_mut().unwrap().uids[0].host_id = HOST_ID + 1;
    other.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(opts),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(other),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("pod's user namespace"), "{err:?}");

    // After a crash the pod is still ready, and its removal leaves nothing behind.
    node.crustd.crash_and_restart().await;
    let mut rt = node.rt().await;
    let ready = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .state;
    assert_eq!(ready, PodSandboxState::SandboxReady as i32);
    wait_state(&mut rt, &id, ContainerState::ContainerRunning).await;

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    for kind in ["user", "net", "uts", "ipc", "pid"] {
        let dir = state.join("ns").join(kind);
        let left: Vec<String> = entries(&dir)
            .into_iter()
            .filter(|e| !e.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{kind} pins left: {left:?}");
    }
    assert_eq!(node.mounts(&pod), Vec::<String>::new());
    assert_eq!(node.mounts(&id), Vec::<String>::new());
    assert_eq!(node.mounts(&probe), Vec::<String>::new());
    assert_eq!(node.mounts("idmap"), Vec::<String>::new());
    assert!(!layers.exists(), "writable layer removed");
    // The volume keeps what was written, with the host's owners.
    assert_eq!(owner(&volume.path().join("written")), (0, 0));
    assert_eq!(owner(&host_file), (0, 0));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn bad_user_namespaces_are_refused_before_anything_is_made() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let two = vec![
        IdMapping {
            container_id: 0,
            host_id: HOST_ID,
            length: 10,
        },
        IdMapping {
            container_id: 10,
            host_id: HOST_ID + 10,
            length: 10,
        },
    ];
    let cases = [
        (
            NamespaceMode::Pod,
            two.clone(),
            two,
            "exactly one uid mapping",
        ),
        (NamespaceMode::Container, vec![], vec![], "mode CONTAINER"),
        (NamespaceMode::Target, vec![], vec![], "mode TARGET"),
    ];
    for (mode, uids, gids, want) in cases {
        let mut config = pod_config("bad-userns", &node.logs());
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    userns_options: Some(UserNamespace {
                        mode: mode as i32,
                        uids,
                        gids,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(want), "{err:?}");
        assert!(err.message().contains("bad-userns"), "{err:?}");
    }
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(entries(&node.state().join("p")).is_empty());
    assert!(entries(&node.state().join("ns/user")).is_empty());
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn kubelet_shaped_mounts_carry_the_pods_mappings() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    // What kubelet mounts into a container of a `hostUsers: false` pod, from its pod
    // dir: its own /etc/hosts, the termination log, an emptyDir; all owned by root.
    let kubelet = tempfile::Builder::new()
        .prefix("crust-uns-kubelet.")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(kubelet.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let hosts = kubelet.path().join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1\tlocalhost\n10.93.0.9\tkubelet-hosts\n").unwrap();
    let termination = kubelet.path().join("termination-log");
    std::fs::write(&termination, "").unwrap();
    std::fs::set_permissions(&termination, PermissionsExt::from_mode(0o666)).unwrap();
    let empty_dir = kubelet.path().join("volumes/kubernetes.io~empty-dir/cache");
    std::fs::create_dir_all(&empty_dir).unwrap();
    std::fs::set_permissions(&empty_dir, PermissionsExt::from_mode(0o777)).unwrap();

    let config = userns_pod_config("kubelet-userns", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let pod_maps = userns_options().userns_options.unwrap();
    let mapped = |host: &Path, on: &str| Mount {
        container_path: on.into(),
        host_path: host.display().to_string(),
        uid_mappings: pod_maps.uids.clone(),
        gid_mappings: pod_maps.gids.clone(),
        ..Default::default()
    };
    let script = "stat -c %u:%g /etc/hosts /dev/termination-log /cache; \
                  grep -c kubelet-hosts /etc/hosts; \
                  echo finished > /dev/termination-log; echo x > /cache/f; \
                  cat /sys/class/net/lo/flags; echo done";
    let mut ctr = container_config("mounts", &["sh", "-c", script]);
    ctr.mounts = vec![
        mapped(&hosts, "/etc/hosts"),
        mapped(&termination, "/dev/termination-log"),
        mapped(&empty_dir, "/cache"),
    ];
    ctr.linux = userns_container_linux();
    let id = create(&mut rt, &pod, &config, ctr.clone()).await;
    start(&mut rt, &id).await;
    let exited = wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    let log = std::fs::read_to_string(&exited.log_path).unwrap();
    assert_eq!(exited.exit_code, 0, "{log}");
    // Root's files are root's inside; lo is up (IFF_UP | IFF_LOOPBACK | IFF_RUNNING).
    assert_eq!(
        log_lines(&log),
        ["0:0", "0:0", "0:0", "1", "0x9", "done"],
        "{log}"
    );
    // What the container's root wrote lands owned by the host's root.
    assert_eq!(std::fs::read_to_string(&termination).unwrap(), "finished\n");
    assert_eq!(owner(&empty_dir.join("f")), (0, 0));

    // Mappings other than the pod's are refused, naming the mount.
    let mut other = ctr;
    other.metadata.as_mut().unwrap().name = "other".into();
    other.mounts[2].gid_mappings[0].host_id = HOST_ID + 1;
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(other),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    for want in [
        "mounts[2].gid_mappings",
        "\"/cache\"",
        "differ from the pod's",
    ] {
        assert!(err.message().contains(want), "{want}: {err:?}");
    }
    remove_pod(&mut rt, &pod).await;
}

/// An image volume of a `hostUsers: false` pod: the image's root-owned files are
/// root's inside too (the volume is id-mapped as the pod's other mounts are).
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn an_image_volume_is_id_mapped_in_a_user_namespace_pod() {
    let _serial = SERIAL.lock().await;
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let config = userns_pod_config("image-volume", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let pod_maps = userns_options().userns_options.unwrap();
    let script = "stat -c %u:%g /image/bin/busybox; /image/bin/busybox true && echo ran; \
                  (touch /image/x) 2>/dev/null && echo WRITTEN || echo read-only; echo done";
    let mut ctr = container_config("vol", &["sh", "-c", script]);
    ctr.mounts = vec![Mount {
        container_path: "/image".into(),
        readonly: true,
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        uid_mappings: pod_maps.uids.clone(),
        gid_mappings: pod_maps.gids.clone(),
        ..Default::default()
    }];
    ctr.linux = userns_container_linux();
    let id = create(&mut rt, &pod, &config, ctr).await;
    start(&mut rt, &id).await;
    let exited = wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    let log = std::fs::read_to_string(&exited.log_path).unwrap();
    assert_eq!(exited.exit_code, 0, "{log}");
    assert_eq!(
        log_lines(&log),
        ["0:0", "ran", "read-only", "done"],
        "{log}"
    );
    remove_pod(&mut rt, &pod).await;
    assert_eq!(node.mounts("/volumes/"), Vec::<String>::new());
}
