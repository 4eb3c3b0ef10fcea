//! The CRI v1 gRPC services. Each RPC's logic lives in its own file
//! (`<resource>_<verb>.rs`, image RPCs in `image/`); the trait impls here only route a
//! request through `instrument::call` to that function.

pub mod admin;
pub mod cgroups;
pub mod container_attach;
pub mod container_checkpoint;
pub mod container_create;
pub mod container_events;
pub mod container_exec;
pub mod container_exec_sync;
pub mod container_list;
pub mod container_remove;
pub mod container_reopen_log;
pub mod container_rootfs;
pub mod container_start;
pub mod container_stats;
pub mod container_status;
pub mod container_stop;
pub mod container_update;
pub mod containers;
pub mod convert;
pub mod error;
pub mod image;
pub mod image_volumes;
pub mod instrument;
pub mod launches;
pub mod names;
pub mod nri_host;
pub mod runtime_config;
pub mod runtime_status;
pub mod runtime_update_config;
pub mod runtime_version;
pub mod sampling;
pub mod sandbox_list;
pub mod sandbox_metrics;
pub mod sandbox_port_forward;
pub mod sandbox_remove;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod sandbox_update;
pub mod sandboxes;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crust_image_store::ImageStore;
use crust_proto::cri::image_service_server::ImageService;
use crust_proto::cri::runtime_service_server::RuntimeService;
use crust_proto::cri::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use self::error::Error;
use self::instrument::{Readiness, Verbosity};
use crate::config::Config;
use crate::events::Events;
use crate::paths::Paths;
use crate::shims::Shims;
use crate::spec::HostFacts;
use crate::stats::CpuRates;
use crate::store::Store;

/// What the RPCs share: the validated config and facts found at start-up.
pub struct Context {
    /// The effective configuration.
    pub config: Config,
    /// Set once start-up recovery has finished.
    pub readiness: Readiness,
    /// The crust-shim binary, if one was found.
    pub shim_path: Option<PathBuf>,
    /// Images: pulls, metadata, unpacked layers.
    pub images: ImageStore,
    /// Records of pods and containers.
    pub store: Store,
    /// Facts about the host that shape container specs.
    pub host: HostFacts,
    /// Where pods' and containers' files live.
    pub paths: Paths,
    /// Clients of the running shims.
    pub shims: Shims,
    /// The shim launches of new containers in flight.
    pub launches: launches::Launches,
    /// Container events for GetContainerEvents.
    pub events: Events,
    /// The previous CPU sample of each container and pod, for CPU rates.
    pub cpu: CpuRates,
    /// The streaming server's URLs for Exec, Attach and PortForward.
    pub streaming: Arc<crate::streaming::Streamer>,
    /// Pods can have their own user namespace: the kernel lets crust make one and
    /// idmapped mounts work on the root dir's filesystem (probed at start-up).
    pub user_namespaces: bool,
    /// NRI: the node's plugins, called at each pod and container event.
    pub nri: Arc<crate::nri::Nri>,
}

impl Context {
    /// Containers' writable layers.
    pub fn containers_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }
}

/// Serves both CRI services from one [`Context`].
#[derive(Clone)]
pub struct CriService {
    ctx: Arc<Context>,
}

impl CriService {
    /// A service over `ctx`.
    pub fn new(ctx: Arc<Context>) -> Self {
        CriService { ctx }
    }

    async fn call<T>(
        &self,
        rpc: &'static str,
        id: &str,
        verbosity: Verbosity,
        body: impl Future<Output = error::Result<T>>,
    ) -> Result<Response<T>, Status> {
        instrument::call(&self.ctx.readiness, rpc, id, verbosity, body).await
    }

