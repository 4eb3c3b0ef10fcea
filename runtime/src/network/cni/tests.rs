//! [`Cni`] against fake plugins: tiny shell scripts in a temp bin dir that record their
//! environment and stdin and print canned results, test doubles of the CNI protocol.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    cni: Cni,
    sandbox: SandboxId,
    pod: PodIdentity,
}

/// Each fake records `<calls>/NN-<CMD>-<type>.json` (its stdin) and a line of its
/// `CNI_*` environment in `env.log`, then runs `body`.
const RECORD: &str = r#"#!/bin/sh
n=$(ls "$CALLS" | wc -l)
cat > "$CALLS/$(printf %02d "$n")-$CNI_COMMAND-$TYPE.json"
echo "$CNI_COMMAND $TYPE id=$CNI_CONTAINERID netns=$CNI_NETNS if=$CNI_IFNAME path=$CNI_PATH args=$CNI_ARGS" >> "$CALLS/../env.log"
"#;

/// A plugin that prints `result` on ADD and nothing on DEL and CHECK.
fn ok_body(result: &Value) -> String {
    format!("[ \"$CNI_COMMAND\" = ADD ] && echo '{result}'\nexit 0\n")
}

fn result_for(ip: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"interface": 0, "address": format!("{ip}/24")}],
    })
}

