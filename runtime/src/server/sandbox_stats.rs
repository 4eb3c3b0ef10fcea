//! PodSandboxStats, ListPodSandboxStats and StreamPodSandboxStats: a pod's cgroup
//! (which holds all its containers), its network counters and its containers' stats.

use std::sync::Arc;

use crust_proto::cri::{
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStats,
    PodSandboxStatsFilter, PodSandboxStatsRequest, PodSandboxStatsResponse,
    StreamPodSandboxStatsRequest, StreamPodSandboxStatsResponse,
};

use super::Context;
use super::convert;
use super::error::Result;
use super::sampling;
use crate::stats::Figures;

/// Pods per streamed message.
pub const CHUNK: usize = 50;

/// One pod's stats; NotFound for an unknown id.
pub async fn pod_sandbox_stats(
    ctx: &Arc<Context>,
    req: PodSandboxStatsRequest,
) -> Result<PodSandboxStatsResponse> {
    let s = ctx.store.resolve_sandbox(&req.pod_sandbox_id)?;
    let samples = sampling::pods(ctx, vec![s], Figures::Stats).await?;
    Ok(PodSandboxStatsResponse {
        stats: samples.first().map(|s| sampling::pod_stats(ctx, s)),
    })
}

async fn list(
    ctx: &Arc<Context>,
    filter: Option<PodSandboxStatsFilter>,
) -> Result<Vec<PodSandboxStats>> {
    let filter = filter.unwrap_or_default();
    let mut list = ctx.store.published_sandboxes();
    list.retain(|s| {
        let m = s.metadata();
        m.id.as_str().starts_with(&filter.id)
            && convert::labels_match(&m.config.labels, &filter.label_selector)
    });
    list.sort_by_key(|s| s.metadata().created_at);
    let samples = sampling::pods(ctx, list, Figures::Stats).await?;
    Ok(samples
        .iter()
        .map(|s| sampling::pod_stats(ctx, s))
        .collect())
}

/// The stats of the pods matching the filter.
pub async fn list_pod_sandbox_stats(
    ctx: &Arc<Context>,
    req: ListPodSandboxStatsRequest,
) -> Result<ListPodSandboxStatsResponse> {
    Ok(ListPodSandboxStatsResponse {
        stats: list(ctx, req.filter).await?,
    })
}

/// The same, in messages of at most [`CHUNK`] pods.
pub async fn stream_pod_sandbox_stats(
    ctx: &Arc<Context>,
    req: StreamPodSandboxStatsRequest,
) -> Result<Vec<StreamPodSandboxStatsResponse>> {
    Ok(list(ctx, req.filter)
        .await?
        .chunks(CHUNK)
        .map(|c| StreamPodSandboxStatsResponse {
            pod_sandbox_stats: c.to_vec(),
        })
        .collect())
}