    /// An RPC of CRI v1 that crust does not serve yet: `Unimplemented`, named.
    async fn not_built<T>(&self, rpc: &'static str) -> Result<Response<T>, Status> {
        self.call(rpc, "", Verbosity::Change, async {
            Err(Error::NotBuilt { rpc })
        })
        .await
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// The pod's reserved name, for the log of a RunPodSandbox.
fn sandbox_name_of(config: &Option<PodSandboxConfig>) -> String {
    config
        .as_ref()
        .and_then(|c| c.metadata.as_ref())
        .map(crate::store::sandbox_name)
        .unwrap_or_default()
}

/// The image reference a request names, for the log.
fn image_ref(spec: &Option<ImageSpec>) -> String {
    spec.as_ref().map(|s| s.image.clone()).unwrap_or_default()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for CriService {
    type StreamPodSandboxesStream = BoxStream<StreamPodSandboxesResponse>;
    type StreamContainersStream = BoxStream<StreamContainersResponse>;
    type StreamContainerStatsStream = BoxStream<StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = BoxStream<ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<StreamPodSandboxMetricsResponse>;

    async fn version(&self, r: Request<VersionRequest>) -> Rpc<VersionResponse> {
        let req = r.into_inner();
        self.call(
            "Version",
            "",
            Verbosity::Read,
            runtime_version::version(req),
        )
        .await
    }

    async fn status(&self, r: Request<StatusRequest>) -> Rpc<StatusResponse> {
        let req = r.into_inner();
        let body = runtime_status::status(&self.ctx, req);
        self.call("Status", "", Verbosity::Read, body).await
    }

    async fn runtime_config(&self, r: Request<RuntimeConfigRequest>) -> Rpc<RuntimeConfigResponse> {
        let req = r.into_inner();
        let body = runtime_config::runtime_config(&self.ctx, req);
        self.call("RuntimeConfig", "", Verbosity::Read, body).await
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<RunPodSandboxRequest>,
    ) -> Rpc<RunPodSandboxResponse> {
        let req = r.into_inner();
        let id = sandbox_name_of(&req.config);
        let body = sandbox_run::run_pod_sandbox(&self.ctx, req);
        self.call("RunPodSandbox", &id, Verbosity::Change, body)
            .await
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<StopPodSandboxRequest>,
    ) -> Rpc<StopPodSandboxResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_stop::stop_pod_sandbox(&self.ctx, req);
        self.call("StopPodSandbox", &id, Verbosity::Change, body)
            .await
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_remove::remove_pod_sandbox(&self.ctx, req);
        self.call("RemovePodSandbox", &id, Verbosity::Change, body)
            .await
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_status::pod_sandbox_status(&self.ctx, req);
        self.call("PodSandboxStatus", &id, Verbosity::Read, body)
            .await
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<ListPodSandboxRequest>,
    ) -> Rpc<ListPodSandboxResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = sandbox_list::list_pod_sandbox(&self.ctx, req);
        self.call("ListPodSandbox", &id, Verbosity::Read, body)
            .await
    }

    async fn stream_pod_sandboxes(
        &self,
        r: Request<StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = sandbox_list::stream_pod_sandboxes(&self.ctx, req).await?;
            let stream: Self::StreamPodSandboxesStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamPodSandboxes", "", Verbosity::Read, body)
            .await
    }

    async fn create_container(
        &self,
        r: Request<CreateContainerRequest>,
    ) -> Rpc<CreateContainerResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = container_create::create_container(&self.ctx, req);
        self.call("CreateContainer", &id, Verbosity::Change, body)
            .await
    }

