use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use libcgroups::common::AnyCgroupManager;
use nix::unistd::Pid;

use super::*;
use crate::stats::CpuRates;

fn stat(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

#[test]
fn v1_memory_figures() {
    let s = stat(&[
        ("inactive_file", 999),
        ("total_inactive_file", 300),
        ("total_rss", 200),
        ("total_pgfault", 7),
        ("total_pgmajfault", 2),
        ("total_cache", 400),
        ("total_mapped_file", 40),
        ("cache", 1),
    ]);
    let m = memory_sample(false, 1000, 2000, &s);
    assert_eq!(
        m,
        MemorySample {
            usage_bytes: 1000,
            working_set_bytes: 700,
            rss_bytes: 200,
            page_faults: 7,
            major_page_faults: 2,
            cache_bytes: 400,
            mapped_file_bytes: 40,
            available_bytes: Some(1300),
        }
    );
    // v1's "no limit" is the largest page-aligned i64.
    assert_eq!(
        memory_sample(false, 1000, 9_223_372_036_854_771_712, &s).available_bytes,
        None
    );
}

#[test]
fn v2_memory_figures() {
    let s = stat(&[
        ("inactive_file", 100),
        ("anon", 50),
        ("pgfault", 9),
        ("pgmajfault", 3),
        ("file", 120),
        ("file_mapped", 12),
    ]);
    let m = memory_sample(true, 400, u64::MAX, &s);
    assert_eq!((m.working_set_bytes, m.rss_bytes), (300, 50));
    assert_eq!((m.cache_bytes, m.mapped_file_bytes), (120, 12));
    assert_eq!((m.page_faults, m.major_page_faults), (9, 3));
    assert_eq!(m.available_bytes, None);
    // Working set above the limit (or inactive above usage) floors at 0.
    assert_eq!(memory_sample(true, 400, 200, &s).available_bytes, Some(0));
    let inactive = stat(&[("inactive_file", 500)]);
    assert_eq!(
        memory_sample(true, 400, 1000, &inactive).working_set_bytes,
        0
    );
}

#[test]
fn cgroups_paths_must_be_plain() {
    assert_eq!(
        relative(Path::new("/kubepods/crust-1")).unwrap(),
        Path::new("kubepods/crust-1")
    );
    assert_eq!(
        relative(Path::new("crust/1")).unwrap(),
        Path::new("crust/1")
    );
    for bad in ["/", "", "/a/../b", "../a"] {
        assert!(
            matches!(
                relative(Path::new(bad)),
                Err(Error::InvalidCgroupPath { .. })
            ),
            "{bad:?}"
        );
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn direct_read_of_v2_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crust/c1");
    write(
        &dir,
        &[
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
            ),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            (
                "memory.stat",
                "anon 1024\ninactive_file 96\npgfault 11\npgmajfault 1\n",
            ),
            ("pids.current", "2\n"),
        ],
    );
    let dirs = Dirs {
        v2: true,
        cpu: Some(dir.clone()),
        cfs: Some(dir.clone()),
        memory: Some(dir.clone()),
        pids: Some(dir.clone()),
        blkio: Some(dir.clone()),
    };
    assert!(dirs.exists());
    let s = read_direct(&dirs).unwrap();
    assert!(s.timestamp > 0);
    assert_eq!(s.cpu_usage_nanos, 1_500_000);
    assert_eq!(s.memory.usage_bytes, 4096);
    assert_eq!(s.memory.working_set_bytes, 4000);
    assert_eq!(s.memory.rss_bytes, 1024);
    assert_eq!(s.memory.available_bytes, None);
    assert_eq!(s.pids, Some(2));

    // Without the pids controller, no task count rather than an error.
    fs::remove_file(dir.join("pids.current")).unwrap();
    assert_eq!(read_direct(&dirs).unwrap().pids, None);
}

#[test]
fn direct_read_of_v1_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, mem) = (tmp.path().join("cpuacct/c1"), tmp.path().join("memory/c1"));
    write(&cpu, &[("cpuacct.usage", "123456789\n")]);
    write(
        &mem,
        &[
            ("memory.usage_in_bytes", "8192\n"),
            ("memory.limit_in_bytes", "10000\n"),
            (
                "memory.stat",
                "cache 0\ntotal_rss 4096\ntotal_inactive_file 192\n",
            ),
        ],
    );
    let dirs = Dirs {
        v2: false,
        cpu: Some(cpu),
        cfs: None,
        memory: Some(mem),
        pids: Some(tmp.path().join("pids/c1")),
        blkio: None,
    };
    let s = read_direct(&dirs).unwrap();
    assert_eq!(s.cpu_usage_nanos, 123_456_789);
    assert_eq!(s.memory.working_set_bytes, 8000);
    assert_eq!(s.memory.available_bytes, Some(2000));
    assert_eq!(s.memory.rss_bytes, 4096);
    assert_eq!(s.pids, None);
}

