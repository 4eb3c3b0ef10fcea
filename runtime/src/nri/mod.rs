//! NRI, the Node Resource Interface (containerd/nri): node plugins see and adjust pods
//! and containers at each step of their lives. crustd is NRI's runtime side: it listens
//! on NRI's socket for plugins and starts the pre-installed ones of its plugin dir,
//! registers and configures each, hands it every pod and container it has
//! (Synchronize), then calls every subscribed plugin at each event, in the order of
//! their indexes. A plugin's CreateContainer answer adjusts the container's OCI spec
//! (`adjust`); its updates change other containers' resources.
//!
//! A plugin is never trusted to answer in time: each call has the request timeout, and
//! a plugin that does not answer in it, or whose connection ends, is dropped and the
//! event goes on without it. A plugin that answers with an error refuses the event:
//! RunPodSandbox, CreateContainer, StartContainer and UpdateContainerResources fail
//! with its message; the other events only log it.
//!
//! Registration and creation exclude each other through one lock: a plugin's
//! Synchronize runs under it (write), and RunPodSandbox and CreateContainer hold it
//! (read) from their NRI event until their record is in the store, so a pod or
//! container is either in a new plugin's snapshot or sent to it as an event.

pub mod adjust;
pub mod convert;
pub mod mux;
pub mod plugin;

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crust_proto::nri as api;
use futures::future::BoxFuture;
use prost::Message;

pub use self::plugin::CallError;
use self::plugin::{Configure, Launched, Plugin};
use crate::config::NriConfig;

/// The NRI version crust's API comes from (proto/nri/VERSION).
pub const NRI_VERSION: &str = "v0.12.2";

/// Every event a plugin can subscribe to: bits 0 to 13.
pub const VALID_EVENTS: i32 = 0x3FFF;

/// NRI's failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin did not register or configure as NRI says.
    #[error("NRI plugin {plugin}: {message}")]
    Protocol {
        /// The plugin, `NN-name` when known.
        plugin: String,
        /// What went wrong.
        message: String,
    },
    /// A plugin answered an event with an error.
    #[error("NRI plugin {plugin} refused {event} of {what}: {message}")]
    Refused {
        /// The plugin, `NN-name`.
        plugin: String,
        /// The event, as NRI names it.
        event: &'static str,
        /// The pod or container, with its id.
        what: String,
        /// The plugin's message.
        message: String,
    },
    /// A plugin's adjustment can't be applied.
    #[error("NRI plugin {plugin}: adjustment of {what}: {message}")]
    Adjustment {
        /// The plugin, `NN-name`.
        plugin: String,
        /// The container, with its id.
        what: String,
        /// Why.
        message: String,
    },
    /// NRI's socket could not be set up.
    #[error("NRI socket {}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What NRI needs of crustd: the pods and containers it has, and changes plugins ask
/// for outside an event of their own.
pub trait Host: Send + Sync {
    /// Every pod and container a client can see, for a new plugin's Synchronize.
    fn snapshot(self: Arc<Self>)
    -> BoxFuture<'static, (Vec<api::PodSandbox>, Vec<api::Container>)>;
    /// Applies plugins' updates of containers' resources; answers those that failed.
    fn update(
        self: Arc<Self>,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<'static, Vec<api::ContainerUpdate>>;
    /// Stops the containers plugins evict.
    fn evict(self: Arc<Self>, evictions: Vec<api::ContainerEviction>) -> BoxFuture<'static, ()>;
}

/// The NRI adaptation: registered plugins and what each event has been sent.
pub struct Nri {
    config: NriConfig,
    plugins: RwLock<Vec<Arc<Plugin>>>,
    sync: tokio::sync::RwLock<()>,
    sent: Mutex<Sent>,
}

/// Events sent at most once per pod or container.
#[derive(Default)]
struct Sent {
    stopped_pods: HashSet<String>,
    stopped_containers: HashSet<String>,
}

/// What plugins did to a container being created.
#[derive(Default)]
pub struct Created {
    /// Plugins' updates of other containers, applied once the container exists.
    pub updates: Vec<api::ContainerUpdate>,
    /// Plugins' evictions of other containers.
    pub evictions: Vec<api::ContainerEviction>,
    /// CDI devices plugins asked for, to inject after the adjustments.
    pub cdi_devices: Vec<String>,
}

/// The guard RunPodSandbox and CreateContainer hold from their event to their record.
pub type SyncGuard<'a> = tokio::sync::RwLockReadGuard<'a, ()>;

/// A plugin's name: what NRI allows.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-'))
}

