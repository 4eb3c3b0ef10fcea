//! RunPodSandbox: a pod without a pause image. crustd pins the pod's network, UTS and
//! IPC namespaces itself, starts a tiny holder for a shared PID namespace, writes
//! hostname, resolv.conf and hosts, mounts the pod's /dev/shm and attaches the pod to
//! the network through CNI. A pod with its own user namespace (mode POD) gets it pinned
//! too, with its network, UTS, IPC and PID namespaces owned by it (`pod::userns`). A
//! failure at any step tears down everything before it.

use std::sync::Arc;

use crust_proto::cri::{
    NamespaceMode, PodSandboxConfig, RunPodSandboxRequest, RunPodSandboxResponse,
};

use super::Context;
use super::cgroups;
use super::error::{Error, Result, blocking};
use super::instrument::Steps;
use super::names::{self, Reservation};
use super::sandboxes::{self, Modes};
use crate::config::CgroupDriver;
use crate::network::netns;
use crate::nri;
use crate::pod;
use crate::spec;
use crate::store::{SandboxId, SandboxMetadata, SandboxStatus, now_nanos, sandbox_name};

/// Size of a pod's /dev/shm, as containerd's default.
const SHM_BYTES: u64 = 64 << 20;

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        rpc: "RunPodSandbox",
        message: message.into(),
    }
}

/// Runs the pod and answers with its id once it is READY.
pub async fn run_pod_sandbox(
    ctx: &Arc<Context>,
    req: RunPodSandboxRequest,
) -> Result<RunPodSandboxResponse> {
    let config = req.config.ok_or_else(|| invalid("config is required"))?;
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata is required"))?;
    if meta.name.is_empty() {
        return Err(invalid("config.metadata.name is required"));
    }
    spec::validate::hostname(&config.hostname)
        .and_then(|()| spec::validate::log_directory(&config.log_directory))
        .map_err(|e| invalid(format!("pod {:?}: {e}", meta.name)))?;
    let parent = config
        .linux
        .as_ref()
        .map_or("", |l| l.cgroup_parent.as_str());
    if ctx.config.cgroup.driver == CgroupDriver::Systemd && !parent.is_empty() {
        cgroups::parent_slice(parent).map_err(|e| invalid(format!("pod {:?}: {e}", meta.name)))?;
    }
    pod::userns::of_pod(&config).map_err(|e| {
        invalid(format!(
            "pod {:?}: namespace_options.userns_options: {e}",
            meta.name
        ))
    })?;
    if !ctx.config.runtime.serves(&req.runtime_handler) {
        return Err(Error::NotFound {
            what: format!("runtime handler {:?}", req.runtime_handler),
        });
    }
    let id = SandboxId::generate();
    let name = sandbox_name(meta);
    let same = |other: &SandboxId| {
        ctx.store
            .get_sandbox(other)
            .is_ok_and(|s| s.metadata().config == config)
    };
    if let Reservation::Existing(other) =
        names::reserve(ctx.store.sandbox_names(), &name, id.clone(), same).await?
    {
        return Ok(RunPodSandboxResponse {
            pod_sandbox_id: other.to_string(),
        });
    }
    let work = run(Arc::clone(ctx), id.clone(), config, req.runtime_handler);
    names::run_to_end(
        ctx.store.sandbox_names(),
        &name,
        &id,
        "run pod sandbox",
        work,
    )
    .await?;
    Ok(RunPodSandboxResponse {
        pod_sandbox_id: id.to_string(),
    })
}

async fn run(
    ctx: Arc<Context>,
    id: SandboxId,
    config: PodSandboxConfig,
    handler: String,
) -> Result<()> {
    let mut steps = Steps::new("RunPodSandbox", &id);
    let modes = Modes::of(&config);
    let mut metadata = SandboxMetadata::new(id.clone(), config, now_nanos());
    metadata.runtime_handler = handler;
    if !modes.host_network {
        metadata.netns_path = Some(ctx.paths.netns_dir().join(id.as_str()));
    }
    let made = set_up(&ctx, &metadata, modes, &mut steps).await;
    // Without a record (its add failed) nothing was made.
    if let Err(err) = made {
        if ctx.store.get_sandbox(&id).is_ok()
            && let Err(undo) = sandboxes::teardown(&ctx, &id).await
        {
            tracing::error!(%id, error = %undo, "undo a failed RunPodSandbox");
        }
        return Err(err);
    }
    Ok(())
}

/// The hostname the pod's containers see.
fn pod_hostname(ctx: &Context, m: &SandboxMetadata) -> String {
    if m.config.hostname.is_empty() {
        ctx.host.hostname.clone()
    } else {
        m.config.hostname.clone()
    }
}

