//! ExecSync: runs a command in a running container and returns its output. The shim
//! enforces the timeout itself (kills the process group, drains a bounded amount of
//! output), so a client that gives up leaves nothing running, and it keeps the output
//! within one CRI message (`shim::EXEC_SYNC_OUTPUT_BYTES`, stdout and stderr together).
//! A command longer than the kernel takes for any program is refused before it is
//! sent.

use std::sync::Arc;

use crust_proto::cri::{ExecSyncRequest, ExecSyncResponse};
use crust_proto::shim;

use super::Context;
use super::containers::running_shim;
use super::error::{Error, Result};

/// The most a new program's arguments and environment can take as the kernel counts
/// them: each string with its NUL, and a pointer to it. The kernel allows a quarter of
/// the stack limit, but never more than three quarters of its default stack limit
/// (`_STK_LIM`, 8 MiB), whatever the rlimit (fs/exec.c, `bprm_stack_limits`). A
/// longer command can never run.
const MAX_ARGS_BYTES: usize = 6 * 1024 * 1024;

/// Runs the command; DeadlineExceeded when the timeout passes.
pub async fn exec_sync(ctx: &Arc<Context>, req: ExecSyncRequest) -> Result<ExecSyncResponse> {
    crate::spec::validate::exec_command(&req.cmd).map_err(|e| Error::InvalidArgument {
        rpc: "ExecSync",
        message: format!("container {:?}: {e}", req.container_id),
    })?;
    if req.timeout < 0 {
        return Err(Error::InvalidArgument {
            rpc: "ExecSync",
            message: format!("timeout {} is negative", req.timeout),
        });
    }
    check_command_size(&req.container_id, &req.cmd)?;
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

/// InvalidArgument, naming container `id`, when `cmd` is more than the kernel would
/// take as a program's arguments.
fn check_command_size(id: &str, cmd: &[String]) -> Result<()> {
    let bytes: usize = cmd
        .iter()
        .map(|arg| arg.len() + 1 + size_of::<*const u8>())
        .sum();
    if bytes > MAX_ARGS_BYTES {
        return Err(Error::InvalidArgument {
            rpc: "ExecSync",
            message: format!(
                "container {id}: command of {bytes} bytes (as the kernel counts them) is \
                 longer than the kernel takes for any program's arguments ({MAX_ARGS_BYTES})"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command of `args` arguments taking `bytes` in all as the kernel counts them.
    fn command(args: usize, bytes: usize) -> Vec<String> {
        let each = bytes / args - 1 - size_of::<*const u8>();
        let mut cmd = vec!["a".repeat(each); args];
        cmd[0].push_str(&"a".repeat(bytes % args));
        cmd
    }

    #[test]
    fn a_command_up_to_the_kernels_limit_passes() {
        assert!(check_command_size("c1", &command(3, 1000)).is_ok());
        assert!(check_command_size("c1", &command(100, MAX_ARGS_BYTES)).is_ok());
        assert!(check_command_size("c1", &command(1, MAX_ARGS_BYTES)).is_ok());
    }

    #[test]
    fn a_command_over_the_kernels_limit_is_refused_naming_the_container() {
        for cmd in [
            command(100, MAX_ARGS_BYTES + 1),
            command(1, MAX_ARGS_BYTES + 1),
        ] {
            let err = check_command_size("c1", &cmd).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
            assert!(err.to_string().contains("container c1"), "{err}");
        }
        // The pointers count: a million empty arguments are 9 MB.
        let empty = vec![String::new(); 1_000_000];
        assert!(check_command_size("c1", &empty).is_err());
    }
}
