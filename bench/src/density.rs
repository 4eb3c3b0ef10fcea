//! Density: a node full of pods, one container each, and kubelet's polling of
//! the runtime meanwhile: ListPodSandbox, ListContainers, ListContainerStats and
//! ListPodSandboxStats every 10 s, Status every 5 s. What it costs the daemon (RSS,
//! CPU), how long those calls take, and what each pod costs in memory.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde::Serialize;

use crate::cri::{Cri, Pod};
use crate::daemon::Daemon;
use crate::procs::{self, Mem, Overhead, ShimMatch};
use crate::stats::{Samples, ms};
use crate::workload;

/// kubelet's period of the List* and stats calls.
const LIST_EVERY: Duration = Duration::from_secs(10);
/// kubelet's period of the runtime health check (Status).
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the daemon's RSS is sampled during the polling.
const RSS_EVERY: Duration = Duration::from_secs(1);

/// The figures of the density phase.
#[derive(Debug, Default, Serialize)]
pub struct Density {
    /// Pods running, one container each.
    pub pods: usize,
    /// Starts in flight at any moment while they were started.
    pub in_flight: usize,
    /// Starting them all.
    pub start_wall_ms: f64,
    /// Daemon RSS with the pods running, after a quiet time, before the polling.
    pub daemon_rss_kib: Option<u64>,
    /// The highest daemon RSS sampled (every second) during the polling.
    pub daemon_rss_peak_kib: Option<u64>,
    /// Daemon RSS at the end of the polling.
    pub daemon_rss_end_kib: Option<u64>,
    /// How long the polling ran.
    pub poll_ms: f64,
    /// The daemon's CPU time (user + system) during the polling.
    pub daemon_cpu_ms: Option<u64>,
    /// The per-pod processes (shims, pause processes, the containers' processes).
    pub overhead: Option<Overhead>,
    /// All of them / pods.
    pub per_pod: Option<Mem>,
    /// Stopping and removing them all.
    pub teardown_wall_ms: Option<f64>,
}

/// Starts `names` with one `sleep` container each, `in_flight` at a time.
/// Per pod times go to `s` as `density.pod_start`.
pub async fn start(
    cri: &Cri,
    s: &mut Samples,
    names: &[String],
    in_flight: usize,
) -> Result<(Vec<Pod>, Density)> {
    let t = Instant::now();
    let started = workload::start_pods_pool(cri, names, in_flight).await?;
    let d = Density {
        pods: started.len(),
        in_flight,
        start_wall_ms: ms(t.elapsed()),
        ..Default::default()
    };
    s.extend("density.pod_start", started.iter().map(|(_, t)| t.total()));
    Ok((started.into_iter().map(|(p, _)| p).collect(), d))
}

/// Reads the daemon's RSS and the per-pod processes' memory (after a quiet time).
pub fn measure(d: &mut Density, daemon: &Daemon, shim: Option<&ShimMatch>) -> Result<()> {
    d.daemon_rss_kib = daemon.rss_kib()?;
    if let Some(m) = shim {
        let o = procs::overhead(m)?;
        let all = o.all_mem();
        let n = d.pods.max(1) as u64;
        d.per_pod = Some(Mem {
            rss_kib: all.rss_kib / n,
            pss_kib: all.pss_kib / n,
        });
        d.overhead = Some(o);
    }
    Ok(())
}

/// Polls as kubelet does for `duration`, each call checked against the `pods` and
/// `containers` running; call times go to `s` as `density.<call>`.
pub async fn poll(
    cri: &Cri,
    s: &mut Samples,
    d: &mut Density,
    daemon: &Daemon,
    duration: Duration,
    containers: usize,
) -> Result<()> {
    let pods = d.pods;
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let cpu_before = daemon.cpu_ms()?;

    let mut c = cri.clone();
    let lists = async move {
        let mut out: Vec<(&'static str, Duration)> = Vec::new();
        let mut next = start;
        while next < end {
            tokio::time::sleep_until(next).await;
            let (t, n) = c.list_pods().await?;
            ensure!(n >= pods, "ListPodSandbox: {n} listed, {pods} expected");
            out.push(("density.list_pod_sandbox", t));
            let (t, n) = c.list_containers().await?;
            ensure!(
                n >= containers,
                "ListContainers: {n} listed, {containers} expected"
            );
            out.push(("density.list_containers", t));
            let (t, n) = c.list_container_stats().await?;
            ensure!(
                n >= containers,
                "ListContainerStats: {n} listed, {containers} expected"
            );
            out.push(("density.list_container_stats", t));
            let (t, n) = c.list_pod_sandbox_stats().await?;
            ensure!(
                n >= pods,
                "ListPodSandboxStats: {n} listed, {pods} expected"
            );
            out.push(("density.list_pod_sandbox_stats", t));
            next += LIST_EVERY;
        }
        anyhow::Ok(out)
    };
    let mut c = cri.clone();
    let status = async move {
        let mut out = Vec::new();
        let mut next = start;
        while next < end {
            tokio::time::sleep_until(next).await;
            let (t, ready) = c.status().await?;
            ensure!(ready, "Status: the runtime or its network is not ready");
            out.push(t);
            next += STATUS_EVERY;
        }
        anyhow::Ok(out)
    };
    let rss = async {
        let mut peak = None;
        let mut next = start;
        while next < end {
            tokio::time::sleep_until(next).await;
            peak = peak.max(daemon.rss_kib()?);
            next += RSS_EVERY;
        }
        tokio::time::sleep_until(end).await;
        anyhow::Ok(peak)
    };
    let (lists, status, peak) = tokio::join!(lists, status, rss);
    for (name, t) in lists? {
        s.add(name, t);
    }
    s.extend("density.status", status?);
    d.poll_ms = ms(start.elapsed());
    d.daemon_rss_peak_kib = peak?;
    d.daemon_rss_end_kib = daemon.rss_kib()?;
    if let (Some(a), Some(b)) = (cpu_before, daemon.cpu_ms()?) {
        d.daemon_cpu_ms = Some(b.saturating_sub(a));
    }
    Ok(())
}

/// Stops and removes the pods, `in_flight` at a time.
pub async fn teardown(cri: &Cri, d: &mut Density, pods: &[Pod]) -> Result<()> {
    let t = Instant::now();
    workload::stop_pods_pool(cri, pods, d.in_flight).await?;
    d.teardown_wall_ms = Some(ms(t.elapsed()));
    Ok(())
}
