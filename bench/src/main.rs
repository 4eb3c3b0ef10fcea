//! crust-bench drives one CRI runtime through a fixed workload over its socket and
//! writes the figures as JSON. Its phases, each optional (`--phases`):
//!
//! - classic: pod start (serial and 2 in parallel), pod teardown, ExecSync, the List
//!   calls with 100 pods / 200 containers running, the daemon's memory, and the
//!   memory of the per-container processes (shims and pause processes);
//! - bursts: 100 pods started 10 at a time, then 50 at a time (kubelet starts the
//!   pods of a node concurrently): wall time, pods per second, time per pod;
//! - exec-burst: ExecSync in a running container while a burst starts its pods;
//! - density: 300 pods of one container running while kubelet's polling goes on
//!   for 60 s (List* and the stats calls every 10 s, Status every 5 s): daemon RSS
//!   and CPU, the calls' times, and the memory of each pod's processes;
//! - recovery: with those pods running, the daemon is SIGKILLed and started again:
//!   the time until Status is ready and ListContainers complete;
//! - pulls: 5 different images pulled at once, and one image of 30 small layers.
//!
//! It is run once per runtime, the same way for each, so that the figures can be
//! compared side by side; it never judges them. It must never leave pods behind:
//! whatever it started is removed, also after a failure.

mod bursts;
mod cgroups;
mod classic;
mod cri;
mod daemon;
mod density;
mod procs;
mod pulls;
mod recovery;
mod stats;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use crate::cri::Cri;
use crate::daemon::Daemon;
use crate::procs::ShimMatch;
use crate::recovery::Restart;
use crate::stats::{Samples, Summary};

/// Time without calls before a memory reading: runtimes may give memory back once
/// idle (crustd does two seconds after its last call, a shim after one second).
pub const QUIET: Duration = Duration::from_secs(3);

/// A part of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    Classic,
    Bursts,
    ExecBurst,
    Density,
    Recovery,
    Pulls,
}

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
    /// The phases to run (in the order of the default).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "classic,bursts,exec-burst,density,recovery,pulls"
    )]
    phases: Vec<Phase>,
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
    /// classic: pods started and torn down in each pod start phase.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// classic: pods in flight at once in the parallel phase.
    #[arg(long, default_value_t = 2)]
    parallel: usize,
    /// classic: pods kept running for the memory, exec and list phases (two
    /// containers each for the lists).
    #[arg(long, default_value_t = 100)]
    fleet: usize,
    /// classic: ExecSync calls timed.
    #[arg(long, default_value_t = 100)]
    execs: usize,
    /// classic: calls of each List RPC timed.
    #[arg(long, default_value_t = 100)]
    lists: usize,
    /// bursts, exec-burst: pods of each burst.
    #[arg(long, default_value_t = 100)]
    burst_pods: usize,
    /// bursts: the starts in flight of each burst.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    burst_sizes: Vec<usize>,
    /// exec-burst: the starts in flight of its burst.
    #[arg(long, default_value_t = 10)]
    exec_burst_size: usize,
    /// exec-burst: milliseconds from one ExecSync to the next.
    #[arg(long, default_value_t = 100)]
    exec_every_ms: u64,
    /// density, recovery: pods running, one container each.
    #[arg(long, default_value_t = 300)]
    density_pods: usize,
    /// density, recovery: starts in flight while they are started.
    #[arg(long, default_value_t = 10)]
    density_in_flight: usize,
    /// density: seconds of kubelet-like polling.
    #[arg(long, default_value_t = 60)]
    density_secs: u64,
    /// recovery: the daemon's command line, to start it again after the SIGKILL
    /// (words separated by spaces).
    #[arg(long, value_name = "COMMAND")]
    restart: Option<String>,
    /// recovery: append the restarted daemon's output to this file.
    #[arg(long)]
    restart_log: Option<PathBuf>,
    /// recovery: write the restarted daemon's pid to this file.
    #[arg(long)]
    restart_pidfile: Option<PathBuf>,
    /// pulls: an image pulled with the others at once (repeat the flag).
    #[arg(long)]
    pull_image: Vec<String>,
    /// pulls: the image of many small layers.
    #[arg(long)]
    layers_image: Option<String>,
    /// Where the pods' log dirs go (created and removed by the benchmark).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    label: String,
    runtime: String,
    /// Unix time the run started.
    started: u64,
    args: Args,
    /// Summaries of every timed operation, in milliseconds.
    latency_ms: BTreeMap<String, Summary>,
    /// classic: the daemon's and the per-container processes' memory.
    memory: classic::Memory,
    bursts: Vec<bursts::Burst>,
    exec_burst: Option<bursts::Burst>,
    density: Option<density::Density>,
    recovery: Option<recovery::Recovery>,
    pulls: Option<pulls::Pulls>,
    /// The daemon's CPU time (user + system) over the whole run.
    daemon_cpu_ms: Option<u64>,
    wall_ms: u64,
}

/// A line on stderr.
pub fn note(msg: &str) {
    eprintln!("crust-bench: {msg}");
}

