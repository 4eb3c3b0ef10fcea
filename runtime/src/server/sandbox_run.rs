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
use super::error::{Error, Result, blocking};
use super::names::{self, Reservation};
use super::sandboxes::{self, Modes};
use crate::network::netns;
use crate::pod;
use crate::store::{SandboxId, SandboxMetadata, SandboxStatus, now_nanos, sandbox_name};

/// Size of a pod's /dev/shm, as containerd's default.
const SHM_BYTES: u64 = 64 << 20;

/// The runtime handlers crust serves: the default one, under either name.
const HANDLERS: [&str; 2] = ["", "crust"];

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
    pod::userns::of_pod(&config).map_err(|e| {
        invalid(format!(
            "pod {:?}: namespace_options.userns_options: {e}",
            meta.name
        ))
    })?;
    if !HANDLERS.contains(&req.runtime_handler.as_str()) {
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
    let modes = Modes::of(&config);
    let mut metadata = SandboxMetadata::new(id.clone(), config, now_nanos());
    metadata.runtime_handler = handler;
    if !modes.host_network {
        metadata.netns_path = Some(ctx.paths.netns_dir().join(id.as_str()));
    }
    let store_ctx = Arc::clone(&ctx);
    let meta = metadata.clone();
    blocking("add sandbox record", move || {
        store_ctx
            .store
            .add_sandbox(meta, SandboxStatus::default())
            .map(|_| ())
            .map_err(Error::from)
    })
    .await?;
    let ips = match set_up(&ctx, &metadata, modes).await {
        Ok(ips) => ips,
        Err(err) => {
            if let Err(undo) = sandboxes::teardown(&ctx, &id).await {
                tracing::error!(%id, error = %undo, "undo a failed RunPodSandbox");
            }
            return Err(err);
        }
    };
    let store_ctx = Arc::clone(&ctx);
    let sid = id.clone();
    let marked = blocking("mark sandbox ready", move || {
        store_ctx.store.update_sandbox(&sid, |s| {
            s.mark_ready(&sid, ips, now_nanos()).map_err(Error::from)
        })
    })
    .await;
    if let Err(err) = marked {
        if let Err(undo) = sandboxes::teardown(&ctx, &id).await {
            tracing::error!(%id, error = %undo, "undo a failed RunPodSandbox");
        }
        return Err(err);
    }
    Ok(())
}

/// Everything the pod needs, in order; returns the pod's IPs.
async fn set_up(ctx: &Arc<Context>, m: &SandboxMetadata, modes: Modes) -> Result<Vec<String>> {
    let (paths, id, config) = (ctx.paths.clone(), m.id.clone(), m.config.clone());
    // Validated by run_pod_sandbox.
    let userns = pod::userns::of_pod(&m.config).ok().flatten();
    let shim = || {
        ctx.shim_path
            .as_deref()
            .ok_or_else(|| Error::FailedPrecondition {
                what: format!("sandbox {}", m.id),
                message: "crust-shim was not found".into(),
            })
    };
    if userns.is_some() {
        shim()?;
    }
    let hostname = if m.config.hostname.is_empty() {
        ctx.host.hostname.clone()
    } else {
        m.config.hostname.clone()
    };
    let pod_hostname = hostname.clone();
    blocking("set up sandbox", move || {
        let hostname = pod_hostname;
        let what = || format!("sandbox {id}");
        let dir = paths.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).map_err(Error::io(what(), "create", &dir))?;
        let files = pod::files::PodFiles::in_dir(&dir);
        let host_resolv = read_host_file("/etc/resolv.conf");
        let host_hosts = read_host_file("/etc/hosts");
        let writes = [
            (&files.hostname, pod::files::hostname(&hostname)),
            (
                &files.resolv_conf,
                pod::files::resolv_conf(config.dns_config.as_ref(), &host_resolv),
            ),
            (
                &files.hosts,
                pod::files::hosts(modes.host_network, &host_hosts),
            ),
        ];
        // The container's root owns its pod files and /dev/shm, as in a pod without a
        // user namespace.
        let owner = userns.map(|u| u.root());
        for (path, content) in writes {
            pod::files::write_file(path, &content, 0o644).map_err(Error::io(
                what(),
                "write",
                path,
            ))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(Error::io(
                    what(),
                    "chown",
                    path,
                ))?;
            }
        }
        if !modes.host_ipc {
            pod::shm::mount_shm(&files.shm, SHM_BYTES, owner)?;
        }
        if userns.is_none() {
            if !modes.host_ipc {
                pod::namespaces::pin_ipc(&paths.ipc_dir(), &id)?;
            }
            if !modes.host_network {
                netns::create(&paths.netns_dir(), &id)?;
                pod::namespaces::pin_uts(&paths.uts_dir(), &id, &hostname)?;
            }
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
        pod::userns::create(shim()?, &pins, userns, &hostname).await?;
    }
    if modes.pid == NamespaceMode::Pod {
        let user_pin = userns.map(|_| ctx.paths.user_pin(&m.id));
        pod::infra::start_pid_holder(shim()?, &ctx.paths.pid_pin(&m.id), user_pin.as_deref())
            .await?;
    }
    let Some(netns) = &m.netns_path else {
        return Ok(Vec::new());
    };
    let ips = sandboxes::attach(ctx, &m.id, netns, &m.config).await?;
    // The pod's own name at its addresses, now that it has them.
    let files = pod::files::PodFiles::in_dir(&ctx.paths.sandbox_dir(&m.id));
    let content = pod::files::hosts_with_pod(&pod::files::hosts(false, ""), &hostname, &ips);
    let what = format!("sandbox {}", m.id);
    let path = files.hosts.clone();
    let owner = userns.map(|u| u.root());
    blocking("write hosts", move || {
        pod::files::write_file(&path, &content, 0o644).map_err(Error::io(
            what.clone(),
            "write",
            &path,
        ))?;
        match owner {
            Some((uid, gid)) => std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(Error::io(what, "chown", &path)),
            None => Ok(()),
        }
    })
    .await?;
    Ok(ips)
}

/// A host file the pod's copy starts from; a missing one gives an empty copy.
fn read_host_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
