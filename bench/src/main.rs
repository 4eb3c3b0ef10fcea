//! crust-bench drives one CRI runtime through a fixed workload over its socket and
//! writes the figures as JSON: pod start (serial and 2 in parallel), pod teardown,
//! ExecSync, the List calls with 100 pods / 200 containers running, the daemon's
//! memory and CPU time, and the memory of the per-container processes (shims and
//! pause processes). It is run once per runtime, the same way for each, so that the
//! figures can be compared side by side; it never judges them. It must never leave
//! pods behind: whatever it started is removed, also after a failure.

mod cri;
mod procs;
mod stats;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::cri::Cri;
use crate::procs::{Mem, Overhead, ShimMatch};
use crate::stats::{Summary, summarize};

/// Time without calls before a memory reading: runtimes may give memory back once
/// idle (crustd does two seconds after its last call, a shim after one second).
const QUIET: Duration = Duration::from_secs(3);

/// Drive a CRI runtime through the benchmark workload and print its figures as JSON.
#[derive(Parser, Debug, Clone, Serialize)]
#[command(name = "crust-bench", version)]
struct Args {
    /// The runtime's CRI endpoint.
    #[arg(long, value_name = "unix:///PATH")]
    endpoint: String,
    /// Name of the runtime in the results (e.g. crust, containerd).
    #[arg(long)]
    label: String,
    /// Write the JSON results here too (they always go to stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The daemon's pid, for its memory and CPU time.
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// File name of the runtime's per-container shim binary.
    #[arg(long, requires = "shim_arg")]
    shim_name: Option<String>,
    /// A string the shims' command lines contain (state dir, socket).
    #[arg(long, requires = "shim_name")]
    shim_arg: Option<String>,
    /// The comm of pause processes under a shim, counted with the shims.
    #[arg(long, default_value = "pause")]
    pause_comm: String,
    /// The image of every container (pulled first, not timed).
    #[arg(long, default_value = "registry.k8s.io/e2e-test-images/busybox:1.29-2")]
    image: String,
    /// Pods started and torn down in each pod start phase.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Pods in flight at once in the parallel phase.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// Pods kept running for the memory, exec and list phases (two containers each
    /// for the lists).
    #[arg(long, default_value_t = 100)]
    fleet: usize,
    /// ExecSync calls timed.
    #[arg(long, default_value_t = 100)]
    execs: usize,
    /// Calls of each List RPC timed.
    #[arg(long, default_value_t = 100)]
    lists: usize,
    /// Where the pods' log dirs go (created and removed by the benchmark).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
struct Memory {
    /// Daemon RSS when the benchmark connects, before it pulls the image.
    daemon_rss_start_kib: Option<u64>,
    /// Daemon RSS with the image pulled and nothing running. This and the readings
    /// below are taken after `QUIET` without calls.
    daemon_rss_idle_kib: Option<u64>,
    /// Daemon RSS with `fleet` pods of one container each running.
    daemon_rss_fleet_kib: Option<u64>,
    /// Daemon RSS with `fleet` pods of two containers each running.
    daemon_rss_fleet_x2_kib: Option<u64>,
    /// Daemon RSS after everything was removed.
    daemon_rss_end_kib: Option<u64>,
    /// Running containers when the per-container processes were measured.
    containers: usize,
    /// The per-container processes with `fleet` pods of one container each.
    overhead: Option<Overhead>,
    /// (shims + pauses) / containers.
    per_container: Option<Mem>,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    runtime: String,
    /// Unix time the run started.
    started: u64,
    args: Args,
    /// Summaries of every timed phase, in milliseconds.
    latency_ms: BTreeMap<&'static str, Summary>,
    memory: Memory,
    /// The daemon's CPU time (user + system) over the whole run.
    daemon_cpu_ms: Option<u64>,
    wall_ms: u64,
}

fn note(msg: &str) {
    eprintln!("crust-bench: {msg}");
}

fn rss_kib(pid: Option<u32>) -> Result<Option<u64>> {
    pid.map(|p| procs::mem(p).map(|m| m.rss_kib)).transpose()
}

/// Samples of each phase, by name.
#[derive(Default)]
struct Samples(BTreeMap<&'static str, Vec<Duration>>);

impl Samples {
    fn add(&mut self, name: &'static str, d: Duration) {
        self.0.entry(name).or_default().push(d);
    }

    fn summaries(&self) -> BTreeMap<&'static str, Summary> {
        self.0
            .iter()
            .filter_map(|(k, v)| Some((*k, summarize(v)?)))
            .collect()
    }
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

async fn run(args: &Args, cri: &mut Cri, report: &mut Report) -> Result<()> {
    let pid = args.daemon_pid;
    let shim = args
        .shim_name
        .as_ref()
        .zip(args.shim_arg.as_ref())
        .map(|(name, arg)| ShimMatch {
            name: name.clone(),
            arg: arg.clone(),
            pause_comm: args.pause_comm.clone(),
        });
    let mut s = Samples::default();
    let names = |phase: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("{}-{phase}-{i}", args.label))
            .collect()
    };

