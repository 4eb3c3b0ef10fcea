//! Image volumes through a real crustd: a CRI mount naming an image shows the image's
//! files read-only at its container path (a sub path of it where given), the image
//! stays usable while the container exists even after RemoveImage, and nothing is
//! left mounted once the container is gone. Runs as root with the local registry; the
//! pod network is bridge `crustiv0`, 10.83.0.0/24.

mod common;

use common::pods::*;
use crust_proto::cri::*;
use tonic::Code;

const BRIDGE: &str = "crustiv0";
const SUBNET: &str = "10.83.0.0/24";

fn volume(on: &str, sub: &str) -> Mount {
    Mount {
        container_path: on.into(),
        readonly: true,
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn an_image_volume_shows_the_image_read_only_and_leaves_nothing() {
    let node = Node::start(BRIDGE, SUBNET).await;
    let mut rt = node.rt().await;
    let mut images = node.crustd.images().await;
    let pod_config = pod_config("iv", &node.logs());
    let pod = run_pod(&mut rt, &pod_config).await;

    let mut config = container_config("c", &["sleep", "3600"]);
    config.mounts = vec![volume("/image", ""), volume("/image-bin", "bin")];
    let id = create(&mut rt, &pod, &pod_config, config).await;
    let image_id = images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .id;
    let s = status(&mut rt, &id).await;
    let reported: Vec<&str> = s
        .mounts
        .iter()
        .map(|m| m.image.as_ref().unwrap().image_ref.as_str())
        .collect();
    assert_eq!(reported, [image_id.as_str(), image_id.as_str()], "{s:?}");

    // Removed while the container uses it: its files stay until the container goes.
    images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    start(&mut rt, &id).await;
    let out = exec(
        &mut rt,
        &id,
        &["ls", "/image/bin/busybox", "/image-bin/busybox"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    let out = exec(&mut rt, &id, &["/image-bin/busybox", "true"], 10)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "a binary of the volume runs: {out:?}");
    let out = exec(&mut rt, &id, &["touch", "/image/x"], 10)
        .await
        .unwrap();
    assert_ne!(out.exit_code, 0, "the volume is read-only: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{out:?}"
    );
    assert!(
        !node.mounts("/volumes/").is_empty(),
        "the volumes are mounted under the container's dir"
    );

    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(node.mounts("/volumes/"), Vec::<String>::new());

    // A volume of an image not pulled is NotFound, and the create leaves nothing.
    let mut config = container_config("c2", &["true"]);
    config.mounts = vec![volume("/image", "")];
    config.mounts[0].image.as_mut().unwrap().image = "registry.k8s.io/not-pulled:1".into();
    node.crustd.pull(IMAGE).await.unwrap();
    let err = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("not-pulled"), "{err:?}");
    assert!(err.message().contains("mounts[0]"), "{err:?}");
    remove_pod(&mut rt, &pod).await;
    assert_eq!(node.mounts("/volumes/"), Vec::<String>::new());
}
