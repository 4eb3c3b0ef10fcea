//! ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics: the
//! cadvisor-named metrics crust can fill from the same samples as the stats RPCs.

use std::sync::Arc;

use crust_proto::cri::{
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, PodSandboxMetrics, StreamPodSandboxMetricsRequest,
    StreamPodSandboxMetricsResponse,
};

use super::Context;
use super::convert;
use super::error::Result;
use super::sampling;
use crate::stats::{self, ContainerMetricsInput, Figures, PodMetricsInput};

/// Pods per streamed message.
pub const CHUNK: usize = 50;

/// Every metric ListPodSandboxMetrics fills.
pub async fn list_metric_descriptors(
    _ctx: &Context,
    _req: ListMetricDescriptorsRequest,
) -> Result<ListMetricDescriptorsResponse> {
    Ok(ListMetricDescriptorsResponse {
        descriptors: stats::metric_descriptors(),
    })
}

async fn all(ctx: &Arc<Context>) -> Result<Vec<PodSandboxMetrics>> {
    let mut list = ctx.store.published_sandboxes();
    list.sort_by_key(|s| s.metadata().created_at);
    let samples = sampling::pods(ctx, list, Figures::Metrics).await?;
    Ok(samples
        .iter()
        .map(|p| {
            let m = p.sandbox.metadata();
            let images: Vec<String> = p
                .containers
                .iter()
                .map(|c| {
                    convert::container(&c.container)
                        .image
                        .map(|i| i.image)
                        .unwrap_or_default()
                })
                .collect();
            let resources: Vec<_> = p
                .containers
                .iter()
                .map(|c| convert::resources(&c.container))
                .collect();
            stats::pod_metrics(&PodMetricsInput {
                sandbox_id: m.id.as_str(),
                pod: &m.pod_name,
                namespace: &m.namespace,
                cgroup: p.cgroup.as_ref(),
                network: p.network.as_ref(),
                containers: p
                    .containers
                    .iter()
                    .zip(images.iter().zip(&resources))
                    .map(|(c, (image, resources))| ContainerMetricsInput {
                        id: c.container.metadata().id.as_str(),
                        name: &c.container.metadata().container_name,
                        image,
                        cgroup: c.cgroup.as_ref(),
                        started_at: c.container.status().started_at,
                        resources: resources.as_ref(),
                        layer: c.layer.as_ref(),
                        filesystem: c.filesystem.as_ref(),
                    })
                    .collect(),
            })
        })
        .collect())
}

/// The metrics of every pod.
pub async fn list_pod_sandbox_metrics(
    ctx: &Arc<Context>,
    _req: ListPodSandboxMetricsRequest,
) -> Result<ListPodSandboxMetricsResponse> {
    Ok(ListPodSandboxMetricsResponse {
        pod_metrics: all(ctx).await?,
    })
}

/// The same, in messages of at most [`CHUNK`] pods.
pub async fn stream_pod_sandbox_metrics(
    ctx: &Arc<Context>,
    _req: StreamPodSandboxMetricsRequest,
) -> Result<Vec<StreamPodSandboxMetricsResponse>> {
    Ok(all(ctx)
        .await?
        .chunks(CHUNK)
        .map(|c| StreamPodSandboxMetricsResponse {
            pod_sandbox_metrics: c.to_vec(),
        })
        .collect())
}
