//! crustd as NRI's host: the pods and containers a new plugin is synchronized with, and
//! the changes plugins ask for outside their own event (updates of other containers'
//! resources, evictions). Also the NRI events sent from more than one RPC.

use std::sync::Arc;
use std::time::Duration;

use crust_proto::nri as api;
use futures::future::BoxFuture;

use super::Context;
use super::container_update;
use super::containers;
use crate::nri::{self, Host};
use crate::store::Container;

/// How long an evicted container has to stop on its stop signal before SIGKILL.
const EVICTION_GRACE: Duration = Duration::from_secs(10);

impl Host for Context {
    fn snapshot(
        self: Arc<Self>,
    ) -> BoxFuture<'static, (Vec<api::PodSandbox>, Vec<api::Container>)> {
        Box::pin(async move {
            let pods = self.store.published_sandboxes();
            let containers = self
                .store
                .list_containers()
                .into_iter()
                .filter(|c| !c.status().removing)
                .filter(|c| {
                    pods.iter()
                        .any(|p| p.metadata().id == c.metadata().sandbox_id)
                })
                .map(|c| nri::convert::container(&c))
                .collect();
            (
                pods.iter().map(|p| nri::convert::pod(p)).collect(),
                containers,
            )
        })
    }

    fn update(
        self: Arc<Self>,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<'static, Vec<api::ContainerUpdate>> {
        Box::pin(async move {
            let mut failed = Vec::new();
            for u in updates {
                if let Err(err) = update_one(&self, &u).await {
                    tracing::warn!(container = %u.container_id, %err, "NRI: container update");
                    failed.push(u);
                }
            }
            failed
        })
    }

    fn evict(self: Arc<Self>, evictions: Vec<api::ContainerEviction>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            for e in evictions {
                let Ok(c) = self.store.resolve_container(&e.container_id) else {
                    tracing::warn!(container = %e.container_id, "NRI: evict an unknown container");
                    continue;
                };
                tracing::info!(container = %c.metadata().id, reason = %e.reason, "NRI: evicting container");
                if let Err(err) = containers::stop(&self, &c, EVICTION_GRACE).await {
                    tracing::warn!(container = %c.metadata().id, %err, "NRI: evict");
                }
            }
        })
    }
}

async fn update_one(ctx: &Arc<Context>, u: &api::ContainerUpdate) -> super::error::Result<()> {
    let c = ctx.store.resolve_container(&u.container_id)?;
    container_update::updatable(&c)?;
    let base = super::convert::resources(&c).unwrap_or_default();
    let asked = u
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let resources = nri::convert::resources_to_cri(&asked, base);
    container_update::apply_resources(ctx, &c, resources).await
}

/// Applies plugins' updates that came with an event; a failed one that may not fail
/// is logged.
pub async fn apply_updates(ctx: &Arc<Context>, updates: Vec<api::ContainerUpdate>) {
    if updates.is_empty() {
        return;
    }
    for u in Arc::clone(ctx).update(updates).await {
        if !u.ignore_failure {
            tracing::warn!(container = %u.container_id, "NRI: a plugin's update of a container failed");
        }
    }
}

/// StopContainer to NRI for a container that has exited (stopped, or ended by itself);
/// once per container.
pub async fn container_stopped(ctx: &Arc<Context>, c: &Container) {
    if !ctx.nri.enabled() {
        return;
    }
    let Ok(pod) = ctx.store.get_sandbox(&c.metadata().sandbox_id) else {
        return;
    };
    let updates = ctx
        .nri
        .stop_container(&nri::convert::pod(&pod), &nri::convert::container(c))
        .await;
    apply_updates(ctx, updates).await;
}
