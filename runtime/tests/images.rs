//! The ImageService of a real crustd against the local registry, used as a mirror of
//! registry.k8s.io and gcr.io: pulls, lookups, removal, errors, and what survives a
//! restart or a crash in the middle of a pull.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Crustd, mirror_config};
use crust_proto::cri::image_service_client::ImageServiceClient;
use crust_proto::cri::{
    ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, StreamImagesRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const BUSYBOX: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
const USER_UID: &str = "gcr.io/k8s-staging-cri-tools/test-image-user-uid:latest";
const USER_NAME: &str = "gcr.io/k8s-staging-cri-tools/test-image-user-username:latest";
const TAGS: [&str; 3] = [
    "gcr.io/k8s-staging-cri-tools/test-image-tags:1",
    "gcr.io/k8s-staging-cri-tools/test-image-tags:2",
    "gcr.io/k8s-staging-cri-tools/test-image-tags:3",
];
/// The largest test image (nginx and its libraries), for interrupting a pull.
const LARGE: &str = "registry.k8s.io/e2e-test-images/nginx:1.14-2";

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(c: &mut ImageServiceClient<Channel>, image: &str) -> Result<String, tonic::Status> {
    let req = PullImageRequest {
        image: spec(image),
        ..Default::default()
    };
    Ok(c.pull_image(req).await?.into_inner().image_ref)
}

async fn status(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Option<crust_proto::cri::Image> {
    let req = ImageStatusRequest {
        image: spec(image),
        verbose: false,
    };
    c.image_status(req).await.unwrap().into_inner().image
}

async fn remove(c: &mut ImageServiceClient<Channel>, image: &str) {
    let req = RemoveImageRequest { image: spec(image) };
    c.remove_image(req).await.unwrap();
}

async fn list(c: &mut ImageServiceClient<Channel>) -> Vec<crust_proto::cri::Image> {
    c.list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

/// What a crash may have left half-done in the image store: anything in its temp
/// dir, and any blob whose content does not hash to its name.
fn leftovers(images: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(images.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    for blob in std::fs::read_dir(images.join("blobs/sha256"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let out = std::process::Command::new("sha256sum")
            .arg(blob.path())
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&out.stdout);
        if !sum.starts_with(&*blob.file_name().to_string_lossy()) {
            found.push(format!(
                "{} (content does not match)",
                blob.path().display()
            ));
        }
    }
    found
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn pull_look_up_list_and_remove_through_a_mirror() {
    let d = Crustd::start(&mirror_config()).await;
    let mut c = d.images().await;

    let id = pull(&mut c, BUSYBOX).await.unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    let by_tag = status(&mut c, BUSYBOX).await.expect("status by tag");
    assert_eq!(by_tag.id, id);
    assert_eq!(by_tag.repo_tags, [BUSYBOX]);
    assert_eq!(by_tag.repo_digests.len(), 1);
    assert!(by_tag.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
    assert!(by_tag.size > 0);
    assert_eq!(status(&mut c, &id).await.unwrap().id, id, "by id");
    let digest_ref = by_tag.repo_digests[0].clone();
    assert_eq!(
        status(&mut c, &digest_ref).await.unwrap().id,
        id,
        "by digest"
    );

    // Image users as the security-context specs expect them.
    pull(&mut c, USER_UID).await.unwrap();
    pull(&mut c, USER_NAME).await.unwrap();
    assert_eq!(
        status(&mut c, USER_UID).await.unwrap().uid.unwrap().value,
        1002
    );
    let named = status(&mut c, USER_NAME).await.unwrap();
    assert_eq!((named.uid, named.username.as_str()), (None, "www-data"));

    // Three tags of one image: one record with three tags; one remove drops all.
    let ids: Vec<String> = futures::future::join_all(TAGS.iter().map(|t| {
        let mut c = c.clone();
        async move { pull(&mut c, t).await.unwrap() }
    }))
    .await;
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let mut tags = status(&mut c, TAGS[0]).await.unwrap().repo_tags;
    tags.sort();
    assert_eq!(tags, TAGS);
    assert_eq!(list(&mut c).await.len(), 4);
    let filtered = c
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(TAGS[1]),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, ids[0]);
    let mut streamed = c
        .stream_images(StreamImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut count = 0;
    while let Some(msg) = streamed.message().await.unwrap() {
        count += msg.images.len();
    }
    assert_eq!(count, 4);

    remove(&mut c, TAGS[2]).await;
    for t in TAGS {
        assert!(status(&mut c, t).await.is_none(), "{t} still there");
    }
    // Removing what is gone succeeds, as CRI asks.
    remove(&mut c, TAGS[2]).await;
    remove(&mut c, &ids[0]).await;
    assert_eq!(list(&mut c).await.len(), 3);

    let fs = c
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.unwrap().value > 1_000_000);
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn bad_references_and_missing_images_are_clear_errors() {
    let d = Crustd::start(&mirror_config()).await;
    let mut c = d.images().await;

    let err = pull(&mut c, "UPPER/Case::bad").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("UPPER/Case::bad"),
        "{}",
        err.message()
    );

    let err = pull(&mut c, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("PullImage"), "{}", err.message());

    let missing = format!("{}/crust/no-such-image:1", common::registry());
    let err = pull(&mut c, &missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-image"), "{}", err.message());

    assert!(
        status(&mut c, "registry.k8s.io/never-pulled:1")
            .await
            .is_none()
    );
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn images_survive_a_restart_and_a_crash_mid_pull_leaves_nothing() {
    let mut d = Crustd::start(&mirror_config()).await;
    let mut c = d.images().await;
    let id = pull(&mut c, BUSYBOX).await.unwrap();
    drop(c);

    d.restart().await;
    let mut c = d.images().await;
    assert_eq!(status(&mut c, BUSYBOX).await.unwrap().id, id);

    // Start a pull of the largest image and kill crustd while it runs.
    let mut puller = c.clone();
    let pulling = tokio::spawn(async move { pull(&mut puller, LARGE).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    d.crash_and_restart().await;
    let _ = pulling.await;

    let mut c = d.images().await;
    let images = list(&mut c).await;
    let tags: Vec<&str> = images
        .iter()
        .flat_map(|i| i.repo_tags.iter().map(String::as_str))
        .collect();
    assert!(
        tags == [BUSYBOX] || tags.contains(&LARGE),
        "after the crash: {tags:?}"
    );
    let left = leftovers(&d.root().join("images"));
    assert!(left.is_empty(), "unfinished files after restart: {left:?}");
    // The pull works again after the crash.
    pull(&mut c, LARGE).await.unwrap();
    assert!(status(&mut c, LARGE).await.is_some());
}
