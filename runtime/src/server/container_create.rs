//! CreateContainer: resolves the image, mounts the overlayfs rootfs (the image's layer
//! snapshots as lowerdirs, a writable layer of its own; idmapped in a pod with its own
//! user namespace: `container_rootfs`), turns the CRI config and the image config into
//! an OCI spec, and starts a crust-shim that creates the container.
//! A failure at any step tears down everything before it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crust_image_store::Image;
use crust_proto::cri::{
    ContainerConfig, CreateContainerRequest, CreateContainerResponse, NamespaceMode,
};

use super::Context;
use super::cgroups;
use super::container_rootfs;
use super::containers;
use super::error::{Error, Result, blocking};
use super::image_volumes;
use super::instrument::Steps;
use super::names::{self, Reservation};
use super::sandboxes::Modes;
use crate::config::CgroupDriver;
use crate::nri::{self, Host};
use crate::pod::files::PodFiles;
use crate::pod::userns::PodUserns;
use crate::shims::{self, LaunchRequest};
use crate::spec::{
    self, ContainerSpecRequest, HostDevices, PodNamespace, RootfsUsers, SandboxFiles,
    SandboxNamespaces,
};
use crate::store::{
    Container, ContainerId, ContainerMetadata, ContainerStatus, ProcessUser, Sandbox, SandboxState,
    container_name, now_nanos,
};

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        rpc: "CreateContainer",
        message: message.into(),
    }
}

/// Creates the container and answers with its id once it is CREATED.
pub async fn create_container(
    ctx: &Arc<Context>,
    req: CreateContainerRequest,
) -> Result<CreateContainerResponse> {
    let config = req.config.ok_or_else(|| invalid("config is required"))?;
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata is required"))?;
    if meta.name.is_empty() {
        return Err(invalid("config.metadata.name is required"));
    }
    let image_ref = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("config.image.image is required"))?;
    let sandbox = ctx.store.resolve_sandbox(&req.pod_sandbox_id)?;
    if sandbox.status().state != SandboxState::Ready {
        return Err(Error::FailedPrecondition {
            what: format!("sandbox {}", sandbox.metadata().id),
            message: "sandbox is not ready".into(),
        });
    }
    let pod_meta = sandbox
        .metadata()
        .config
        .metadata
        .clone()
        .unwrap_or_default();
    let name = container_name(meta, &pod_meta);
    check_fields(&config, &sandbox).map_err(|e| invalid(format!("container {name:?}: {e}")))?;
    let id = ContainerId::generate();
    let same = |other: &ContainerId| {
        ctx.store.get_container(other).is_ok_and(|c| {
            c.metadata().config == config && c.metadata().sandbox_id == sandbox.metadata().id
        })
    };
    if let Reservation::Existing(other) =
        names::reserve(ctx.store.container_names(), &name, id.clone(), same).await?
    {
        return Ok(CreateContainerResponse {
            container_id: other.to_string(),
        });
    }
    let work = create(Arc::clone(ctx), sandbox, id.clone(), config, image_ref);
    names::run_to_end(
        ctx.store.container_names(),
        &name,
        &id,
        "create container",
        work,
    )
    .await?;
    Ok(CreateContainerResponse {
        container_id: id.to_string(),
    })
}

