//! RuntimeConfig: what kubelet must match, today the cgroup driver crust uses.

use crust_proto::cri::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};

use super::Context;
use super::error::Result;
use crate::config;

/// Reports the cgroup driver from the validated config.
pub async fn runtime_config(
    ctx: &Context,
    _req: RuntimeConfigRequest,
) -> Result<RuntimeConfigResponse> {
    let driver = match ctx.config.cgroup.driver {
        config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        config::CgroupDriver::Systemd => CgroupDriver::Systemd,
    };
    Ok(RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}
