use crust_proto::cri::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption, PodSandboxConfig,
};

use super::*;

fn map(container_id: u32, host_id: u32, length: u32) -> IdMapping {
    IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn pod(opts: NamespaceOption) -> PodSandboxConfig {
    PodSandboxConfig {
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(opts),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn userns(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> NamespaceOption {
    NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

#[test]
fn pod_mode_with_one_mapping_each() {
    let got = of_pod(&pod(userns(
        NamespaceMode::Pod,
        vec![map(0, 1000, 100000)],
        vec![map(0, 2000, 65536)],
    )))
    .unwrap()
    .unwrap();
    assert_eq!(got.uid.arg(), "0:1000:100000");
    assert_eq!(got.gid.arg(), "0:2000:65536");
    assert_eq!(got.root(), (1000, 2000));
    assert_eq!(got.uid.to_host(0), Some(1000));
    assert_eq!(got.uid.to_host(99999), Some(100999));
    assert_eq!(got.uid.to_host(100000), None);
}

#[test]
fn node_mode_and_no_options_are_the_host() {
    assert_eq!(of_pod(&PodSandboxConfig::default()), Ok(None));
    assert_eq!(of_pod(&pod(NamespaceOption::default())), Ok(None));
    assert_eq!(
        of_pod(&pod(userns(NamespaceMode::Node, vec![], vec![]))),
        Ok(None)
    );
    let err = of_pod(&pod(userns(
        NamespaceMode::Node,
        vec![map(0, 1000, 1)],
        vec![],
    )))
    .unwrap_err();
    assert!(err.contains("NODE takes no mappings"), "{err}");
}

#[test]
fn refuses_what_critest_expects_refused() {
    let two = vec![map(0, 1000, 100000), map(0, 2000, 100000)];
    let err = of_pod(&pod(userns(NamespaceMode::Pod, two.clone(), two))).unwrap_err();
    assert!(err.contains("exactly one uid mapping, got 2"), "{err}");

    let one = vec![map(1, 1000, 100000)];
    let err = of_pod(&pod(userns(NamespaceMode::Pod, one.clone(), one))).unwrap_err();
    assert!(err.contains("must map container id 0"), "{err}");

    for mode in [NamespaceMode::Container, NamespaceMode::Target] {
        let err = of_pod(&pod(userns(mode, vec![], vec![]))).unwrap_err();
        assert!(err.contains("is not supported"), "{err}");
        assert!(err.contains(mode.as_str_name()), "{err}");
    }
}

#[test]
fn refuses_bad_mappings() {
    let ok = vec![map(0, 1000, 10)];
    for (uids, gids, want) in [
        (vec![], ok.clone(), "exactly one uid mapping, got 0"),
        (ok.clone(), vec![], "exactly one gid mapping, got 0"),
        (vec![map(0, 1000, 0)], ok.clone(), "length 0"),
        (vec![map(0, u32::MAX, 2)], ok.clone(), "overflows"),
    ] {
        let err = of_pod(&pod(userns(NamespaceMode::Pod, uids, gids))).unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    let mut opts = userns(NamespaceMode::Pod, ok.clone(), ok.clone());
    opts.userns_options.as_mut().unwrap().mode = 9;
    assert!(of_pod(&pod(opts)).unwrap_err().contains("unknown"));
}

#[test]
fn refuses_host_namespaces_with_a_pod_user_namespace() {
    let ok = vec![map(0, 1000, 10)];
    for field in ["network", "ipc", "pid"] {
        let mut opts = userns(NamespaceMode::Pod, ok.clone(), ok.clone());
        let node = NamespaceMode::Node as i32;
        match field {
            "network" => opts.network = node,
            "ipc" => opts.ipc = node,
            _ => opts.pid = node,
        }
        let err = of_pod(&pod(opts)).unwrap_err();
        assert!(err.contains(&format!("host's {field} namespace")), "{err}");
    }
}