/// A plugin's index: two digits.
pub fn valid_idx(idx: &str) -> bool {
    idx.len() == 2 && idx.chars().all(|c| c.is_ascii_digit())
}

impl Nri {
    /// The adaptation as configured; nothing runs until [`Nri::start`].
    pub fn new(config: NriConfig) -> Nri {
        Nri {
            config,
            plugins: RwLock::default(),
            sync: tokio::sync::RwLock::new(()),
            sent: Mutex::default(),
        }
    }

    /// Whether NRI is on.
    pub fn enabled(&self) -> bool {
        self.config.enable
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn configure(&self) -> Configure<'static> {
        Configure {
            config: "",
            registration_timeout: Duration::from_millis(self.config.registration_timeout_ms),
            request_timeout: self.request_timeout(),
        }
    }

    /// The registered plugins, in index order.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// Listens on NRI's socket for plugins (unless external connections are off) and
    /// starts the pre-installed plugins.
    pub fn start(self: &Arc<Self>, host: Weak<dyn Host>) -> Result<(), Error> {
        if !self.enabled() {
            return Ok(());
        }
        if !self.config.disable_connections {
            let listener = listen(&self.config.socket_path)?;
            tracing::info!(socket = %self.config.socket_path.display(), "NRI listening");
            let (nri, host) = (Arc::clone(self), host.clone());
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let (nri, host) = (Arc::clone(&nri), host.clone());
                            tokio::spawn(async move { nri.admit(stream, None, host).await });
                        }
                        Err(err) => {
                            tracing::warn!(%err, "NRI: accept");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        for launched in self.launch_installed() {
            let (nri, host) = (Arc::clone(self), host.clone());
            let (stream, launched) = launched;
            tokio::spawn(async move { nri.admit(stream, Some(launched), host).await });
        }
        Ok(())
    }

    /// Starts each executable `NN-name` of the plugin dir with its end of a socket pair
    /// as fd 3, as NRI does.
    fn launch_installed(&self) -> Vec<(tokio::net::UnixStream, Launched)> {
        let dir = &self.config.plugin_path;
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries.flatten().collect();
        files.sort_by_key(|e| e.file_name());
        let mut started = Vec::new();
        for entry in files {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((idx, name)) = file.split_once('-') else {
                continue;
            };
            let executable = entry
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !valid_idx(idx) || !valid_name(name) || !executable {
                tracing::warn!(plugin = %file, "NRI: not a plugin (an executable NN-name)");
                continue;
            }
            match launch(&entry.path(), idx, name, &self.config.plugin_config_path) {
                Ok(l) => started.push(l),
                Err(err) => tracing::warn!(plugin = %file, %err, "NRI: start plugin"),
            }
        }
        started
    }

    /// Registers a plugin connected on `stream`, synchronizes it, and makes it active.
    async fn admit(
        self: Arc<Self>,
        stream: tokio::net::UnixStream,
        launched: Option<Launched>,
        host: Weak<dyn Host>,
    ) {
        let plugin = match Plugin::register(stream, launched, host.clone(), &self.configure()).await
        {
            Ok(p) => Arc::new(p),
            Err(err) => {
                tracing::warn!(%err, "NRI: plugin not registered");
                return;
            }
        };
        let Some(host) = host.upgrade() else {
            return;
        };
        let id = plugin.id();
        let updates = {
            let _sync = self.sync.write().await;
            let (pods, containers) = Arc::clone(&host).snapshot().await;
            let req = api::SynchronizeRequest {
                pods,
                containers,
                more: false,
            };
            let answer: Result<api::SynchronizeResponse, _> = plugin
                .call("Synchronize", &req, self.request_timeout())
                .await;
            match answer {
                Ok(a) => {
                    if let Ok(mut list) = self.plugins.write() {
                        let at = list.partition_point(|p| p.idx <= plugin.idx);
                        list.insert(at, Arc::clone(&plugin));
                    }
                    a.update
                }
                Err(err) => {
                    tracing::warn!(plugin = %id, ?err, "NRI: Synchronize failed; plugin dropped");
                    return;
                }
            }
        };
        tracing::info!(plugin = %id, "NRI plugin registered");
        if !updates.is_empty() {
            let failed = host.update(updates).await;
            if !failed.is_empty() {
                tracing::warn!(plugin = %id, failed = failed.len(), "NRI: synchronize updates failed");
            }
        }
        let nri = Arc::downgrade(&self);
        let weak = Arc::downgrade(&plugin);
        let mut closed = plugin.closed_signal();
        drop(plugin);
        tokio::spawn(async move {
            // Holds no reference meanwhile: a plugin dropped for a late answer goes.
            let _ = closed.wait_for(|c| *c).await;
            if let (Some(nri), Some(p)) = (nri.upgrade(), weak.upgrade()) {
                nri.forget(&p, "connection closed");
            }
        });
    }

    /// Drops a plugin from the active list.
    fn forget(&self, plugin: &Arc<Plugin>, why: &str) {
        let removed = self.plugins.write().is_ok_and(|mut list| {
            let before = list.len();
            list.retain(|p| !Arc::ptr_eq(p, plugin));
            list.len() != before
        });
        if removed {
            tracing::info!(plugin = %plugin.id(), why, "NRI plugin dropped");
        }
    }

    /// The guard of the sync lock for RunPodSandbox and CreateContainer (none with NRI
    /// off): hold it from the event until the record is stored.
    pub async fn sync_guard(&self) -> Option<SyncGuard<'_>> {
        if self.enabled() {
            Some(self.sync.read().await)
        } else {
            None
        }
    }

