//! Container events for GetContainerEvents: CREATED, STARTED, STOPPED and DELETED, in
//! the order they happen, to every subscriber. A subscriber that falls more than
//! [`CAPACITY`] events behind loses the oldest (kubelet then relists, as it does with
//! containerd); publishing never blocks a lifecycle call.

use crust_proto::cri::ContainerEventResponse;
use tokio::sync::broadcast;

/// Events kept for a slow subscriber.
pub const CAPACITY: usize = 1024;

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::Sender::new(CAPACITY),
        }
    }
}

impl Events {
    /// Sends `event` to every current subscriber; none is fine.
    pub fn publish(&self, event: ContainerEventResponse) {
        let _ = self.tx.send(event);
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::ContainerEventType;

    use super::*;

    fn event(id: &str, kind: ContainerEventType) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            container_event_type: kind as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let events = Events::default();
        events.publish(event("before", ContainerEventType::ContainerCreatedEvent));
        let mut rx = events.subscribe();
        events.publish(event("a", ContainerEventType::ContainerCreatedEvent));
        events.publish(event("a", ContainerEventType::ContainerStartedEvent));
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!(first.container_id, "a");
        assert_eq!(
            (first.container_event_type, second.container_event_type),
            (
                ContainerEventType::ContainerCreatedEvent as i32,
                ContainerEventType::ContainerStartedEvent as i32
            )
        );
    }
}