    async fn start_container(
        &self,
        r: Request<StartContainerRequest>,
    ) -> Rpc<StartContainerResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_start::start_container(&self.ctx, req);
        self.call("StartContainer", &id, Verbosity::Change, body)
            .await
    }

    async fn stop_container(&self, r: Request<StopContainerRequest>) -> Rpc<StopContainerResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_stop::stop_container(&self.ctx, req);
        self.call("StopContainer", &id, Verbosity::Change, body)
            .await
    }

    async fn remove_container(
        &self,
        r: Request<RemoveContainerRequest>,
    ) -> Rpc<RemoveContainerResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_remove::remove_container(&self.ctx, req);
        self.call("RemoveContainer", &id, Verbosity::Change, body)
            .await
    }

    async fn list_containers(
        &self,
        r: Request<ListContainersRequest>,
    ) -> Rpc<ListContainersResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = container_list::list_containers(&self.ctx, req);
        self.call("ListContainers", &id, Verbosity::Read, body)
            .await
    }

    async fn stream_containers(
        &self,
        r: Request<StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = container_list::stream_containers(&self.ctx, req).await?;
            let stream: Self::StreamContainersStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamContainers", "", Verbosity::Read, body)
            .await
    }

    async fn container_status(
        &self,
        r: Request<ContainerStatusRequest>,
    ) -> Rpc<ContainerStatusResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_status::container_status(&self.ctx, req);
        self.call("ContainerStatus", &id, Verbosity::Read, body)
            .await
    }

    async fn update_container_resources(
        &self,
        r: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_update::update_container_resources(&self.ctx, req);
        self.call("UpdateContainerResources", &id, Verbosity::Change, body)
            .await
    }

    async fn reopen_container_log(
        &self,
        r: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_reopen_log::reopen_container_log(&self.ctx, req);
        self.call("ReopenContainerLog", &id, Verbosity::Change, body)
            .await
    }

    async fn exec_sync(&self, r: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_exec_sync::exec_sync(&self.ctx, req);
        self.call("ExecSync", &id, Verbosity::Change, body).await
    }

    async fn exec(&self, r: Request<ExecRequest>) -> Rpc<ExecResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_exec::exec(&self.ctx, req);
        self.call("Exec", &id, Verbosity::Change, body).await
    }

    async fn attach(&self, r: Request<AttachRequest>) -> Rpc<AttachResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_attach::attach(&self.ctx, req);
        self.call("Attach", &id, Verbosity::Change, body).await
    }

    async fn port_forward(&self, r: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_port_forward::port_forward(&self.ctx, req);
        self.call("PortForward", &id, Verbosity::Change, body).await
    }

    async fn container_stats(
        &self,
        r: Request<ContainerStatsRequest>,
    ) -> Rpc<ContainerStatsResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_stats::container_stats(&self.ctx, req);
        self.call("ContainerStats", &id, Verbosity::Read, body)
            .await
    }

    async fn list_container_stats(
        &self,
        r: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = container_stats::list_container_stats(&self.ctx, req);
        self.call("ListContainerStats", &id, Verbosity::Read, body)
            .await
    }

    async fn stream_container_stats(
        &self,
        r: Request<StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = container_stats::stream_container_stats(&self.ctx, req).await?;
            let stream: Self::StreamContainerStatsStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamContainerStats", "", Verbosity::Read, body)
            .await
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<PodSandboxStatsRequest>,
    ) -> Rpc<PodSandboxStatsResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_stats::pod_sandbox_stats(&self.ctx, req);
        self.call("PodSandboxStats", &id, Verbosity::Read, body)
            .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = sandbox_stats::list_pod_sandbox_stats(&self.ctx, req);
        self.call("ListPodSandboxStats", &id, Verbosity::Read, body)
            .await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = sandbox_stats::stream_pod_sandbox_stats(&self.ctx, req).await?;
            let stream: Self::StreamPodSandboxStatsStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamPodSandboxStats", "", Verbosity::Read, body)
            .await
    }

    async fn update_runtime_config(
        &self,
        r: Request<UpdateRuntimeConfigRequest>,
    ) -> Rpc<UpdateRuntimeConfigResponse> {
        let req = r.into_inner();
        let body = runtime_update_config::update_runtime_config(&self.ctx, req);
        self.call("UpdateRuntimeConfig", "", Verbosity::Change, body)
            .await
    }

    async fn checkpoint_container(
        &self,
        r: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        let req = r.into_inner();
        let id = req.container_id.clone();
        let body = container_checkpoint::checkpoint_container(&self.ctx, req);
        self.call("CheckpointContainer", &id, Verbosity::Change, body)
            .await
    }

    async fn checkpoint_pod(&self, _: Request<CheckpointPodRequest>) -> Rpc<CheckpointPodResponse> {
        self.not_built("CheckpointPod").await
    }

    async fn restore_pod(&self, _: Request<RestorePodRequest>) -> Rpc<RestorePodResponse> {
        self.not_built("RestorePod").await
    }

    async fn get_container_events(
        &self,
        r: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        let req = r.into_inner();
        let body = container_events::get_container_events(&self.ctx, req);
        self.call("GetContainerEvents", "", Verbosity::Read, body)
            .await
    }

    async fn list_metric_descriptors(
        &self,
        r: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = sandbox_metrics::list_metric_descriptors(&self.ctx, req);
        self.call("ListMetricDescriptors", &id, Verbosity::Read, body)
            .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        let req = r.into_inner();
        let id = String::new();
        let body = sandbox_metrics::list_pod_sandbox_metrics(&self.ctx, req);
        self.call("ListPodSandboxMetrics", &id, Verbosity::Read, body)
            .await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        r: Request<StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = sandbox_metrics::stream_pod_sandbox_metrics(&self.ctx, req).await?;
            let stream: Self::StreamPodSandboxMetricsStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamPodSandboxMetrics", "", Verbosity::Read, body)
            .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        r: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<UpdatePodSandboxResourcesResponse> {
        let req = r.into_inner();
        let id = req.pod_sandbox_id.clone();
        let body = sandbox_update::update_pod_sandbox_resources(&self.ctx, req);
        self.call("UpdatePodSandboxResources", &id, Verbosity::Change, body)
            .await
    }
}

