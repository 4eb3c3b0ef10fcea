//! What several sandbox RPCs (and recovery) share: the pod's namespace modes, its CNI
//! attachment, stopping it and tearing it down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{NamespaceMode, PodSandboxConfig, Protocol};

use super::Context;
use super::cgroups;
use super::containers;
use super::error::{Error, Result, blocking};
use super::instrument::Steps;
use crate::config::CgroupDriver;
use crate::network::cni::{self, Attachment, Cni, PodIdentity, PortMapping, RuntimeConfig};
use crate::network::netns;
use crate::pod;
use crate::store::{Sandbox, SandboxId, SandboxMetadata, now_nanos};

/// How the pod's namespaces are set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// The pod uses the host's network (and UTS) namespace.
    pub host_network: bool,
    /// The pod uses the host's IPC namespace.
    pub host_ipc: bool,
    /// The pod's PID mode: POD (one shared namespace), CONTAINER or NODE.
    pub pid: NamespaceMode,
}

impl Modes {
    /// The modes a pod config asks for (unset means POD for each).
    pub fn of(config: &PodSandboxConfig) -> Modes {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.clone())
            .unwrap_or_default();
        Modes {
            host_network: opts.network == NamespaceMode::Node as i32,
            host_ipc: opts.ipc == NamespaceMode::Node as i32,
            pid: NamespaceMode::try_from(opts.pid).unwrap_or(NamespaceMode::Pod),
        }
    }
}

/// Removes crust's own parent cgroup from every hierarchy where it is empty: once the
/// last pod is gone, nothing of crust's stays in the host's cgroups. A pod made since
/// keeps it (rmdir refuses a cgroup with children), and the next one makes it again.
pub fn release_default_parent(hierarchies: &[PathBuf]) {
    for h in hierarchies {
        let dir = h.join(cgroups::DEFAULT_PARENT);
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e)
                if matches!(e.raw_os_error(), Some(nix::libc::ENOENT | nix::libc::EBUSY))
                    || e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "remove crust's cgroup"),
        }
    }
}

