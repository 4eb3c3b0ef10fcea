use std::path::PathBuf;

use super::*;

fn write(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

fn v2_dirs(dir: &Path) -> Dirs {
    let d = Some(dir.to_owned());
    Dirs {
        v2: true,
        cpu: d.clone(),
        cfs: d.clone(),
        memory: d.clone(),
        pids: d.clone(),
        blkio: d,
    }
}

#[test]
fn v2_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c1");
    write(
        &dir,
        &[
            (
                "cpu.stat",
                "usage_usec 9000\nuser_usec 6000\nsystem_usec 3000\nnr_periods 40\n\
                 nr_throttled 7\nthrottled_usec 2500000\n",
            ),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("memory.peak", "65536\n"),
            ("memory.swap.current", "4096\n"),
            ("memory.stat", "anon 1\nkernel 8192\n"),
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
            (
                "io.stat",
                "253:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
            ("cgroup.procs", ""),
        ],
    );
    let d = read(&v2_dirs(&dir), 100);
    assert_eq!(d.cpu_user_nanos, Some(6_000_000));
    assert_eq!(d.cpu_system_nanos, Some(3_000_000));
    assert_eq!(
        d.cfs,
        Some(CfsSample {
            periods: 40,
            throttled_periods: 7,
            throttled_nanos: 2_500_000_000,
        })
    );
    assert_eq!(d.memory_failcnt, Some(3));
    assert_eq!(d.oom_kills, Some(1));
    assert_eq!(d.memory_max_usage_bytes, Some(65536));
    assert_eq!(d.swap_bytes, Some(4096));
    assert_eq!(d.memory_kernel_bytes, Some(8192));
    assert_eq!(d.pids_max, Some(0));
    assert_eq!(d.processes, Some(ProcessSample::default()));
    assert_eq!(d.blkio.len(), 1);
    let dev = &d.blkio[0];
    assert_eq!((dev.major, dev.minor), (253, 0));
    assert_eq!((dev.bytes_of("Read"), dev.bytes_of("Write")), (4096, 8192));
    assert_eq!((dev.ios_of("Read"), dev.ios_of("Write")), (1, 2));
    assert!(!dev.name.is_empty());

    // A kernel without memory.peak, swap, PSI-era keys or the io controller: those
    // figures are absent, the others stay.
    for f in [
        "memory.peak",
        "memory.swap.current",
        "io.stat",
        "memory.stat",
    ] {
        fs::remove_file(dir.join(f)).unwrap();
    }
    fs::write(dir.join("pids.max"), "512\n").unwrap();
    let d = read(&v2_dirs(&dir), 100);
    assert_eq!(
        (
            d.memory_max_usage_bytes,
            d.swap_bytes,
            d.memory_kernel_bytes
        ),
        (None, None, None)
    );
    assert!(d.blkio.is_empty());
    assert_eq!(d.pids_max, Some(512));
    assert_eq!(d.memory_failcnt, Some(3));
}

#[test]
fn v1_files() {
    let tmp = tempfile::tempdir().unwrap();
    let at = |c: &str| tmp.path().join(c).join("c1");
    write(&at("cpuacct"), &[("cpuacct.stat", "user 150\nsystem 25\n")]);
    write(
        &at("cpu"),
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 3000000000\n",
        )],
    );
    write(
        &at("memory"),
        &[
            ("memory.failcnt", "6\n"),
            ("memory.max_usage_in_bytes", "9000\n"),
            ("memory.kmem.usage_in_bytes", "700\n"),
            ("memory.memsw.usage_in_bytes", "5000\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("cgroup.procs", ""),
        ],
    );
    write(
        &at("blkio"),
        &[
            (
                "blkio.throttle.io_service_bytes",
                "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n\
                 8:0 Discard 0\n8:0 Total 300\n8:16 Read 1\nTotal 301\n",
            ),
            (
                "blkio.throttle.io_serviced",
                "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
            ),
        ],
    );
    let dirs = Dirs {
        v2: false,
        cpu: Some(at("cpuacct")),
        cfs: Some(at("cpu")),
        memory: Some(at("memory")),
        pids: Some(at("pids")),
        blkio: Some(at("blkio")),
    };
    let d = read(&dirs, 4000);
    assert_eq!(d.cpu_user_nanos, Some(1_500_000_000));
    assert_eq!(d.cpu_system_nanos, Some(250_000_000));
    assert_eq!(
        d.cfs,
        Some(CfsSample {
            periods: 10,
            throttled_periods: 4,
            throttled_nanos: 3_000_000_000,
        })
    );
    assert_eq!(d.memory_failcnt, Some(6));
    assert_eq!(d.memory_max_usage_bytes, Some(9000));
    assert_eq!(d.memory_kernel_bytes, Some(700));
    assert_eq!(d.swap_bytes, Some(1000), "memsw less memory usage");
    assert_eq!(d.oom_kills, Some(2));
    assert_eq!(d.pids_max, None, "no pids controller");
    assert_eq!(d.processes.unwrap().processes, 0);
    let majors: Vec<_> = d.blkio.iter().map(|b| (b.major, b.minor)).collect();
    assert_eq!(majors, [(8, 0), (8, 16)]);
    let sda = &d.blkio[0];
    let ops: Vec<_> = sda.bytes.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(ops, ["Read", "Write", "Sync", "Async", "Discard", "Total"]);
    assert_eq!((sda.ios_of("Read"), sda.ios_of("Write")), (1, 2));
    assert_eq!(d.blkio[1].ios_of("Read"), 0);

    // Without swap accounting there is no swap figure.
    fs::remove_file(at("memory").join("memory.memsw.usage_in_bytes")).unwrap();
    assert_eq!(read(&dirs, 4000).swap_bytes, None);
}

#[test]
fn nothing_mounted_is_nothing_known() {
    let dirs = Dirs {
        v2: false,
        cpu: None,
        cfs: None,
        memory: None,
        pids: None,
        blkio: None,
    };
    assert_eq!(read(&dirs, 0), CgroupDetail::default());
}

#[test]
fn counts_descriptors_and_sockets_of_each_process() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = tmp.path().join("cg");
    write(&cg, &[("cgroup.procs", "10\n11\n12\n")]);
    let proc = tmp.path().join("proc");
    let fds = |pid: &str, targets: &[&str]| {
        let dir = proc.join(pid).join("fd");
        fs::create_dir_all(&dir).unwrap();
        for (i, t) in targets.iter().enumerate() {
            std::os::unix::fs::symlink(t, dir.join(i.to_string())).unwrap();
        }
    };
    fds("10", &["/dev/null", "socket:[123]", "pipe:[9]"]);
    fds("11", &["socket:[124]", "/tmp/x"]);
    // 12 exited before its fds were read: it still counts as a process.
    assert_eq!(
        processes(&cg, &proc),
        Some(ProcessSample {
            processes: 3,
            file_descriptors: 5,
            sockets: 2,
        })
    );
    assert_eq!(processes(&PathBuf::from("/nonexistent"), &proc), None);
}

#[test]
fn unknown_devices_are_named_by_number() {
    assert_eq!(device_name(4095, 1_048_575), "4095:1048575");
}
