//! ExecSync: runs a command in a running container and returns its output. The shim
//! enforces the timeout itself (kills the process group, drains a bounded amount of
//! output), so a client that gives up leaves nothing running.

use std::sync::Arc;

use crust_proto::cri::{ExecSyncRequest, ExecSyncResponse};
use crust_proto::shim;

use super::Context;
use super::containers::running_shim;
use super::error::{Error, Result};

/// Runs the command; DeadlineExceeded when the timeout passes.
pub async fn exec_sync(ctx: &Arc<Context>, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    if req.cmd.is_empty() {
        return Err(Error::InvalidArgument {
            rpc: "ExecSync",
            message: "cmd is required".into(),
        });
    }
    if req.timeout < 0 {
        return Err(Error::InvalidArgument {
            rpc: "ExecSync",
            message: format!("timeout {} is negative", req.timeout),
        });
    }
    let (id, socket) = running_shim(ctx, &req.container_id, "exec in")?;
    let out = ctx
        .shims
        .get(&id, &socket)
        .exec_sync(shim::ExecSyncRequest {
            args: req.cmd.clone(),
            timeout: req.timeout,
            env: Vec::new(),
        })
        .await?;
    if out.timed_out {
        return Err(Error::DeadlineExceeded {
            what: format!("container {id}"),
            message: format!("command {:?} timed out after {}s", req.cmd, req.timeout),
        });
    }
    Ok(ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}
