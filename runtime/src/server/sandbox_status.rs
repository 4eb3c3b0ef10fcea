//! PodSandboxStatus: the pod's state, IPs and namespace options; with `verbose`, the
//! pinned namespaces and the config as JSON under "info".

use std::collections::HashMap;

use crust_proto::cri::{PodSandboxStatusRequest, PodSandboxStatusResponse};

use super::Context;
use super::convert;
use super::error::Result;
use crate::store::now_nanos;

/// The status of one pod; NotFound for an unknown id.
pub async fn pod_sandbox_status(
    ctx: &Context,
    req: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse> {
    let sandbox = ctx.store.resolve_sandbox(&req.pod_sandbox_id)?;
    let containers = ctx.store.containers_of(&sandbox.metadata().id);
    let mut info = HashMap::new();
    if req.verbose {
        let m = sandbox.metadata();
        let s = sandbox.status();
        let pid_pin = ctx.paths.pid_pin(&m.id);
        let verbose = serde_json::json!({
            "pid": std::fs::read_to_string(pid_pin.with_extension("pid")).ok().map(|p| p.trim().to_string()),
            "netns": m.netns_path,
            "utsns": ctx.paths.uts_pin(&m.id),
            "ipcns": ctx.paths.ipc_pin(&m.id),
            "pidns": pid_pin.exists().then_some(pid_pin),
            "sandboxDir": ctx.paths.sandbox_dir(&m.id),
            "cgroupParent": m.cgroup_parent,
            "runtimeHandler": m.runtime_handler,
            "readyAt": s.ready_at,
            "stoppedAt": s.stopped_at,
            "networkTornDown": s.network_torn_down,
            "config": format!("{:?}", m.config),
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(convert::sandbox_status(&sandbox)),
        info,
        containers_statuses: containers
            .iter()
            .map(|c| convert::container_status(c))
            .collect(),
        timestamp: now_nanos(),
    })
}
