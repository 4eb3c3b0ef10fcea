//! The memory of idle shims, printed (an ignored test: a measurement, not a check).

mod common;

use std::time::Duration;

use common::{Fixture, proc_field, require_prerequisites, shim_pid};
use crust_proto::shim::{ExecSyncRequest, ShutdownRequest, StartRequest};

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
