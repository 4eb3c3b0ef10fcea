//! ListPodSandbox and StreamPodSandboxes: the pods, filtered by id (or id prefix),
//! state and labels. A pod whose RunPodSandbox has not answered is not listed.

use crust_proto::cri::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter,
    StreamPodSandboxesRequest, StreamPodSandboxesResponse,
};

use super::Context;
use super::convert;
use super::error::Result;

/// How many pods one streamed message carries: far below the 16 MiB limit.
pub const CHUNK: usize = 500;

fn list(ctx: &Context, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    let filter = filter.unwrap_or_default();
    let mut out: Vec<PodSandbox> = ctx
        .store
        .published_sandboxes()
        .iter()
        .filter(|s| filter.id.is_empty() || s.metadata().id.as_str().starts_with(&filter.id))
        .map(|s| convert::sandbox(s))
        .filter(|p| filter.state.as_ref().is_none_or(|st| st.state == p.state))
        .filter(|p| convert::labels_match(&p.labels, &filter.label_selector))
        .collect();
    out.sort_by_key(|p| p.created_at);
    out
}

/// The pods matching the filter.
pub async fn list_pod_sandbox(
    ctx: &Context,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse> {
    Ok(ListPodSandboxResponse {
        items: list(ctx, req.filter),
    })
}

/// The same, in messages of at most [`CHUNK`] pods.
pub async fn stream_pod_sandboxes(
    ctx: &Context,
    req: StreamPodSandboxesRequest,
) -> Result<Vec<StreamPodSandboxesResponse>> {
    Ok(list(ctx, req.filter)
        .chunks(CHUNK)
        .map(|c| StreamPodSandboxesResponse {
            pod_sandboxes: c.to_vec(),
        })
        .collect())
}
