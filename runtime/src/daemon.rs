//! Start-up and shutdown of crustd: directories, the root-dir lock, the CRI socket, the
//! gRPC server, and the clean exit on a shutdown signal.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crust_image_store::{ImageStore, StoreOptions};
use crust_proto::cri::image_service_server::ImageServiceServer;
use crust_proto::cri::runtime_service_server::RuntimeServiceServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::{self, Config};
use crate::paths::Paths;
use crate::recover;
use crate::server::{Context, CriService};
use crate::shims;
use crate::spec::HostFacts;
use crate::store::Store;

/// kubelet's own limit for CRI messages (cri-client's `maxMsgSize`, for what it
/// receives). A larger limit here would not help: kubelet refuses a larger answer.
/// So an ExecSync answer is kept within it: the shim cuts the output to
/// `shim::EXEC_SYNC_OUTPUT_BYTES` in all. (containerd keeps 16 MiB per stream, then
/// fails to send more than its own 16 MiB; CRI-O keeps 16 MiB of both together.)
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

// A shim's ExecSync answer passes on to kubelet as it is.
const _: () = assert!(crust_proto::shim::MAX_MESSAGE_BYTES <= MAX_MESSAGE_BYTES);

/// Quiet time after which crustd gives back memory (see crust-idle): what a pull, a
/// burst of calls or the recovery freed, and code pages they touched.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(2);

/// How long calls in flight may run on after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why crustd could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// A directory could not be created.
    #[error("create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another crustd holds the root dir.
    #[error("root dir {root} is in use by another crustd{holder}")]
    RootInUse {
        /// The root dir.
        root: PathBuf,
        /// " (pid N)" when known.
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another server answers on the socket.
    #[error("another crustd is already serving {0}")]
    SocketInUse(PathBuf),
    /// The socket could not be bound or prepared.
    #[error("listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(#[from] crust_image_store::Error),
    /// The metadata store could not be opened.
    #[error("metadata store: {0}")]
    Store(#[from] crate::store::Error),
    /// The host's facts could not be read.
    #[error("read host facts: {0}")]
    HostFacts(std::io::Error),
    /// The streaming server could not start.
    #[error(transparent)]
    Streaming(#[from] crate::streaming::Error),
    /// The gRPC server failed.
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The metrics server could not listen.
    #[error("metrics server on {address}: {source}")]
    Metrics {
        /// `[metrics] address`.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// NRI could not start.
    #[error(transparent)]
    Nri(#[from] crate::nri::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// What crustd made for pods and keeps while it runs, once no pod is left as it stops:
/// the pin dirs' bind mounts and crust's own parent cgroup (or slice). With pods left, all of it
/// stays for the next crustd.
fn release_unused(ctx: &Context) {
    if !ctx.store.list_sandboxes().is_empty() {
        return;
    }
    let p = &ctx.paths;
    for dir in [
        p.netns_dir(),
        p.uts_dir(),
        p.ipc_dir(),
        p.pid_dir(),
        p.user_dir(),
    ] {
        if let Err(e) = crate::pod::namespaces::release_dir(&dir) {
            tracing::warn!(error = %e, "release a pin dir");
        }
    }
    let hierarchies = ctx.host.cgroup_hierarchies();
    crate::server::sandboxes::release_default_parent(&hierarchies);
    crate::server::cgroups::release_default_slice(&hierarchies);
}

/// Serves CRI on the configured socket until `shutdown` resolves, then removes the
/// socket. The config must be valid.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
) -> Result<()> {
    config.validate()?;
    let socket = config.socket_path()?;
    let containers = config.root.join("containers");
    for dir in [&config.root, &config.state, &containers] {
        create_dir(dir)?;
    }
    let _lock = lock_root(&config.root)?;
    let listener = bind(&socket)?;
    let images = ImageStore::open(store_options(&config)).await?;

    let store = Store::open(&config.root)?;
    for key in store.quarantined()? {
        tracing::warn!(
            key,
            "a record that could not be loaded is kept in quarantine"
        );
    }
    let host = HostFacts::detect().map_err(Error::HostFacts)?;
    let streaming = crate::streaming::Server::bind(
        &config.streaming.address,
        config.streaming.port,
        Duration::from_secs(config.streaming.token_expiry),
    )
    .await?;
    let shim_path = shims::locate();
    let paths = Paths::new(&config.root, &config.state);
    let user_namespaces =
        probe_user_namespaces(shim_path.as_deref(), &paths, &config.root, &config.state).await;
    let nri_config = config.nri.clone();
    let ctx = Arc::new(Context {
        shim_path,
        paths,
        user_namespaces,
        config,
        readiness: Default::default(),
        images,
        store,
        host,
        shims: Default::default(),
        launches: Default::default(),
        events: Default::default(),
        cpu: Default::default(),
        streaming: streaming.streamer(),
        nri: Arc::new(crate::nri::Nri::new(nri_config)),
    });
    let report = recover::recover(&ctx).await;
    tracing::info!(
        live = report.live,
        exited = report.exited,
        torn_down = report.torn_down,
        leftovers = report.leftovers,
        "recovered"
    );
    if let Ok(addr) = streaming.local_addr() {
        tracing::info!(%addr, "streaming server listening");
    }
    let streaming =
        tokio::spawn(streaming.serve(Arc::clone(&ctx) as Arc<dyn crate::streaming::Runtime>));
    let metrics = serve_metrics(&ctx).await.map_err(|source| Error::Metrics {
        address: ctx.config.metrics.address.clone(),
        source,
    })?;
    let host = Arc::downgrade(&ctx) as std::sync::Weak<dyn crate::nri::Host>;
    ctx.nri.start(host)?;
    ctx.readiness.set_ready();
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "crustd serving");
    // Under systemd (Type=notify, as crustd.service): started once the socket serves.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "tell systemd crustd is ready");
    }

    let reloader = tokio::spawn(apply_reloads(Arc::clone(&ctx), reloads));
    let service = CriService::new(Arc::clone(&ctx));
    let runtime = RuntimeServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let image = ImageServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = crust_proto::admin::images_server::ImagesServer::new(service);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let idle = crust_idle::Idle::new();
    let trimmer = tokio::spawn(idle.clone().run(IDLE_TRIM_AFTER));
    idle.touch();
    let server = tonic::transport::Server::builder()
        .layer(idle.layer())
        .add_service(runtime)
        .add_service(image)
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown => {
            // Let calls in flight finish, but a client that keeps its connection open
            // (kubelet always does) must not keep crustd from stopping.
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    streaming.abort();
    trimmer.abort();
    reloader.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    let _ = fs::remove_file(&socket);
    release_unused(&ctx);
    served?;
    tracing::info!("crustd stopped");
    Ok(())
}

/// Starts the metrics server of `[metrics] address`, if one is set.
async fn serve_metrics(ctx: &Arc<Context>) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let address = &ctx.config.metrics.address;
    if address.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "metrics server listening");
    let c = Arc::clone(ctx);
    let snapshot = Arc::new(move || snapshot(&c));
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener, snapshot,
    ))))
}

