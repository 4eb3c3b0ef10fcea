//! Pulls against a real local registry (`CRUST_TEST_REGISTRY=127.0.0.1:5111`, filled
//! by critest-config's registry script). These tests are `#[ignore]`d for a plain
//! `cargo test`; scripts/test starts the registry and runs them with
//! `--include-ignored`, and then a missing variable is a failure, not a skip.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crust_image_store::{ErrorKind, ImageStore, StoreOptions};

const BUSYBOX: &str = "e2e-test-images/busybox:1.29-2";

fn registry() -> String {
    match std::env::var("CRUST_TEST_REGISTRY") {
        Ok(r) if !r.is_empty() => r,
        _ => panic!(
            "CRUST_TEST_REGISTRY is unset: start critest-config/registry.sh and set it to 127.0.0.1:5111"
        ),
    }
}

fn options(root: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(root);
    o.min_free_bytes = 0;
    o.stall_timeout = Duration::from_secs(30);
    o
}

async fn open(root: &Path) -> ImageStore {
    ImageStore::open(options(root)).await.unwrap()
}

fn count_entries(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        n += if e.file_type().unwrap().is_dir() && dir.ends_with("blobs") {
            count_entries(&e.path())
        } else {
            1
        };
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn pull_by_tag_and_look_up_every_way() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let reference = format!("{reg}/{BUSYBOX}");
    let image = store.pull(&reference, None).await.unwrap();

    assert!(image.id.as_str().starts_with("sha256:"));
    assert_eq!(image.repo_tags, std::slice::from_ref(&reference));
    assert_eq!(image.repo_digests.len(), 1);
    let repo_digest = &image.repo_digests[0];
    assert!(
        repo_digest.starts_with(&format!("{reg}/e2e-test-images/busybox@sha256:")),
        "{repo_digest}"
    );
    assert!(image.size > image.layers.iter().map(|l| l.size).sum::<u64>());
    assert!(!image.layers.is_empty());
    let cfg = image.runtime_config().expect("busybox has a config");
    assert!(cfg.cmd().is_some() || cfg.entrypoint().is_some());

    let short = &image.id.hex()[..12];
    for key in [
        reference.as_str(),
        repo_digest.as_str(),
        image.id.as_str(),
        short,
        &format!("sha256:{short}"),
    ] {
        let found = store.status(key).await.unwrap();
        assert_eq!(found.as_ref().map(|i| &i.id), Some(&image.id), "{key}");
    }
    assert!(store.status("busybox").await.unwrap().is_none());
    assert_eq!(
        store.list(None).await.unwrap(),
        std::slice::from_ref(&image)
    );
    assert_eq!(store.list(Some(&reference)).await.unwrap().len(), 1);
    assert!(store.list(Some("nothing:here")).await.unwrap().is_empty());

    let lowers = store.lower_dirs(&image);
    assert_eq!(lowers.len(), image.layers.len());
    for l in &lowers {
        assert!(l.is_dir(), "{}", l.display());
    }
    assert!(lowers.iter().any(|l| l.join("bin").exists()));
    let usage = store.usage().await.unwrap();
    assert!(usage.bytes > 0 && usage.inodes > 10, "{usage:?}");

    // Pulling again downloads nothing.
    let before = store.stats();
    store.pull(&reference, None).await.unwrap();
    let after = store.stats();
    assert_eq!(after.blobs_downloaded, before.blobs_downloaded);
    assert_eq!(after.layers_unpacked, before.layers_unpacked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn pull_by_digest_records_no_tag() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let tagged = store.pull(&format!("{reg}/pause:3.9"), None).await.unwrap();
    let by_digest = tagged.repo_digests[0].clone();

    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open(dir2.path()).await;
    let image = store2.pull(&by_digest, None).await.unwrap();
    assert_eq!(image.id, tagged.id);
    assert!(image.repo_tags.is_empty());
    assert_eq!(image.repo_digests, std::slice::from_ref(&by_digest));
    // name:tag@digest pulls the digest.
    let mixed = by_digest.replacen('@', ":3.9@", 1);
    assert_eq!(store2.pull(&mixed, None).await.unwrap().id, tagged.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn pull_through_a_mirror_records_the_upstream_name() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.mirrors.insert(
        "registry.k8s.io".into(),
        // A dead mirror first: the next one is tried.
        vec!["http://127.0.0.1:1".into(), format!("http://{reg}")],
    );
    let store = ImageStore::open(o).await.unwrap();
    let upstream = format!("registry.k8s.io/{BUSYBOX}");
    let image = store.pull(&upstream, None).await.unwrap();
    assert_eq!(image.repo_tags, std::slice::from_ref(&upstream));
    assert!(image.repo_digests[0].starts_with("registry.k8s.io/e2e-test-images/busybox@sha256:"));
    assert!(store.status(&upstream).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn concurrent_pulls_share_one_download() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Several layers, fetched in parallel.
    let reference = format!("{reg}/e2e-test-images/httpd:2.4.39-4");
    let (a, b) = tokio::join!(store.pull(&reference, None), store.pull(&reference, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert!(a.layers.len() > 1, "{:?}", a.layers);
    let stats = store.stats();
    assert_eq!(
        stats.blobs_downloaded,
        a.layers.len() as u64 + 1,
        "{stats:?}"
    );
    assert_eq!(stats.layers_unpacked, a.layers.len() as u64, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn remove_and_gc_leave_nothing_and_removing_twice_is_ok() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let reference = format!("{reg}/{BUSYBOX}");
    let image = store.pull(&reference, None).await.unwrap();
    let by_digest = image.repo_digests[0].clone();
    let (r1, r2) = tokio::join!(store.remove(&by_digest), store.remove(image.id.as_str()));
    let removed = [r1.unwrap(), r2.unwrap()];
    assert_eq!(
        removed.iter().flatten().count(),
        1,
        "exactly one remove found it"
    );
    assert!(store.status(&reference).await.unwrap().is_none());
    assert!(store.list(None).await.unwrap().is_empty());
    assert_eq!(store.remove(&reference).await.unwrap(), None);
    assert_eq!(count_entries(&dir.path().join("blobs")), 0);
    assert_eq!(count_entries(&dir.path().join("snapshots")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn a_removal_collecting_later_hides_the_image_at_once_and_frees_it_soon() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let reference = format!("{reg}/{BUSYBOX}");
    let image = store.pull(&reference, None).await.unwrap();
    let removed = store.remove_and_collect_later(&reference).await.unwrap();
    assert_eq!(removed.map(|i| i.id), Some(image.id.clone()));
    assert!(store.status(&reference).await.unwrap().is_none());
    assert!(store.status(image.id.as_str()).await.unwrap().is_none());
    assert!(store.list(None).await.unwrap().is_empty());
    assert_eq!(
        store.remove_and_collect_later(&reference).await.unwrap(),
        None
    );
    let (blobs, snapshots) = (dir.path().join("blobs"), dir.path().join("snapshots"));
    for _ in 0..100 {
        if count_entries(&blobs) == 0 && count_entries(&snapshots) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count_entries(&blobs), 0, "blobs left 5 s after the removal");
    assert_eq!(
        count_entries(&snapshots),
        0,
        "snapshots left 5 s after the removal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn a_store_reopened_after_a_removal_collects_what_it_left() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let reference = format!("{reg}/{BUSYBOX}");
    store.pull(&reference, None).await.unwrap();
    // What a crash right after RemoveImage leaves: the record gone, the content not.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let removing = store.clone();
    let removed =
        std::thread::spawn(move || runtime.block_on(removing.remove_and_collect_later(&reference)))
            .join()
            .unwrap()
            .unwrap();
    assert!(removed.is_some());
    drop(store);
    assert!(count_entries(&dir.path().join("snapshots")) > 0);
    let store = open(dir.path()).await;
    assert!(store.list(None).await.unwrap().is_empty());
    assert_eq!(count_entries(&dir.path().join("blobs")), 0);
    assert_eq!(count_entries(&dir.path().join("snapshots")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn held_snapshots_outlive_their_image() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let image = store.pull(&format!("{reg}/{BUSYBOX}"), None).await.unwrap();
    store.hold("container-1", &image.id).await.unwrap();
    assert_eq!(store.holders().await.unwrap(), ["container-1"]);
    store.remove(image.id.as_str()).await.unwrap().unwrap();
    for l in store.lower_dirs(&image) {
        assert!(l.is_dir(), "held snapshot {} was deleted", l.display());
    }
    assert_eq!(count_entries(&dir.path().join("blobs")), 0);
    let err = store.hold("container-2", &image.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    store.release("container-1").await.unwrap();
    store.release("container-1").await.unwrap();
    store.gc().await.unwrap();
    assert_eq!(count_entries(&dir.path().join("snapshots")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn images_survive_a_restart_and_leftovers_are_cleaned() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let image = store.pull(&format!("{reg}/pause:3.9"), None).await.unwrap();
    store.set_pinned(image.id.as_str(), true).await.unwrap();
    drop(store);
    // What a SIGKILL mid-pull leaves: a temp blob, a half unpack, an unreferenced blob.
    fs::write(dir.path().join("tmp/blob-partial"), b"half").unwrap();
    fs::create_dir_all(dir.path().join("tmp/unpack-x/fs/etc")).unwrap();
    let orphan = dir.path().join(format!("blobs/sha256/{}", "0".repeat(64)));
    fs::write(&orphan, b"orphan").unwrap();

    let store = open(dir.path()).await;
    let again = store.status(image.id.as_str()).await.unwrap().unwrap();
    assert!(again.pinned);
    assert_eq!(again.repo_tags, image.repo_tags);
    for l in store.lower_dirs(&again) {
        assert!(l.is_dir());
    }
    assert_eq!(count_entries(&dir.path().join("tmp")), 0);
    assert!(!orphan.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn a_cancelled_pull_leaves_no_partial_content_and_no_image() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let reference = format!("{reg}/e2e-test-images/httpd:2.4.39-4");
    let mut cancelled = 0;
    for delay in [5, 20, 60, 150] {
        let pull = store.pull(&reference, None);
        if tokio::time::timeout(Duration::from_millis(delay), pull)
            .await
            .is_err()
        {
            cancelled += 1;
        }
    }
    assert!(cancelled > 0, "no pull was interrupted");
    // Unpacks already running stop on their own blocking thread and remove their
    // partial dirs; on a loaded machine that can take a while.
    let tmp = dir.path().join("tmp");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count_entries(&tmp) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count_entries(&tmp),
        0,
        "partial content left in {}",
        tmp.display()
    );
    assert!(store.list(None).await.unwrap().is_empty());
    store.gc().await.unwrap();
    assert_eq!(count_entries(&dir.path().join("blobs")), 0);
    assert_eq!(count_entries(&dir.path().join("snapshots")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn missing_images_are_not_found() {
    let reg = registry();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let err = store
        .pull(&format!("{reg}/no/such-image:1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no/such-image"), "{err}");
    let err = store.pull("Bad:Ref", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local registry; scripts/test runs it"]
async fn a_registry_that_never_answers_is_a_deadline_error() {
    // Accepts connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.stall_timeout = Duration::from_secs(1);
    let store = ImageStore::open(o).await.unwrap();
    let err = store
        .pull(&format!("{addr}/silent:1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeadlineExceeded, "{err}");
    assert!(err.to_string().contains("silent"), "{err}");
    server.abort();
}