async fn create(
    ctx: Arc<Context>,
    sandbox: Arc<Sandbox>,
    id: ContainerId,
    config: ContainerConfig,
    image_ref: String,
) -> Result<()> {
    let mut steps = Steps::new("CreateContainer", &id);
    // A checkpoint archive as the image: the container is restored from it, on the
    // image it was checkpointed from.
    let restoring = checkpoint_archive(&image_ref).is_some();
    let found = async {
        let restore = match checkpoint_archive(&image_ref) {
            Some(archive) => Some(unpack_checkpoint(&ctx, &id, archive).await?),
            None => None,
        };
        let image_ref = restore.as_ref().map_or(image_ref, |r| r.base_image.clone());
        let image = ctx
            .images
            .status_and_hold(&image_ref, id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("image {image_ref:?}"),
            })?;
        Ok::<_, Error>((restore, image_ref, image))
    }
    .await;
    let (restore, image_ref, image) = match found {
        Ok(found) => found,
        Err(err) => {
            // The archive unpacked so far goes with the failed create.
            if restoring {
                let dir = ctx.paths.container_dir(&id);
                if let Err(e) = blocking("remove unpacked checkpoint", move || {
                    std::fs::remove_dir_all(&dir).map_err(Error::io("checkpoint", "remove", &dir))
                })
                .await
                {
                    tracing::warn!(%id, error = %e, "remove an unpacked checkpoint");
                }
            }
            return Err(err);
        }
    };
    steps.done("image status and hold");
    // A create that fails before its record leaves no record to release these by.
    let volumes = image_volumes::indexes(&config.mounts);
    let made = async {
        let (config, volumes) = hold_volume_images(&ctx, &id, config).await?;
        steps.done("image volumes hold");
        let image = ImageUse {
            reference: &image_ref,
            image: &image,
            volumes,
        };
        make(&ctx, &sandbox, &id, config, image, restore, &mut steps).await
    }
    .await;
    if let Err(err) = made {
        if let Err(undo) = containers::teardown(&ctx, &id).await {
            tracing::error!(%id, error = %undo, "undo a failed CreateContainer");
        }
        image_volumes::release(&ctx, &id, &volumes).await;
        return Err(err);
    }
    Ok(())
}

/// The fields that decide where crust writes and what it mounts, before anything is
/// made: the log path, the mounts' paths and id mappings.
fn check_fields(config: &ContainerConfig, sandbox: &Sandbox) -> spec::validate::Result {
    spec::validate::log_path(&config.log_path)?;
    let pod = crate::pod::userns::of_pod(&sandbox.metadata().config)
        .ok()
        .flatten();
    spec::validate::mounts(config, pod.as_ref(), |p| {
        std::fs::symlink_metadata(p).is_ok()
    })
}

/// Holds the image of each image volume for the container, and records its id in the
/// mount (`image.image_ref`, which ContainerStatus reports).
async fn hold_volume_images(
    ctx: &Context,
    id: &ContainerId,
    mut config: ContainerConfig,
) -> Result<(ContainerConfig, Vec<image_volumes::Volume>)> {
    let mut volumes = Vec::new();
    for (n, m) in config.mounts.iter_mut().enumerate() {
        if !image_volumes::is_image(m) {
            continue;
        }
        let Some(spec) = m.image.as_mut() else {
            continue;
        };
        let holder = image_volumes::holder(id.as_str(), n);
        let image = ctx
            .images
            .status_and_hold(&spec.image, &holder)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("image {:?} of mounts[{n}]", spec.image),
            })?;
        spec.image_ref = image.id.to_string();
        volumes.push(image_volumes::Volume {
            index: n,
            lower: ctx.images.lower_dirs(&image),
            sub_path: m.image_sub_path.clone(),
        });
    }
    Ok((config, volumes))
}

/// The images a container uses: its own (as asked and as found) and its volumes'.
struct ImageUse<'a> {
    reference: &'a str,
    image: &'a Image,
    volumes: Vec<image_volumes::Volume>,
}

