//! Malformed and hostile requests through a real crustd: each bad field gets
//! InvalidArgument naming the object and the field, before anything is made; nothing is
//! written outside the place a request may write to (log paths with `..`, relative
//! paths resolved against crustd's working directory); status messages name the object
//! once and carry no control characters. Runs as root; the pod network is bridge
//! `crusthx0`, 10.94.0.0/24.

mod common;

use std::path::Path;

use common::pods::*;
use crust_proto::cri::*;
use tonic::Code;

const BRIDGE: &str = "crusthx0";
const SUBNET: &str = "10.94.0.0/24";

/// Asserts `err` is InvalidArgument whose message names each of `names`, with no
/// control character in it.
fn refused(err: &tonic::Status, names: &[&str]) {
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for name in names {
        assert!(err.message().contains(name), "{name:?} not in {err:?}");
    }
    assert!(!err.message().chars().any(char::is_control), "{err:?}");
}

async fn run_pod_err(
    rt: &mut runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    config: PodSandboxConfig,
) -> tonic::Status {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn bad_fields_are_refused_before_anything_is_made() {
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let logs = node.logs();

    // Pods: a hostname the kernel or a resolver would not take, a log directory that
    // is relative or climbs out.
    let long = "a".repeat(65);
    for (hostname, log_dir, field) in [
        (
            long.as_str(),
            logs.join("p").display().to_string(),
            "hostname",
        ),
        (
            "bad_host!",
            logs.join("p").display().to_string(),
            "hostname",
        ),
        ("-dash", logs.join("p").display().to_string(), "hostname"),
        ("ok", "relative/logs".to_string(), "log_directory"),
        (
            "ok",
            format!("{}/../../escaped", logs.display()),
            "log_directory",
        ),
    ] {
        let mut config = pod_config("hostile", &logs);
        config.hostname = hostname.into();
        config.log_directory = log_dir;
        let err = run_pod_err(&mut rt, config).await;
        refused(&err, &["hostile", field]);
    }
    let pods = list_pods(&mut rt).await;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(entries(&node.state().join("p")).is_empty());
    assert!(!Path::new("relative").exists());

    let config = pod_config("hostile", &logs);
    let pod = run_pod(&mut rt, &config).await;
    let pod_logs = Path::new(&config.log_directory);

    // Containers: a log path that climbs out of the pod's log directory; relative and
    // missing /proc and /sys host paths.
    let escaped = logs.parent().unwrap().join("escaped-log");
    let climb = format!(
        "../../{}/c.log",
        escaped.file_name().unwrap().to_string_lossy()
    );
    let cwd_dir = format!("crust-hostile-{}", std::process::id());
    let cases: Vec<(ContainerConfig, &[&str])> = vec![
        (
            ContainerConfig {
                log_path: climb,
                ..container_config("climb", &["true"])
            },
            &["climb", "log_path", "'..'"],
        ),
        (
            ContainerConfig {
                log_path: "/etc/crust-hostile.log".into(),
                ..container_config("absolute-log", &["true"])
            },
            &["absolute-log", "log_path"],
        ),
        (
            ContainerConfig {
                mounts: vec![Mount {
                    container_path: "/data".into(),
                    host_path: format!("{cwd_dir}/data"),
                    ..Default::default()
                }],
                ..container_config("relative", &["true"])
            },
            &["relative", "mounts[0].host_path", "is not absolute"],
        ),
        (
            ContainerConfig {
                mounts: vec![Mount {
                    container_path: "/data".into(),
                    host_path: "/proc/crust-no-such-file".into(),
                    ..Default::default()
                }],
                ..container_config("proc", &["true"])
            },
            &["proc", "/proc/crust-no-such-file", "does not exist"],
        ),
        (
            ContainerConfig {
                mounts: vec![Mount {
                    container_path: "/data".into(),
                    host_path: "/sys/crust/no/such".into(),
                    ..Default::default()
                }],
                ..container_config("sys", &["true"])
            },
            &["sys", "/sys/crust/no/such", "does not exist"],
        ),
        (
            // Id mappings on a mount of a pod without a user namespace.
            ContainerConfig {
                mounts: vec![Mount {
                    container_path: "/data".into(),
                    host_path: logs.display().to_string(),
                    uid_mappings: vec![IdMapping {
                        container_id: 0,
                        host_id: 100_000,
                        length: 65536,
                    }],
                    ..Default::default()
                }],
                ..container_config("mapped", &["true"])
            },
            &["mapped", "mounts[0].uid_mappings", "user namespace"],
        ),
    ];
    for (ctr, names) in cases {
        let err = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ctr),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_err();
        refused(&err, names);
    }
    assert!(!escaped.exists(), "a log was written outside the pod's dir");
    assert!(!Path::new("/etc/crust-hostile.log").exists());
    assert!(
        !Path::new(&cwd_dir).exists(),
        "made in crustd's working dir"
    );
    assert!(entries(&node.state().join("c")).is_empty());
    assert!(entries(pod_logs).is_empty(), "{:?}", entries(pod_logs));
    let ctrs = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(ctrs.is_empty(), "{ctrs:?}");

    // Exec and ExecSync need a program to run.
    let id = create(
        &mut rt,
        &pod,
        &config,
        container_config("sleeper", &["sleep", "3600"]),
    )
    .await;
    start(&mut rt, &id).await;
    for cmd in [vec![""], vec!["", "-c", "true"]] {
        let err = exec(&mut rt, &id, &cmd, 5).await.unwrap_err();
        refused(&err, &[&id, "cmd", "empty"]);
        let err = rt
            .exec(ExecRequest {
                container_id: id.clone(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
        refused(&err, &[&id, "cmd", "empty"]);
    }

    // Messages name the object once and carry no NUL, whatever the client sent.
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: "no\0such\nthing".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(!err.message().chars().any(char::is_control), "{err:?}");
    let err = exec(&mut rt, &id, &["/no/such/program"], 5).await;
    let message = match &err {
        Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
        Err(status) => status.message().to_owned(),
    };
    let named = format!("container {id}");
    assert!(message.matches(&named).count() <= 1, "{err:?}");
    let err = rt
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_shares: 2,
                memory_limit_in_bytes: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message().matches(&named).count(), 1, "{err:?}");

    remove_pod(&mut rt, &pod).await;
}
