//! Tests of the store as a whole: persistence, rollback, quarantine, names, locks.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crust_proto::cri::{ContainerConfig, PodSandboxConfig, PodSandboxMetadata};
use redb::{Database, TableDefinition};

use super::*;

fn sandbox(name: &str) -> SandboxMetadata {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    SandboxMetadata::new(SandboxId::generate(), config, now_nanos())
}

fn container(sandbox: &SandboxMetadata, name: &str) -> ContainerMetadata {
    let id = ContainerId::generate();
    ContainerMetadata {
        sandbox_id: sandbox.id.clone(),
        name: format!("{name}_{}", sandbox.name),
        container_name: name.into(),
        attempt: 0,
        config: ContainerConfig {
            image: None,
            command: vec!["sleep".into(), "1".into()],
            ..Default::default()
        },
        image_id: "sha256:abc".into(),
        image_ref: "busybox".into(),
        image_name: "busybox".into(),
        stop_signal: "SIGTERM".into(),
        cgroups_path: "/crust/c".into(),
        log_path: None,
        bundle_dir: format!("/run/crust/bundles/{id}").into(),
        state_dir: format!("/run/crust/containers/{id}").into(),
        created_at: now_nanos(),
        user: None,
        id,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir).unwrap()
}

#[test]
fn add_get_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sandbox("web");
    let sid = s.id.clone();
    store
        .add_sandbox(s.clone(), SandboxStatus::default())
        .unwrap();
    let err = store
        .add_sandbox(s.clone(), SandboxStatus::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let c = container(&s, "nginx");
    let cid = c.id.clone();
    store
        .add_container(c.clone(), ContainerStatus::default())
        .unwrap();
    let orphan = container(&sandbox("gone"), "x");
    let err = store
        .add_container(orphan, ContainerStatus::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    assert_eq!(store.get_sandbox(&sid).unwrap().metadata(), &s);
    assert_eq!(store.get_container(&cid).unwrap().metadata(), &c);
    assert_eq!(
        store
            .resolve_container(&cid.as_str()[..8])
            .unwrap()
            .metadata()
            .id,
        cid
    );
    assert_eq!(store.list_sandboxes().len(), 1);
    assert_eq!(store.list_containers().len(), 1);
    assert_eq!(store.containers_of(&sid).len(), 1);

    let err = store.remove_sandbox(&sid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains(sid.as_str()), "{err}");
    store.remove_container(&cid).unwrap();
    store.remove_sandbox(&sid).unwrap();
    let err = store.get_sandbox(&sid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(sid.as_str()), "{err}");
    assert_eq!(
        store.remove_container(&cid).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let err = store
        .update_container(&cid, |_| Ok::<_, Error>(()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    drop(store);
    let store = open(dir.path());
    assert!(store.list_sandboxes().is_empty());
    assert!(store.list_containers().is_empty());
}

/// The status of a sandbox whose RunPodSandbox has answered.
fn ready(id: &SandboxId) -> SandboxStatus {
    let mut status = SandboxStatus::default();
    status.mark_ready(id, Vec::new(), 1).unwrap();
    status
}

#[test]
fn a_sandbox_being_started_is_shown_to_no_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (starting, up, failed) = (sandbox("a"), sandbox("b"), sandbox("c"));
    for s in [&starting, &up, &failed] {
        store
            .add_sandbox(s.clone(), SandboxStatus::default())
            .unwrap();
    }
    store
        .update_sandbox(&up.id, |st| st.mark_ready(&up.id, Vec::new(), 1))
        .unwrap();
    // A start cut short and being undone is stopped: shown, so it can be removed.
    store
        .update_sandbox(&failed.id, |st| {
            st.mark_stopped(2);
            Ok::<_, Error>(())
        })
        .unwrap();
    let err = store.resolve_sandbox(starting.id.as_str()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(store.resolve_sandbox(up.id.as_str()).is_ok());
    assert!(store.resolve_sandbox(failed.id.as_str()).is_ok());
    let mut shown: Vec<_> = store
        .published_sandboxes()
        .iter()
        .map(|s| s.metadata().id.clone())
        .collect();
    shown.sort();
    let mut want = vec![up.id.clone(), failed.id.clone()];
    want.sort();
    assert_eq!(shown, want);
    // Recovery and clean-up see it.
    assert_eq!(store.list_sandboxes().len(), 3);
    assert!(store.get_sandbox(&starting.id).is_ok());
}

#[test]
fn resolve_prefixes_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<_> = (0..20)
        .map(|i| {
            let s = sandbox(&format!("p{i}"));
            store.add_sandbox(s.clone(), ready(&s.id)).unwrap();
            s.id
        })
        .collect();
    for id in &ids {
        assert_eq!(
            &store.resolve_sandbox(id.as_str()).unwrap().metadata().id,
            id
        );
    }
    // 20 random ids share some first hex digit: at least one of 16 is ambiguous.
    let ambiguous = (0..16u8)
        .map(|d| format!("{d:x}"))
        .find(|p| {
            ids.iter()
                .filter(|id| id.as_str().starts_with(p.as_str()))
                .count()
                > 1
        })
        .unwrap();
    let err = store.resolve_sandbox(&ambiguous).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(matches!(err, Error::Ambiguous { .. }));
    assert_eq!(
        store.resolve_sandbox("Z").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let missing = SandboxId::generate();
    if !ids.contains(&missing) {
        let err = store.resolve_sandbox(missing.as_str()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}

#[test]
fn updates_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sandbox("web");
    let c = container(&s, "app");
    let (sid, cid) = (s.id.clone(), c.id.clone());
    store.add_sandbox(s, SandboxStatus::default()).unwrap();
    store.add_container(c, ContainerStatus::default()).unwrap();
    store
        .update_sandbox(&sid, |st| st.mark_ready(&sid, vec!["10.1.0.5".into()], 1))
        .unwrap();
    let pid = store
        .update_container(&cid, |st| st.start(&cid, 4242, 2).map(|()| 4242))
        .unwrap();
    assert_eq!(pid, 4242);
    drop(store);

    let store = open(dir.path());
    let st = store.get_sandbox(&sid).unwrap().status();
    assert_eq!(
        (st.state, st.pod_ips),
        (SandboxState::Ready, vec!["10.1.0.5".to_string()])
    );
    let st = store.get_container(&cid).unwrap().status();
    assert_eq!(
        (st.state, st.pid, st.started_at),
        (ContainerState::Running, Some(4242), Some(2))
    );
}

#[test]
fn a_failed_update_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sandbox("web");
    let c = container(&s, "app");
    let cid = c.id.clone();
    store.add_sandbox(s, SandboxStatus::default()).unwrap();
    store.add_container(c, ContainerStatus::default()).unwrap();
    let before = store.get_container(&cid).unwrap().status();

    let err = store
        .update_container(&cid, |st| {
            st.start(&cid, 7, 3)?;
            st.removing = true;
            st.begin_removing(&cid)
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(store.get_container(&cid).unwrap().status(), before);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.get_container(&cid).unwrap().status(), before);
}

const RAW_SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");

#[test]
fn a_corrupt_record_is_quarantined_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = sandbox("good");
    store
        .add_sandbox(good.clone(), SandboxStatus::default())
        .unwrap();
    drop(store);

    let bad_id = SandboxId::generate();
    let other = sandbox("other");
    {
        let db = Database::create(Store::path(dir.path())).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(RAW_SANDBOXES).unwrap();
            t.insert(bad_id.as_str(), b"{not json".as_slice()).unwrap();
            // A sound record under another id's key is just as unusable.
            let record = serde_json::json!({
                "version": 1,
                "metadata": other,
                "status": SandboxStatus::default(),
            });
            let bytes = serde_json::to_vec(&record).unwrap();
            t.insert(SandboxId::generate().as_str(), bytes.as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }

    let store = open(dir.path());
    let loaded = store.list_sandboxes();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].metadata(), &good);
    let q = store.quarantined().unwrap();
    assert_eq!(q.len(), 2);
    assert!(q.contains(&format!("sandboxes/{bad_id}")), "{q:?}");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.list_sandboxes().len(), 1);
    assert_eq!(store.quarantined().unwrap().len(), 2);
}

#[test]
fn names_are_reserved_released_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = sandbox("web");
    let mut b = sandbox("web");
    b.name = a.name.clone();
    store
        .add_sandbox(a.clone(), SandboxStatus::default())
        .unwrap();
    let err = store
        .add_sandbox(b.clone(), SandboxStatus::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains(a.id.as_str()), "{err}");
    assert!(store.get_sandbox(&b.id).is_err());

    // A reservation made before the add stays Pending until the caller commits it.
    assert_eq!(
        store.sandbox_names().watch(&a.name).unwrap().phase(),
        Phase::Pending
    );
    drop(store);
    let store = open(dir.path());
    let holder = store.sandbox_names().watch(&a.name).unwrap();
    assert_eq!(
        (holder.phase(), holder.key),
        (Phase::Committed, a.id.clone())
    );
    store.remove_sandbox(&a.id).unwrap();
    assert!(store.sandbox_names().watch(&a.name).is_none());
    store.add_sandbox(b, SandboxStatus::default()).unwrap();
}

#[test]
fn a_failed_add_releases_only_its_own_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = sandbox("web");
    store
        .add_sandbox(a.clone(), SandboxStatus::default())
        .unwrap();
    // Same id under a new name: the insert fails, and the name it reserved is freed.
    let mut again = a.clone();
    again.name = "renamed".into();
    assert!(store.add_sandbox(again, SandboxStatus::default()).is_err());
    assert!(store.sandbox_names().watch("renamed").is_none());
    assert!(store.sandbox_names().watch(&a.name).is_some());
}

