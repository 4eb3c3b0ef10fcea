//! Name reservation. Kubelet names every sandbox and container through its CRI
//! metadata; two objects must never share a name. A create reserves the name before
//! any work and releases it if it fails (containerd's registrar).
//!
//! Kubelet retries a create whose call timed out, with the same metadata, so the same
//! name, while the first attempt may still be running. A reservation therefore
//! carries the id of its holder and a phase: `Pending` while the create runs,
//! `Committed` once the create has finished. A retry that meets a reservation can
//! [`Registrar::watch`] it and wait until it settles: committed (the caller may
//! return the existing id, as CRI-O's reservePodNameOrGetExisting does) or released
//! (the first attempt failed; the caller reserves again). Whether a committed holder
//! is a retry's answer or a real conflict (AlreadyExists) is the caller's decision.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crust_proto::cri::{ContainerMetadata, PodSandboxMetadata};
use tokio::sync::watch;

use super::error::{Error, Object, Result};

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The create holding the name is still running.
    Pending,
    /// The create finished; the name belongs to a stored object.
    Committed,
    /// The name was released: the create failed or the object was removed.
    Released,
}

struct Reservation<K> {
    key: K,
    phase: watch::Sender<Phase>,
}

/// Name to id reservations of one kind of object. Safe for concurrent use; its lock
/// is held only for a map operation, never across an await.
pub struct Registrar<K> {
    what: Object,
    names: Mutex<HashMap<String, Reservation<K>>>,
}

/// The holder of a name, as seen by [`Registrar::watch`].
pub struct Holder<K> {
    /// The id holding the name.
    pub key: K,
    phase: watch::Receiver<Phase>,
}

impl<K> Holder<K> {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Waits until the reservation is no longer `Pending` and returns its phase. The
    /// caller bounds the wait with its own deadline (the RPC's).
    pub async fn settled(mut self) -> Phase {
        match self.phase.wait_for(|p| *p != Phase::Pending).await {
            Ok(p) => *p,
            // The sender is dropped with the reservation, i.e. on release.
            Err(_) => Phase::Released,
        }
    }
}

impl<K: Clone + PartialEq + std::fmt::Display> Registrar<K> {
    /// An empty registrar for names of `what`.
    pub fn new(what: Object) -> Self {
        Self {
            what,
            names: Mutex::new(HashMap::new()),
        }
    }

    fn names(&self) -> MutexGuard<'_, HashMap<String, Reservation<K>>> {
        // Every change under the lock is a single map operation, so a panic elsewhere
        // can't leave the map half changed.
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `name` for `key`, in phase `Pending`. Reserving a name again for the
    /// same key succeeds; a name held by another key is [`Error::NameReserved`].
    pub fn reserve(&self, name: &str, key: K) -> Result<()> {
        let mut names = self.names();
        if let Some(r) = names.get(name) {
            if r.key == key {
                return Ok(());
            }
            return Err(Error::NameReserved {
                what: self.what,
                name: name.to_owned(),
                holder: r.key.to_string(),
            });
        }
        let (phase, _) = watch::channel(Phase::Pending);
        names.insert(name.to_owned(), Reservation { key, phase });
        Ok(())
    }

    /// Marks the reservation of `name` by `key` committed and wakes its watchers.
    /// Returns false if `key` does not hold `name`.
    pub fn commit(&self, name: &str, key: &K) -> bool {
        let names = self.names();
        match names.get(name) {
            Some(r) if r.key == *key => {
                r.phase.send_replace(Phase::Committed);
                true
            }
            _ => false,
        }
    }

    /// Releases `name`, whoever holds it, and returns the holder. Watchers see
    /// `Released`.
    pub fn release(&self, name: &str) -> Option<K> {
        let removed = self.names().remove(name)?;
        removed.phase.send_replace(Phase::Released);
        Some(removed.key)
    }

    /// Releases `name` only if `key` holds it. Returns whether it did.
    pub fn release_held(&self, name: &str, key: &K) -> bool {
        let mut names = self.names();
        if names.get(name).is_none_or(|r| r.key != *key) {
            return false;
        }
        if let Some(r) = names.remove(name) {
            r.phase.send_replace(Phase::Released);
        }
        true
    }

    /// The holder of `name` and its phase, to inspect or wait on.
    pub fn watch(&self, name: &str) -> Option<Holder<K>> {
        let names = self.names();
        let r = names.get(name)?;
        Some(Holder {
            key: r.key.clone(),
            phase: r.phase.subscribe(),
        })
    }
}

/// The unique name of a sandbox, made from its CRI metadata as containerd makes it:
/// `<name>_<namespace>_<uid>_<attempt>`.
pub fn sandbox_name(m: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The unique name of a container in its sandbox, as containerd makes it:
/// `<container>_<pod>_<namespace>_<uid>_<attempt>`.
pub fn container_name(c: &ContainerMetadata, s: &PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, s.name, s.namespace, s.uid, c.attempt
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::ids::SandboxId;

    #[test]
    fn conflicts_and_release() {
        let r = Registrar::new(Object::Sandbox);
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        r.reserve("pod", a.clone()).unwrap();
        r.reserve("pod", a.clone()).unwrap();
        let err = r.reserve("pod", b.clone()).unwrap_err();
        assert!(matches!(&err, Error::NameReserved { holder, .. } if *holder == a.to_string()));
        assert!(err.to_string().contains(a.as_str()), "{err}");
        assert_eq!(err.kind(), crate::store::ErrorKind::AlreadyExists);

        assert!(!r.release_held("pod", &b));
        assert_eq!(r.release("pod"), Some(a));
        assert_eq!(r.release("pod"), None);
        r.reserve("pod", b).unwrap();
    }

    #[test]
    fn commit_only_by_holder() {
        let r = Registrar::new(Object::Sandbox);
        let (a, b) = (SandboxId::generate(), SandboxId::generate());
        r.reserve("pod", a.clone()).unwrap();
        assert_eq!(r.watch("pod").unwrap().phase(), Phase::Pending);
        assert!(!r.commit("pod", &b));
        assert!(r.commit("pod", &a));
        let holder = r.watch("pod").unwrap();
        assert_eq!((holder.phase(), holder.key), (Phase::Committed, a));
        assert!(r.watch("other").is_none());
    }

    #[tokio::test]
    async fn a_retry_waits_for_the_first_create() {
        let r = std::sync::Arc::new(Registrar::new(Object::Sandbox));
        let a = SandboxId::generate();
        r.reserve("pod", a.clone()).unwrap();
        let holder = r.watch("pod").unwrap();
        let first = {
            let (r, a) = (r.clone(), a.clone());
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                r.commit("pod", &a);
            })
        };
        let phase = tokio::time::timeout(Duration::from_secs(5), holder.settled()).await;
        assert_eq!(phase.unwrap(), Phase::Committed);
        first.await.unwrap();

        r.release("pod");
        r.reserve("pod", a.clone()).unwrap();
        let holder = r.watch("pod").unwrap();
        r.release("pod");
        assert_eq!(holder.settled().await, Phase::Released);
    }

    #[test]
    fn names_from_metadata() {
        let s = PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 2,
        };
        let c = ContainerMetadata {
            name: "nginx".into(),
            attempt: 1,
        };
        assert_eq!(sandbox_name(&s), "web_default_u1_2");
        assert_eq!(container_name(&c, &s), "nginx_web_default_u1_1");
    }
}