async fn make(
    ctx: &Arc<Context>,
    sandbox: &Arc<Sandbox>,
    id: &ContainerId,
    config: ContainerConfig,
    image_use: ImageUse<'_>,
    restore: Option<Restore>,
    steps: &mut Steps,
) -> Result<()> {
    let ImageUse {
        reference: image_ref,
        image,
        volumes,
    } = image_use;
    let shim = ctx
        .shim_path
        .clone()
        .ok_or_else(|| Error::FailedPrecondition {
            what: format!("container {id}"),
            message: "crust-shim was not found".into(),
        })?;
    let sm = sandbox.metadata();
    let dir = ctx.paths.container_dir(id);
    let driver = ctx.config.cgroup.driver;
    let cgroups = cgroups::container_cgroups_path(&cgroups::pod_cgroup(driver, sm), id.as_str());
    let log_path = log_path(&sm.config.log_directory, &config.log_path);
    let target_pid = target_pid(ctx, &config)?;
    let image_name = image
        .repo_tags
        .first()
        .cloned()
        .unwrap_or_else(|| image_ref.to_owned());
    let stop_signal = image
        .runtime_config()
        .and_then(|c| c.stop_signal().clone())
        .unwrap_or_else(|| "SIGTERM".into());
    let lower = ctx.images.lower_dirs(image);

    let job = BundleJob {
        ctx: Arc::clone(ctx),
        sandbox: Arc::clone(sandbox),
        id: id.clone(),
        config: config.clone(),
        image_config: image.config.clone(),
        lower,
        volumes,
        cgroups: cgroups.clone(),
        target_pid,
        log_path: log_path.clone(),
        restore: restore.clone(),
    };
    let mut metadata = ContainerMetadata {
        id: id.clone(),
        sandbox_id: sm.id.clone(),
        name: container_name(
            config.metadata.as_ref().unwrap_or(&Default::default()),
            sm.config.metadata.as_ref().unwrap_or(&Default::default()),
        ),
        container_name: config.metadata.clone().unwrap_or_default().name,
        attempt: config.metadata.as_ref().map_or(0, |m| m.attempt),
        image_id: image.id.to_string(),
        image_ref: image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.to_string()),
        image_name,
        stop_signal,
        cgroups_path: cgroups.clone(),
        config: config.clone(),
        log_path: log_path.clone(),
        bundle_dir: dir.clone(),
        state_dir: dir.clone(),
        created_at: 0,
        user: None,
    };
    let status = ContainerStatus {
        shim_socket: Some(dir.join(shims::SOCKET)),
        ..Default::default()
    };
    // The record is stored before the shim runs: only a record lets crustd find its
    // processes and cgroups again; the bundle's mounts and dirs are leftovers recovery
    // removes by themselves.
    let store_ctx = Arc::clone(ctx);
    let record = move |spec: oci_spec::runtime::Spec, user: ProcessUser| {
        write_spec(&metadata.bundle_dir, &metadata.id, &spec)?;
        metadata.user = Some(user);
        metadata.created_at = now_nanos();
        store_ctx
            .store
            .add_container(metadata, status)
            .map_err(Error::from)
    };
    let (container, nri_created, sync) = if ctx.nri.enabled() {
        let (spec, user) = blocking("make bundle", move || job.run()).await?;
        steps.done("bundle");
        // NRI plugins adjust the spec before the container exists; the sync guard,
        // held until the record is stored, keeps a plugin registering meanwhile from
        // missing it.
        let sync = ctx.nri.sync_guard().await;
        let (spec, created) = nri_adjust(ctx, sandbox, id, &config, spec).await?;
        steps.done("nri");
        let container = blocking("write spec and add container record", move || {
            record(spec, user)
        })
        .await?;
        (container, Some(created), sync)
    } else {
        // Without NRI, bundle, spec and record in one blocking task.
        let container = blocking("make bundle and add container record", move || {
            let (spec, user) = job.run()?;
            record(spec, user)
        })
        .await?;
        (container, None, None)
    };
    drop(sync);
    steps.done("spec and record");
    containers::publish(
        ctx,
        &container,
        crust_proto::cri::ContainerEventType::ContainerCreatedEvent,
    );
    let launch = launch(
        Arc::clone(ctx),
        Arc::clone(&container),
        shim,
        restore.map(|r| r.images),
    );
    ctx.launches.spawn(id.clone(), launch);
    // As containerd: NRI's PostCreateContainer once the container is recorded,
    // before CreateContainer answers (and so before its StartContainer).
    if let Some(created) = nri_created {
        let pod = nri::convert::pod(sandbox);
        ctx.nri
            .post_create_container(&pod, &nri::convert::container(&container))
            .await;
        super::nri_host::apply_updates(ctx, created.updates).await;
        if !created.evictions.is_empty() {
            Arc::clone(ctx).evict(created.evictions).await;
        }
    }
    Ok(())
}

