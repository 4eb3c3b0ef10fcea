//! Coordination inside one store: a per-key async lock, so two pulls of the same blob
//! or snapshot share one download or unpack (the second waits and finds it done), and
//! a protected set that garbage collection leaves alone while a pull is recording
//! content it has not yet committed to an image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, RwLock};

type LockMap = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// Async locks by key (a blob digest or a chain id).
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: LockMap,
}

/// Holds the lock of one key; the entry leaves the map when its last user is done.
pub(crate) struct KeyGuard {
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
    map: LockMap,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard {
        let lock = {
            let mut map = self.map.lock().expect("lock map poisoned");
            map.entry(key.to_owned()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyGuard {
            key: key.to_owned(),
            lock,
            guard: Some(guard),
            map: self.map.clone(),
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.map.lock().expect("lock map poisoned");
        // Ours and the map's: nobody else waits for this key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

/// Keys (digests, chain ids) garbage collection must keep although no image names
/// them yet. Registering takes the GC lock shared, so it happens wholly before or
/// wholly after a collection.
#[derive(Default)]
pub(crate) struct Protected {
    keys: Arc<Mutex<HashMap<String, usize>>>,
    pub(crate) gc_lock: RwLock<()>,
}

/// Unprotects its keys when dropped.
pub(crate) struct ProtectGuard {
    keys: Vec<String>,
    map: Arc<Mutex<HashMap<String, usize>>>,
}

impl Protected {
    pub(crate) async fn protect(&self, keys: Vec<String>) -> ProtectGuard {
        let _shared = self.gc_lock.read().await;
        let mut map = self.keys.lock().expect("protected set poisoned");
        for k in &keys {
            *map.entry(k.clone()).or_default() += 1;
        }
        ProtectGuard {
            keys,
            map: self.keys.clone(),
        }
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys
            .lock()
            .expect("protected set poisoned")
            .contains_key(key)
    }
}

impl Drop for ProtectGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().expect("protected set poisoned");
        for k in &self.keys {
            if let Some(n) = map.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn second_locker_waits_and_the_map_empties() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("a").await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a").await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        let _other = locks.lock("b").await;
        drop(first);
        waiter.await.unwrap();
        drop(_other);
        assert!(locks.map.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn protection_is_counted() {
        let p = Protected::default();
        let a = p.protect(vec!["x".into()]).await;
        let b = p.protect(vec!["x".into(), "y".into()]).await;
        drop(a);
        assert!(p.contains("x") && p.contains("y"));
        drop(b);
        assert!(!p.contains("x") && !p.contains("y"));
    }
}
