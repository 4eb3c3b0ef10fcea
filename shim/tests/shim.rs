//! The real crust-shim binary running busybox containers, driven over its socket.
//! Run as root (cgroups, namespaces); skipped otherwise.

mod common;

use std::fs;
use std::time::Duration;

use common::{Fixture, eventually, proc_field, require_prerequisites, shim_pid, state};
use crust_proto::shim::{
    ExecSyncRequest, KillRequest, ReopenLogRequest, ResizePtyRequest, ShutdownRequest,
    StartRequest, Status, WaitRequest,
};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxNamespaceType, LinuxResourcesBuilder};

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

fn records(fx: &Fixture) -> Vec<(String, String, String)> {
    fx.log_records()
}

fn rec(stream: &str, tag: &str, content: &str) -> (String, String, String) {
    (stream.to_owned(), tag.to_owned(), content.to_owned())
}

#[tokio::test]
async fn runs_a_container_to_its_exit() {
    require_prerequisites();
    let fx = Fixture::new(
        "exit",
        &["sh", "-c", "echo hello; echo err >&2; exit 3"],
        |_| {},
    );
    fx.create();
    let mut c = fx.client().await;
    let s = state(&mut c).await;
    assert_eq!(s.status(), Status::Created);
    assert!(s.pid > 0);
    assert!(fx.exit_file().is_none());
    assert!(fx.cgroup("memory").exists());

    let shim = shim_pid(s.pid);
    assert_eq!(
        proc_field(shim, "status", "Threads").as_deref(),
        Some("1"),
        "single-threaded"
    );
    let pid = c.start(StartRequest {}).await.unwrap().into_inner().pid;
    assert_eq!(pid, s.pid);
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 3);
    assert!(!w.oom_killed);

    let s = state(&mut c).await;
    assert_eq!(s.status(), Status::Stopped);
    assert_eq!((s.exit_code, s.pid), (3, 0));
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    assert_eq!(s.finished_at, w.finished_at);
    let exit = fx.exit_file().expect("exit file");
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["oom_killed"], false);
    assert_eq!(exit["finished_at"], w.finished_at);

    let mut recs = records(&fx);
    recs.sort();
    assert_eq!(
        recs,
        [rec("stderr", "F", "err"), rec("stdout", "F", "hello")]
    );

    // Starting again is a wrong state.
    let err = c.start(StartRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // Killing an exited container succeeds.
    c.kill(KillRequest {
        signal: SIGKILL,
        all: false,
    })
    .await
    .unwrap();

    c.shutdown(ShutdownRequest { force: false }).await.unwrap();
    drop(c);
    let exited = || proc_field(shim, "status", "State").is_none_or(|s| s.starts_with('Z'));
    assert!(
        eventually(Duration::from_secs(5), exited).await,
        "shim still runs"
    );
    assert!(!fx.socket().exists());
    for ctrl in ["memory", "pids", "cpu", "freezer"] {
        assert!(!fx.cgroup(ctrl).exists(), "{ctrl} cgroup left");
    }
    assert!(fx.exit_file().is_some(), "exit file must outlive the shim");
    assert!(!fx.state().join("libcontainer").join(&fx.id).exists());
}

#[tokio::test]
async fn kill_reports_128_plus_signal() {
    require_prerequisites();
    // The init of a pid namespace ignores SIGTERM without a handler; SIGKILL works.
    let fx = Fixture::new("kill9", &["sleep", "1000"], |_| {});
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    c.kill(KillRequest {
        signal: SIGTERM,
        all: false,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&mut c).await.status(), Status::Running);
    c.kill(KillRequest {
        signal: SIGKILL,
        all: true,
    })
    .await
    .unwrap();
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 137);
    assert_eq!(fx.exit_file().unwrap()["exit_code"], 137);

    // Without its own pid namespace SIGTERM kills sleep.
    let no_pidns = |spec: &mut oci_spec::runtime::Spec| {
        let mut linux = spec.linux().clone().unwrap();
        let mut ns = linux.namespaces().clone().unwrap();
        ns.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        linux.set_namespaces(Some(ns));
        spec.set_linux(Some(linux));
    };
    let fx = Fixture::new("kill15", &["sleep", "1000"], no_pidns);
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    c.kill(KillRequest {
        signal: SIGTERM,
        all: false,
    })
    .await
    .unwrap();
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 143);
}

