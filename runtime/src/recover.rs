//! Recovery after a restart (or a crash) of crustd, before it serves any request.
//!
//! Assumptions:
//! - The store holds every pod and container that a request ever answered for: each is
//!   recorded before its first side effect, so whatever exists on the host without a
//!   record is a leftover of a create that never answered, and is removed.
//! - Shims outlive crustd. A container's shim answers on its socket while it lives; a
//!   shim that is gone left `exit.json` if its container had started and exited.
//! - The state dir is gone after a reboot: pinned namespaces and shims with it. A pod
//!   whose namespaces are gone is reported NOTREADY; its CNI DEL still runs on stop.
//! - A pod still NOTREADY and never stopped was caught mid-RunPodSandbox: kubelet got
//!   no answer for it, so it is torn down, as a failed run would have been.
//! - Each shim gets [`SHIM_TIMEOUT`]: one hung shim must not keep crustd from serving.
//! - The trash dirs hold only directories of removals that were done (their records
//!   gone or going): whatever is in them is deleted.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::NamespaceMode;
use crust_proto::shim::Status as ShimStatus;

use crate::network::netns;
use crate::pod;
use crate::server::Context;
use crate::server::containers::{self, exit_reason};
use crate::server::error::{Error, Result, blocking};
use crate::server::sandboxes::{self, Modes};
use crate::shims::{self, ExitFile};
use crate::store::{Container, ContainerState, SandboxState, now_nanos};

/// How long one shim may take to answer during recovery.
pub const SHIM_TIMEOUT: Duration = Duration::from_secs(5);

/// What recovery found, for the log.
#[derive(Debug, Default)]
pub struct Report {
    /// Containers whose shim answered.
    pub live: usize,
    /// Containers that exited while crustd was down.
    pub exited: usize,
    /// Pods and containers torn down (half-made or half-removed).
    pub torn_down: usize,
    /// Leftover files and mounts removed.
    pub leftovers: usize,
}

/// Brings the records in line with the host. Failures of one item are logged and do
/// not stop the others.
pub async fn recover(ctx: &Arc<Context>) -> Report {
    let mut report = Report::default();
    for c in ctx.store.list_containers() {
        if let Err(err) = container(ctx, &c, &mut report).await {
            tracing::error!(id = %c.metadata().id, error = %err, "recover container");
        }
    }
    for s in ctx.store.list_sandboxes() {
        let id = s.metadata().id.clone();
        let status = s.status();
        let result = if status.state == SandboxState::NotReady && !status.stopped {
            report.torn_down += 1;
            tracing::info!(%id, "tearing down a pod whose RunPodSandbox never finished");
            sandboxes::teardown(ctx, &id).await
        } else if status.state == SandboxState::Ready && !namespaces_alive(ctx, &s) {
            tracing::warn!(%id, "pod namespaces are gone; marking the pod NOTREADY");
            let store_ctx = Arc::clone(ctx);
            blocking("mark sandbox stopped", move || {
                store_ctx.store.update_sandbox(&id, |st| {
                    st.mark_stopped(now_nanos());
                    Ok::<_, Error>(())
                })
            })
            .await
        } else {
            Ok(())
        };
        if let Err(err) = result {
            tracing::error!(id = %s.metadata().id, error = %err, "recover sandbox");
        }
    }
    report.leftovers += leftovers(ctx).await;
    release_orphan_holds(ctx).await;
    report
}

async fn container(ctx: &Arc<Context>, c: &Arc<Container>, report: &mut Report) -> Result<()> {
    let id = c.metadata().id.clone();
    let status = c.status();
    if status.removing {
        report.torn_down += 1;
        return containers::teardown(ctx, &id).await;
    }
    if status.state == ContainerState::Exited {
        return Ok(());
    }
    let Some(socket) = status.shim_socket.clone() else {
        return gone(ctx, c, report).await;
    };
    let mut shim = ctx.shims.get(id.as_str(), &socket);
    let state = match tokio::time::timeout(SHIM_TIMEOUT, shim.state()).await {
        Ok(Ok(state)) => state,
        Ok(Err(shims::Error::Gone { .. })) => return gone(ctx, c, report).await,
        Ok(Err(err)) => return Err(err.into()),
        Err(_) => {
            return Err(Error::DeadlineExceeded {
                what: format!("container {id}"),
                message: "shim did not answer".into(),
            });
        }
    };
    report.live += 1;
    match ShimStatus::try_from(state.status).unwrap_or(ShimStatus::Unknown) {
        ShimStatus::Stopped => {
            report.exited += 1;
            let exit = ExitFile {
                exit_code: state.exit_code,
                started_at: state.started_at,
                finished_at: state.finished_at,
                oom_killed: state.oom_killed,
            };
            containers::record_exit(ctx, c, exit).await
        }
        ShimStatus::Running => {
            if status.state == ContainerState::Created {
                // Started by the shim, but crustd died before recording it.
                let (store_ctx, cid) = (Arc::clone(ctx), id.clone());
                let (pid, at) = (state.pid, state.started_at);
                blocking("record container start", move || {
                    store_ctx
                        .store
                        .update_container(&cid, |s| s.start(&cid, pid, at).map_err(Error::from))
                })
                .await?;
            }
            containers::watch(Arc::clone(ctx), Arc::clone(c));
            Ok(())
        }
        ShimStatus::Created | ShimStatus::Unknown => Ok(()),
    }
}

