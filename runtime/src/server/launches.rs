//! Shim launches in flight. CreateContainer stores the container's record and
//! answers; its shim, which creates the container (namespaces, rootfs, cgroup), is
//! launched in the background, as containerd creates its task in StartContainer.
//! StartContainer, UpdateContainerResources and RemoveContainer wait here for the
//! launch before they use the shim or the cgroup. A launch that fails leaves the
//! container EXITED with reason StartError and the launch's error as its message
//! (containerd's exit code 128 and reason), and StartContainer answers with that error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::store::ContainerId;

/// The CRI reason of a container whose shim failed to create it.
pub const START_ERROR: &str = "StartError";

/// The exit code recorded for a container whose shim failed to create it.
pub const START_ERROR_CODE: i32 = 128;

/// How a launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The shim runs and the container is CREATED.
    Launched,
    /// The launch failed with this message; the container is recorded EXITED.
    Failed(String),
}

/// The launches in flight, by container.
#[derive(Debug, Default)]
pub struct Launches {
    pending: Arc<Mutex<HashMap<ContainerId, watch::Receiver<Option<Outcome>>>>>,
}

impl Launches {
    /// Runs `launch` for container `id` in the background. `launch` records its
    /// outcome in the store before it returns: a caller that finds nothing pending
    /// finds the outcome in the container's record.
    pub fn spawn(&self, id: ContainerId, launch: impl Future<Output = Outcome> + Send + 'static) {
        let (tx, rx) = watch::channel(None);
        lock(&self.pending).insert(id.clone(), rx);
        let pending = Arc::clone(&self.pending);
        tokio::spawn(async move {
            let outcome = launch.await;
            lock(&pending).remove(&id);
            tx.send_replace(Some(outcome));
        });
    }

    /// Waits for the launch of container `id`, if one is in flight, and returns how it
    /// ended; `None` when none is.
    pub async fn finished(&self, id: &ContainerId) -> Option<Outcome> {
        let mut rx = lock(&self.pending).get(id).cloned()?;
        rx.wait_for(Option::is_some).await.ok()?.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_outcome_and_later_callers_nothing() {
        let launches = Arc::new(Launches::default());
        let id = ContainerId::generate();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        launches.spawn(id.clone(), async move {
            let _ = wait.await;
            Outcome::Failed("no such file".into())
        });
        let waiter = {
            let (launches, id) = (Arc::clone(&launches), id.clone());
            tokio::spawn(async move { launches.finished(&id).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the launch runs");
        go.send(()).unwrap();
        assert_eq!(
            waiter.await.unwrap(),
            Some(Outcome::Failed("no such file".into()))
        );
        assert_eq!(launches.finished(&id).await, None, "no longer in flight");
        assert_eq!(launches.finished(&ContainerId::generate()).await, None);
    }
}