#[test]
fn libcgroups_v2_cpu_time_is_converted_to_nanoseconds() {
    let mut stats = Stats::default();
    stats.cpu.usage.usage_total = 1500;
    stats.memory.memory.usage = 10;
    stats.memory.memory.limit = u64::MAX;
    let v2 = Dirs {
        v2: true,
        cpu: None,
        cfs: None,
        memory: None,
        pids: None,
        blkio: None,
    };
    let s = from_stats(&stats, &v2, 5);
    assert_eq!(
        (s.timestamp, s.cpu_usage_nanos, s.pids),
        (5, 1_500_000, None)
    );
    let v1 = Dirs { v2: false, ..v2 };
    assert_eq!(from_stats(&stats, &v1, 5).cpu_usage_nanos, 1500);
}

/// A busy shell that waits for a line on stdin (sent once it is in the cgroup), then
/// execs a fresh busy loop whose pages are charged to the new cgroup.
struct Busy {
    child: Child,
    manager: AnyCgroupManager,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.manager.remove();
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn samples_a_real_cgroup_and_never_creates_one() {
    if !is_root() {
        eprintln!(
            "SKIPPED samples_a_real_cgroup_and_never_creates_one: needs root to create cgroups"
        );
        return;
    }
    let path = PathBuf::from(format!("/crust-stats-test-{}", std::process::id()));
    let dirs = Dirs::of(&path).unwrap();

    // Missing: None, and still missing afterwards.
    assert_eq!(sample(&path, Figures::Metrics).unwrap(), None);
    assert!(!dirs.exists(), "sampling created {dirs:?}");
    let all = [&dirs.cpu, &dirs.cfs, &dirs.memory, &dirs.pids, &dirs.blkio];
    for d in all.into_iter().flatten() {
        assert!(!d.exists(), "sampling created {}", d.display());
    }

    // Its stdout is a socket, so the socket count has one to find.
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "read _; exec sh -c 'while :; do :; done'"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(socket)))
        .spawn()
        .unwrap();
    let config = CgroupConfig {
        cgroup_path: path.clone(),
        systemd_cgroup: false,
        container_name: String::new(),
    };
    let manager = libcgroups::common::create_cgroup_manager(config).unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let add = manager.add_task(pid);
    let mut stdin = child.stdin.take().unwrap();
    let busy = Busy { child, manager };
    add.unwrap();
    limit_cpu(&dirs);
    writeln!(stdin, "go").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let rates = CpuRates::new();
    let first = sample(&path, Figures::Metrics)
        .unwrap()
        .expect("cgroup exists");
    assert_eq!(rates.usage_nano_cores("t", &first), None);
    std::thread::sleep(Duration::from_millis(300));
    let second = sample(&path, Figures::Metrics)
        .unwrap()
        .expect("cgroup exists");
    assert!(second.timestamp > first.timestamp);
    assert!(
        second.cpu_usage_nanos > first.cpu_usage_nanos,
        "{first:?} -> {second:?}"
    );
    let rate = rates.usage_nano_cores("t", &second).unwrap();
    assert!(rate > 0, "rate {rate}");
    assert!(second.memory.usage_bytes > 0, "{second:?}");
    assert!(second.memory.working_set_bytes <= second.memory.usage_bytes);
    if dirs.pids_dir().is_some() {
        assert!(second.pids.unwrap() >= 1, "{second:?}");
    }
    assert_detail(&dirs, &second);
    // The CRI stats' sample reads the same counters and none of the details.
    let plain = sample(&path, Figures::Stats)
        .unwrap()
        .expect("cgroup exists");
    assert_eq!(plain.detail, CgroupDetail::default());
    assert!(plain.cpu_usage_nanos >= second.cpu_usage_nanos);
    assert_eq!(plain.pids, second.pids);

    // Both ways of reading work on this host and agree on what cannot move.
    let through = through_libcgroups(&path, &dirs).unwrap();
    let direct = read_direct(&dirs).unwrap();
    assert!(through.cpu_usage_nanos > 0 && direct.cpu_usage_nanos > 0);
    assert_eq!(through.pids, direct.pids);
    assert_eq!(
        through.memory.available_bytes.is_some(),
        direct.memory.available_bytes.is_some()
    );

    assert_quiet(&path);

    drop(busy);
    assert!(!dirs.exists(), "cleanup left {dirs:?}");
    assert_eq!(sample(&path, Figures::Metrics).unwrap(), None);
    assert!(!dirs.exists(), "sampling recreated {dirs:?}");
}