    /// Calls `method` of every plugin subscribed to `event`, in index order, with the
    /// request `req` makes for it. A refusal ends the loop with its error; a plugin gone
    /// or late is dropped and skipped.
    async fn each<Q: Message, A: Message + Default>(
        &self,
        event: api::Event,
        what: &str,
        req: &Q,
        mut answered: impl FnMut(&Plugin, A) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !self.enabled() {
            return Ok(());
        }
        let method = method_of(event);
        for p in self.plugins() {
            if !p.wants(event) {
                continue;
            }
            match p.call::<Q, A>(method, req, self.request_timeout()).await {
                Ok(a) => answered(&p, a)?,
                Err(CallError::Fatal(message)) => {
                    tracing::warn!(plugin = %p.id(), event = method, what, %message, "NRI plugin failed; dropped");
                    self.forget(&p, "failed an event");
                }
                Err(CallError::Refused(message)) => {
                    return Err(Error::Refused {
                        plugin: p.id(),
                        event: method,
                        what: what.to_owned(),
                        message,
                    });
                }
            }
        }
        Ok(())
    }

    /// Like [`Nri::each`] for an event whose refusals are only logged.
    async fn notify<Q: Message, A: Message + Default>(
        &self,
        event: api::Event,
        what: &str,
        req: &Q,
    ) {
        if let Err(err) = self.each::<Q, A>(event, what, req, |_, _| Ok(())).await {
            tracing::warn!(%err, "NRI notification refused");
        }
    }