    // memory is read after a quiet time: a runtime may give memory back once idle
    tokio::time::sleep(QUIET).await;
    report.memory.daemon_rss_idle_kib = rss_kib(pid)?;

    note(&format!(
        "{}: {} pods, one at a time",
        args.label, args.pods
    ));
    let keys = ["pod_start", "pod_teardown"];
    pod_start_phase(cri, &mut s, names("serial", args.pods), 1, keys).await?;

    note(&format!(
        "{}: {} pods, {} at a time",
        args.label, args.pods, args.parallel
    ));
    let keys = ["pod_start_parallel", "pod_teardown_parallel"];
    pod_start_phase(cri, &mut s, names("par", args.pods), args.parallel, keys).await?;

    note(&format!("{}: {} pods kept running", args.label, args.fleet));
    let started = workload::start_pods(cri, &names("fleet", args.fleet), args.parallel).await?;
    let mut fleet: Vec<_> = started.into_iter().map(|(p, _)| p).collect();
    // let shims finish starting up and go quiet before their memory is read
    tokio::time::sleep(QUIET).await;
    report.memory.daemon_rss_fleet_kib = rss_kib(pid)?;
    report.memory.containers = fleet.len();
    if let Some(m) = &shim {
        let o = procs::overhead(m)?;
        let n = fleet.len().max(1) as u64;
        report.memory.per_container = Some(Mem {
            rss_kib: (o.shim_mem.rss_kib + o.pause_mem.rss_kib) / n,
            pss_kib: (o.shim_mem.pss_kib + o.pause_mem.pss_kib) / n,
        });
        report.memory.overhead = Some(o);
    }

    if let Some(c) = fleet.first().and_then(|p| p.containers.first()).cloned() {
        note(&format!("{}: {} ExecSync", args.label, args.execs));
        for d in workload::exec_sync(cri, &c, args.execs).await? {
            s.add("exec_sync", d);
        }
    }

    note(&format!("{}: a second container in each pod", args.label));
    workload::add_sidecars(cri, &mut fleet, args.parallel).await?;
    tokio::time::sleep(QUIET).await;
    report.memory.daemon_rss_fleet_x2_kib = rss_kib(pid)?;
    let containers = fleet.iter().map(|p| p.containers.len()).sum();
    note(&format!(
        "{}: List* with {} pods, {containers} containers",
        args.label,
        fleet.len()
    ));
    let (lc, lp) = workload::lists(cri, args.lists, fleet.len(), containers).await?;
    lc.into_iter().for_each(|d| s.add("list_containers", d));
    lp.into_iter().for_each(|d| s.add("list_pod_sandbox", d));

    note(&format!("{}: removing the pods", args.label));
    for t in workload::stop_pods(cri, &fleet, args.parallel).await? {
        s.add("fleet_teardown_parallel", t.total());
    }
    tokio::time::sleep(QUIET).await;
    report.memory.daemon_rss_end_kib = rss_kib(pid)?;
    report.latency_ms = s.summaries();
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("crust-bench-logs.{}", args.label)));
    let run_id = format!(
        "{}-{}",
        args.label,
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
    );
    let channel = cri::connect(&args.endpoint).await?;
    let mut cri = Cri::new(channel, &args.image, &log_dir, &run_id);
    let runtime = cri.version().await?;
    note(&format!("{}: {runtime} on {}", args.label, args.endpoint));
    let rss_start = rss_kib(args.daemon_pid)?;
    cri.pull().await?;

    let wall = Instant::now();
    let cpu_before = args.daemon_pid.map(procs::cpu_ms).transpose()?;
    let mut report = Report {
        label: args.label.clone(),
        runtime,
        started: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        args: args.clone(),
        latency_ms: BTreeMap::new(),
        memory: Memory {
            daemon_rss_start_kib: rss_start,
            ..Default::default()
        },
        daemon_cpu_ms: None,
        wall_ms: 0,
    };
    let outcome = run(&args, &mut cri, &mut report).await;
    if outcome.is_err() {
        match workload::remove_leftovers(&mut cri).await {
            Ok(n) => note(&format!("removed {n} pods left by the failed run")),
            Err(e) => note(&format!(
                "could not remove the pods of the failed run: {e:#}"
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    outcome?;

    report.wall_ms = wall.elapsed().as_millis() as u64;
    if let (Some(pid), Some(before)) = (args.daemon_pid, cpu_before) {
        report.daemon_cpu_ms = Some(procs::cpu_ms(pid)?.saturating_sub(before));
    }
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{json}\n"))
            .with_context(|| format!("write {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}
