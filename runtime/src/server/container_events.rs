//! GetContainerEvents: a stream of CREATED, STARTED, STOPPED and DELETED events as they
//! happen, each with the pod's and its containers' statuses.

use std::pin::Pin;

use crust_proto::cri::{ContainerEventResponse, GetEventsRequest};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::Context;
use super::error::Result;

/// The stream of events, from now on.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<ContainerEventResponse, Status>> + Send>>;

/// Subscribes to the events; a subscriber that falls too far behind skips the oldest.
pub async fn get_container_events(ctx: &Context, _req: GetEventsRequest) -> Result<EventStream> {
    let rx = ctx.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((Ok(event), rx)),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "container event subscriber fell behind");
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Box::pin(stream))
}