#[test]
fn updates_of_two_containers_do_not_block_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let s = sandbox("web");
    store
        .add_sandbox(s.clone(), SandboxStatus::default())
        .unwrap();
    let (c1, c2) = (container(&s, "one"), container(&s, "two"));
    store
        .add_container(c1.clone(), ContainerStatus::default())
        .unwrap();
    store
        .add_container(c2.clone(), ContainerStatus::default())
        .unwrap();

    // Each update holds its entry's lock until it hears from the other one, which it
    // can only do if the other update holds its own lock at the same time.
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let meet = |id: &ContainerId, tell: mpsc::Sender<()>, hear: mpsc::Receiver<()>| {
        store.update_container(id, |st| {
            tell.send(()).unwrap();
            hear.recv_timeout(Duration::from_secs(10))
                .map_err(|_| Error::NotFound {
                    what: Object::Container,
                    id: "the other update never ran".into(),
                })?;
            st.start(id, 1, now_nanos())
        })
    };
    std::thread::scope(|scope| {
        let one = scope.spawn(|| meet(&c1.id, tx2, rx1));
        let two = scope.spawn(|| meet(&c2.id, tx1, rx2));
        one.join().unwrap().unwrap();
        two.join().unwrap().unwrap();
    });
    for id in [&c1.id, &c2.id] {
        assert_eq!(
            store.get_container(id).unwrap().status().state,
            ContainerState::Running
        );
    }
}
