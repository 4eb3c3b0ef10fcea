//! ContainerStats, ListContainerStats and StreamContainerStats: CPU, memory and the
//! writable layer of containers, from their cgroups (v1 or v2) and upper dirs.

use std::sync::Arc;

use crust_proto::cri::{
    ContainerStatsFilter, ContainerStatsRequest, ContainerStatsResponse, ListContainerStatsRequest,
    ListContainerStatsResponse, StreamContainerStatsRequest, StreamContainerStatsResponse,
};

use super::Context;
use super::convert;
use super::error::Result;
use super::sampling;

/// Containers per streamed message.
pub const CHUNK: usize = 200;

/// One container's stats; NotFound for an unknown id.
pub async fn container_stats(
    ctx: &Arc<Context>,
    req: ContainerStatsRequest,
) -> Result<ContainerStatsResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let samples = sampling::containers(ctx, vec![c]).await?;
    Ok(ContainerStatsResponse {
        stats: samples.first().map(|s| sampling::container_stats(ctx, s)),
    })
}

async fn list(
    ctx: &Arc<Context>,
    filter: Option<ContainerStatsFilter>,
) -> Result<Vec<crust_proto::cri::ContainerStats>> {
    let filter = filter.unwrap_or_default();
    let mut list = ctx.store.list_containers();
    list.retain(|c| {
        let m = c.metadata();
        m.id.as_str().starts_with(&filter.id)
            && m.sandbox_id.as_str().starts_with(&filter.pod_sandbox_id)
            && convert::labels_match(&m.config.labels, &filter.label_selector)
    });
    list.sort_by_key(|c| c.metadata().created_at);
    let samples = sampling::containers(ctx, list).await?;
    Ok(samples
        .iter()
        .map(|s| sampling::container_stats(ctx, s))
        .collect())
}

/// The stats of the containers matching the filter.
pub async fn list_container_stats(
    ctx: &Arc<Context>,
    req: ListContainerStatsRequest,
) -> Result<ListContainerStatsResponse> {
    Ok(ListContainerStatsResponse {
        stats: list(ctx, req.filter).await?,
    })
}

/// The same, in messages of at most [`CHUNK`] containers.
pub async fn stream_container_stats(
    ctx: &Arc<Context>,
    req: StreamContainerStatsRequest,
) -> Result<Vec<StreamContainerStatsResponse>> {
    Ok(list(ctx, req.filter)
        .await?
        .chunks(CHUNK)
        .map(|c| StreamContainerStatsResponse {
            container_stats: c.to_vec(),
        })
        .collect())
}
