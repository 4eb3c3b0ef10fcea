//! CDI devices through a real crustd: CDI spec files the test writes (a device node
//! of a char device the test makes, a mount, env vars) reach the container asked for
//! through `cdi_devices` or a `cdi.k8s.io/` annotation; a spec file changed between
//! two creates is read again; an unknown device, or one whose spec file is broken,
//! gets InvalidArgument naming it and leaves no container. Runs as root with the local
//! registry; the pod network is bridge `crustcd0`, 10.82.0.0/24.

mod common;

use std::path::Path;

use common::pods::*;
use crust_proto::cri::*;
use tonic::Code;

const BRIDGE: &str = "crustcd0";
const SUBNET: &str = "10.82.0.0/24";

/// /dev/kmsg's numbers: a char device outside the default device allow list, so the
/// container can write it only through the CDI spec's cgroup rule.
const MAJOR: u64 = 1;
const MINOR: u64 = 11;

fn write_spec(dir: &Path, host: &Path, one: &str) {
    let spec = format!(
        r#"cdiVersion: "0.6.0"
kind: "crust.test/dev"
containerEdits:
  env: ["VENDOR=crust"]
devices:
- name: one
  containerEdits:
    env: ["ONE={one}"]
    deviceNodes:
    - path: /dev/crust-one
      hostPath: {node}
    - path: /tmp/crust-two
      hostPath: {node}
    mounts:
    - hostPath: {data}
      containerPath: /cdi-data
      options: [ro, bind]
"#,
        node = host.join("node").display(),
        data = host.join("data").display(),
    );
    std::fs::write(dir.join("crust-test.yaml"), spec).unwrap();
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn cdi_devices_reach_the_container() {
    let host = tempfile::tempdir().unwrap();
    let specs = host.path().join("cdi");
    std::fs::create_dir_all(&specs).unwrap();
    std::fs::create_dir_all(host.path().join("data")).unwrap();
    std::fs::write(host.path().join("data/file"), "cdi data").unwrap();
    nix::sys::stat::mknod(
        &host.path().join("node"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(MAJOR, MINOR),
    )
    .unwrap();
    write_spec(&specs, host.path(), "1");
    let config = format!("[cdi]\nspec_dirs = [{specs:?}]\n");
    let node = Node::start_configured(BRIDGE, SUBNET, None, &config).await;
    let mut rt = node.rt().await;
    let pod_config = pod_config("cdi", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;
    // A device node outside /dev too, as the node e2e suite's sample device plugin
    // has them (/tmp/CDI-Dev-N).
    let script = "test -c /dev/crust-one && test -c /tmp/crust-two \
                  && printf 'crust cdi test\\n' > /dev/crust-one \
                  && cat /cdi-data/file && echo \" $ONE $VENDOR\"";

    let mut by_field = container_config("field", &["sleep", "3600"]);
    by_field.cdi_devices = vec![CdiDevice {
        name: "crust.test/dev=one".into(),
    }];
    let id = create(&mut rt, &pod, &pod_config, by_field).await;
    start(&mut rt, &id).await;
    let out = exec(&mut rt, &id, &["sh", "-c", script], 10).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cdi data 1 crust\n",
        "{out:?}\n{}",
        node.crustd.log()
    );
    // Without the device, the same node made in the container can't be written: the
    // CDI spec's cgroup rule is what allows it.
    let plain = container_config("plain", &["sleep", "3600"]);
    let plain = create(&mut rt, &pod, &pod_config, plain).await;
    start(&mut rt, &plain).await;
    let out = exec(
        &mut rt,
        &plain,
        &["sh", "-c", "mknod /tmp/n c 1 11 && echo x > /tmp/n"],
        10,
    )
    .await
    .unwrap();
    assert_ne!(out.exit_code, 0, "{out:?}");

    // The spec file changes: the next container sees the new edits.
    write_spec(&specs, host.path(), "2");
    let mut by_annotation = container_config("annotated", &["sleep", "3600"]);
    by_annotation
        .annotations
        .insert("cdi.k8s.io/test".into(), "crust.test/dev=one".into());
    let id2 = create(&mut rt, &pod, &pod_config, by_annotation).await;
    start(&mut rt, &id2).await;
    let out = exec(&mut rt, &id2, &["sh", "-c", script], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cdi data 2 crust\n",
        "{out:?}"
    );

    // Unknown devices, and a device of a broken spec file, are refused by name.
    std::fs::write(specs.join("broken.yaml"), "kind: [not a spec").unwrap();
    for (device, names) in [
        (
            "crust.test/dev=two",
            vec!["crust.test/dev=two", "broken.yaml"],
        ),
        ("other.test/x=y", vec!["other.test/x=y"]),
    ] {
        let mut c = container_config("refused", &["true"]);
        c.cdi_devices = vec![CdiDevice {
            name: device.into(),
        }];
        let err = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(c),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        for name in names {
            assert!(err.message().contains(name), "{name} not in {err:?}");
        }
    }
    let listed = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.len(),
        3,
        "a refused create leaves no container: {listed:?}"
    );
    remove_pod(&mut rt, &pod).await;
}
