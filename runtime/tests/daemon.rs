//! crustd as a process: its socket, its answers to the RPCs it serves, and how it
//! starts, refuses and stops.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Crustd, Layout, run_crustd};
use crust_proto::cri::{
    CgroupDriver, CheckpointPodRequest, ImageFsInfoRequest, PodSandboxConfig, PodSandboxMetadata,
    RunPodSandboxRequest, RuntimeConfigRequest, StatusRequest, StatusResponse, VersionRequest,
};

/// Debian's containernetworking-plugins, which the test command installs.
const CNI_BIN: &str = "/usr/lib/cni";

fn network_table(conf_dir: &Path) -> String {
    format!("[network]\nconf_dir = {conf_dir:?}\nbin_dirs = [{CNI_BIN:?}]\n")
}

fn condition(resp: &StatusResponse, kind: &str) -> (bool, String, String) {
    let c = resp
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {resp:?}"));
    (c.status, c.reason.clone(), c.message.clone())
}

#[tokio::test(flavor = "current_thread")]
async fn version_names_crust_and_cri_v1() {
    let d = Crustd::start("").await;
    let v = d
        .runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crust");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "current_thread")]
async fn network_ready_follows_the_cni_conf_dir_without_restart() {
    assert!(
        Path::new(CNI_BIN).join("bridge").is_file(),
        "Debian's containernetworking-plugins must be installed (scripts/test does it)"
    );
    let conf_dir = tempfile::tempdir().unwrap();
    let d = Crustd::start(&network_table(conf_dir.path())).await;
    let mut rt = d.runtime().await;

    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    // crust-shim is found beside crustd once the workspace's binaries are built.
    assert!(condition(&status, "RuntimeReady").0, "{status:?}");
    let (ready, reason, message) = condition(&status, "NetworkReady");
    assert!(!ready);
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(message.contains("no network config found"), "{message}");

    std::fs::write(
        conf_dir.path().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"},{"type":"nosuchplugin"}]}"#,
    )
    .unwrap();
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let (ready, _, message) = condition(&status, "NetworkReady");
    assert!(!ready);
    assert!(message.contains("\"nosuchplugin\" not found"), "{message}");

    std::fs::write(
        conf_dir.path().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
    )
    .unwrap();
    let status = rt
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        condition(&status, "NetworkReady"),
        (true, String::new(), String::new())
    );
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(
        config["network"]["conf_dir"],
        conf_dir.path().display().to_string()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn runtime_config_reports_the_cgroup_driver_in_use() {
    let d = Crustd::start("").await;
    let resp = d
        .runtime()
        .await
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.linux.unwrap().cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test(flavor = "current_thread")]
async fn configured_runtime_handlers_are_listed_and_others_refused() {
    let d = Crustd::start("[runtime]\nhandlers = [\"test-handler\"]\n").await;
    let mut rt = d.runtime().await;
    let status = rt
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "test-handler"]);
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "p".into(),
                    uid: "u".into(),
                    namespace: "n".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("\"kata\""), "{err:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn image_fs_info_measures_the_root_dir() {
    let d = Crustd::start("").await;
    let mut c = d.images().await;
    let images = d.root().join("images");
    let before = c
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    std::fs::create_dir_all(images.join("sub")).unwrap();
    std::fs::write(images.join("sub/blob"), vec![1u8; 100_000]).unwrap();
    let after = c
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();

    let (b, a) = (&before.image_filesystems[0], &after.image_filesystems[0]);
    assert_eq!(
        a.fs_id.as_ref().unwrap().mountpoint,
        images.display().to_string()
    );
    assert_eq!(
        a.inodes_used.unwrap().value,
        b.inodes_used.unwrap().value + 2
    );
    assert!(a.used_bytes.unwrap().value >= b.used_bytes.unwrap().value + 100_000);
    let c = &after.container_filesystems[0];
    assert_eq!(
        c.fs_id.as_ref().unwrap().mountpoint,
        d.root().join("containers").display().to_string()
    );
    assert_eq!(c.inodes_used.unwrap().value, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn rpcs_not_built_are_unimplemented_by_name() {
    let d = Crustd::start("").await;
    let err = d
        .runtime()
        .await
        .checkpoint_pod(CheckpointPodRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(err.message(), "CheckpointPod: not implemented by crust yet");
}

#[tokio::test(flavor = "current_thread")]
async fn socket_is_0660_and_removed_on_sigterm() {
    let mut d = Crustd::start("").await;
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    let status = d.terminate();
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists());
    assert!(d.log().contains("crustd stopped"), "{}", d.log());
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_crustd_is_refused() {
    let d = Crustd::start("").await;
    // Same socket, other root: the live socket is not taken over.
    let other = tempfile::tempdir().unwrap();
    let root = other.path().join("root");
    let state = other.path().join("state");
    let listen = format!("unix://{}", d.socket.display());
    let out = run_crustd(&[
        "--root",
        root.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--listen",
        &listen,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another crustd is already serving"), "{err}");

    // Same root, other socket: the root dir is locked.
    let out = run_crustd(&[
        "--config",
        d.config.to_str().unwrap(),
        "--listen",
        &format!("unix://{}", other.path().join("x.sock").display()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use by another crustd (pid"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stale_socket_is_replaced() {
    let layout = Layout::new("");
    // A socket file nobody listens on, as a killed crustd leaves it.
    drop(std::os::unix::net::UnixListener::bind(&layout.socket).unwrap());
    assert!(layout.socket.exists());
    let d = layout.start().await;
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert!(d.log().contains("replaced a stale socket"), "{}", d.log());
}

#[test]
fn bad_flags_and_configs_are_one_line_errors() {
    let out = run_crustd(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[cgroup]\ndriver = \"cgroupfs\"\nbogus = 1\n", "line 3"),
        ("listen = \"tcp://0.0.0.0:1\"\n", "listen"),
        ("[cgroup]\ndriver = \"lxc\"\n", "lxc"),
    ];
    for (text, expect) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = run_crustd(&["--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{text}: {err}");
        assert!(err.starts_with("crustd: config"), "{text}: {err}");
        assert!(err.contains(expect), "{text}: {err}");
    }

    let out = run_crustd(&["--config", "/nonexistent/crust.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/crust.toml"), "{err}");
}

#[test]
fn config_default_prints_a_loadable_config() {
    let out = run_crustd(&["config", "default"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root = \"/var/lib/crust\""), "{text}");
    assert!(
        text.contains("listen = \"unix:///run/crust/crust.sock\""),
        "{text}"
    );
    crust_runtime::config::Config::load(&path)
        .unwrap()
        .validate()
        .unwrap();
}
