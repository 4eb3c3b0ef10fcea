//! Status: the RuntimeReady and NetworkReady conditions, each with the real reason
//! when it is false.

use std::collections::HashMap;

use crust_proto::cri::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};

use super::Context;
use super::error::Result;
use crate::network;

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

fn condition(kind: &str, problem: Option<(&str, String)>) -> RuntimeCondition {
    let (reason, message) = problem.unwrap_or_default();
    RuntimeCondition {
        r#type: kind.into(),
        status: reason.is_empty(),
        reason: reason.into(),
        message,
    }
}

/// Reports the conditions; with `verbose`, the effective config as JSON under "config".
pub async fn status(ctx: &Context, req: StatusRequest) -> Result<StatusResponse> {
    let runtime = match &ctx.shim_path {
        Some(_) => None,
        None => Some((
            "ShimNotFound",
            "crust-shim was found neither beside crustd nor in PATH".to_string(),
        )),
    };
    let net = network::find_network(&ctx.config.network)
        .err()
        .map(|e| ("NetworkPluginNotReady", format!("cni: {e}")));
    let mut info = HashMap::new();
    if req.verbose {
        let config = serde_json::to_string(&ctx.config).unwrap_or_default();
        info.insert("config".to_string(), config);
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus {
            conditions: vec![
                condition(RUNTIME_READY, runtime),
                condition(NETWORK_READY, net),
            ],
        }),
        info,
        // The default handler and the configured ones, which all run pods alike.
        // Recursive read-only mounts work through mount_setattr (Linux 5.12+), which
        // libcontainer uses for `rro`; user namespaces when the start-up probe could
        // make one and idmap a mount with it.
        runtime_handlers: std::iter::once(String::new())
            .chain(ctx.config.runtime.handlers.iter().cloned())
            .map(|name| RuntimeHandler {
                name,
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: ctx.host.mount_setattr,
                    user_namespaces: ctx.user_namespaces,
                }),
            })
            .collect(),
        // Supplemental groups follow the container's policy: Merge adds the image's
        // /etc/group memberships, Strict does not.
        features: Some(RuntimeFeatures {
            supplemental_groups_policy: true,
            ..Default::default()
        }),
    })
}
