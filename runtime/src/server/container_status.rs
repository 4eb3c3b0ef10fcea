//! ContainerStatus: state, exit, times, image, mounts, log path and resources; with
//! `verbose`, the pid, bundle, spec and a summary of the applied security settings as
//! JSON under "info".

use std::collections::HashMap;

use crust_proto::cri::{ContainerStatusRequest, ContainerStatusResponse};

use super::Context;
use super::convert;
use super::error::Result;

/// The status of one container; NotFound for an unknown id.
pub async fn container_status(
    ctx: &Context,
    req: ContainerStatusRequest,
) -> Result<ContainerStatusResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let mut info = HashMap::new();
    if req.verbose {
        let m = c.metadata();
        let s = c.status();
        let spec: Option<serde_json::Value> = std::fs::read(m.bundle_dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let security = spec
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .map(|s| crate::spec::security_summary(m.id.as_str(), &m.config, &s));
        let verbose = serde_json::json!({
            "sandboxID": m.sandbox_id,
            "pid": s.pid,
            "removing": s.removing,
            "bundle": m.bundle_dir,
            "cgroupsPath": m.cgroups_path,
            "stopSignal": m.stop_signal,
            "runtimeSpec": spec,
            "security": security,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(convert::container_status(&c)),
        info,
    })
}