/// The shim is gone: the exit file tells how the container ended; without one (a
/// create that never finished, or a shim that was killed) the end is unknown.
async fn gone(ctx: &Arc<Context>, c: &Arc<Container>, report: &mut Report) -> Result<()> {
    report.exited += 1;
    let exit = shims::read_exit_file(&c.metadata().state_dir).unwrap_or(ExitFile {
        exit_code: 255,
        started_at: 0,
        finished_at: now_nanos(),
        oom_killed: false,
    });
    tracing::info!(id = %c.metadata().id, code = exit.exit_code, reason = exit_reason(&exit), "container ended while crustd was down");
    containers::record_exit(ctx, c, exit).await
}

fn namespaces_alive(ctx: &Context, s: &crate::store::Sandbox) -> bool {
    let m = s.metadata();
    let modes = Modes::of(&m.config);
    let net = m.netns_path.as_deref().is_none_or(netns::is_pinned);
    let pid =
        modes.pid != NamespaceMode::Pod || pod::infra::pid_holder_alive(&ctx.paths.pid_pin(&m.id));
    let user = pod::userns::of_pod(&m.config).ok().flatten().is_none()
        || netns::is_pinned(&ctx.paths.user_pin(&m.id));
    net && pid && user
}

/// Removes what exists on the host for pods and containers without a record.
async fn leftovers(ctx: &Arc<Context>) -> usize {
    let sandboxes: HashSet<String> = ctx
        .store
        .list_sandboxes()
        .iter()
        .map(|s| s.metadata().id.to_string())
        .collect();
    let containers: HashSet<String> = ctx
        .store
        .list_containers()
        .iter()
        .map(|c| c.metadata().id.to_string())
        .collect();
    let bins = [ctx.paths.state_trash(), ctx.paths.root_trash()];
    let mut removed = blocking("empty the trash", move || {
        Ok(bins.iter().map(|b| crate::trash::empty(b)).sum::<usize>())
    })
    .await
    .unwrap_or_else(|err| {
        tracing::warn!(error = %err, "empty the trash");
        0
    });
    for id in unknown_entries(&ctx.paths.container_dir_root(), &containers) {
        if let Ok(cid) = crate::store::ContainerId::parse(&id) {
            tracing::info!(id, "removing a leftover container");
            match containers::teardown(ctx, &cid).await {
                Ok(()) => removed += 1,
                Err(err) => tracing::warn!(id, error = %err, "remove leftover container"),
            }
        }
    }
    for dir in [
        ctx.paths.sandbox_dir_root(),
        ctx.paths.netns_dir(),
        ctx.paths.uts_dir(),
        ctx.paths.ipc_dir(),
        ctx.paths.pid_dir(),
        ctx.paths.user_dir(),
    ] {
        for id in unknown_entries(&dir, &sandboxes) {
            if let Ok(sid) = crate::store::SandboxId::parse(&id) {
                tracing::info!(id, "removing a leftover pod");
                match sandboxes::teardown(ctx, &sid).await {
                    Ok(()) => removed += 1,
                    Err(err) => tracing::warn!(id, error = %err, "remove leftover pod"),
                }
            }
        }
    }
    removed
}

/// Names in `dir` that are ids without a record (a pid holder's `.pid` file counts as
/// its pin's id).
fn unknown_entries(dir: &Path, known: &HashSet<String>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|n| n.trim_end_matches(".pid").to_string())
        .filter(|n| !known.contains(n))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Releases image holds (their own image's and their image volumes') of containers
/// that no longer exist.
async fn release_orphan_holds(ctx: &Arc<Context>) {
    let Ok(holders) = ctx.images.holders().await else {
        return;
    };
    for holder in holders {
        let container = crate::server::image_volumes::container_of_holder(&holder);
        let known = crate::store::ContainerId::parse(container)
            .ok()
            .is_some_and(|id| ctx.store.get_container(&id).is_ok());
        if !known && let Err(err) = ctx.images.release(&holder).await {
            tracing::warn!(holder, error = %err, "release image hold");
        }
    }
}
