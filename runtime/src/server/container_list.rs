//! ListContainers and StreamContainers: the containers, filtered by id (or id
//! prefix), state, pod (or pod id prefix) and labels.

use crust_proto::cri::{
    Container, ContainerFilter, ListContainersRequest, ListContainersResponse,
    StreamContainersRequest, StreamContainersResponse,
};

use super::Context;
use super::convert;
use super::error::Result;

/// How many containers one streamed message carries: far below the 16 MiB limit.
pub const CHUNK: usize = 500;

fn list(ctx: &Context, filter: Option<ContainerFilter>) -> Vec<Container> {
    let filter = filter.unwrap_or_default();
    let mut out: Vec<Container> = ctx
        .store
        .list_containers()
        .iter()
        .filter(|c| {
            let m = c.metadata();
            m.id.as_str().starts_with(&filter.id)
                && m.sandbox_id.as_str().starts_with(&filter.pod_sandbox_id)
        })
        .map(|c| convert::container(c))
        .filter(|c| filter.state.as_ref().is_none_or(|st| st.state == c.state))
        .filter(|c| convert::labels_match(&c.labels, &filter.label_selector))
        .collect();
    out.sort_by_key(|c| c.created_at);
    out
}

/// The containers matching the filter.
pub async fn list_containers(
    ctx: &Context,
    req: ListContainersRequest,
) -> Result<ListContainersResponse> {
    Ok(ListContainersResponse {
        containers: list(ctx, req.filter),
    })
}

/// The same, in messages of at most [`CHUNK`] containers.
pub async fn stream_containers(
    ctx: &Context,
    req: StreamContainersRequest,
) -> Result<Vec<StreamContainersResponse>> {
    Ok(list(ctx, req.filter)
        .chunks(CHUNK)
        .map(|c| StreamContainersResponse {
            containers: c.to_vec(),
        })
        .collect())
}