/// What the metrics read from the runtime at a scrape.
fn snapshot(ctx: &Context) -> crate::metrics::Snapshot {
    use crust_proto::cri::{ContainerState, PodSandboxState};
    let states = |names: &[&str]| -> std::collections::BTreeMap<String, i64> {
        names.iter().map(|n| ((*n).to_owned(), 0)).collect()
    };
    let mut pods = states(&["SANDBOX_READY", "SANDBOX_NOTREADY"]);
    for p in ctx.store.list_sandboxes() {
        let state = crate::server::convert::sandbox_status(&p).state;
        let name = PodSandboxState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name());
        *pods.entry(name.to_owned()).or_insert(0) += 1;
    }
    let mut containers = states(&[
        "CONTAINER_CREATED",
        "CONTAINER_RUNNING",
        "CONTAINER_EXITED",
        "CONTAINER_UNKNOWN",
    ]);
    for c in ctx.store.list_containers() {
        let state = crate::server::convert::container_status(&c).state;
        let name = ContainerState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name());
        *containers.entry(name.to_owned()).or_insert(0) += 1;
    }
    let pulls = ctx.images.stats();
    crate::metrics::Snapshot {
        pods: pods.into_iter().collect(),
        containers: containers.into_iter().collect(),
        shims: ctx.shims.waited_on() as i64,
        pull_bytes: pulls.bytes_downloaded,
        pull_blobs: pulls.blobs_downloaded,
        layers_unpacked: pulls.layers_unpacked,
    }
}

