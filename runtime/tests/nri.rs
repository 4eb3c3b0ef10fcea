//! NRI through a real crustd and the reference plugin side (NRI's Go stub: the plugin of
//! `runtime/tests/nri-plugin`, built by scripts/test, its path in
//! `CRUST_TEST_NRI_PLUGIN`). One plugin connects to crustd's NRI socket, another is
//! pre-installed in the plugin dir with a config file and started by crustd. The
//! plugins adjust a container's env, mounts and memory limit; they see every event of a
//! pod and a container in order; a refusal fails CreateContainer with the plugin's
//! message, as does a validator's rejection of the merged adjustments; two plugins
//! setting one field fail it naming both; a plugin that holds an
//! event past the request timeout, or dies, does not hold pods up. Runs as root with
//! the local registry; the pod network is bridge `crustnr0`, 10.85.0.0/24.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pods::*;
use crust_proto::cri::*;
use tonic::Code;

const BRIDGE: &str = "crustnr0";
const SUBNET: &str = "10.85.0.0/24";

/// The test plugin's annotations (runtime/tests/nri-plugin/main.go).
const ADJUST: &str = "nri.crust.test/adjust.";
const REFUSE: &str = "nri.crust.test/refuse";
const HANG: &str = "nri.crust.test/hang";
const REJECT_ADJUSTED: &str = "nri.crust.test/reject-adjusted";

fn plugin_binary() -> PathBuf {
    let path = std::env::var_os("CRUST_TEST_NRI_PLUGIN")
        .map(PathBuf::from)
        .expect("CRUST_TEST_NRI_PLUGIN: the test plugin (runtime/tests/nri-plugin/build.sh)");
    assert!(path.is_file(), "no NRI test plugin at {}", path.display());
    path
}

