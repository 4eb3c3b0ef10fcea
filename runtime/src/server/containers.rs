//! What several container RPCs (and recovery) share: recording an exit, watching a
//! running container, stopping it, tearing it down, publishing its events.
//!
//! A container's record moves through the store's state machine (store/container.rs);
//! the shim is the source of truth for the process, and its exit file outlives it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{ContainerEventResponse, ContainerEventType};
use nix::sys::signal::Signal;

use super::Context;
use super::convert;
use super::error::{Error, Result, blocking};
use super::instrument::Steps;
use super::launches;
use crate::shims::{self, ExitFile};
use crate::store::{Container, ContainerId, ContainerState, Exit, Sandbox, now_nanos};

/// How long a SIGKILLed container may take to be reaped before stop gives up.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// How long the watcher waits before asking a shim that failed to answer again.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// The CRI reason of an exit.
pub fn exit_reason(exit: &ExitFile) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Publishes a container event with the pod's and its containers' statuses.
pub fn publish(ctx: &Context, c: &Container, kind: ContainerEventType) {
    let sandbox_id = &c.metadata().sandbox_id;
    let pod = ctx.store.get_sandbox(sandbox_id).ok();
    log_change(c, pod.as_deref(), kind);
    let containers_statuses = ctx
        .store
        .containers_of(sandbox_id)
        .iter()
        .map(|c| convert::container_status(c))
        .collect();
    ctx.events.publish(ContainerEventResponse {
        container_id: c.metadata().id.to_string(),
        container_event_type: kind as i32,
        created_at: now_nanos(),
        pod_sandbox_status: pod.map(|p| convert::sandbox_status(&p)),
        containers_statuses,
    });
}

/// Logs a change of the container `c` (the event `kind`) on one line: its pod's
/// namespace, name and id, its name and id, and for an exit its code and reason.
fn log_change(c: &Container, pod: Option<&Sandbox>, kind: ContainerEventType) {
    let m = c.metadata();
    let meta = pod
        .and_then(|p| p.metadata().config.metadata.clone())
        .unwrap_or_default();
    let (ns, name, id) = (&meta.namespace, &meta.name, &m.sandbox_id);
    let (container, cid) = (&m.container_name, &m.id);
    let change = match kind {
        ContainerEventType::ContainerCreatedEvent => "created",
        ContainerEventType::ContainerStartedEvent => "started",
        ContainerEventType::ContainerStoppedEvent => {
            let s = c.status();
            tracing::info!(pod_namespace = %ns, pod = %name, pod_id = %id, container = %container, container_id = %cid, exit_code = s.exit_code, reason = %s.reason, "container exited");
            return;
        }
        ContainerEventType::ContainerDeletedEvent => "removed",
    };
    tracing::info!(pod_namespace = %ns, pod = %name, pod_id = %id, container = %container, container_id = %cid, "container {change}");
}

/// Records the container's exit once; a second call changes nothing.
pub async fn record_exit(ctx: &Arc<Context>, c: &Arc<Container>, exit: ExitFile) -> Result<()> {
    let end = Exit {
        code: exit.exit_code,
        at: if exit.finished_at > 0 {
            exit.finished_at
        } else {
            now_nanos()
        },
        reason: exit_reason(&exit).into(),
        message: String::new(),
    };
    record_end(ctx, c, end, exit.started_at).await
}

/// Records that the container's shim failed to create it: EXITED with reason
/// StartError and `message` (see [`super::launches`]).
pub async fn record_start_error(
    ctx: &Arc<Context>,
    c: &Arc<Container>,
    message: &str,
) -> Result<()> {
    let end = Exit {
        code: launches::START_ERROR_CODE,
        at: now_nanos(),
        reason: launches::START_ERROR.into(),
        message: message.to_owned(),
    };
    record_end(ctx, c, end, 0).await
}