/// Applies each config a reload (SIGHUP) reads, already checked: the `[registry]`
/// table at once, for the pulls that start from then on; the log level is the
/// caller's (it holds the log filter). A change of anything else needs a restart: it
/// is logged and ignored, at this reload and the next ones.
async fn apply_reloads(
    ctx: Arc<Context>,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Config>,
) {
    let mut current = ctx.config.clone();
    while let Some(new) = reloads.recv().await {
        if new.registry != current.registry {
            let registry = crust_image_store::Registry {
                mirrors: new
                    .registry
                    .mirrors
                    .iter()
                    .map(|(host, m)| (host.clone(), m.endpoints.clone()))
                    .collect(),
                insecure: new.registry.insecure.clone(),
            };
            match ctx.images.set_registry(registry) {
                Ok(()) => {
                    tracing::info!(
                        mirrors = ?new.registry.mirrors.keys().collect::<Vec<_>>(),
                        insecure = ?new.registry.insecure,
                        "reload: registry mirrors and insecure hosts in use"
                    );
                    current.registry = new.registry.clone();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reload: registry table refused; the old one stays")
                }
            }
        }
        current.log_level = new.log_level.clone();
        let restart = restart_needed(&current, &new);
        if !restart.is_empty() {
            tracing::warn!(
                changed = ?restart,
                "reload: these change only with a restart of crustd; ignored"
            );
        }
    }
}

/// The fields of `new` that differ from `current` other than those a reload applies.
fn restart_needed(current: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("root", current.root != new.root);
    check("state", current.state != new.state);
    check("listen", current.listen != new.listen);
    check("log_format", current.log_format != new.log_format);
    check("cgroup", current.cgroup != new.cgroup);
    check("network", current.network != new.network);
    check("image", current.image != new.image);
    check("streaming", current.streaming != new.streaming);
    check("runtime", current.runtime != new.runtime);
    check("cdi", current.cdi != new.cdi);
    check("metrics", current.metrics != new.metrics);
    changed
}

/// The image store's options from the `[registry]` and `[image]` tables.
fn store_options(config: &Config) -> StoreOptions {
    let mut o = StoreOptions::new(config.root.join("images"));
    o.mirrors = config
        .registry
        .mirrors
        .iter()
        .map(|(host, m)| (host.clone(), m.endpoints.clone()))
        .collect();
    o.insecure = config.registry.insecure.clone();
    o.max_layer_bytes = config.image.max_layer_size;
    o.min_free_bytes = config.image.min_free_disk;
    o.stall_timeout = Duration::from_secs(config.image.stall_timeout);
    o.min_throughput = config.image.min_throughput;
    o.max_concurrent_downloads = config.image.max_concurrent_downloads;
    o.pinned = config.image.pinned_images.clone();
    o
}

fn create_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .map_err(|source| Error::CreateDir {
            path: path.to_owned(),
            source,
        })
}

/// One crustd per root dir: an exclusive flock on `<root>/crustd.lock`, held for the
/// process's life, with the holder's pid in the file.
fn lock_root(root: &Path) -> Result<Flock<File>> {
    let path = root.join("crustd.lock");
    let lock_err = |source| Error::Lock {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, _)) => {
            let pid = fs::read_to_string(&path).unwrap_or_default();
            let pid = pid.trim();
            return Err(Error::RootInUse {
                root: root.to_owned(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
    };
    lock.set_len(0).map_err(lock_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(lock_err)?;
    Ok(lock)
}

/// Binds the CRI socket with mode 0660. A socket nobody answers on is a leftover of a
/// crashed crustd and is replaced; one that answers belongs to a live crustd.
fn bind(path: &Path) -> Result<UnixListener> {
    let listen_err = |source| Error::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::SocketInUse(path.to_owned()));
    }
    match fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "replaced a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(listen_err)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    UnixListener::from_std(listener).map_err(listen_err)
}

/// Whether pods can have their own user namespace here: crust-shim can make one,
/// idmapped mounts work on `root`'s filesystem (where image layers and writable layers
/// live), and the state dir can be reached by a container's root (an unprivileged user
/// on the host): libcontainer opens the pinned namespaces and the rootfs from inside the
/// user namespace, so every dir above them must let others search it (containerd needs
/// the same). Logs why not.
async fn probe_user_namespaces(
    shim: Option<&Path>,
    paths: &Paths,
    root: &Path,
    state: &Path,
) -> bool {
    let Some(shim) = shim else {
        return false;
    };
    if let Some(dir) = unsearchable_ancestor(state) {
        tracing::warn!(
            dir = %dir.display(),
            "user namespaces are not available: others may not search this dir above the state dir (chmod o+x)"
        );
        return false;
    }
    let pins = crate::pod::userns::PodPins {
        user: paths.user_dir().join(".probe"),
        net: paths.netns_dir().join(".probe"),
        uts: paths.uts_dir().join(".probe"),
        ipc: paths.ipc_dir().join(".probe"),
    };
    match crate::pod::userns::probe(shim, &pins, root).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(error = %err, "user namespaces are not available");
            false
        }
    }
}

/// The first dir from `/` down to `path` that others may not search, if any.
fn unsearchable_ancestor(path: &Path) -> Option<PathBuf> {
    let path = fs::canonicalize(path).ok()?;
    path.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|dir| fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}