/// The events the plugins recorded, one JSON object each.
fn events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until `pred` holds for the recorded events, or fails after 20 s.
async fn wait_events(file: &Path, what: &str, pred: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred(&events(file)) {
        assert!(Instant::now() < deadline, "{what}: {:#?}", events(file));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(events: &[serde_json::Value], plugin: &str, event: &str) -> bool {
    events
        .iter()
        .any(|e| e["plugin"] == plugin && e["event"] == event)
}

/// The sequence of events `plugin` saw of the pod `pod` and its container `ctr`.
fn sequence(events: &[serde_json::Value], plugin: &str, pod: &str, ctr: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["plugin"] == plugin && e["pod"] == pod)
        .filter(|e| e["container"].is_null() || e["container"] == ctr)
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins, the local registry and the NRI test plugin; scripts/test runs it"]
async fn nri_plugins_adjust_containers_and_see_every_event() {
    let plugin = plugin_binary();
    let host = tempfile::tempdir().unwrap();
    let (plugins, conf) = (host.path().join("plugins"), host.path().join("conf.d"));
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("05-installed.conf"), "installed config").unwrap();
    let data = host.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("file"), "from the host").unwrap();
    let log = host.path().join("events.jsonl");
    let socket = host.path().join("nri.sock");
    let config = format!(
        "[nri]\nenable = true\nsocket_path = {socket:?}\nplugin_path = {plugins:?}\n\
         plugin_config_path = {conf:?}\nrequest_timeout_ms = 2000\n"
    );
    // crustd starts a pre-installed plugin with NRI's variables only: a wrapper gives
    // the test plugin its events file.
    let wrapper = plugins.join("05-installed");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nCRUST_NRI_TEST_EVENTS={log:?} exec {plugin:?} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let node = Node::start_configured(BRIDGE, SUBNET, None, &config).await;
    let external = || {
        tokio::process::Command::new(&plugin)
            .args([
                "-socket",
                socket.to_str().unwrap(),
                "-name",
                "external",
                "-idx",
                "10",
            ])
            .args(["-events", log.to_str().unwrap()])
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut ext = external();
    wait_events(&log, "both plugins synchronized", |e| {
        has(e, "installed", "Synchronize") && has(e, "external", "Synchronize")
    })
    .await;
    let configured = events(&log);
    let installed_conf = configured
        .iter()
        .find(|e| e["plugin"] == "installed" && e["event"] == "Configure")
        .expect("the installed plugin was configured");
    assert_eq!(installed_conf["config"], "installed config");
    assert_eq!(installed_conf["extra"]["runtime"], "crust");

    let mut rt = node.rt().await;
    let config = pod_config("nri", &node.logs());
    let pod = run_pod(&mut rt, &config).await;

    // The external plugin adjusts this container.
    let script = "echo \"$NRI_TEST\"; cat /nri/file; echo; \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max";
    let mut adjusted = container_config("adjusted", &["sleep", "3600"]);
    adjusted
        .annotations
        .insert(format!("{ADJUST}external"), data.display().to_string());
    let ctr = create(&mut rt, &pod, &config, adjusted).await;
    start(&mut rt, &ctr).await;
    let out = exec(&mut rt, &ctr, &["sh", "-c", script], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("external\nfrom the host\n{}\n", 64 << 20),
        "{out:?}\n{}",
        node.crustd.log()
    );
    // The mount is read-only, as the plugin asked.
    let out = exec(&mut rt, &ctr, &["sh", "-c", "echo x > /nri/file"], 10)
        .await
        .unwrap();
    assert_ne!(out.exit_code, 0, "{out:?}");
    // An update goes through the plugins.
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: ctr.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("update resources");

    // A refusal fails CreateContainer with the plugin's message, and leaves nothing.
    let mut refused = container_config("refused", &["sleep", "3600"]);
    refused.annotations.insert(REFUSE.into(), "yes".into());
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(refused),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(err.message().contains("refused by installed"), "{err:?}");
    // The plugins validate the merged adjustments: they reject this adjusted one.
    let mut rejected = container_config("rejected", &["sleep", "3600"]);
    rejected
        .annotations
        .insert(format!("{ADJUST}external"), data.display().to_string());
    rejected
        .annotations
        .insert(REJECT_ADJUSTED.into(), "yes".into());
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(rejected),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{err:?}");
    assert!(
        err.message().contains("ValidateContainerAdjustment")
            && err.message().contains("rejected by"),
        "{err:?}"
    );
    // Two plugins setting the same env name and mount conflict.
    let mut both = container_config("both", &["sleep", "3600"]);
    for p in ["external", "installed"] {
        both.annotations
            .insert(format!("{ADJUST}{p}"), data.display().to_string());
    }
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(both),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("installed") && err.message().contains("external"),
        "{err:?}"
    );
    let listed = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [ctr.as_str()],
        "only the adjusted container exists"
    );
    // A container left running goes with its pod: plugins see it stop and go too.
    let second = create(
        &mut rt,
        &pod,
        &config,
        container_config("second", &["sleep", "3600"]),
    )
    .await;
    start(&mut rt, &second).await;

    rt.stop_container(StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .expect("stop container");
    rt.remove_container(RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .expect("remove container");
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("stop pod");
    remove_pod(&mut rt, &pod).await;

    let expected = [
        "RunPodSandbox",
        "CreateContainer",
        "ValidateContainerAdjustment",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "UpdateContainer",
        "PostUpdateContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ];
    wait_events(&log, "every event", |e| {
        sequence(e, "installed", &pod, &ctr).len() >= expected.len()
            && sequence(e, "external", &pod, &ctr).len() >= expected.len()
    })
    .await;
    wait_events(&log, "the second container's removal", |e| {
        e.iter()
            .filter(|e| e["event"] == "RemoveContainer" && e["container"] == second.as_str())
            .count()
            == 2
    })
    .await;
    let all = events(&log);
    for p in ["installed", "external"] {
        assert_eq!(sequence(&all, p, &pod, &ctr), expected, "{p}: {all:#?}");
        // The second container's own events, and its removal before the pod's.
        let of_second: Vec<&str> = all
            .iter()
            .filter(|e| e["plugin"] == p && e["pod"] == pod.as_str())
            .filter(|e| e["container"] == second.as_str() || e["event"] == "RemovePodSandbox")
            .map(|e| e["event"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            of_second,
            [
                "CreateContainer",
                "ValidateContainerAdjustment",
                "PostCreateContainer",
                "StartContainer",
                "PostStartContainer",
                "StopContainer",
                "RemoveContainer",
                "RemovePodSandbox"
            ],
            "{p}: {all:#?}"
        );
    }
    // The plugins saw the adjusted container after its create, and the update's limit.
    let seen = |event: &str| {
        all.iter()
            .find(|e| {
                e["plugin"] == "installed" && e["event"] == event && e["container"] == ctr.as_str()
            })
            .cloned()
            .unwrap()
    };
    assert!(
        seen("StartContainer")["env"]
            .as_array()
            .unwrap()
            .contains(&"NRI_TEST=external".into()),
        "{all:#?}"
    );
    assert_eq!(seen("UpdateContainer")["memory"], 128 << 20);

    // A plugin that holds RunPodSandbox past the request timeout is dropped; the pod
    // runs once the timeout has passed, and the next pod runs at once.
    let mut held = pod_config("nri-held", &node.logs());
    held.annotations.insert(HANG.into(), "yes".into());
    let began = Instant::now();
    let held = run_pod(&mut rt, &held).await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let began = Instant::now();
    let next = run_pod(&mut rt, &pod_config("nri-next", &node.logs())).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    // Both plugins were dropped; a plugin that connects again is synchronized with
    // the pods there are.
    ext.kill().await.unwrap();
    let before = events(&log).len();
    let mut ext = external();
    wait_events(&log, "the reconnected plugin synchronized", |e| {
        e[before..].iter().any(|e| {
            e["plugin"] == "external"
                && e["event"] == "Synchronize"
                && e["pods"].as_array().is_some_and(|p| {
                    p.contains(&held.as_str().into()) && p.contains(&next.as_str().into())
                })
        })
    })
    .await;
    // A plugin that dies does not fail the next pod.
    ext.kill().await.unwrap();
    let last = run_pod(&mut rt, &pod_config("nri-last", &node.logs())).await;
    for p in [held, next, last] {
        remove_pod(&mut rt, &p).await;
    }
}
