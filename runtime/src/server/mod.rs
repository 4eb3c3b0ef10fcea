//! The CRI v1 gRPC services. Each RPC's logic lives in its own file
//! (`<resource>_<verb>.rs`, image RPCs in `image/`); the trait impls here only route a
//! request through `instrument::call` to that function.

pub mod error;
pub mod image;
pub mod instrument;
pub mod runtime_config;
pub mod runtime_status;
pub mod runtime_version;

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
        _: Request<RunPodSandboxRequest>,
    ) -> Rpc<RunPodSandboxResponse> {
        self.not_built("RunPodSandbox").await
    }

    async fn stop_pod_sandbox(
        &self,
        _: Request<StopPodSandboxRequest>,
    ) -> Rpc<StopPodSandboxResponse> {
        self.not_built("StopPodSandbox").await
    }

    async fn remove_pod_sandbox(
        &self,
        _: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        self.not_built("RemovePodSandbox").await
    }

    async fn pod_sandbox_status(
        &self,
        _: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        self.not_built("PodSandboxStatus").await
    }

    async fn list_pod_sandbox(
        &self,
        _: Request<ListPodSandboxRequest>,
    ) -> Rpc<ListPodSandboxResponse> {
        self.not_built("ListPodSandbox").await
    }

    async fn stream_pod_sandboxes(
        &self,
        _: Request<StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        self.not_built("StreamPodSandboxes").await
    }

    async fn create_container(
        &self,
        _: Request<CreateContainerRequest>,
    ) -> Rpc<CreateContainerResponse> {
        self.not_built("CreateContainer").await
    }

    async fn start_container(
        &self,
        _: Request<StartContainerRequest>,
    ) -> Rpc<StartContainerResponse> {
        self.not_built("StartContainer").await
    }

    async fn stop_container(&self, _: Request<StopContainerRequest>) -> Rpc<StopContainerResponse> {
        self.not_built("StopContainer").await
    }

    async fn remove_container(
        &self,
        _: Request<RemoveContainerRequest>,
    ) -> Rpc<RemoveContainerResponse> {
        self.not_built("RemoveContainer").await
    }

    async fn list_containers(
        &self,
        _: Request<ListContainersRequest>,
    ) -> Rpc<ListContainersResponse> {
        self.not_built("ListContainers").await
    }

    async fn stream_containers(
        &self,
        _: Request<StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        self.not_built("StreamContainers").await
    }

    async fn container_status(
        &self,
        _: Request<ContainerStatusRequest>,
    ) -> Rpc<ContainerStatusResponse> {
        self.not_built("ContainerStatus").await
    }

    async fn update_container_resources(
        &self,
        _: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        self.not_built("UpdateContainerResources").await
    }

    async fn reopen_container_log(
        &self,
        _: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        self.not_built("ReopenContainerLog").await
    }

    async fn exec_sync(&self, _: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        self.not_built("ExecSync").await
    }

    async fn exec(&self, _: Request<ExecRequest>) -> Rpc<ExecResponse> {
        self.not_built("Exec").await
    }

    async fn attach(&self, _: Request<AttachRequest>) -> Rpc<AttachResponse> {
        self.not_built("Attach").await
    }

    async fn port_forward(&self, _: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        self.not_built("PortForward").await
    }

    async fn container_stats(
        &self,
        _: Request<ContainerStatsRequest>,
    ) -> Rpc<ContainerStatsResponse> {
        self.not_built("ContainerStats").await
    }

    async fn list_container_stats(
        &self,
        _: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        self.not_built("ListContainerStats").await
    }

    async fn stream_container_stats(
        &self,
        _: Request<StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        self.not_built("StreamContainerStats").await
    }

    async fn pod_sandbox_stats(
        &self,
        _: Request<PodSandboxStatsRequest>,
    ) -> Rpc<PodSandboxStatsResponse> {
        self.not_built("PodSandboxStats").await
    }

    async fn list_pod_sandbox_stats(
        &self,
        _: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        self.not_built("ListPodSandboxStats").await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _: Request<StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        self.not_built("StreamPodSandboxStats").await
    }

    async fn update_runtime_config(
        &self,
        _: Request<UpdateRuntimeConfigRequest>,
    ) -> Rpc<UpdateRuntimeConfigResponse> {
        self.not_built("UpdateRuntimeConfig").await
    }

    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        self.not_built("CheckpointContainer").await
    }

    async fn checkpoint_pod(&self, _: Request<CheckpointPodRequest>) -> Rpc<CheckpointPodResponse> {
        self.not_built("CheckpointPod").await
    }

    async fn restore_pod(&self, _: Request<RestorePodRequest>) -> Rpc<RestorePodResponse> {
        self.not_built("RestorePod").await
    }

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        self.not_built("GetContainerEvents").await
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        self.not_built("ListMetricDescriptors").await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        self.not_built("ListPodSandboxMetrics").await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        self.not_built("StreamPodSandboxMetrics").await
    }

    async fn update_pod_sandbox_resources(
        &self,
        _: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<UpdatePodSandboxResourcesResponse> {
        self.not_built("UpdatePodSandboxResources").await
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