/// Launches the shim of the recorded container `c` (see [`super::launches`]): the
/// shim creates the container as its record describes it, restored from `restore`'s
/// CRIU images if given; then what only the creation needed is released. A failure is
/// recorded as the container's exit.
async fn launch(ctx: Arc<Context>, c: Arc<Container>, shim: PathBuf, restore: Option<PathBuf>) {
    let m = c.metadata();
    let id = &m.id;
    let mut steps = Steps::new("CreateContainer (background)", id);
    let launched = shims::launch(&LaunchRequest {
        shim: &shim,
        id: id.as_str(),
        bundle: &m.bundle_dir,
        state: &m.state_dir,
        log_path: m.log_path.as_deref(),
        stdin: m.config.stdin,
        tty: m.config.tty,
        cgroups_path: &m.cgroups_path,
        systemd_cgroup: ctx.config.cgroup.driver == CgroupDriver::Systemd,
        restore: restore.as_deref(),
    })
    .await;
    steps.done("shim launch");
    if let Err(err) = launched {
        let message = err.to_string();
        tracing::warn!(%id, error = %message, "container creation failed");
        if let Err(e) = containers::record_start_error(&ctx, &c, &message).await {
            tracing::error!(%id, error = %e, "record a failed creation");
        }
        return;
    }
    let (what, idmap) = (format!("container {id}"), ctx.paths.idmap_dir(id));
    if let Err(err) = blocking("release volume clones", move || {
        container_rootfs::release_volumes(&what, &idmap)
    })
    .await
    {
        tracing::warn!(%id, error = %err, "release the volume clones");
    }
}

/// Runs NRI's CreateContainer: each plugin's adjustment applied to `spec` in turn, then
/// the CDI devices plugins asked for injected.
async fn nri_adjust(
    ctx: &Arc<Context>,
    sandbox: &Sandbox,
    id: &ContainerId,
    config: &ContainerConfig,
    spec: oci_spec::runtime::Spec,
) -> Result<(oci_spec::runtime::Spec, nri::Created)> {
    let what = |e: String| Error::Internal {
        what: format!("container {id}"),
        message: e,
    };
    let mut json = serde_json::to_value(&spec).map_err(|e| what(format!("encode spec: {e}")))?;
    let pod = nri::convert::pod(sandbox);
    let base = nri::convert::container_base(id.as_str(), sandbox.metadata().id.as_str(), config);
    let created = ctx.nri.create_container(&pod, &base, &mut json).await?;
    let mut spec: oci_spec::runtime::Spec = serde_json::from_value(json).map_err(|e| {
        Error::Nri(nri::Error::Adjustment {
            plugin: "(merged)".into(),
            what: format!("container {id}"),
            message: format!("the adjusted spec is not an OCI spec: {e}"),
        })
    })?;
    if !created.cdi_devices.is_empty() {
        spec::cdi::inject(
            &ctx.config.cdi.spec_dirs,
            &mut spec,
            created.cdi_devices.clone(),
        )
        .map_err(|e| invalid(format!("container {id}: NRI's CDI devices: {e}")))?;
    }
    Ok((spec, created))
}

/// Writes the bundle's config.json.
fn write_spec(dir: &Path, id: &ContainerId, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let what = format!("container {id}");
    let json = serde_json::to_string(spec).map_err(|e| Error::Internal {
        what: what.clone(),
        message: format!("encode spec: {e}"),
    })?;
    let file = dir.join("config.json");
    crate::pod::files::write_state_file(&file, &json, 0o600)
        .map_err(Error::io(what, "write", &file))
}

/// A container restored from a checkpoint archive, unpacked in its state dir.
#[derive(Debug, Clone)]
struct Restore {
    /// CRIU's images (`checkpoint/`).
    images: PathBuf,
    /// The unpacked archive.
    dir: PathBuf,
    /// The image the checkpointed container ran (`config.dump`'s `rootfsImageRef`).
    base_image: String,
}

/// The checkpoint archive an image reference names: an absolute path to a file, as
/// CRI-O takes one.
fn checkpoint_archive(image_ref: &str) -> Option<&Path> {
    let path = Path::new(image_ref);
    (path.is_absolute() && path.is_file()).then_some(path)
}

