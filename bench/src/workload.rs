//! The phases of the workload. Each returns its samples; none judges them.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::future::try_join_all;
use futures::{StreamExt, TryStreamExt, stream};

use crate::cri::{Cri, Pod, StartTimes, StopTimes};

/// Starts pods `names` with `workers` clients in parallel, each starting its share
/// one after the other. Returns the pods (in the order of `names`) and each start's
/// times.
pub async fn start_pods(
    cri: &Cri,
    names: &[String],
    workers: usize,
) -> Result<Vec<(Pod, StartTimes)>> {
    let workers = workers.clamp(1, names.len().max(1));
    let runs = (0..workers).map(|w| {
        let mut c = cri.clone();
        async move {
            let mut out = Vec::new();
            for (i, name) in names.iter().enumerate().skip(w).step_by(workers) {
                out.push((i, c.start_pod(name).await?));
            }
            anyhow::Ok(out)
        }
    });
    let mut all: Vec<_> = try_join_all(runs).await?.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

/// Stops and removes `pods` with `workers` clients in parallel.
pub async fn stop_pods(cri: &Cri, pods: &[Pod], workers: usize) -> Result<Vec<StopTimes>> {
    let workers = workers.clamp(1, pods.len().max(1));
    let runs = (0..workers).map(|w| {
        let mut c = cri.clone();
        async move {
            let mut out = Vec::new();
            for pod in pods.iter().skip(w).step_by(workers) {
                out.push(c.stop_pod(&pod.id).await?);
            }
            anyhow::Ok(out)
        }
    });
    Ok(try_join_all(runs).await?.into_iter().flatten().collect())
}

/// Starts pods `names` with up to `in_flight` starts at any moment: a new one
/// begins as soon as one ends, as kubelet's pod workers do. Returns the pods (in the
/// order of `names`) and each start's times.
pub async fn start_pods_pool(
    cri: &Cri,
    names: &[String],
    in_flight: usize,
) -> Result<Vec<(Pod, StartTimes)>> {
    let starts = names.iter().enumerate().map(|(i, name)| {
        let mut c = cri.clone();
        async move { anyhow::Ok((i, c.start_pod(name).await?)) }
    });
    let mut all: Vec<_> = stream::iter(starts)
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

/// Stops and removes `pods` with up to `in_flight` teardowns at any moment.
pub async fn stop_pods_pool(cri: &Cri, pods: &[Pod], in_flight: usize) -> Result<Vec<StopTimes>> {
    let stops = pods.iter().map(|pod| {
        let mut c = cri.clone();
        async move { c.stop_pod(&pod.id).await }
    });
    stream::iter(stops)
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await
}

/// Adds a second `sleep` container to every pod, `workers` at a time.
pub async fn add_sidecars(cri: &Cri, pods: &mut [Pod], workers: usize) -> Result<()> {
    let workers = workers.max(1);
    let chunk = pods.len().div_ceil(workers).max(1);
    let runs = pods.chunks_mut(chunk).map(|share| {
        let mut c = cri.clone();
        async move {
            for pod in share {
                c.add_container(pod, "sidecar").await?;
            }
            anyhow::Ok(())
        }
    });
    try_join_all(runs).await?;
    Ok(())
}

/// `n` ExecSync calls of `true` in `container`, after a few untimed ones.
pub async fn exec_sync(cri: &mut Cri, container: &str, n: usize) -> Result<Vec<Duration>> {
    for _ in 0..3 {
        cri.exec_true(container).await?;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(cri.exec_true(container).await?);
    }
    Ok(out)
}

/// `n` ListContainers and `n` ListPodSandbox calls, after a few untimed ones; each
/// must list at least `containers` and `pods` (other clients' pods may be there
/// too).
pub async fn lists(
    cri: &mut Cri,
    n: usize,
    pods: usize,
    containers: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    for _ in 0..3 {
        cri.list_containers().await?;
        cri.list_pods().await?;
    }
    let mut lc = Vec::with_capacity(n);
    let mut lp = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, listed) = cri.list_containers().await?;
        ensure!(
            listed >= containers,
            "ListContainers: {listed} listed, {containers} expected"
        );
        lc.push(t);
        let (t, listed) = cri.list_pods().await?;
        ensure!(
            listed >= pods,
            "ListPodSandbox: {listed} listed, {pods} expected"
        );
        lp.push(t);
    }
    Ok((lc, lp))
}

/// Removes every pod of this run the runtime still knows (after a failure).
pub async fn remove_leftovers(cri: &mut Cri) -> Result<usize> {
    let ids = cri.leftover_pods().await.context("list leftover pods")?;
    for id in &ids {
        cri.stop_pod(id).await?;
    }
    Ok(ids.len())
}