#[tonic::async_trait]
impl ImageService for CriService {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    async fn list_images(&self, r: Request<ListImagesRequest>) -> Rpc<ListImagesResponse> {
        let req = r.into_inner();
        let body = image::image_list::list_images(&self.ctx, req);
        self.call("ListImages", "", Verbosity::Read, body).await
    }

    async fn stream_images(
        &self,
        r: Request<StreamImagesRequest>,
    ) -> Rpc<Self::StreamImagesStream> {
        let req = r.into_inner();
        let body = async {
            let chunks = image::image_list::stream_images(&self.ctx, req).await?;
            let stream: Self::StreamImagesStream =
                Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
            Ok(stream)
        };
        self.call("StreamImages", "", Verbosity::Read, body).await
    }

    async fn image_status(&self, r: Request<ImageStatusRequest>) -> Rpc<ImageStatusResponse> {
        let req = r.into_inner();
        let id = image_ref(&req.image);
        let body = image::image_status::image_status(&self.ctx, req);
        self.call("ImageStatus", &id, Verbosity::Read, body).await
    }

    async fn pull_image(&self, r: Request<PullImageRequest>) -> Rpc<PullImageResponse> {
        let req = r.into_inner();
        let id = image_ref(&req.image);
        let body = image::image_pull::pull_image(&self.ctx, req);
        self.call("PullImage", &id, Verbosity::Change, body).await
    }

    async fn remove_image(&self, r: Request<RemoveImageRequest>) -> Rpc<RemoveImageResponse> {
        let req = r.into_inner();
        let id = image_ref(&req.image);
        let body = image::image_remove::remove_image(&self.ctx, req);
        self.call("RemoveImage", &id, Verbosity::Change, body).await
    }

    async fn image_fs_info(&self, r: Request<ImageFsInfoRequest>) -> Rpc<ImageFsInfoResponse> {
        let req = r.into_inner();
        let body = image::image_fs_info::image_fs_info(&self.ctx, req);
        self.call("ImageFsInfo", "", Verbosity::Read, body).await
    }
}