    /// RunPodSandbox, before the pod is READY: a refusal fails it.
    pub async fn run_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), Error> {
        let req = api::RunPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let what = format!("pod {}", pod.id);
        self.each::<_, api::RunPodSandboxResponse>(
            api::Event::RunPodSandbox,
            &what,
            &req,
            |_, _| Ok(()),
        )
        .await
    }

    /// StopPodSandbox, once per pod, after its containers have stopped.
    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) {
        if !self.enabled() || !self.first(|s| s.stopped_pods.insert(pod.id.clone())) {
            return;
        }
        let req = api::StopPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let what = format!("pod {}", pod.id);
        self.notify::<_, api::StopPodSandboxResponse>(api::Event::StopPodSandbox, &what, &req)
            .await;
    }

    /// RemovePodSandbox, as the pod goes.
    pub async fn remove_pod_sandbox(&self, pod: &api::PodSandbox) {
        if !self.enabled() {
            return;
        }
        self.stop_pod_sandbox(pod).await;
        let req = api::RemovePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let what = format!("pod {}", pod.id);
        self.notify::<_, api::RemovePodSandboxResponse>(api::Event::RemovePodSandbox, &what, &req)
            .await;
        self.first(|s| s.stopped_pods.remove(&pod.id));
    }

    /// UpdatePodSandbox and, once applied, PostUpdatePodSandbox.
    pub async fn update_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
        overhead: Option<api::LinuxResources>,
        resources: Option<api::LinuxResources>,
    ) -> Result<(), Error> {
        let req = api::UpdatePodSandboxRequest {
            pod: Some(pod.clone()),
            overhead_linux_resources: overhead,
            linux_resources: resources,
        };
        let what = format!("pod {}", pod.id);
        self.each::<_, api::UpdatePodSandboxResponse>(
            api::Event::UpdatePodSandbox,
            &what,
            &req,
            |_, _| Ok(()),
        )
        .await
    }

    /// PostUpdatePodSandbox.
    pub async fn post_update_pod_sandbox(&self, pod: &api::PodSandbox) {
        let req = api::PostUpdatePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let what = format!("pod {}", pod.id);
        self.notify::<_, api::PostUpdatePodSandboxResponse>(
            api::Event::PostUpdatePodSandbox,
            &what,
            &req,
        )
        .await;
    }

    /// CreateContainer, before the container exists: each plugin's adjustment is applied
    /// to `spec` (the container's OCI spec as JSON) in turn, and the next plugin sees
    /// the container as adjusted. A refusal, or an adjustment that conflicts with an
    /// earlier plugin's or can't be applied, fails the create.
    pub async fn create_container(
        &self,
        pod: &api::PodSandbox,
        base: &api::Container,
        spec: &mut serde_json::Value,
    ) -> Result<Created, Error> {
        let mut created = Created::default();
        if !self.enabled() {
            return Ok(created);
        }
        let what = format!("container {}", base.id);
        let mut owners = adjust::Owners::default();
        let pristine = convert::container_from_spec(base, spec);
        let mut merged = api::ContainerAdjustment::default();
        let mut consulted = Vec::new();
        for p in self.plugins() {
            if !p.wants(api::Event::CreateContainer) {
                continue;
            }
            let req = api::CreateContainerRequest {
                pod: Some(pod.clone()),
                container: Some(convert::container_from_spec(base, spec)),
            };
            let answer: api::CreateContainerResponse = match p
                .call("CreateContainer", &req, self.request_timeout())
                .await
            {
                Ok(a) => a,
                Err(CallError::Fatal(message)) => {
                    tracing::warn!(plugin = %p.id(), %what, %message, "NRI plugin failed CreateContainer; dropped");
                    self.forget(&p, "failed an event");
                    continue;
                }
                Err(CallError::Refused(message)) => {
                    return Err(Error::Refused {
                        plugin: p.id(),
                        event: "CreateContainer",
                        what,
                        message,
                    });
                }
            };
            consulted.push(api::PluginInstance {
                name: p.name.clone(),
                index: p.idx.clone(),
            });
            if let Some(adjustment) = &answer.adjust {
                let cdi =
                    adjust::apply(spec, adjustment, &p.id(), &mut owners).map_err(|message| {
                        Error::Adjustment {
                            plugin: p.id(),
                            what: what.clone(),
                            message,
                        }
                    })?;
                created.cdi_devices.extend(cdi);
                adjust::merge(&mut merged, adjustment);
            }
            for u in answer.update {
                if u.container_id == base.id {
                    return Err(Error::Adjustment {
                        plugin: p.id(),
                        what,
                        message: "an update of the container being created (adjust it instead)"
                            .into(),
                    });
                }
                created.updates.push(u);
            }
            created.evictions.extend(answer.evict);
        }
        let validators: Vec<_> = self
            .plugins()
            .into_iter()
            .filter(|p| p.wants(api::Event::ValidateContainerAdjustment))
            .collect();
        if !validators.is_empty() {
            let req = api::ValidateContainerAdjustmentRequest {
                pod: Some(pod.clone()),
                container: Some(pristine),
                adjust: Some(merged),
                update: created.updates.clone(),
                owners: None,
                plugins: consulted,
            };
            self.validate(&validators, &req, &what).await?;
        }
        Ok(created)
    }

    /// Asks every validator, at once, whether the merged adjustment may be applied:
    /// any refusal, rejection or failure (a validator gone or late included) fails
    /// the create, as in NRI's adaptation.
    async fn validate(
        &self,
        validators: &[Arc<Plugin>],
        req: &api::ValidateContainerAdjustmentRequest,
        what: &str,
    ) -> Result<(), Error> {
        let timeout = self.request_timeout();
        let answers = futures::future::join_all(validators.iter().map(|p| {
            p.call::<_, api::ValidateContainerAdjustmentResponse>(
                "ValidateContainerAdjustment",
                req,
                timeout,
            )
        }))
        .await;
        for (p, answer) in validators.iter().zip(answers) {
            let refused = |message: String| Error::Refused {
                plugin: p.id(),
                event: "ValidateContainerAdjustment",
                what: what.to_owned(),
                message,
            };
            match answer {
                Ok(a) if a.reject => return Err(refused(format!("rejected: {}", a.reason))),
                Ok(_) => {}
                Err(CallError::Refused(message)) => return Err(refused(message)),
                Err(CallError::Fatal(message)) => {
                    self.forget(p, "failed a validation");
                    return Err(refused(format!("validator failed: {message}")));
                }
            }
        }
        Ok(())
    }

    /// PostCreateContainer.
    pub async fn post_create_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostCreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        self.notify::<_, api::PostCreateContainerResponse>(
            api::Event::PostCreateContainer,
            &what,
            &req,
        )
        .await;
    }

    /// StartContainer, before the start: a refusal fails it.
    pub async fn start_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Result<(), Error> {
        let req = api::StartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        self.each::<_, api::StartContainerResponse>(
            api::Event::StartContainer,
            &what,
            &req,
            |_, _| Ok(()),
        )
        .await
    }

    /// PostStartContainer.
    pub async fn post_start_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostStartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        self.notify::<_, api::PostStartContainerResponse>(
            api::Event::PostStartContainer,
            &what,
            &req,
        )
        .await;
    }

    /// UpdateContainer, before new resources are applied: answers the resources to
    /// apply (a plugin's update of this container replaces them) and the updates of
    /// other containers. A refusal fails the update.
    pub async fn update_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
        resources: api::LinuxResources,
    ) -> Result<(api::LinuxResources, Vec<api::ContainerUpdate>), Error> {
        let mut req = api::UpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
            linux_resources: Some(resources),
        };
        let what = format!("container {}", c.id);
        let mut others = Vec::new();
        let mut own: Option<api::LinuxResources> = None;
        if self.enabled() {
            for p in self.plugins() {
                if !p.wants(api::Event::UpdateContainer) {
                    continue;
                }
                match p
                    .call::<_, api::UpdateContainerResponse>(
                        "UpdateContainer",
                        &req,
                        self.request_timeout(),
                    )
                    .await
                {
                    Ok(a) => {
                        for u in a.update {
                            if u.container_id == c.id {
                                let r = u.linux.and_then(|l| l.resources).unwrap_or_default();
                                let merged = convert::merge_resources(
                                    req.linux_resources.clone().unwrap_or_default(),
                                    &r,
                                );
                                req.linux_resources = Some(merged.clone());
                                own = Some(merged);
                            } else {
                                others.push(u);
                            }
                        }
                    }
                    Err(CallError::Fatal(message)) => {
                        tracing::warn!(plugin = %p.id(), %what, %message, "NRI plugin failed UpdateContainer; dropped");
                        self.forget(&p, "failed an event");
                    }
                    Err(CallError::Refused(message)) => {
                        return Err(Error::Refused {
                            plugin: p.id(),
                            event: "UpdateContainer",
                            what,
                            message,
                        });
                    }
                }
            }
        }
        let resources = own.or(req.linux_resources).unwrap_or_default();
        Ok((resources, others))
    }

    /// PostUpdateContainer.
    pub async fn post_update_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostUpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        self.notify::<_, api::PostUpdateContainerResponse>(
            api::Event::PostUpdateContainer,
            &what,
            &req,
        )
        .await;
    }

    /// StopContainer, once per container: after a stop, or its own exit. Answers the
    /// plugins' updates of other containers.
    pub async fn stop_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Vec<api::ContainerUpdate> {
        if !self.enabled() || !self.first(|s| s.stopped_containers.insert(c.id.clone())) {
            return Vec::new();
        }
        let req = api::StopContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        let mut updates = Vec::new();
        let sent = self
            .each::<_, api::StopContainerResponse>(
                api::Event::StopContainer,
                &what,
                &req,
                |_, a| {
                    updates.extend(a.update);
                    Ok(())
                },
            )
            .await;
        if let Err(err) = sent {
            tracing::warn!(%err, "NRI notification refused");
        }
        updates
    }

    /// RemoveContainer (StopContainer first if it was not sent).
    pub async fn remove_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Vec<api::ContainerUpdate> {
        if !self.enabled() {
            return Vec::new();
        }
        let updates = self.stop_container(pod, c).await;
        let req = api::RemoveContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let what = format!("container {}", c.id);
        self.notify::<_, api::RemoveContainerResponse>(api::Event::RemoveContainer, &what, &req)
            .await;
        self.first(|s| s.stopped_containers.remove(&c.id));
        updates
    }

    /// Runs `f` on the record of sent events; answers what it answers.
    fn first(&self, f: impl FnOnce(&mut Sent) -> bool) -> bool {
        self.sent.lock().map(|mut s| f(&mut s)).unwrap_or(false)
    }
}