async fn run(
    args: &Args,
    cri: &mut Cri,
    daemon: &mut Daemon,
    report: &mut Report,
    s: &mut Samples,
) -> Result<()> {
    let label = args.label.as_str();
    let has = |p: Phase| args.phases.contains(&p);
    let shim = args
        .shim_name
        .as_ref()
        .zip(args.shim_arg.as_ref())
        .map(|(name, arg)| ShimMatch {
            name: name.clone(),
            arg: arg.clone(),
            pause_comm: args.pause_comm.clone(),
        });
    let names = |phase: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{label}-{phase}-{i}")).collect()
    };

    if has(Phase::Classic) {
        let plan = classic::Plan {
            names: &names,
            label,
            pods: args.pods,
            parallel: args.parallel,
            fleet: args.fleet,
            execs: args.execs,
            lists: args.lists,
            shim: shim.as_ref(),
        };
        classic::run(&plan, cri, daemon, s, &mut report.memory).await?;
    }

    if has(Phase::Bursts) {
        for &size in &args.burst_sizes {
            note(&format!(
                "{label}: burst of {} pods, {size} at a time",
                args.burst_pods
            ));
            let name = format!("burst_{size}");
            let pods = names(&format!("burst{size}"), args.burst_pods);
            report
                .bursts
                .push(bursts::burst(cri, s, &name, &pods, size).await?);
        }
    }

    if has(Phase::ExecBurst) {
        note(&format!(
            "{label}: ExecSync every {} ms during a burst of {} pods, {} at a time",
            args.exec_every_ms, args.burst_pods, args.exec_burst_size
        ));
        let (pod, _) = cri.start_pod(&format!("{label}-execpod")).await?;
        let container = pod
            .containers
            .first()
            .context("the exec pod has no container")?;
        workload::exec_sync(cri, container, 0).await?;
        let pods = names("execburst", args.burst_pods);
        let every = Duration::from_millis(args.exec_every_ms);
        let size = args.exec_burst_size;
        report.exec_burst =
            Some(bursts::exec_during_burst(cri, s, container, &pods, size, every).await?);
        cri.stop_pod(&pod.id).await?;
    }

    if has(Phase::Density) || has(Phase::Recovery) {
        let n = args.density_pods;
        note(&format!(
            "{label}: {n} pods running, started {} at a time",
            args.density_in_flight
        ));
        let (pods, mut d) =
            density::start(cri, s, &names("density", n), args.density_in_flight).await?;
        tokio::time::sleep(QUIET).await;
        if has(Phase::Density) {
            density::measure(&mut d, daemon, shim.as_ref())?;
            note(&format!(
                "{label}: kubelet-like polling for {} s",
                args.density_secs
            ));
            let secs = Duration::from_secs(args.density_secs);
            density::poll(cri, s, &mut d, daemon, secs, n).await?;
        }
        if has(Phase::Recovery) {
            note(&format!(
                "{label}: SIGKILL of the daemon with {n} pods, and a restart"
            ));
            let restart = Restart {
                argv: args
                    .restart
                    .as_deref()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
                log: args.restart_log.clone(),
                pidfile: args.restart_pidfile.clone(),
            };
            report.recovery =
                Some(recovery::recover(cri, &args.endpoint, daemon, &restart, n, n).await?);
        }
        note(&format!("{label}: removing the {n} pods"));
        density::teardown(cri, &mut d, &pods).await?;
        if has(Phase::Density) {
            report.density = Some(d);
        }
    }

    if has(Phase::Pulls) && (!args.pull_image.is_empty() || args.layers_image.is_some()) {
        note(&format!(
            "{label}: {} images pulled at once, then {}",
            args.pull_image.len(),
            args.layers_image
                .as_deref()
                .unwrap_or("no image of many layers")
        ));
        let layers = args.layers_image.as_deref();
        report.pulls = Some(pulls::pulls(cri, daemon, &args.pull_image, layers).await?);
    }
    Ok(())
}

/// Removes the pods' cgroup parents, giving the runtime a few seconds to remove
/// the containers' cgroups below them.
async fn remove_cgroups(run_id: &str) {
    let mut left = Vec::new();
    for _ in 0..20 {
        left = cgroups::remove_run(run_id);
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    note(&format!(
        "{} cgroups of the pods still in use after their removal, e.g. {}",
        left.len(),
        left[0].display()
    ));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.phases.contains(&Phase::Recovery) {
        ensure!(
            args.restart.is_some() && args.daemon_pid.is_some(),
            "the recovery phase needs --restart and --daemon-pid (or leave it out of --phases)"
        );
    }
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
    let rss_start = Daemon::new(args.daemon_pid)?.rss_kib()?;
    cri.pull().await?;

    let wall = Instant::now();
    let mut daemon = Daemon::new(args.daemon_pid)?;
    let mut report = Report {
        label: args.label.clone(),
        runtime,
        started: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        args: args.clone(),
        latency_ms: BTreeMap::new(),
        memory: classic::Memory {
            daemon_rss_start_kib: rss_start,
            ..Default::default()
        },
        bursts: Vec::new(),
        exec_burst: None,
        density: None,
        recovery: None,
        pulls: None,
        daemon_cpu_ms: None,
        wall_ms: 0,
    };
    let mut s = Samples::default();
    let outcome = run(&args, &mut cri, &mut daemon, &mut report, &mut s).await;
    if outcome.is_err() {
        match workload::remove_leftovers(&mut cri).await {
            Ok(n) => note(&format!("removed {n} pods left by the failed run")),
            Err(e) => note(&format!(
                "could not remove the pods of the failed run: {e:#}"
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    remove_cgroups(&run_id).await;
    outcome?;

    report.latency_ms = s.summaries();
    report.wall_ms = wall.elapsed().as_millis() as u64;
    report.daemon_cpu_ms = daemon.cpu_ms()?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{json}\n"))
            .with_context(|| format!("write {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}
