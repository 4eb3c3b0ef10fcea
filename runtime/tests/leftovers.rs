//! What crustd leaves on the host once no pod needs it: nothing. After the last pod is
//! removed, crust's own parent cgroup is gone from every hierarchy; after a clean
//! SIGTERM with no pods, no pin dir stays a bind mount and no crust cgroup is left.
//! Runs as root; the pod network is bridge `crustlf0`, 10.99.0.0/24. Pods of other
//! daemons may hold crust's parent cgroup while this runs: the checks account for them.

mod common;

use std::path::PathBuf;

use common::pods::*;
use common::{Crustd, mounts_under};

/// crust's parent cgroup in each mounted hierarchy (v1 controllers, or the v2 root).
fn crust_cgroups() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m).join("crust"))
        .collect()
}

/// The sub-cgroups of crust's parent cgroups: pods of any crustd.
fn pod_cgroups() -> Vec<String> {
    crust_cgroups()
        .iter()
        .flat_map(|c| entries(c).into_iter().filter(|e| e.starts_with("pod-")))
        .collect()
}

/// Asserts crust's parent cgroup exists nowhere, unless a pod of another daemon holds it.
fn assert_no_crust_cgroup(when: &str) {
    let others = pod_cgroups();
    if !others.is_empty() {
        eprintln!("{when}: other pods hold crust's cgroup, not checked: {others:?}");
        return;
    }
    let left: Vec<_> = crust_cgroups().into_iter().filter(|c| c.exists()).collect();
    assert!(left.is_empty(), "{when}: left {left:?}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs root, the CNI plugins and the local registry; scripts/test runs it"]
async fn the_last_pod_and_a_clean_stop_leave_nothing_behind() {
    let mut node = Node::start("crustlf0", "10.99.0.0/24").await;
    let mut rt = node.rt().await;
    let config = pod_config("leftover", &node.logs());
    let pod = run_pod(&mut rt, &config).await;
    let ctr = create(
        &mut rt,
        &pod,
        &config,
        container_config("c", &["sleep", "60"]),
    )
    .await;
    start(&mut rt, &ctr).await;
    assert!(
        crust_cgroups()
            .iter()
            .any(|c| c.join(format!("pod-{pod}")).exists()),
        "the pod's cgroup is under crust's parent cgroup"
    );
    remove_pod(&mut rt, &pod).await;
    assert_no_crust_cgroup("after the last pod");

    // A clean stop with no pods: the pin dirs crustd made bind mounts are plain again.
    let state = node.state();
    drop(rt);
    let status = node.crustd.terminate();
    assert!(status.success(), "{status:?}");
    let left = mounts_under(&state, "");
    assert!(left.is_empty(), "mounts left after SIGTERM: {left:?}");
    assert_no_crust_cgroup("after SIGTERM");
}

#[tokio::test(flavor = "current_thread")]
async fn a_clean_stop_of_an_unused_crustd_leaves_no_mount() {
    let mut crustd = Crustd::start("").await;
    let state = crustd.dir.path().join("state");
    // The start-up probe of user namespaces made the pin dirs bind mounts.
    assert!(!mounts_under(&state, "ns/").is_empty());
    let status = crustd.terminate();
    assert!(status.success(), "{status:?}");
    let left = mounts_under(&state, "");
    assert!(left.is_empty(), "mounts left after SIGTERM: {left:?}");
}