/// A `Write` into a shared buffer, for capturing log output.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// libcgroups logs when a manager is created; sampling must not.
fn assert_quiet(path: &Path) {
    let logs = |f: &dyn Fn()| {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    };
    let config = CgroupConfig {
        cgroup_path: path.to_owned(),
        systemd_cgroup: false,
        container_name: String::new(),
    };
    let loud = logs(&|| drop(libcgroups::common::create_cgroup_manager(config.clone())));
    assert!(
        loud.contains("libcgroups"),
        "libcgroups no longer logs: {loud:?}"
    );
    let quiet = logs(&|| {
        sample(path, Figures::Metrics).unwrap().unwrap();
    });
    assert!(!quiet.contains("libcgroups"), "sampling logged: {quiet}");
}

/// A CFS quota of half a CPU, so the periods count.
fn limit_cpu(dirs: &Dirs) {
    let dir = dirs.cfs.as_deref().unwrap();
    if dirs.v2 {
        fs::write(dir.join("cpu.max"), "50000 100000").unwrap();
    } else {
        fs::write(dir.join("cpu.cfs_quota_us"), "50000").unwrap();
    }
}

/// The details of a real cgroup holding one busy shell, quota-limited, with a socket
/// for stdout.
fn assert_detail(dirs: &Dirs, s: &CgroupSample) {
    let d = &s.detail;
    let user = d.cpu_user_nanos.expect("user time");
    let system = d.cpu_system_nanos.expect("system time");
    assert!(user + system > 0, "{d:?}");
    let cfs = d.cfs.expect("cfs counters");
    assert!(cfs.periods > 0, "{cfs:?}");
    assert!(cfs.throttled_periods <= cfs.periods, "{cfs:?}");
    assert!(d.memory_failcnt.is_some(), "{d:?}");
    assert!(d.oom_kills.is_some(), "{d:?}");
    let mem = dirs.memory.as_deref().unwrap();
    let has = |f: &str| mem.join(f).is_file();
    let (peak, kernel, swap) = if dirs.v2 {
        ("memory.peak", "memory.stat", "memory.swap.current")
    } else {
        (
            "memory.max_usage_in_bytes",
            "memory.kmem.usage_in_bytes",
            "memory.memsw.usage_in_bytes",
        )
    };
    if has(peak) {
        assert!(d.memory_max_usage_bytes.unwrap() > 0, "{d:?}");
    }
    if has(kernel) && !dirs.v2 {
        assert!(d.memory_kernel_bytes.is_some(), "{d:?}");
    }
    assert_eq!(d.swap_bytes.is_some(), has(swap), "{d:?}");
    if dirs.pids_dir().is_some() {
        assert_eq!(d.pids_max, Some(0), "no pid limit is 0");
    }
    let procs = d.processes.expect("processes");
    assert_eq!(procs.processes, 1, "{procs:?}");
    assert!(procs.file_descriptors >= 3, "{procs:?}");
    assert!(
        procs.sockets >= 1 && procs.sockets < procs.file_descriptors,
        "{procs:?}"
    );
    assert!(d.blkio.iter().all(|b| !b.name.is_empty()), "{d:?}");
}
