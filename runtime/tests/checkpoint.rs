//! CheckpointContainer through a real crustd and CRIU: a container counting in a loop
//! is checkpointed with `crictl checkpoint` into an archive in the layout CRI-O and
//! containerd write (CRIU's images, config.dump, spec.dump, rootfs-diff.tar with the
//! files it wrote, deleted.files with those it removed), and goes on counting.
//!
//! CRIU (Debian's 3.17) cannot run on this project's development host's kernel: the
//! test guest runs these (scripts/vm/test), and scripts/test leaves them out
//! (`--skip checkpoint_`) where `criu check` fails. The guest has crictl at
//! CRUST_TEST_CRICTL.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::pods::*;

const BRIDGE: &str = "crustck0";
const SUBNET: &str = "10.79.0.0/24";

fn crictl() -> PathBuf {
    std::env::var_os("CRUST_TEST_CRICTL")
        .map(PathBuf::from)
        .expect("CRUST_TEST_CRICTL: the crictl of the test guest")
}

/// The names in the tar archive at `path`.
fn names(path: &std::path::Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap();
    tar::Archive::new(file)
        .entries()
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path().unwrap().display().to_string();
            p.trim_start_matches("./").to_owned()
        })
        .collect()
}

/// One member of the tar archive at `path`.
fn member(path: &std::path::Path, name: &str) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(file);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path()
            .unwrap()
            .display()
            .to_string()
            .trim_start_matches("./")
            == name
        {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut out).unwrap();
            return out;
        }
    }
    panic!("no {name} in {}", path.display());
}

async fn count(rt: &mut RuntimeServiceClient, id: &str) -> u64 {
    let out = exec(rt, id, &["cat", "/count"], 10).await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("count {out:?}: {e}"))
}

type RuntimeServiceClient =
    crust_proto::cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, CRIU on a kernel it runs on, the CNI plugins and the local registry; the test guest runs it"]
async fn checkpoint_a_counting_container_into_an_archive() {
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let pod_config = pod_config("ckpt", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;
    let script = "rm -f /bin/true; echo kept > /marker; i=0; \
                  while true; do echo $i > /count; i=$((i+1)); sleep 0.1; done";
    let config = container_config("counter", &["sh", "-c", script]);
    let id = create(&mut rt, &pod, &pod_config, config).await;
    start(&mut rt, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = count(&mut rt, &id).await;
    let archive = node.logs().join("counter.tar");
    let out = Command::new(crictl())
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", node.crustd.socket.display()))
        .args(["checkpoint", "--export"])
        .arg(&archive)
        .arg(&id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crictl checkpoint: {out:?}\n{}",
        node.crustd.log()
    );
    let names = names(&archive);
    for want in [
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
        "checkpoint/inventory.img",
    ] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&member(&archive, "config.dump")).unwrap();
    assert_eq!(config["id"], id.as_str());
    assert_eq!(config["name"], "counter");
    let spec: serde_json::Value = serde_json::from_slice(&member(&archive, "spec.dump")).unwrap();
    assert_eq!(spec["process"]["args"][0], "sh");
    let deleted: Vec<String> = serde_json::from_slice(&member(&archive, "deleted.files")).unwrap();
    assert!(deleted.contains(&"bin/true".to_owned()), "{deleted:?}");
    let diff = member(&archive, "rootfs-diff.tar");
    let diff_names: Vec<String> = tar::Archive::new(diff.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(diff_names.contains(&"count".to_owned()), "{diff_names:?}");
    // It goes on counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = count(&mut rt, &id).await;
    assert!(after > before, "{before} then {after}");
    remove_pod(&mut rt, &pod).await;
    let checkpointed = count_in_diff(&diff);

    // Restored in a new pod, from the archive as the image, as CRI-O does it: it goes
    // on counting from where it was, with its rootfs changes.
    let pod_config = common::pods::pod_config("restored", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;
    let mut config = container_config("counter", &["sh", "-c", script]);
    config.image = Some(crust_proto::cri::ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, &pod_config, config).await;
    start(&mut rt, &id).await;
    let first = count(&mut rt, &id).await;
    assert!(
        first >= checkpointed,
        "restarted at {first}, checkpointed at {checkpointed}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = count(&mut rt, &id).await;
    assert!(later > first, "{first} then {later}: not counting");
    let out = exec(
        &mut rt,
        &id,
        &["sh", "-c", "cat /marker; test -e /bin/true || echo gone"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kept\ngone\n",
        "{out:?}"
    );
    remove_pod(&mut rt, &pod).await;
}

/// The count in the checkpoint's rootfs-diff.tar.
fn count_in_diff(diff: &[u8]) -> u64 {
    let mut archive = tar::Archive::new(diff);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().display().to_string() == "count" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return s.trim().parse().unwrap();
        }
    }
    panic!("no count in rootfs-diff.tar")
}
