//! Images in and out of crustd as archives, for nodes without a registry: `crustd
//! image import` of archives made by skopeo (an OCI layout and a `docker save`
//! archive, the latter from standard input), a container run from an imported image,
//! `crustd image export` read back by skopeo and imported again with the same id and
//! repo digest, and archives that must not import (a tampered layer, not an archive)
//! leaving no image. The pod network is bridge `crustia0`, 10.80.0.0/24.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::pods::*;
use common::{CRUSTD, Crustd, registry};
use crust_proto::cri::{ContainerState, ImageSpec, ImageStatusRequest, RemoveImageRequest};

const OCI: &str = "registry.k8s.io/e2e-test-images/busybox:from-oci-archive";
const DOCKER: &str = "registry.k8s.io/e2e-test-images/busybox:from-docker-archive";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn crustd_image(d: &Crustd, args: &[&str]) -> Command {
    let mut cmd = Command::new(CRUSTD);
    cmd.arg("--config").arg(&d.config).arg("image").args(args);
    cmd
}

fn skopeo_copy(to: &str) {
    let from = format!("docker://{}/e2e-test-images/busybox:1.29-2", registry());
    run(Command::new("skopeo").args(["copy", "--quiet", "--src-tls-verify=false", &from, to]));
}

async fn image_status(d: &Crustd, image: &str) -> Option<crust_proto::cri::Image> {
    d.images()
        .await
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("image status")
        .into_inner()
        .image
}

async fn remove_image(d: &Crustd, image: &str) {
    d.images()
        .await
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("remove image");
}

/// Rewrites the OCI layout archive `from` as `to` with one byte of its largest blob
/// (the layer) changed.
fn tamper(from: &Path, to: &Path, work: &Path) {
    let dir = work.join("tampered");
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar").arg("-xf").arg(from).arg("-C").arg(&dir));
    let blobs = dir.join("blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&largest, bytes).unwrap();
    run(Command::new("tar")
        .arg("-cf")
        .arg(to)
        .arg("-C")
        .arg(&dir)
        .arg("."));
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the local registry and skopeo; scripts/test runs it"]
async fn archives_from_skopeo_import_run_and_export_back() {
    let node = Node::start("crustia0", "10.80.0.0/24").await;
    let d = &node.crustd;
    let work = tempfile::tempdir().unwrap();
    let oci = work.path().join("oci.tar");
    let docker = work.path().join("docker.tar");
    skopeo_copy(&format!("oci-archive:{}:{OCI}", oci.display()));
    skopeo_copy(&format!("docker-archive:{}:{DOCKER}", docker.display()));
    let pulled = image_status(d, IMAGE).await.expect("the pulled image");

    // An OCI layout from a file.
    let out = run(&mut crustd_image(d, &["import", oci.to_str().unwrap()]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(OCI), "{said}");
    let from_oci = image_status(d, OCI).await.expect("the OCI archive's image");
    // skopeo writes the config in OCI's media type, so it is another image id.
    assert!(from_oci.id.starts_with("sha256:"), "{from_oci:?}");
    assert!(
        from_oci.repo_tags.contains(&OCI.to_string()),
        "{from_oci:?}"
    );

    // A docker save archive from standard input.
    let out =
        run(crustd_image(d, &["import", "-"])
            .stdin(Stdio::from(std::fs::File::open(&docker).unwrap())));
    assert!(String::from_utf8_lossy(&out.stdout).contains(DOCKER));
    let from_docker = image_status(d, DOCKER)
        .await
        .expect("the docker archive's image");
    assert_eq!(from_docker.id, pulled.id);
    assert!(
        from_docker
            .repo_digests
            .iter()
            .any(|r| r.starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:")),
        "{from_docker:?}"
    );

    // A container of the imported image runs.
    let mut rt = node.rt().await;
    let pod_config = pod_config("archive", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;
    let mut config = container_config("imported", &["echo", "ran from an archive"]);
    config.image = Some(ImageSpec {
        image: DOCKER.into(),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, &pod_config, config).await;
    start(&mut rt, &id).await;
    let exited = wait_state(&mut rt, &id, ContainerState::ContainerExited).await;
    assert_eq!(exited.exit_code, 0, "{exited:?}");
    wait_log(
        &node.logs().join("archive/imported.log"),
        "ran from an archive",
    )
    .await;
    remove_pod(&mut rt, &pod).await;

    // Export, read back by skopeo, and imported again after the image is gone.
    let exported = work.path().join("exported.tar");
    run(&mut crustd_image(
        d,
        &["export", IMAGE, exported.to_str().unwrap()],
    ));
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}", exported.display()),
    ]));
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(config["rootfs"]["diff_ids"].is_array(), "{config}");
    for image in [IMAGE, OCI, DOCKER] {
        remove_image(d, image).await;
    }
    assert!(image_status(d, IMAGE).await.is_none());
    run(&mut crustd_image(
        d,
        &["import", exported.to_str().unwrap()],
    ));
    let again = image_status(d, IMAGE).await.expect("imported again");
    assert_eq!(again.id, pulled.id);
    assert_eq!(again.repo_digests, pulled.repo_digests, "the manifest kept");

    // A tampered layer and a file that is no archive import nothing (on a crustd
    // without the genuine layer: a stored blob is never read again).
    let fresh = Crustd::start("").await;
    let tampered = work.path().join("tampered.tar");
    tamper(&oci, &tampered, work.path());
    let out = crustd_image(&fresh, &["import", tampered.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("content does not match"), "{said}");
    assert!(
        image_status(&fresh, OCI).await.is_none(),
        "nothing recorded"
    );
    let blobs = fresh.root().join("images/blobs/sha256");
    let stored = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert!(stored <= 3, "manifests and config at most: {stored} blobs");
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, "not an archive").unwrap();
    let out = crustd_image(d, &["import", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("junk.tar") || said.contains("image archive"),
        "{said}"
    );

    // An image crustd does not have is named in the error.
    let out = crustd_image(d, &["export", "registry.k8s.io/none:1", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registry.k8s.io/none:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