/// Unpacks the checkpoint archive into the container's state dir.
async fn unpack_checkpoint(ctx: &Context, id: &ContainerId, archive: &Path) -> Result<Restore> {
    use super::container_checkpoint::{CHECKPOINT_DIR, CONFIG_DUMP};
    let dir = ctx.paths.container_dir(id).join("restore");
    let (what, archive, to) = (format!("container {id}"), archive.to_owned(), dir.clone());
    blocking("unpack checkpoint", move || {
        let bad = |e: String| {
            invalid(format!(
                "{what}: checkpoint archive {}: {e}",
                archive.display()
            ))
        };
        std::fs::create_dir_all(&to).map_err(Error::io(what.clone(), "create", &to))?;
        let file = std::fs::File::open(&archive).map_err(|e| bad(e.to_string()))?;
        let mut tar = tar::Archive::new(std::io::BufReader::new(file));
        tar.set_preserve_permissions(true);
        tar.set_overwrite(false);
        tar.unpack(&to).map_err(|e| bad(e.to_string()))?;
        let config =
            std::fs::read(to.join(CONFIG_DUMP)).map_err(|e| bad(format!("{CONFIG_DUMP}: {e}")))?;
        let config: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| bad(format!("{CONFIG_DUMP}: {e}")))?;
        let base_image = config["rootfsImageRef"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or_else(|| config["rootfsImageName"].as_str())
            .ok_or_else(|| bad(format!("{CONFIG_DUMP} names no image")))?
            .to_owned();
        if !to.join(CHECKPOINT_DIR).is_dir() {
            return Err(bad(format!("no {CHECKPOINT_DIR}/")));
        }
        Ok(Restore {
            images: to.join(CHECKPOINT_DIR),
            dir: to,
            base_image,
        })
    })
    .await
}

/// Puts the checkpoint's changes of the writable layer into the mounted `rootfs`: its
/// files (`rootfs-diff.tar`, unpacked as the tar crate does, never outside `rootfs`),
/// and the image's files it had removed (`deleted.files`).
fn apply_rootfs_diff(what: &str, r: &Restore, rootfs: &Path) -> Result<()> {
    use super::container_checkpoint::{DELETED_FILES, ROOTFS_DIFF};
    let bad = |e: String| invalid(format!("{what}: checkpoint {e}"));
    let diff = r.dir.join(ROOTFS_DIFF);
    if diff.exists() {
        let file = std::fs::File::open(&diff).map_err(|e| bad(format!("{ROOTFS_DIFF}: {e}")))?;
        let mut tar = tar::Archive::new(std::io::BufReader::new(file));
        tar.set_preserve_permissions(true);
        tar.set_preserve_ownerships(true);
        tar.set_overwrite(true);
        tar.unpack(rootfs)
            .map_err(|e| bad(format!("{ROOTFS_DIFF}: {e}")))?;
    }
    let deleted = r.dir.join(DELETED_FILES);
    if deleted.exists() {
        let text = std::fs::read(&deleted).map_err(|e| bad(format!("{DELETED_FILES}: {e}")))?;
        let paths: Vec<String> =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{DELETED_FILES}: {e}")))?;
        for p in paths {
            remove_in_root(rootfs, &p).map_err(|e| bad(format!("{DELETED_FILES}: {p:?}: {e}")))?;
        }
    }
    Ok(())
}

/// Removes `rel` under `root`, following no symlink on the way: a path with `..`, or
/// through a symlink, is refused.
fn remove_in_root(root: &Path, rel: &str) -> std::result::Result<(), String> {
    use std::path::Component;
    let rel = Path::new(rel.trim_start_matches('/'));
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err("not a plain relative path".into());
        };
        at.push(name);
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let last = i + 1 == parts.len();
        if !last && !meta.is_dir() {
            return Err(format!("{} is not a directory", at.display()));
        }
        if last {
            let removed = if meta.is_dir() {
                std::fs::remove_dir_all(&at)
            } else {
                std::fs::remove_file(&at)
            };
            return removed.map_err(|e| e.to_string());
        }
    }
    Ok(())
}

/// The CRI log file: the pod's log directory joined with the container's log path.
fn log_path(dir: &str, path: &str) -> Option<PathBuf> {
    if dir.is_empty() || path.is_empty() {
        return None;
    }
    Some(Path::new(dir).join(path))
}

/// The PID namespace of the container a TARGET-mode container joins.
fn target_pid(ctx: &Context, config: &ContainerConfig) -> Result<Option<PathBuf>> {
    let Some(opts) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
    else {
        return Ok(None);
    };
    if opts.pid != NamespaceMode::Target as i32 {
        return Ok(None);
    }
    let target = ctx.store.resolve_container(&opts.target_id)?;
    let pid = target
        .status()
        .pid
        .ok_or_else(|| Error::FailedPrecondition {
            what: format!("container {}", target.metadata().id),
            message: "target container of PID mode TARGET is not running".into(),
        })?;
    Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))))
}

