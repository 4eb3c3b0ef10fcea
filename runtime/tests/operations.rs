//! crustd's operation as a node service: SIGHUP reloads the config file (the log
//! level and the `[registry]` table at once; other changes are logged as needing a
//! restart; a file that does not load keeps the old config), `log_format = "json"`
//! writes one JSON object per log line, and each change of a pod or container is one
//! log line naming the pod (namespace, name, id) and the container; `[metrics]
//! address` serves Prometheus metrics that a strict OpenMetrics parser reads. The pod network
//! of the last test is bridge `crustop0`, 10.81.0.0/24.

mod common;

use std::time::{Duration, Instant};

use common::pods::*;
use common::{Crustd, Layout, registry};
use crust_proto::cri::{ContainerState, VersionRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Waits until crustd's log holds `needle`; returns the log.
async fn wait_log(d: &Crustd, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = d.log();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "{needle:?} never logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hup(d: &Crustd) {
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGHUP).unwrap();
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn sighup_applies_mirrors_and_log_level_and_keeps_the_rest() {
    let dead = "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://127.0.0.1:9\"]\n";
    let layout = Layout::new(dead);
    let base = std::fs::read_to_string(&layout.config).unwrap();
    let head = base
        .replace(dead, "")
        .replace("log_level = \"debug\"\n", "");
    std::fs::write(
        &layout.config,
        format!("{head}log_level = \"info\"\n{dead}"),
    )
    .unwrap();
    let d = layout.start().await;
    let err = d.pull(IMAGE).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    wait_log(&d, "mirror=http://127.0.0.1:9").await;

    // The local registry as the mirror, debug logs, and a streaming port (restart only).
    let good = format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://{}\"]\n",
        registry()
    );
    std::fs::write(
        &d.config,
        format!("{head}log_level = \"debug\"\n[streaming]\nport = 10999\n{good}"),
    )
    .unwrap();
    hup(&d);
    wait_log(&d, "reload: registry mirrors and insecure hosts in use").await;
    wait_log(&d, "reload: log level in use").await;
    let log = wait_log(&d, "change only with a restart").await;
    assert!(log.contains("streaming"), "{log}");
    let id = d
        .pull(IMAGE)
        .await
        .expect("a pull through the reloaded mirror");
    assert!(id.starts_with("sha256:"), "{id}");
    wait_log(&d, "DEBUG").await;

    // A file that does not load changes nothing; crustd serves on.
    std::fs::write(&d.config, "log_level = [").unwrap();
    hup(&d);
    wait_log(&d, "the config file does not load").await;
    d.runtime()
        .await
        .version(VersionRequest::default())
        .await
        .expect("still serving");
    d.pull(IMAGE).await.expect("the mirror in use stays");
}

#[tokio::test(flavor = "current_thread")]
async fn json_logs_are_one_object_per_line() {
    let d = Crustd::start("log_format = \"json\"\n").await;
    let log = wait_log(&d, "crustd serving").await;
    let mut serving = false;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["message"] == "crustd serving" {
            serving = true;
            assert!(
                v["socket"].is_string(),
                "fields are keys of their own: {line}"
            );
        }
    }
    assert!(serving, "{log}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn each_pod_and_container_change_is_one_line_naming_them() {
    let node = Node::start("crustop0", "10.81.0.0/24").await;
    let mut rt = node.rt().await;
    let pod_config = pod_config("logged", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;
    let id = create(&mut rt, &pod, &pod_config, container_config("c", &["true"])).await;
    start(&mut rt, &id).await;
    wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    remove_pod(&mut rt, &pod).await;

    let log = node.crustd.log();
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("pod_id={pod}")))
        .collect();
    let expected = [
        "pod ready",
        "container created",
        "container started",
        "container exited",
        "pod stopped",
        "container removed",
        "pod removed",
    ];
    let seen: Vec<&str> = changes
        .iter()
        .filter_map(|l| expected.iter().find(|e| l.contains(*e)).copied())
        .collect();
    assert_eq!(seen, expected, "{}", changes.join("\n"));
    for line in &changes {
        assert!(
            line.contains("pod_namespace=") && line.contains("pod=logged"),
            "{line}"
        );
    }
    for line in changes.iter().filter(|l| l.contains("container ")) {
        assert!(
            line.contains(&format!("container_id={id}")) && line.contains("container=c"),
            "{line}"
        );
    }
    assert!(
        changes.iter().any(|l| l.contains("container exited")
            && l.contains("exit_code=0")
            && l.contains("reason=Completed")),
        "{}",
        changes.join("\n")
    );
}

/// GET `path` from `addr` over plain HTTP/1.0; the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    body.to_owned()
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs Debian's python3-prometheus-client; scripts/test runs it"]
async fn metrics_are_served_and_parse() {
    let d = Crustd::start("[metrics]\naddress = \"127.0.0.1:0\"\n").await;
    let log = wait_log(&d, "metrics server listening").await;
    let addr = log
        .lines()
        .find(|l| l.contains("metrics server listening"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_owned())
        .unwrap();
    let mut rt = d.runtime().await;
    rt.version(VersionRequest::default()).await.unwrap();
    let _ = rt
        .container_status(crust_proto::cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    let body = http_get(&addr, "/metrics");
    for needle in [
        "crust_grpc_requests_total{rpc=\"Version\",code=\"OK\"} ",
        "crust_grpc_requests_total{rpc=\"ContainerStatus\",code=\"NotFound\"} 1",
        "crust_grpc_request_duration_seconds_count{rpc=\"Version\"} ",
        "crust_pods{state=\"SANDBOX_READY\"} 0",
        "crust_containers{state=\"CONTAINER_RUNNING\"} 0",
        "crust_image_pulls_in_flight 0",
        "crust_build_info{version=",
        "# EOF",
    ] {
        assert!(body.contains(needle), "{needle} not in\n{body}");
    }
    // Checked by the Prometheus project's own OpenMetrics parser (strict).
    let parsed = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             print(len(list(p(sys.stdin.read()))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run python3 (Debian's python3-prometheus-client)");
    assert!(
        parsed.status.success(),
        "{}\n{body}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let families: usize = String::from_utf8_lossy(&parsed.stdout)
        .trim()
        .parse()
        .unwrap();
    assert_eq!(families, 13, "{body}");
}
