//! Shim launches in flight. CreateContainer stores the container's record and
//! answers; its shim, which creates the container (namespaces, rootfs, cgroup), is
//! launched in the background, as containerd creates its task in StartContainer.
//! StartContainer, UpdateContainerResources, StopPodSandbox and RemoveContainer wait
//! here for the launch before they use the shim, the cgroup or the pod's namespaces.
//! A launch that fails leaves the container EXITED with reason StartError and the
//! launch's error as its message (containerd's exit code 128 and reason), and
//! StartContainer answers with that error.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::store::ContainerId;

/// The CRI reason of a container whose shim failed to create it.
pub const START_ERROR: &str = "StartError";

/// The exit code recorded for a container whose shim failed to create it.
pub const START_ERROR_CODE: i32 = 128;

/// The launches in flight, by container.
#[derive(Debug, Default)]
pub struct Launches {
    pending: Arc<Mutex<HashMap<ContainerId, watch::Receiver<bool>>>>,
}

impl Launches {
    /// Runs `launch` for container `id` in the background. `launch` records its
    /// outcome (a failure as the container's exit) in the store before it returns: the
    /// record tells how it ended.
    pub fn spawn(&self, id: ContainerId, launch: impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(false);
        lock(&self.pending).insert(id.clone(), rx);
        let pending = Arc::clone(&self.pending);
        tokio::spawn(async move {
            launch.await;
            lock(&pending).remove(&id);
            tx.send_replace(true);
        });
    }

    /// Waits for the launch of container `id`, if one is in flight.
    pub async fn finished(&self, id: &ContainerId) {
        let rx = lock(&self.pending).get(id).cloned();
        if let Some(mut rx) = rx {
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wait_for_the_launch_and_later_callers_not() {
        let launches = Arc::new(Launches::default());
        let id = ContainerId::generate();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        launches.spawn(id.clone(), async move {
            let _ = wait.await;
            let _ = done_tx.send(());
        });
        let waiter = {
            let (launches, id) = (Arc::clone(&launches), id.clone());
            tokio::spawn(async move { launches.finished(&id).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while the launch runs");
        go.send(()).unwrap();
        waiter.await.unwrap();
        done.await
            .expect("the launch ran to its end before the waiter went on");
        // No longer in flight, and never launched: no wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), launches.finished(&id))
            .await
            .unwrap();
        let other = ContainerId::generate();
        tokio::time::timeout(std::time::Duration::from_secs(1), launches.finished(&other))
            .await
            .unwrap();
    }
}