/// Everything the pod needs, up to READY. The record comes first, persisted before
/// any side effect: what exists without one is a leftover that recovery removes, and
/// CNI ADD, which only a record lets crustd undo (DEL), runs after it. CNI ADD runs
/// while the pod's files, IPC and UTS namespaces and PID holder are made. A pod with
/// its own user namespace gets it, and the network, UTS and IPC namespaces it owns,
/// from crust-shim before CNI ADD.
async fn set_up(
    ctx: &Arc<Context>,
    m: &SandboxMetadata,
    modes: Modes,
    steps: &mut Steps,
) -> Result<()> {
    // Validated by run_pod_sandbox.
    let userns = pod::userns::of_pod(&m.config).ok().flatten();
    if userns.is_some() {
        shim(ctx, m)?;
    }
    let (store_ctx, meta) = (Arc::clone(ctx), m.clone());
    blocking("add sandbox record", move || {
        let id = meta.id.clone();
        let paths = store_ctx.paths.clone();
        store_ctx
            .store
            .add_sandbox(meta, SandboxStatus::default())
            .map_err(Error::from)?;
        let dir = paths.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(Error::io(
            format!("sandbox {id}"),
            "create",
            &dir,
        ))?;
        if !modes.host_network && userns.is_none() {
            netns::create(&paths.netns_dir(), &id)?;
        }
        Ok(())
    })
    .await?;
    if let Some(userns) = &userns {
        let pins = pod::userns::PodPins {
            user: ctx.paths.user_pin(&m.id),
            net: ctx.paths.netns_pin(&m.id),
            uts: ctx.paths.uts_pin(&m.id),
            ipc: ctx.paths.ipc_pin(&m.id),
        };
        pod::userns::create(shim(ctx, m)?, &pins, userns, &pod_hostname(ctx, m)).await?;
    }
    steps.done("add record and netns");
    let network = async {
        match &m.netns_path {
            Some(netns) => sandboxes::attach(ctx, &m.id, netns, &m.config).await,
            None => Ok(Vec::new()),
        }
    };
    let (ips, local) = tokio::join!(network, set_up_local(ctx, m, modes, userns));
    local?;
    let ips = ips?;
    steps.done("cni add, files and namespaces");
    let (store_ctx, sid) = (Arc::clone(ctx), m.id.clone());
    // The pod's own name at its addresses, now that it has them.
    let hosts = (!modes.host_network).then(|| {
        let hostname = pod_hostname(ctx, m);
        let path = pod::files::PodFiles::in_dir(&ctx.paths.sandbox_dir(&m.id)).hosts;
        let content = pod::files::hosts_with_pod(&pod::files::hosts(false, ""), &hostname, &ips);
        (path, content)
    });
    let owner = userns.map(|u| u.root());
    // NRI plugins see the pod before it is READY; a refusal undoes it. The sync guard
    // keeps a plugin registering meanwhile from missing it.
    let _sync = ctx.nri.sync_guard().await;
    if ctx.nri.enabled() {
        let mut pod = nri::convert::pod(&*ctx.store.get_sandbox(&m.id)?);
        pod.ips = ips.clone();
        ctx.nri.run_pod_sandbox(&pod).await?;
        steps.done("nri");
    }
    blocking("mark sandbox ready", move || {
        if let Some((path, content)) = hosts {
            write_pod_file(&format!("sandbox {sid}"), &path, &content, owner)?;
        }
        store_ctx.store.update_sandbox(&sid, |s| {
            s.mark_ready(&sid, ips, now_nanos()).map_err(Error::from)
        })
    })
    .await?;
    steps.done("hosts and mark ready");
    sandboxes::log_change(m, "ready");
    Ok(())
}

/// crust-shim, which makes a pod's PID holder and user namespace.
fn shim<'a>(ctx: &'a Context, m: &SandboxMetadata) -> Result<&'a std::path::Path> {
    ctx.shim_path
        .as_deref()
        .ok_or_else(|| Error::FailedPrecondition {
            what: format!("sandbox {}", m.id),
            message: "crust-shim was not found".into(),
        })
}

/// Writes one of the pod's files, owned by the container's root (`owner`) in a pod
/// with its own user namespace, as it is in a pod without one.
fn write_pod_file(
    what: &str,
    path: &std::path::Path,
    content: &str,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    pod::files::write_state_file(path, content, 0o644).map_err(Error::io(
        what.to_owned(),
        "write",
        path,
    ))?;
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(Error::io(what.to_owned(), "chown", path)),
        None => Ok(()),
    }
}

/// The pod's files (a host-network pod's hosts; a pod-network pod's comes with its
/// IPs), its shm, IPC and UTS namespaces (unless its user namespace came with them),
/// and its PID namespace holder.
async fn set_up_local(
    ctx: &Arc<Context>,
    m: &SandboxMetadata,
    modes: Modes,
    userns: Option<pod::userns::PodUserns>,
) -> Result<()> {
    let (paths, id, config) = (ctx.paths.clone(), m.id.clone(), m.config.clone());
    let hostname = pod_hostname(ctx, m);
    blocking("set up sandbox", move || {
        let what = format!("sandbox {id}");
        let files = pod::files::PodFiles::in_dir(&paths.sandbox_dir(&id));
        let host_resolv = read_host_file("/etc/resolv.conf");
        let mut writes = vec![
            (&files.hostname, pod::files::hostname(&hostname)),
            (
                &files.resolv_conf,
                pod::files::resolv_conf(config.dns_config.as_ref(), &host_resolv),
            ),
        ];
        if modes.host_network {
            let host_hosts = read_host_file("/etc/hosts");
            writes.push((&files.hosts, pod::files::hosts(true, &host_hosts)));
        }
        // The container's root owns its pod files and /dev/shm, as in a pod without a
        // user namespace.
        let owner = userns.map(|u| u.root());
        for (path, content) in writes {
            write_pod_file(&what, path, &content, owner)?;
        }
        if !modes.host_ipc {
            pod::shm::mount_shm(&files.shm, SHM_BYTES, owner)?;
        }
        if userns.is_none() {
            if !modes.host_ipc {
                pod::namespaces::pin_ipc(&paths.ipc_dir(), &id)?;
            }
            if !modes.host_network {
                pod::namespaces::pin_uts(&paths.uts_dir(), &id, &hostname)?;
            }
        }
        Ok(())
    })
    .await?;
    if modes.pid == NamespaceMode::Pod {
        let user_pin = userns.map(|_| ctx.paths.user_pin(&m.id));
        pod::infra::start_pid_holder(
            shim(ctx, m)?,
            &ctx.paths.pid_pin(&m.id),
            user_pin.as_deref(),
        )
        .await?;
    }
    Ok(())
}

/// A host file the pod's copy starts from; a missing one gives an empty copy.
fn read_host_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
