//! Bursts: many pods started at once, as kubelet starts the pods bound to its node
//! concurrently, then torn down the same way; and ExecSync while such a burst runs
//! (kubelet's exec probes go on during one).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tokio::sync::watch;

use crate::cri::Cri;
use crate::stats::{Samples, ms};
use crate::workload;

/// The figures of one burst.
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    /// Its name in the samples (`burst_<in_flight>`).
    pub name: String,
    /// Pods started.
    pub pods: usize,
    /// Starts in flight at any moment, at most.
    pub in_flight: usize,
    /// From the first RunPodSandbox to the last StartContainer's answer.
    pub wall_ms: f64,
    /// `pods` / wall time.
    pub pods_per_s: f64,
    /// Stopping and removing them all, `in_flight` at a time.
    pub teardown_wall_ms: f64,
}

/// Starts `names` (one `sleep` container each), `in_flight` at a time, and tears
/// them down the same way. Per pod times go to `s` as `<name>.pod_start` and
/// `<name>.pod_teardown`.
pub async fn burst(
    cri: &Cri,
    s: &mut Samples,
    name: &str,
    names: &[String],
    in_flight: usize,
) -> Result<Burst> {
    let t = Instant::now();
    let started = workload::start_pods_pool(cri, names, in_flight).await?;
    let wall = t.elapsed();
    s.extend(
        format!("{name}.pod_start"),
        started.iter().map(|(_, t)| t.total()),
    );
    let pods: Vec<_> = started.into_iter().map(|(p, _)| p).collect();
    let t = Instant::now();
    let stopped = workload::stop_pods_pool(cri, &pods, in_flight).await?;
    let teardown = t.elapsed();
    s.extend(
        format!("{name}.pod_teardown"),
        stopped.iter().map(|t| t.total()),
    );
    Ok(Burst {
        name: name.to_owned(),
        pods: pods.len(),
        in_flight,
        wall_ms: ms(wall),
        pods_per_s: pods.len() as f64 / wall.as_secs_f64().max(1e-9),
        teardown_wall_ms: ms(teardown),
    })
}

/// A burst's pod starts with ExecSync calls in a running container all along: one
/// call every `every` (or right after the previous one when it took longer), until
/// the last pod has started. The exec times go to `s` as `exec_burst.exec_sync`;
/// the burst's as `exec_burst.pod_start` and `exec_burst.pod_teardown`.
pub async fn exec_during_burst(
    cri: &Cri,
    s: &mut Samples,
    container: &str,
    names: &[String],
    in_flight: usize,
    every: Duration,
) -> Result<Burst> {
    let (done_tx, mut done_rx) = watch::channel(false);
    let mut c = cri.clone();
    let execs = async move {
        let mut out = Vec::new();
        while !*done_rx.borrow() {
            let next = tokio::time::Instant::now() + every;
            out.push(c.exec_true(container).await?);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = done_rx.changed() => {}
            }
        }
        anyhow::Ok(out)
    };
    let starts = async {
        let t = Instant::now();
        let r = workload::start_pods_pool(cri, names, in_flight).await;
        let _ = done_tx.send(true);
        r.map(|started| (started, t.elapsed()))
    };
    let (execs, starts) = tokio::join!(execs, starts);
    let (started, wall) = starts?;
    s.extend(
        "exec_burst.pod_start",
        started.iter().map(|(_, t)| t.total()),
    );
    let pods: Vec<_> = started.into_iter().map(|(p, _)| p).collect();
    let t = Instant::now();
    let stopped = workload::stop_pods_pool(cri, &pods, in_flight).await?;
    let teardown = t.elapsed();
    s.extend("exec_burst.pod_teardown", stopped.iter().map(|t| t.total()));
    s.extend("exec_burst.exec_sync", execs?);
    Ok(Burst {
        name: "exec_burst".to_owned(),
        pods: pods.len(),
        in_flight,
        wall_ms: ms(wall),
        pods_per_s: pods.len() as f64 / wall.as_secs_f64().max(1e-9),
        teardown_wall_ms: ms(teardown),
    })
}