/// Records the container's end once, with its start time if it was not recorded
/// (`started_at`, 0 when unknown); a second call changes nothing.
async fn record_end(
    ctx: &Arc<Context>,
    c: &Arc<Container>,
    end: Exit,
    started_at: i64,
) -> Result<()> {
    if c.status().state == ContainerState::Exited {
        return Ok(());
    }
    let id = c.metadata().id.clone();
    let store_ctx = Arc::clone(ctx);
    let changed = blocking("record exit", move || {
        store_ctx.store.update_container(&id, |s| {
            let changed = s.state != ContainerState::Exited;
            s.exit(end);
            if s.started_at.is_none() && started_at > 0 {
                s.started_at = Some(started_at);
            }
            Ok::<_, Error>(changed)
        })
    })
    .await?;
    if changed {
        publish(ctx, c, ContainerEventType::ContainerStoppedEvent);
        super::nri_host::container_stopped(ctx, c).await;
    }
    Ok(())
}

/// The socket of a running container's shim, with the container's full id.
pub fn running_shim(
    ctx: &Context,
    container_id: &str,
    op: &str,
) -> Result<(String, std::path::PathBuf)> {
    let c = ctx.store.resolve_container(container_id)?;
    let id = c.metadata().id.to_string();
    let status = c.status();
    match (status.state, status.shim_socket) {
        (ContainerState::Running, Some(socket)) => Ok((id, socket)),
        (state, _) => Err(Error::FailedPrecondition {
            what: format!("container {id}"),
            message: format!(
                "cannot {op} a container in state {}",
                state.cri().as_str_name()
            ),
        }),
    }
}

/// The exit of a container whose shim is gone: its exit file, else an unknown end.
fn exit_of_gone_shim(c: &Container) -> ExitFile {
    shims::read_exit_file(&c.metadata().state_dir).unwrap_or(ExitFile {
        exit_code: 255,
        started_at: 0,
        finished_at: now_nanos(),
        oom_killed: false,
    })
}

