//! One-time tokens: each Exec, Attach or PortForward call parks its request here and
//! gets a random token for its URL. The streaming server takes the request back once,
//! before the token expires; a used, expired or unknown token finds nothing (404).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Request;

/// Requests waiting for their client at most; beyond it the oldest is dropped (a
/// client that asks for URLs and never uses them must not grow crustd).
const MAX_IN_FLIGHT: usize = 1000;

/// Parked requests by token.
#[derive(Debug)]
pub struct Tokens {
    ttl: Duration,
    map: Mutex<HashMap<String, (Request, Instant)>>,
}

impl Tokens {
    /// A store whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Parks `req` and returns its token (8 random bytes, URL-safe base64, as kubelet's).
    pub fn insert(&self, req: Request) -> String {
        self.insert_at(req, Instant::now())
    }

    fn insert_at(&self, req: Request, now: Instant) -> String {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the kernel's random source is unavailable");
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.ttl);
        if map.len() >= MAX_IN_FLIGHT
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(token.clone(), (req, now));
        token
    }

    /// Takes the request of `token`, once, if it has not expired.
    pub fn take(&self, token: &str) -> Option<Request> {
        self.take_at(token, Instant::now())
    }

    fn take_at(&self, token: &str, now: Instant) -> Option<Request> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let (req, at) = map.remove(token)?;
        (now.saturating_duration_since(at) < self.ttl).then_some(req)
    }

    /// How many requests are parked (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use crust_proto::cri::PortForwardRequest;

    use super::*;

    fn pf(id: &str) -> Request {
        Request::PortForward(PortForwardRequest {
            pod_sandbox_id: id.into(),
            port: vec![],
        })
    }

    fn sandbox_of(r: Option<Request>) -> Option<String> {
        match r? {
            Request::PortForward(p) => Some(p.pod_sandbox_id),
            _ => None,
        }
    }

    #[test]
    fn a_token_is_good_once() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.insert(pf("a"));
        let b = t.insert(pf("b"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 11, "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(sandbox_of(t.take(&b)).as_deref(), Some("b"));
        assert_eq!(sandbox_of(t.take(&b)), None);
        assert_eq!(sandbox_of(t.take(&a)).as_deref(), Some("a"));
        assert!(t.take("nope").is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn a_token_expires() {
        let t = Tokens::new(Duration::from_secs(60));
        let now = Instant::now();
        let a = t.insert_at(pf("a"), now);
        let b = t.insert_at(pf("b"), now);
        assert!(t.take_at(&a, now + Duration::from_secs(59)).is_some());
        assert!(t.take_at(&b, now + Duration::from_secs(60)).is_none());
        // Expired ones are swept at the next insert.
        t.insert_at(pf("c"), now);
        let _ = t.insert_at(pf("d"), now + Duration::from_secs(61));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_oldest_goes_when_too_many_wait() {
        let t = Tokens::new(Duration::from_secs(60));
        let now = Instant::now();
        let first = t.insert_at(pf("first"), now);
        for i in 1..MAX_IN_FLIGHT {
            t.insert_at(pf("x"), now + Duration::from_millis(i as u64));
        }
        assert_eq!(t.len(), MAX_IN_FLIGHT);
        t.insert_at(pf("last"), now + Duration::from_secs(1));
        assert_eq!(t.len(), MAX_IN_FLIGHT);
        assert!(t.take_at(&first, now + Duration::from_secs(1)).is_none());
    }
}