#[tokio::test]
async fn kills_a_created_container_and_refuses_shutdown_while_running() {
    require_prerequisites();
    let fx = Fixture::new("created", &["sleep", "1000"], |_| {});
    fx.create();
    let mut c = fx.client().await;
    let err = c
        .shutdown(ShutdownRequest { force: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    c.kill(KillRequest {
        signal: SIGKILL,
        all: false,
    })
    .await
    .unwrap();
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 137);
    let s = state(&mut c).await;
    assert_eq!((s.status(), s.started_at), (Status::Stopped, 0));
    c.shutdown(ShutdownRequest { force: false }).await.unwrap();
    assert!(!fx.cgroup("memory").exists());
}

#[tokio::test]
async fn exit_socket_closes_once_the_exit_file_is_written() {
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;

    require_prerequisites();
    let fx = Fixture::new("exitsock", &["sleep", "1000"], |_| {});
    fx.create();
    let exit_socket = fx.state().join(crust_proto::shim::EXIT_SOCKET);
    let mut waiter = UnixStream::connect(&exit_socket).await.unwrap();
    // A peer that leaves early takes nothing with it.
    drop(UnixStream::connect(&exit_socket).await.unwrap());
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    let mut byte = [0u8; 1];
    let open = tokio::time::timeout(Duration::from_millis(300), waiter.read(&mut byte)).await;
    assert!(open.is_err(), "closed while the container runs: {open:?}");
    c.kill(KillRequest {
        signal: SIGKILL,
        all: true,
    })
    .await
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), waiter.read(&mut byte))
        .await
        .expect("closed after the exit");
    assert_eq!(closed.unwrap(), 0, "EOF, no data");
    assert_eq!(fx.exit_file().expect("written before")["exit_code"], 137);
    // After the exit, a new connection ends at once.
    let mut late = UnixStream::connect(&exit_socket).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), late.read(&mut byte)).await;
    assert_eq!(n.expect("ends at once").unwrap(), 0);
    c.shutdown(ShutdownRequest { force: false }).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !exit_socket.exists()).await,
        "removed when the shim exits"
    );
}

#[tokio::test]
async fn exec_sync_output_exit_code_and_timeout() {
    require_prerequisites();
    let fx = Fixture::new("exec", &["sleep", "1000"], |_| {});
    fx.create();
    let mut c = fx.client().await;
    let exec = |args: &[&str], timeout: i64| ExecSyncRequest {
        args: args.iter().map(|s| s.to_string()).collect(),
        timeout,
        env: vec!["GREETING=hey".into()],
    };
    // Not running yet.
    let err = c.exec_sync(exec(&["echo", "hi"], 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    c.start(StartRequest {}).await.unwrap();

    let r = c
        .exec_sync(exec(&["echo", "hi"], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.exit_code, r.timed_out),
        (&b"hi\n"[..], 0, false)
    );

    let script = "echo $GREETING; echo err >&2; exit 7";
    let r = c
        .exec_sync(exec(&["sh", "-c", script], 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice()),
        (&b"hey\n"[..], &b"err\n"[..])
    );
    assert_eq!((r.exit_code, r.timed_out), (7, false));

    let before = fx.cgroup_pids();
    let r = c
        .exec_sync(exec(&["sleep", "100"], 1))
        .await
        .unwrap()
        .into_inner();
    assert!(r.timed_out);
    assert_eq!(
        fx.cgroup_pids(),
        before,
        "the timed out process must be gone"
    );
    // A background child in the exec's process group dies with it.
    let script = "sleep 100 & sleep 100";
    let r = c
        .exec_sync(exec(&["sh", "-c", script], 1))
        .await
        .unwrap()
        .into_inner();
    assert!(r.timed_out);
    let gone = eventually(Duration::from_secs(2), || fx.cgroup_pids() == before).await;
    assert!(gone, "left: {:?}", fx.cgroup_pids());

    let err = c.exec_sync(exec(&[], 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(state(&mut c).await.status(), Status::Running);
    c.shutdown(ShutdownRequest { force: true }).await.unwrap();
    assert!(!fx.cgroup("pids").exists());
    assert_eq!(fx.exit_file().unwrap()["exit_code"], 137);
}

#[tokio::test]
async fn splits_long_lines_and_keeps_a_trailing_partial() {
    require_prerequisites();
    let script = "head -c 40960 /dev/zero | tr '\\0' x; echo; printf tail";
    let fx = Fixture::new("long", &["sh", "-c", script], |_| {});
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    assert_eq!(
        c.wait(WaitRequest {}).await.unwrap().into_inner().exit_code,
        0
    );
    let got: Vec<_> = records(&fx)
        .into_iter()
        .map(|(s, t, c)| (s, t, c.len()))
        .collect();
    let want = [("P", 16384), ("P", 16384), ("F", 8192), ("P", 4)];
    let want: Vec<_> = want
        .iter()
        .map(|(t, n)| ("stdout".to_owned(), t.to_string(), *n))
        .collect();
    assert_eq!(got, want);
    assert!(records(&fx)[0].2.bytes().all(|b| b == b'x'));
}

#[tokio::test]
async fn reopens_the_log_after_rotation() {
    require_prerequisites();
    let fx = Fixture::new(
        "reopen",
        &["sh", "-c", "echo one; sleep 2; echo two"],
        |_| {},
    );
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || !records(&fx).is_empty()).await);
    let rotated = fx.dir.path().join("c.log.1");
    fs::rename(fx.log_path(), &rotated).unwrap();
    c.reopen_log(ReopenLogRequest {}).await.unwrap();
    c.wait(WaitRequest {}).await.unwrap();
    assert_eq!(records(&fx), [rec("stdout", "F", "two")]);
    assert!(
        fs::read_to_string(rotated)
            .unwrap()
            .ends_with(" stdout F one\n")
    );
}

#[tokio::test]
async fn tty_output_goes_to_the_log() {
    require_prerequisites();
    let script = "tty; echo hi";
    let mut fx = Fixture::new("tty", &["sh", "-c", script], |spec| {
        let mut p = spec.process().clone().unwrap();
        p.set_terminal(Some(true));
        spec.set_process(Some(p));
    });
    fx.extra.push("--tty".into());
    fx.create();
    let mut c = fx.client().await;
    c.resize_pty(ResizePtyRequest {
        width: 100,
        height: 30,
    })
    .await
    .unwrap();
    c.start(StartRequest {}).await.unwrap();
    assert_eq!(
        c.wait(WaitRequest {}).await.unwrap().into_inner().exit_code,
        0
    );
    let recs = records(&fx);
    assert!(recs.contains(&rec("stdout", "F", "hi")), "{recs:?}");
    assert!(recs.iter().all(|r| r.0 == "stdout"));
}

#[tokio::test]
async fn survives_the_death_of_its_starter() {
    require_prerequisites();
    let fx = Fixture::new("orphan", &["sleep", "1000"], |_| {});
    // A stand-in for crustd that starts the shim and is then SIGKILLed.
    let cmd = fx.command();
    let mut argv = vec![cmd.get_program().to_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_owned()));
    let mut starter = std::process::Command::new("/bin/busybox")
        .args(["sh", "-c", "\"$@\"; exec sleep 1000", "starter"])
        .args(argv)
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || fx.socket().exists()).await);
    starter.kill().unwrap();
    starter.wait().unwrap();
    let mut c = fx.client().await;
    assert_eq!(state(&mut c).await.status(), Status::Created);
    c.start(StartRequest {}).await.unwrap();
    c.kill(KillRequest {
        signal: SIGKILL,
        all: false,
    })
    .await
    .unwrap();
    assert_eq!(
        c.wait(WaitRequest {}).await.unwrap().into_inner().exit_code,
        137
    );
    c.shutdown(ShutdownRequest { force: false }).await.unwrap();
}