/// Removes the pod cgroup crust made (none when kubelet gave a parent: kubelet owns
/// that), with any container cgroup left in it by a shim that died before deleting
/// its container. Both drivers' forms are looked for, so a pod made before a restart
/// under the other driver goes too.
fn remove_pod_cgroup(m: &SandboxMetadata, hierarchies: &[PathBuf]) -> Result<()> {
    if !m.cgroup_parent.trim_end_matches('/').is_empty() {
        return Ok(());
    }
    let what = format!("sandbox {}", m.id);
    // Stopping a slice stops the scopes in it.
    cgroups::remove(
        &what,
        &cgroups::pod_cgroup(CgroupDriver::Systemd, m),
        hierarchies,
    )?;
    let pod = cgroups::pod_cgroup(CgroupDriver::Cgroupfs, m);
    let path = pod.fs_path().unwrap_or_default();
    let relative = cgroups::relative(&path);
    let mut children: Vec<String> = hierarchies
        .iter()
        .filter_map(|h| std::fs::read_dir(h.join(relative)).ok())
        .flat_map(|dir| dir.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    children.sort();
    children.dedup();
    for child in children {
        cgroups::remove(&what, &cgroups::Cgroup::Fs(path.join(child)), hierarchies)?;
    }
    cgroups::remove(&what, &pod, hierarchies)
}

/// The CNI runner over the configured network.
pub fn cni(ctx: &Context) -> Cni {
    Cni::new(ctx.config.network.clone(), ctx.paths.cni_cache())
}

/// Who the pod is, for CNI_ARGS.
fn identity(config: &PodSandboxConfig) -> PodIdentity {
    let m = config.metadata.clone().unwrap_or_default();
    PodIdentity {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
    }
}

/// The port mappings for the portmap plugin; those without a host port are not
/// forwarded (as containerd does).
fn port_mappings(config: &PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0 && p.container_port > 0)
        .filter_map(|p| {
            Some(PortMapping {
                host_port: u16::try_from(p.host_port).ok()?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: match Protocol::try_from(p.protocol).ok()? {
                    Protocol::Tcp => cni::Protocol::Tcp,
                    Protocol::Udp => cni::Protocol::Udp,
                    Protocol::Sctp => cni::Protocol::Sctp,
                },
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

/// Attaches the pod to the pod network; returns its addresses, pod IP first.
pub async fn attach(
    ctx: &Context,
    id: &SandboxId,
    netns: &std::path::Path,
    config: &PodSandboxConfig,
) -> Result<Vec<String>> {
    let pod = identity(config);
    let att = Attachment {
        sandbox: id,
        netns,
        pod: &pod,
        runtime: RuntimeConfig {
            port_mappings: port_mappings(config),
            ..Default::default()
        },
    };
    let status = cni(ctx).add(&att).await?;
    Ok(status.ips.iter().map(|ip| ip.to_string()).collect())
}

/// Runs CNI DEL for the pod unless it already ran, then records that it did.
async fn detach(ctx: &Arc<Context>, s: &Sandbox) -> Result<()> {
    let m = s.metadata();
    let Some(netns) = m.netns_path.clone() else {
        return Ok(());
    };
    if s.status().network_torn_down {
        return Ok(());
    }
    let cni = cni(ctx);
    // A pod whose ADD never started has nothing to delete.
    if cni.cache_file(&m.id).exists() {
        let pod = identity(&m.config);
        let pinned = netns::is_pinned(&netns);
        let gone = PathBuf::new();
        let att = Attachment {
            sandbox: &m.id,
            netns: if pinned { &netns } else { &gone },
            pod: &pod,
            runtime: RuntimeConfig {
                port_mappings: port_mappings(&m.config),
                ..Default::default()
            },
        };
        cni.del(&att).await?;
    }
    let (id, store_ctx) = (m.id.clone(), Arc::clone(ctx));
    blocking("record network teardown", move || {
        store_ctx.store.update_sandbox(&id, |st| {
            st.mark_network_torn_down();
            Ok::<_, Error>(())
        })
    })
    .await
}

/// Logs a change of the pod `m` on one line: its namespace, name, uid and id.
pub fn log_change(m: &SandboxMetadata, change: &str) {
    let meta = m.config.metadata.clone().unwrap_or_default();
    tracing::info!(
        pod_namespace = %meta.namespace,
        pod = %meta.name,
        pod_uid = %meta.uid,
        pod_id = %m.id,
        "pod {change}"
    );
}

/// Stops the pod: kills its containers, its shared PID namespace, lets their shims go
/// and detaches it from the network (CNI DEL runs once). Safe to repeat.
pub async fn stop(ctx: &Arc<Context>, s: &Arc<Sandbox>) -> Result<()> {
    let mut steps = Steps::new("sandbox stop", &s.metadata().id);
    let id = s.metadata().id.clone();
    for c in ctx.store.containers_of(&id) {
        // A shim still creating a container joins the pod's namespaces: it finishes
        // before they go, and the container then stops with the pod as any other.
        ctx.launches.finished(&c.metadata().id).await;
        containers::stop(ctx, &c, Duration::ZERO).await?;
    }
    steps.done("stop containers");
    let pid_pin = ctx.paths.pid_pin(&id);
    blocking("stop pid namespace", move || {
        pod::infra::stop_pid_holder(&pid_pin).map_err(Error::from)
    })
    .await?;
    steps.done("stop pid holder");
    // Created containers' inits die with the PID namespace: record that.
    let exited = ctx.store.containers_of(&id);
    for c in &exited {
        containers::refresh(ctx, c).await?;
    }
    steps.done("refresh containers");
    // NRI plugins see the pod stop once its containers have, before its network goes.
    if ctx.nri.enabled() {
        ctx.nri.stop_pod_sandbox(&crate::nri::convert::pod(s)).await;
        steps.done("nri");
    }
    // The exited containers' shims go while the pod leaves the network.
    let shims = futures::future::join_all(exited.iter().map(|c| containers::release_shim(ctx, c)));
    let (_, detached) = tokio::join!(shims, detach(ctx, s));
    detached?;
    steps.done("release shims and detach");
    if !s.status().stopped {
        let store_ctx = Arc::clone(ctx);
        blocking("record sandbox stop", move || {
            store_ctx.store.update_sandbox(&id, |st| {
                st.mark_stopped(now_nanos());
                Ok::<_, Error>(())
            })
        })
        .await?;
        log_change(s.metadata(), "stopped");
    }
    Ok(())
}

/// Removes every trace of a pod: its containers, network attachment, pinned
/// namespaces, files and shm, and its record. Safe to repeat and on a half-made pod: it
/// is also the undo of a failed RunPodSandbox and the end of an interrupted removal.
pub async fn teardown(ctx: &Arc<Context>, id: &SandboxId) -> Result<()> {
    let mut steps = Steps::new("sandbox teardown", id);
    for c in ctx.store.containers_of(id) {
        containers::teardown(ctx, &c.metadata().id).await?;
    }
    steps.done("containers");
    let record = ctx.store.get_sandbox(id).ok();
    if let Some(s) = &record {
        detach(ctx, s).await?;
    }
    steps.done("detach");
    let (paths, sid) = (ctx.paths.clone(), id.clone());
    let meta = record.as_ref().map(|s| s.metadata().clone());
    let removed = meta.clone();
    let hierarchies = ctx.host.cgroup_hierarchies();
    let store_ctx = Arc::clone(ctx);
    blocking("remove sandbox files and record", move || {
        if let Some(m) = &meta {
            remove_pod_cgroup(m, &hierarchies)?;
        }
        pod::infra::stop_pid_holder(&paths.pid_pin(&sid))?;
        pod::namespaces::unpin(&paths.uts_pin(&sid))?;
        pod::namespaces::unpin(&paths.ipc_pin(&sid))?;
        netns::remove(&paths.netns_dir().join(sid.as_str()))?;
        // Last: the namespaces above are owned by it.
        pod::namespaces::unpin(&paths.user_pin(&sid))?;
        let files = pod::files::PodFiles::in_dir(&paths.sandbox_dir(&sid));
        pod::shm::unmount_shm(&files.shm)?;
        let dir = paths.sandbox_dir(&sid);
        crate::trash::throw(&dir, &paths.state_trash()).map_err(Error::io(
            format!("sandbox {sid}"),
            "remove",
            &dir,
        ))?;
        if meta.is_some() {
            store_ctx.store.remove_sandbox(&sid)?;
            if store_ctx.store.list_sandboxes().is_empty() {
                release_default_parent(&hierarchies);
            }
        }
        Ok(())
    })
    .await?;
    steps.done("remove files and record");
    if let Some(m) = &removed {
        log_change(m, "removed");
    }
    Ok(())
}
