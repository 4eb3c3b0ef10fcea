//! The memory of idle shims, printed (an ignored test: a measurement, not a check),
//! and a shim that still serves after giving memory back.

mod common;

use std::time::Duration;

use common::{Fixture, eventually, proc_field, require_prerequisites, shim_pid, state};
use crust_proto::shim::{
    ExecSyncRequest, KillRequest, ShutdownRequest, StartRequest, Status, WaitRequest,
};

/// Prints the memory of idle shims with running containers (four of them, so that
/// Pss shows the share of the binary's pages). Run it against the release binary:
/// `CRUST_SHIM=target/release/crust-shim cargo test -p crust-shim --test shim
/// idle_memory -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn idle_memory() {
    require_prerequisites();
    let mut shims = Vec::new();
    for i in 0..4 {
        let fx = Fixture::new(&format!("mem{i}"), &["sleep", "1000"], |_| {});
        fx.create();
        let mut c = fx.client().await;
        let pid = c.start(StartRequest {}).await.unwrap().into_inner().pid;
        let r = c.exec_sync(ExecSyncRequest {
            args: vec!["true".into()],
            timeout: 5,
            env: vec![],
        });
        r.await.unwrap();
        shims.push((fx, c, shim_pid(pid)));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (_, _, shim) in &shims {
        let mut line = format!("shim {shim}");
        for (file, field) in [
            ("status", "VmRSS"),
            ("status", "RssAnon"),
            ("smaps_rollup", "Pss"),
        ] {
            let v = proc_field(*shim, file, field).unwrap_or_default();
            line += &format!(" {field}: {v}");
        }
        println!("{line}");
    }
    if let Ok(secs) = std::env::var("CRUST_SHIM_HOLD") {
        // Time to look at /proc/<shim>/smaps by hand.
        tokio::time::sleep(Duration::from_secs(secs.parse().unwrap_or(30))).await;
    }
    for (_, c, _) in &mut shims {
        c.shutdown(ShutdownRequest { force: true }).await.unwrap();
    }
}

/// An idle shim gives back memory (crust-idle's trim, a second after the last call)
/// and then still serves: exec, kill, wait and shutdown fault the dropped code back in.
/// Prints the shim's RSS before and after the trims.
#[tokio::test]
async fn serves_after_an_idle_trim() {
    require_prerequisites();
    let mut fx = Fixture::new("trim", &["sleep", "1000"], |_| {});
    fx.extra = vec!["--log-level".into(), "debug".into()];
    fx.create();
    let mut c = fx.client().await;
    let pid = c.start(StartRequest {}).await.unwrap().into_inner().pid;
    let shim = shim_pid(pid);
    let rss = || proc_field(shim, "status", "VmRSS").unwrap_or_default();
    let trims = |fx: &Fixture| fx.shim_log().matches("memory trimmed").count();
    let started = rss();
    assert!(
        eventually(Duration::from_secs(5), || trims(&fx) >= 1).await,
        "no trim after the start:\n{}",
        fx.shim_log()
    );
    println!(
        "shim {shim} VmRSS after start: {started}, after the trim: {}",
        rss()
    );

    let out = c
        .exec_sync(ExecSyncRequest {
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 7".into(),
            ],
            timeout: 5,
            env: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );
    assert!(
        eventually(Duration::from_secs(5), || trims(&fx) >= 2).await,
        "no trim after the exec"
    );

    // SIGKILL: sleep runs as its namespace's init, which ignores SIGTERM
    c.kill(KillRequest {
        signal: 9,
        all: false,
    })
    .await
    .unwrap();
    let w = c.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(w.exit_code, 137);
    assert_eq!(state(&mut c).await.status(), Status::Stopped);
    c.shutdown(ShutdownRequest { force: false }).await.unwrap();
}