#[tokio::test]
async fn reports_oom_kill() {
    require_prerequisites();
    let script = "head -c 67108864 /dev/zero | tail -c 67108864 >/dev/null";
    let fx = Fixture::new("oom", &["sh", "-c", script], |spec| {
        let limit = 8 * 1024 * 1024;
        let mem = LinuxMemoryBuilder::default()
            .limit(limit)
            .swap(limit)
            .build()
            .unwrap();
        let res = LinuxResourcesBuilder::default()
            .memory(mem)
            .build()
            .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
    });
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert!(w.oom_killed, "exit {}", w.exit_code);
    assert_eq!(w.exit_code, 137);
    assert_eq!(fx.exit_file().unwrap()["oom_killed"], true);
    assert!(state(&mut c).await.oom_killed);
}

#[tokio::test]
async fn create_failure_is_one_line_on_stderr() {
    require_prerequisites();
    let fx = Fixture::new("fail", &["true"], |spec| {
        let mut root = spec.root().clone().unwrap();
        root.set_path("/nonexistent/rootfs".into());
        spec.set_root(Some(root));
    });
    let out = fx.spawn();
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.starts_with("crust-shim: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("rootfs /nonexistent/rootfs does not exist"),
        "{err}"
    );
    assert!(!fx.socket().exists());
}

#[tokio::test]
async fn container_processes_ignore_no_signal() {
    require_prerequisites();
    let fx = Fixture::new("sigign", &["cat", "/proc/self/status"], |_| {});
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    c.wait(WaitRequest {}).await.unwrap();
    let ign = |text: &str| {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .unwrap()
            .trim();
        // Standard signals only (32 and 33 belong to the C library).
        u64::from_str_radix(line, 16).unwrap() & 0xffff_ffff & !(1 << 31)
    };
    let status: Vec<_> = records(&fx).into_iter().map(|r| r.2).collect();
    assert_eq!(ign(&status.join("\n")), 0, "init ignores signals");
    // SIGPIPE (13) must not be ignored in exec processes either.
    drop(c);
    let fx = Fixture::new("sigexec", &["sleep", "1000"], |_| {});
    fx.create();
    let mut c = fx.client().await;
    c.start(StartRequest {}).await.unwrap();
    let req = ExecSyncRequest {
        args: vec!["cat".into(), "/proc/self/status".into()],
        ..Default::default()
    };
    let r = c.exec_sync(req).await.unwrap().into_inner();
    assert_eq!(
        ign(&String::from_utf8_lossy(&r.stdout)),
        0,
        "exec ignores signals"
    );
}