/// Waits for a started container's exit in the background and records it. Ends when
/// the exit is recorded or the container is removed.
pub fn watch(ctx: Arc<Context>, c: Arc<Container>) {
    tokio::spawn(async move {
        let id = c.metadata().id.clone();
        loop {
            if c.status().state == ContainerState::Exited || ctx.store.get_container(&id).is_err() {
                return;
            }
            let Some(socket) = c.status().shim_socket else {
                return;
            };
            let exit = match ctx.shims.wait_exit(id.as_str(), &socket).await {
                Ok(exit) => exit,
                // A shim that is gone because its container was removed ends the watch.
                Err(shims::Error::Gone { .. }) if ctx.store.get_container(&id).is_err() => return,
                Err(shims::Error::Gone { .. }) => exit_of_gone_shim(&c),
                Err(err) => {
                    tracing::debug!(%id, %err, "wait for exit; retrying");
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            };
            if let Err(err) = record_exit(&ctx, &c, exit).await {
                tracing::error!(%id, %err, "record exit");
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
            return;
        }
    });
}

/// Records the exit of a container whose process ended without a watcher (a created
/// container whose init died with its pod's PID namespace).
pub async fn refresh(ctx: &Arc<Context>, c: &Arc<Container>) -> Result<()> {
    let status = c.status();
    if status.state != ContainerState::Created {
        return Ok(());
    }
    let Some(socket) = status.shim_socket else {
        return Ok(());
    };
    let mut shim = ctx.shims.get(c.metadata().id.as_str(), &socket);
    match tokio::time::timeout(WATCH_RETRY, shim.state()).await {
        Ok(Ok(st)) if st.status == crust_proto::shim::Status::Stopped as i32 => {
            let exit = ExitFile {
                exit_code: st.exit_code,
                started_at: st.started_at,
                finished_at: st.finished_at,
                oom_killed: st.oom_killed,
            };
            record_exit(ctx, c, exit).await
        }
        _ => Ok(()),
    }
}

/// The signal number of a name like `SIGQUIT`, `QUIT` or `3`; SIGTERM when unknown.
pub fn parse_signal(name: &str) -> i32 {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .map(|s| s as i32)
        .unwrap_or(Signal::SIGTERM as i32)
}

/// Stops a running container: its stop signal, then SIGKILL to every process once
/// `timeout` passes (at once with a timeout of 0). A container that is not running is
/// left as it is.
pub async fn stop(ctx: &Arc<Context>, c: &Arc<Container>, timeout: Duration) -> Result<()> {
    let status = c.status();
    if !matches!(
        status.state,
        ContainerState::Running | ContainerState::Unknown
    ) {
        return Ok(());
    }
    let id = c.metadata().id.as_str();
    let Some(socket) = status.shim_socket else {
        return record_exit(ctx, c, exit_of_gone_shim(c)).await;
    };
    let mut shim = ctx.shims.get(id, &socket);
    if !timeout.is_zero() {
        let signal = signal_of(c);
        match shim.kill(signal, false).await {
            Ok(()) => {}
            Err(shims::Error::Gone { .. }) => {
                return record_exit(ctx, c, exit_of_gone_shim(c)).await;
            }
            Err(err) => return Err(err.into()),
        }
        if let Ok(waited) = tokio::time::timeout(timeout, shim.wait()).await {
            return finish_wait(ctx, c, waited).await;
        }
        tracing::info!(id, ?timeout, "container did not stop in time; killing it");
    }
    match shim.kill(Signal::SIGKILL as i32, true).await {
        Ok(()) => {}
        Err(shims::Error::Gone { .. }) => return record_exit(ctx, c, exit_of_gone_shim(c)).await,
        Err(err) => return Err(err.into()),
    }
    match tokio::time::timeout(KILL_WAIT, shim.wait()).await {
        Ok(waited) => finish_wait(ctx, c, waited).await,
        Err(_) => Err(Error::DeadlineExceeded {
            what: format!("container {id}"),
            message: format!("still running {}s after SIGKILL", KILL_WAIT.as_secs()),
        }),
    }
}

/// Lets the shim of an exited container go: it deletes the container (its cgroup
/// and runtime state) and exits, as containerd deletes a task once it has exited, so
/// that removal has only files and the record left. The exit is already recorded;
/// the logs are in their file. A failure is logged, not returned: removal shuts the
/// shim down again.
pub async fn release_shim(ctx: &Context, c: &Container) {
    let status = c.status();
    if status.state != ContainerState::Exited {
        return;
    }
    let Some(socket) = status.shim_socket else {
        return;
    };
    let id = c.metadata().id.as_str();
    match ctx.shims.get(id, &socket).shutdown(false).await {
        Ok(()) | Err(shims::Error::Gone { .. }) => {}
        // The shim answers and exits at once: a lost answer is a done shutdown.
        Err(err) if !socket.exists() => tracing::debug!(id, %err, "shim shut down"),
        Err(err) => tracing::warn!(id, %err, "shut down the shim of an exited container"),
    }
}

fn signal_of(c: &Container) -> i32 {
    let config_signal = c.metadata().config.stop_signal;
    if config_signal != 0
        && let Ok(s) = crust_proto::cri::Signal::try_from(config_signal)
    {
        return parse_signal(s.as_str_name().trim_start_matches("SIGNAL_"));
    }
    parse_signal(&c.metadata().stop_signal)
}

async fn finish_wait(
    ctx: &Arc<Context>,
    c: &Arc<Container>,
    waited: shims::Result<crust_proto::shim::WaitResponse>,
) -> Result<()> {
    let exit = match waited {
        Ok(w) => w.into(),
        Err(shims::Error::Gone { .. }) => exit_of_gone_shim(c),
        Err(err) => return Err(err.into()),
    };
    record_exit(ctx, c, exit).await
}

/// Removes every trace of a container: its shim (killing what still runs), rootfs
/// mount, bundle and writable layer, its hold on the image, and its record. Safe to
/// repeat and safe on a half-created container: it is also the undo of a failed create
/// and the end of a removal that a crash interrupted.
pub async fn teardown(ctx: &Arc<Context>, id: &ContainerId) -> Result<()> {
    let mut steps = Steps::new("container teardown", id);
    // A shim still creating the container would create it after the removal.
    ctx.launches.finished(id).await;
    let record = ctx.store.get_container(id).ok();
    if let Some(c) = &record {
        let (cid, store_ctx) = (id.clone(), Arc::clone(ctx));
        blocking("mark removing", move || {
            store_ctx.store.update_container(&cid, |s| {
                s.removing = true;
                Ok::<_, Error>(())
            })
        })
        .await?;
        steps.done("mark removing");
        if let Some(socket) = c.status().shim_socket {
            let mut shim = ctx.shims.get(id.as_str(), &socket);
            match shim.shutdown(true).await {
                Ok(()) | Err(shims::Error::Gone { .. }) => {}
                // The shim answers and exits at once: a lost answer is a done shutdown.
                Err(err) if !socket.exists() => {
                    tracing::debug!(%id, %err, "shim shut down");
                }
                Err(err) => return Err(err.into()),
            }
            steps.done("shim shutdown");
        }
    }
    let paths = ctx.paths.clone();
    let cid = id.clone();
    let cgroup = record
        .as_ref()
        .map(|c| c.metadata().cgroups_path.clone())
        .filter(|p| !p.is_empty())
        .map(|p| super::cgroups::Cgroup::parse(&p));
    let hierarchies = ctx.host.cgroup_hierarchies();
    let (store_ctx, has_record) = (Arc::clone(ctx), record.is_some());
    blocking("remove container files and record", move || {
        if let Some(cgroup) = &cgroup {
            super::cgroups::remove(&format!("container {cid}"), cgroup, &hierarchies)?;
        }
        super::container_rootfs::remove_staging(
            &format!("container {cid}"),
            &paths.idmap_dir(&cid),
        )?;
        super::image_volumes::unmount(&format!("container {cid}"), &paths.container_dir(&cid))?;
        let rootfs = paths.rootfs(&cid);
        unmount_all(&rootfs).map_err(Error::io(format!("container {cid}"), "unmount", &rootfs))?;
        // Never delete through a mount: that would reach into what it shows.
        if is_mount_point(&rootfs) {
            return Err(Error::Internal {
                what: format!("container {cid}"),
                message: format!("{} is still mounted", rootfs.display()),
            });
        }
        throw_away(&paths.container_dir(&cid), &paths.state_trash(), &cid)?;
        throw_away(&paths.layer_dir(&cid), &paths.root_trash(), &cid)?;
        if has_record {
            store_ctx.store.remove_container(&cid)?;
        }
        Ok(())
    })
    .await?;
    steps.done("remove files and record");
    // After the record: a hold whose container is gone is released at start-up too,
    // so the release needs no commit of its own to survive a crash.
    if let Err(err) = ctx.images.release(id.as_str()).await {
        tracing::warn!(%id, error = %err, "release the image of a removed container");
    }
    if let Some(c) = &record {
        let volumes = super::image_volumes::indexes(&c.metadata().config.mounts);
        super::image_volumes::release(ctx, id, &volumes).await;
    }
    steps.done("image release");
    ctx.cpu.forget(id.as_str());
    if let Some(c) = record {
        publish(ctx, &c, ContainerEventType::ContainerDeletedEvent);
    }
    Ok(())
}

/// Unmounts whatever is mounted on `path`, however many times; nothing mounted is fine.
pub fn unmount_all(path: &Path) -> std::io::Result<()> {
    for _ in 0..16 {
        match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether `path` is on another file system than its parent (a mount point).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::symlink_metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Takes `dir` out of its place at once; its files are deleted in the background.
fn throw_away(dir: &Path, bin: &Path, id: &ContainerId) -> Result<()> {
    crate::trash::throw(dir, bin).map_err(Error::io(format!("container {id}"), "remove", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGQUIT"), 3);
        assert_eq!(parse_signal("quit"), 3);
        assert_eq!(parse_signal("9"), 9);
        assert_eq!(parse_signal(""), 15);
        assert_eq!(parse_signal("SIGNOPE"), 15);
    }

    #[test]
    fn reasons() {
        let mut e = ExitFile::default();
        assert_eq!(exit_reason(&e), "Completed");
        e.exit_code = 1;
        assert_eq!(exit_reason(&e), "Error");
        e.oom_killed = true;
        assert_eq!(exit_reason(&e), "OOMKilled");
    }
}
