//! crustd's operation as a node service: SIGHUP reloads the config file (the log
//! level and the `[registry]` table at once; other changes are logged as needing a
//! restart; a file that does not load keeps the old config), and `log_format =
//! "json"` writes one JSON object per log line.

mod common;

use std::time::{Duration, Instant};

use common::{Crustd, Layout, registry};
use crust_proto::cri::{ImageSpec, PullImageRequest, VersionRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";

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

async fn pull(d: &Crustd) -> Result<String, tonic::Status> {
    d.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
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
    let err = pull(&d).await.unwrap_err();
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
    let id = pull(&d).await.expect("a pull through the reloaded mirror");
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
    pull(&d).await.expect("the mirror in use stays");
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