/// The plugin service's method of an event.
fn method_of(event: api::Event) -> &'static str {
    use api::Event as E;
    match event {
        E::RunPodSandbox => "RunPodSandbox",
        E::StopPodSandbox => "StopPodSandbox",
        E::RemovePodSandbox => "RemovePodSandbox",
        E::CreateContainer => "CreateContainer",
        E::PostCreateContainer => "PostCreateContainer",
        E::StartContainer => "StartContainer",
        E::PostStartContainer => "PostStartContainer",
        E::UpdateContainer => "UpdateContainer",
        E::PostUpdateContainer => "PostUpdateContainer",
        E::StopContainer => "StopContainer",
        E::RemoveContainer => "RemoveContainer",
        E::UpdatePodSandbox => "UpdatePodSandbox",
        E::PostUpdatePodSandbox => "PostUpdatePodSandbox",
        E::ValidateContainerAdjustment => "ValidateContainerAdjustment",
        E::Unknown | E::Last => "Unknown",
    }
}

/// Binds NRI's socket: a stale one is replaced; its dir, if missing, is made 0700 (an
/// existing dir is left as it is, as NRI does).
fn listen(path: &Path) -> Result<tokio::net::UnixListener, Error> {
    let err = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Starts the pre-installed plugin `file` with its end of a socket pair as fd 3 and
/// NRI's environment (only `NRI_PLUGIN_NAME`, `NRI_PLUGIN_IDX`, `NRI_PLUGIN_SOCKET`).
/// Its config is `conf.d/NN-name.conf`, else `conf.d/name.conf`.
fn launch(
    file: &Path,
    idx: &str,
    name: &str,
    conf_dir: &Path,
) -> std::io::Result<(tokio::net::UnixStream, Launched)> {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let config = [format!("{idx}-{name}.conf"), format!("{name}.conf")]
        .iter()
        .find_map(|f| std::fs::read_to_string(conf_dir.join(f)).ok())
        .unwrap_or_default();
    let mut cmd = tokio::process::Command::new(file);
    cmd.env_clear()
        .env("NRI_PLUGIN_NAME", name)
        .env("NRI_PLUGIN_IDX", idx)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let fd = theirs.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it then.
            let ok = if fd == 3 {
                nix::libc::fcntl(3, nix::libc::F_SETFD, 0) >= 0
            } else {
                nix::libc::dup2(fd, 3) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    Ok((
        stream,
        Launched {
            name: name.to_owned(),
            idx: idx.to_owned(),
            config,
            child,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes() {
        assert!(valid_name("cri-test-nri.x+y_z"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(valid_idx("00") && valid_idx("10"));
        assert!(!valid_idx("1") && !valid_idx("100") && !valid_idx("a0"));
    }

    #[tokio::test]
    async fn the_socket_s_dir_is_made_private_but_an_existing_one_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o711)).unwrap();
        let _a = listen(&shared.join("nri.sock")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&shared), 0o711);
        assert_eq!(mode(&shared.join("nri.sock")), 0o600);
        let made = tmp.path().join("a/b");
        // A stale socket is replaced.
        std::fs::create_dir_all(&made).unwrap();
        std::fs::write(made.join("nri.sock"), "").unwrap();
        let _b = listen(&made.join("nri.sock")).unwrap();
        let fresh = tmp.path().join("fresh/nri");
        let _c = listen(&fresh.join("nri.sock")).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }

    #[test]
    fn every_event_has_its_method() {
        for e in 1..=14 {
            let event = api::Event::try_from(e).unwrap();
            assert_ne!(method_of(event), "Unknown", "{event:?}");
        }
    }
}