impl Fixture {
    fn new(conflist: Value, plugins: &[(&str, String)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (conf, empty_bin, bin) = (
            dir.path().join("net.d"),
            dir.path().join("empty-bin"),
            dir.path().join("bin"),
        );
        for d in [&conf, &empty_bin, &bin, &dir.path().join("calls")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(conf.join("10-test.conflist"), conflist.to_string()).unwrap();
        let calls = dir.path().join("calls");
        for (name, body) in plugins {
            let record = RECORD
                .replace("$CALLS", &calls.display().to_string())
                .replace("$TYPE", name);
            let path = bin.join(name);
            fs::write(&path, format!("{record}{body}")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cni = Cni::new(
            NetworkConfig {
                conf_dir: conf,
                bin_dirs: vec![empty_bin, bin],
            },
            dir.path().join("cni-cache"),
        );
        Fixture {
            dir,
            cni,
            sandbox: SandboxId::generate(),
            pod: PodIdentity {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u-1".into(),
            },
        }
    }

    fn attachment(&self, netns: &'static str) -> Attachment<'_> {
        Attachment {
            sandbox: &self.sandbox,
            netns: Path::new(netns),
            pod: &self.pod,
            runtime: RuntimeConfig {
                port_mappings: vec![PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                }],
                ..Default::default()
            },
        }
    }

    /// The calls so far, as `CMD-type`, and their stdin.
    fn calls(&self) -> Vec<(String, Value)> {
        let mut names: Vec<_> = fs::read_dir(self.dir.path().join("calls"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let name = p.file_stem().unwrap().to_str().unwrap();
                let stdin = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
                (name[3..].to_owned(), stdin)
            })
            .collect()
    }

    fn env_log(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("env.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear_calls(&self) {
        fs::remove_dir_all(self.dir.path().join("calls")).unwrap();
        fs::create_dir(self.dir.path().join("calls")).unwrap();
        let _ = fs::remove_file(self.dir.path().join("env.log"));
    }
}

fn three_plugins() -> Fixture {
    Fixture::new(
        json!({"cniVersion": "1.0.0", "name": "pods", "plugins": [
            {"type": "first", "ipam": {"type": "x"}},
            {"type": "second"},
            {"type": "third", "capabilities": {"portMappings": true}},
        ]}),
        &[
            ("first", ok_body(&result_for("10.0.0.1"))),
            ("second", ok_body(&result_for("10.0.0.2"))),
            ("third", ok_body(&result_for("10.0.0.3"))),
        ],
    )
}

fn names(calls: &[(String, Value)]) -> Vec<&str> {
    calls.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn add_chains_prev_results_and_del_reverses() {
    let f = three_plugins();
    let att = f.attachment("/proc/self/ns/net");
    let status = f.cni.add(&att).await.unwrap();
    assert_eq!(status.network, "pods");
    assert_eq!(status.ips, ["10.0.0.3".parse::<IpAddr>().unwrap()]);

    let calls = f.calls();
    assert_eq!(names(&calls), ["ADD-first", "ADD-second", "ADD-third"]);
    assert_eq!(calls[0].1["name"], "pods");
    assert_eq!(calls[0].1["cniVersion"], "1.0.0");
    assert!(calls[0].1.get("prevResult").is_none());
    assert!(calls[0].1.get("runtimeConfig").is_none());
    assert_eq!(calls[1].1["prevResult"], result_for("10.0.0.1"));
    assert_eq!(calls[2].1["prevResult"], result_for("10.0.0.2"));
    assert_eq!(
        calls[2].1["runtimeConfig"]["portMappings"],
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    );
    let bins = f.cni.conf.bin_dirs.iter().map(|d| d.display().to_string());
    let expected_env = format!(
        "ADD first id={id} netns=/proc/self/ns/net if=eth0 path={path} args=IgnoreUnknown=1;\
         K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=u-1",
        id = f.sandbox,
        path = bins.collect::<Vec<_>>().join(":"),
    );
    assert_eq!(f.env_log()[0], expected_env);

    let cached = cache::read(&f.cni.cache_dir, f.sandbox.as_str())
        .unwrap()
        .unwrap();
    assert_eq!(cached.result, Some(result_for("10.0.0.3")));

    // A changed conf dir does not change what DEL runs: the cache says what ADD ran,
    // and a new Cni (a restarted crustd) finds it.
    fs::write(
        f.cni.conf.conf_dir.join("10-test.conflist"),
        json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "first"}]}).to_string(),
    )
    .unwrap();
    f.clear_calls();
    let restarted = Cni::new(f.cni.conf.clone(), f.cni.cache_dir.clone());
    restarted.del(&att).await.unwrap();
    let calls = f.calls();
    assert_eq!(names(&calls), ["DEL-third", "DEL-second", "DEL-first"]);
    for (_, stdin) in &calls {
        assert_eq!(stdin["prevResult"], result_for("10.0.0.3"));
        assert_eq!(stdin["name"], "pods");
    }
    assert_eq!(
        calls[0].1["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(!f.cni.cache_file(&f.sandbox).exists());
}

#[tokio::test]
async fn del_without_cache_or_netns_still_runs() {
    let f = three_plugins();
    let att = f.attachment("/nonexistent/netns/pin");
    f.cni.del(&att).await.unwrap();
    let calls = f.calls();
    assert_eq!(names(&calls), ["DEL-third", "DEL-second", "DEL-first"]);
    assert!(calls.iter().all(|(_, s)| s.get("prevResult").is_none()));
    assert!(
        f.env_log().iter().all(|l| l.contains(" netns= ")),
        "{:?}",
        f.env_log()
    );
    // Again: DEL is safe to repeat.
    f.cni.del(&att).await.unwrap();
}

#[tokio::test]
async fn corrupt_cache_falls_back_to_current_config() {
    let f = three_plugins();
    fs::create_dir_all(&f.cni.cache_dir).unwrap();
    fs::write(f.cni.cache_file(&f.sandbox), "{").unwrap();
    f.cni.del(&f.attachment("/proc/self/ns/net")).await.unwrap();
    assert_eq!(names(&f.calls()).len(), 3);
    assert!(!f.cni.cache_file(&f.sandbox).exists());
}

#[tokio::test]
async fn check_runs_in_order_with_the_cached_result() {
    let f = three_plugins();
    let att = f.attachment("/proc/self/ns/net");
    let err = f.cni.check(&att).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains(f.sandbox.as_str()), "{err}");

    f.cni.add(&att).await.unwrap();
    f.clear_calls();
    assert_eq!(f.cni.check(&att).await.unwrap(), CheckOutcome::Passed);
    let calls = f.calls();
    assert_eq!(
        names(&calls),
        ["CHECK-first", "CHECK-second", "CHECK-third"]
    );
    assert!(
        calls
            .iter()
            .all(|(_, s)| s["prevResult"] == result_for("10.0.0.3"))
    );
}

#[tokio::test]
async fn check_is_skipped_when_disabled_or_too_old() {
    for list in [
        json!({"cniVersion": "1.0.0", "name": "n", "disableCheck": true, "plugins": [{"type": "p"}]}),
        json!({"cniVersion": "0.3.1", "name": "n", "plugins": [{"type": "p"}]}),
    ] {
        let f = Fixture::new(list, &[("p", ok_body(&result_for("10.0.0.9")))]);
        let att = f.attachment("/proc/self/ns/net");
        f.cni.add(&att).await.unwrap();
        assert_eq!(f.cni.check(&att).await.unwrap(), CheckOutcome::Skipped);
        assert!(!names(&f.calls()).iter().any(|n| n.starts_with("CHECK")));
    }
}

#[tokio::test]
async fn single_conf_is_one_plugin() {
    let f = Fixture::new(
        json!({"cniVersion": "0.4.0", "name": "single", "type": "p", "bridge": "b0"}),
        &[("p", ok_body(&result_for("10.0.0.4")))],
    );
    let status = f.cni.add(&f.attachment("/proc/self/ns/net")).await.unwrap();
    assert_eq!(status.ips, ["10.0.0.4".parse::<IpAddr>().unwrap()]);
    let calls = f.calls();
    assert_eq!(calls[0].1["bridge"], "b0");
    assert_eq!(calls[0].1["cniVersion"], "0.4.0");
}

#[tokio::test]
async fn plugin_error_names_plugin_sandbox_and_stderr() {
    let fail = r#"echo 'lease store locked' >&2
echo '{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"try later"}'
exit 1
"#;
    let f = Fixture::new(
        json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}, {"type": "b"}]}),
        &[("a", ok_body(&result_for("10.0.0.5"))), ("b", fail.into())],
    );
    let att = f.attachment("/proc/self/ns/net");
    let err = f.cni.add(&att).await.unwrap_err();
    let text = err.to_string();
    for part in [
        f.sandbox.as_str(),
        "ADD plugin b",
        "failed to allocate: try later",
        "code 11",
        "lease store locked",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    // The failed ADD left its config in the cache, without a result; DEL uses it.
    let cached = cache::read(&f.cni.cache_dir, f.sandbox.as_str())
        .unwrap()
        .unwrap();
    assert_eq!(cached.result, None);
    f.clear_calls();
    let err = f.cni.del(&att).await.unwrap_err();
    assert_eq!(names(&f.calls()), ["DEL-b"]);
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn plain_failure_and_bad_result() {
    let f = Fixture::new(
        json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}]}),
        &[("a", "echo 'not json'\nexit 0\n".into())],
    );
    let err = f
        .cni
        .add(&f.attachment("/proc/self/ns/net"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadResult { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);

    let f = Fixture::new(
        json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}]}),
        &[("a", "exit 3\n".into())],
    );
    let err = f
        .cni
        .add(&f.attachment("/proc/self/ns/net"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exit status: 3"), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn timeout_kills_the_plugin_and_its_children() {
    let f = Fixture::new(
        json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "slow"}]}),
        &[(
            "slow",
            "echo started >&2\nsleep 60 &\necho $! > \"$0.child\"\nwait\n".into(),
        )],
    );
    let cni = f.cni.clone().with_timeout(Duration::from_millis(1500));
    let err = cni
        .add(&f.attachment("/proc/self/ns/net"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded);
    assert!(err.to_string().contains("started"), "{err}");
    let child = fs::read_to_string(f.cni.conf.bin_dirs[1].join("slow.child")).unwrap();
    let child: i32 = child.trim().parse().unwrap();
    // The group was killed: the orphaned sleep is gone once init reaps it.
    let gone = (0..200).any(|_| {
        let state = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(gone, "sleep {child} survived the timeout");
}

#[tokio::test]
async fn missing_network_or_plugin_is_failed_precondition() {
    let f = three_plugins();
    fs::remove_file(f.cni.conf.bin_dirs[1].join("second")).unwrap();
    let err = f
        .cni
        .add(&f.attachment("/proc/self/ns/net"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains("\"second\""), "{err}");

    fs::remove_file(f.cni.conf.conf_dir.join("10-test.conflist")).unwrap();
    let err = f
        .cni
        .add(&f.attachment("/proc/self/ns/net"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(
        err.to_string()
            .starts_with(&format!("sandbox {}: cni: no network config", f.sandbox))
    );
}
