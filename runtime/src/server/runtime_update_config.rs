//! UpdateRuntimeConfig: kubelet passes the node's pod CIDR. crust's pod network comes
//! from the CNI config file, whose IPAM names its own ranges, so the CIDR is logged
//! and acknowledged (containerd uses it only to fill a CNI config template).

use crust_proto::cri::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};

use super::Context;
use super::error::Result;

/// Acknowledges the pod CIDR.
pub async fn update_runtime_config(
    _ctx: &Context,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    tracing::info!(pod_cidr = %cidr, "pod CIDR from kubelet (the CNI config's IPAM decides pod addresses)");
    Ok(UpdateRuntimeConfigResponse {})
}