/// The file system work of a create, run off the async thread.
struct BundleJob {
    ctx: Arc<Context>,
    sandbox: Arc<Sandbox>,
    id: ContainerId,
    config: ContainerConfig,
    image_config: oci_spec::image::ImageConfiguration,
    lower: Vec<PathBuf>,
    volumes: Vec<image_volumes::Volume>,
    cgroups: String,
    target_pid: Option<PathBuf>,
    log_path: Option<PathBuf>,
    restore: Option<Restore>,
}

impl BundleJob {
    fn what(&self) -> String {
        format!("container {}", self.id)
    }

    /// Makes the bundle's dirs and mounts; returns its spec and the user its process
    /// runs as.
    fn run(mut self) -> Result<(oci_spec::runtime::Spec, ProcessUser)> {
        let mut steps = Steps::new("CreateContainer", &self.id);
        let paths = &self.ctx.paths;
        let dir = paths.container_dir(&self.id);
        let rootfs = paths.rootfs(&self.id);
        let layer = paths.layer_dir(&self.id);
        let (upper, work) = (layer.join("upper"), layer.join("work"));
        for d in [&rootfs, &upper, &work] {
            std::fs::create_dir_all(d).map_err(Error::io(self.what(), "create", d))?;
        }
        if let Some(log) = self.log_path.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(log).map_err(Error::io(self.what(), "create", log))?;
        }
        let mut lower = self.lower.clone();
        if lower.is_empty() {
            // overlayfs needs a lower dir; an image without layers gets an empty one.
            let empty = layer.join("empty");
            std::fs::create_dir_all(&empty).map_err(Error::io(self.what(), "create", &empty))?;
            lower.push(empty);
        }
        steps.done("bundle dirs");
        let userns = self.userns();
        let idmap = paths.idmap_dir(&self.id);
        container_rootfs::mount(&container_rootfs::Rootfs {
            what: &self.what(),
            target: &rootfs,
            lower: &lower,
            upper: &upper,
            work: &work,
            userns: userns.as_ref().map(|(p, u)| (p.as_path(), u)),
            idmap: &idmap,
        })?;
        steps.done("mount overlay");
        if let Some(r) = &self.restore {
            apply_rootfs_diff(&self.what(), r, &rootfs)?;
            steps.done("checkpoint's rootfs changes");
        }
        let pin = userns.as_ref().map(|(p, _)| p.as_path());
        for v in &self.volumes {
            let source = image_volumes::mount(&self.what(), &dir, v, pin)?;
            self.config.mounts[v.index].host_path = source.display().to_string();
        }
        if !self.volumes.is_empty() {
            steps.done("mount image volumes");
        }
        self.prepare_host_paths()?;
        if let Some((pin, _)) = &userns {
            let what = self.what();
            container_rootfs::idmap_volumes(&what, &mut self.config.mounts, pin, &idmap)?;
        }
        let spec = self.spec(&rootfs)?;
        steps.done("spec");
        let user = spec
            .process()
            .as_ref()
            .map(|p| p.user().clone())
            .unwrap_or_default();
        let user = ProcessUser {
            uid: user.uid(),
            gid: user.gid(),
            supplemental_groups: user.additional_gids().clone().unwrap_or_default(),
        };
        Ok((spec, user))
    }

    /// Creates missing host paths of CRI mounts (as directories, like containerd) and
    /// resolves their symlinks.
    fn prepare_host_paths(&mut self) -> Result<()> {
        for m in &mut self.config.mounts {
            if m.host_path.is_empty() {
                continue;
            }
            let host = PathBuf::from(&m.host_path);
            if std::fs::symlink_metadata(&host).is_err() {
                std::fs::create_dir_all(&host).map_err(|e| {
                    Error::io(
                        format!("container {}", self.id),
                        "create mount source",
                        &host,
                    )(e)
                })?;
            }
            let real = std::fs::canonicalize(&host).map_err(|e| {
                Error::io(
                    format!("container {}", self.id),
                    "resolve mount source",
                    &host,
                )(e)
            })?;
            m.host_path = real.display().to_string();
        }
        Ok(())
    }

    /// The pod's user namespace and where it is pinned, if it has one.
    fn userns(&self) -> Option<(PathBuf, PodUserns)> {
        let sm = self.sandbox.metadata();
        let ids = crate::pod::userns::of_pod(&sm.config).ok().flatten()?;
        Some((self.ctx.paths.user_pin(&sm.id), ids))
    }

    fn spec(&self, rootfs: &Path) -> Result<oci_spec::runtime::Spec> {
        let paths = &self.ctx.paths;
        let sm = self.sandbox.metadata();
        let sid = &sm.id;
        let modes = Modes::of(&sm.config);
        let pinned_or_host = |host: bool, pin: PathBuf| {
            if host {
                PodNamespace::Host
            } else {
                PodNamespace::Pinned(pin)
            }
        };
        let namespaces = SandboxNamespaces {
            network: pinned_or_host(modes.host_network, paths.netns_dir().join(sid.as_str())),
            ipc: pinned_or_host(modes.host_ipc, paths.ipc_pin(sid)),
            uts: pinned_or_host(modes.host_network, paths.uts_pin(sid)),
            pid: match modes.pid {
                NamespaceMode::Pod => Some(PodNamespace::Pinned(paths.pid_pin(sid))),
                NamespaceMode::Node => Some(PodNamespace::Host),
                _ => None,
            },
            target_pid: self.target_pid.clone(),
            user: self.userns(),
        };
        let pod_files = PodFiles::in_dir(&paths.sandbox_dir(sid));
        let existing = |p: &PathBuf| p.exists().then(|| p.clone());
        let files = SandboxFiles {
            hostname: existing(&pod_files.hostname),
            resolv_conf: existing(&pod_files.resolv_conf),
            hosts: existing(&pod_files.hosts),
            shm: existing(&pod_files.shm),
        };
        let users = RootfsUsers::new(rootfs);
        let seccomp_localhost = self.seccomp_localhost()?;
        let req = ContainerSpecRequest {
            id: self.id.as_str(),
            config: &self.config,
            sandbox: &sm.config,
            image: &self.image_config,
            rootfs,
            namespaces: &namespaces,
            files: &files,
            cgroups_path: &self.cgroups,
            users: &users,
            devices: &HostDevices,
            host: &self.ctx.host,
            seccomp_localhost: seccomp_localhost.as_deref(),
        };
        let mut oci = spec::container_spec(&req)?;
        let cdi_err = |e: String| invalid(format!("container {}: {e}", self.id));
        let devices = spec::cdi::requested(&self.config).map_err(cdi_err)?;
        spec::cdi::inject(&self.ctx.config.cdi.spec_dirs, &mut oci, devices).map_err(cdi_err)?;
        Ok(oci)
    }

    /// The content of the Localhost seccomp profile the container asks for.
    fn seccomp_localhost(&self) -> Result<Option<String>> {
        let Some(path) = spec::seccomp_localhost_path(self.id.as_str(), &self.config)? else {
            return Ok(None);
        };
        std::fs::read_to_string(&path).map(Some).map_err(|e| {
            invalid(format!(
                "container {}: seccomp profile {}: {e}",
                self.id,
                path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_stay_in_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/sub/f"), "").unwrap();
        std::fs::write(tmp.path().join("outside"), "").unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("link")).unwrap();
        remove_in_root(&root, "etc/sub/f").unwrap();
        assert!(!root.join("etc/sub/f").exists());
        remove_in_root(&root, "etc/missing/x").unwrap();
        assert!(remove_in_root(&root, "link/outside").is_err());
        assert!(remove_in_root(&root, "../outside").is_err());
        assert!(tmp.path().join("outside").exists());
        remove_in_root(&root, "/etc").unwrap();
        assert!(!root.join("etc").exists());
    }

    #[test]
    fn log_path_needs_both_parts() {
        assert_eq!(log_path("", "c.log"), None);
        assert_eq!(log_path("/var/log/pods/x", ""), None);
        assert_eq!(
            log_path("/var/log/pods/x", "c/0.log"),
            Some(PathBuf::from("/var/log/pods/x/c/0.log"))
        );
    }
}
