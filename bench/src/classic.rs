//! The first workload of crust-bench: pod start (serial and a few in parallel),
//! pod teardown, ExecSync, the List calls with a fleet of pods of two containers,
//! the daemon's memory along the way, and the memory of the per-container
//! processes (shims and pause processes).

use anyhow::Result;
use serde::Serialize;

use crate::cri::Cri;
use crate::daemon::Daemon;
use crate::procs::{self, Mem, Overhead, ShimMatch};
use crate::stats::Samples;
use crate::{QUIET, note, workload};

/// What the classic workload does.
pub struct Plan<'a> {
    /// Names the run's pods (phase, index).
    pub names: &'a dyn Fn(&str, usize) -> Vec<String>,
    /// The runtime's name in notes.
    pub label: &'a str,
    /// Pods started and torn down in each pod start phase.
    pub pods: usize,
    /// Pods in flight at once in the parallel phase.
    pub parallel: usize,
    /// Pods kept running for the memory, exec and list phases.
    pub fleet: usize,
    /// ExecSync calls timed.
    pub execs: usize,
    /// Calls of each List RPC timed.
    pub lists: usize,
    /// The per-container processes, when they can be found.
    pub shim: Option<&'a ShimMatch>,
}

/// The daemon's memory and the per-container processes' along the workload.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// Daemon RSS when the benchmark connects, before it pulls the image.
    pub daemon_rss_start_kib: Option<u64>,
    /// Daemon RSS with the image pulled and nothing running. This and the readings
    /// below are taken after `QUIET` without calls.
    pub daemon_rss_idle_kib: Option<u64>,
    /// Daemon RSS with `fleet` pods of one container each running.
    pub daemon_rss_fleet_kib: Option<u64>,
    /// Daemon RSS with `fleet` pods of two containers each running.
    pub daemon_rss_fleet_x2_kib: Option<u64>,
    /// Daemon RSS after everything was removed.
    pub daemon_rss_end_kib: Option<u64>,
    /// Running containers when the per-container processes were measured.
    pub containers: usize,
    /// The per-container processes with `fleet` pods of one container each.
    pub overhead: Option<Overhead>,
    /// (shims + pauses) / containers.
    pub per_container: Option<Mem>,
}

async fn pod_start_phase(
    cri: &Cri,
    s: &mut Samples,
    names: Vec<String>,
    workers: usize,
    keys: [&'static str; 2],
) -> Result<()> {
    let started = workload::start_pods(cri, &names, workers).await?;
    for (_, t) in &started {
        s.add(keys[0], t.total());
        if workers == 1 {
            s.add("pod_start.run_pod_sandbox", t.run_pod);
            s.add("pod_start.create_container", t.create);
            s.add("pod_start.start_container", t.start);
        }
    }
    let pods: Vec<_> = started.into_iter().map(|(p, _)| p).collect();
    for t in workload::stop_pods(cri, &pods, workers).await? {
        s.add(keys[1], t.total());
        if workers == 1 {
            s.add("pod_teardown.stop_pod_sandbox", t.stop);
            s.add("pod_teardown.remove_pod_sandbox", t.remove);
        }
    }
    Ok(())
}

/// Runs the classic workload; its samples go to `s`, its memory readings to `mem`.
pub async fn run(
    plan: &Plan<'_>,
    cri: &mut Cri,
    daemon: &Daemon,
    s: &mut Samples,
    mem: &mut Memory,
) -> Result<()> {
    let label = plan.label;
    // memory is read after a quiet time: a runtime may give memory back once idle
    tokio::time::sleep(QUIET).await;
    mem.daemon_rss_idle_kib = daemon.rss_kib()?;

    note(&format!("{label}: {} pods, one at a time", plan.pods));
    let keys = ["pod_start", "pod_teardown"];
    pod_start_phase(cri, s, (plan.names)("serial", plan.pods), 1, keys).await?;

    note(&format!(
        "{label}: {} pods, {} at a time",
        plan.pods, plan.parallel
    ));
    let keys = ["pod_start_parallel", "pod_teardown_parallel"];
    let names = (plan.names)("par", plan.pods);
    pod_start_phase(cri, s, names, plan.parallel, keys).await?;

    note(&format!("{label}: {} pods kept running", plan.fleet));
    let names = (plan.names)("fleet", plan.fleet);
    let started = workload::start_pods(cri, &names, plan.parallel).await?;
    let mut fleet: Vec<_> = started.into_iter().map(|(p, _)| p).collect();
    // let shims finish starting up and go quiet before their memory is read
    tokio::time::sleep(QUIET).await;
    mem.daemon_rss_fleet_kib = daemon.rss_kib()?;
    mem.containers = fleet.len();
    if let Some(m) = plan.shim {
        let o = procs::overhead(m)?;
        let n = fleet.len().max(1) as u64;
        let runtime = o.runtime_mem();
        mem.per_container = Some(Mem {
            rss_kib: runtime.rss_kib / n,
            pss_kib: runtime.pss_kib / n,
        });
        mem.overhead = Some(o);
    }

    if let Some(c) = fleet.first().and_then(|p| p.containers.first()).cloned() {
        note(&format!("{label}: {} ExecSync", plan.execs));
        s.extend("exec_sync", workload::exec_sync(cri, &c, plan.execs).await?);
    }

    note(&format!("{label}: a second container in each pod"));
    workload::add_sidecars(cri, &mut fleet, plan.parallel).await?;
    tokio::time::sleep(QUIET).await;
    mem.daemon_rss_fleet_x2_kib = daemon.rss_kib()?;
    let containers = fleet.iter().map(|p| p.containers.len()).sum();
    note(&format!(
        "{label}: List* with {} pods, {containers} containers",
        fleet.len()
    ));
    let (lc, lp) = workload::lists(cri, plan.lists, fleet.len(), containers).await?;
    s.extend("list_containers", lc);
    s.extend("list_pod_sandbox", lp);

    note(&format!("{label}: removing the pods"));
    for t in workload::stop_pods(cri, &fleet, plan.parallel).await? {
        s.add("fleet_teardown_parallel", t.total());
    }
    tokio::time::sleep(QUIET).await;
    mem.daemon_rss_end_kib = daemon.rss_kib()?;
    Ok(())
}
