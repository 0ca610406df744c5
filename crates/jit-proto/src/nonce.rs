//! Replay protection: a nonce may be used once within twice the allowed clock skew (after that
//! the timestamp check alone refuses the request).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed future, so the trait stays object-safe for durable (async) implementations.
pub type NonceFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NonceError>> + Send + 'a>>;

/// Why a nonce was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NonceError {
    /// The nonce was seen before and has not expired.
    #[error("nonce already used")]
    Replayed,
    /// The store could not answer (full, or its database is down). Fails closed.
    #[error("nonce store unavailable: {0}")]
    Unavailable(String),
}

/// Remembers nonces until `expires_at` (unix seconds). Implementations must make
/// check-and-insert atomic: two concurrent calls with one nonce may not both succeed.
pub trait NonceStore: Send + Sync + fmt::Debug {
    /// Records `nonce` until `expires_at`, or fails with [`NonceError::Replayed`] if it is
    /// already recorded and unexpired at `now`.
    fn check_and_insert<'a>(&'a self, nonce: &'a str, now: i64, expires_at: i64)
    -> NonceFuture<'a>;
}

/// Default capacity of [`MemoryNonceStore`]: 20 minutes at 1,000 requests per second.
pub const DEFAULT_MEMORY_NONCE_CAPACITY: usize = 1_200_000;

/// An in-memory, bounded nonce store for a single process. When full of unexpired nonces it
/// refuses new ones (`Unavailable`) rather than forgetting one that could then be replayed.
pub struct MemoryNonceStore {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    seen: HashMap<Box<str>, i64>,
    order: VecDeque<(i64, Box<str>)>,
}

impl MemoryNonceStore {
    /// A store that holds at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    /// Number of nonces held (expired ones may linger until the next insert).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.seen.len()).unwrap_or(0)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, nonce: &str, now: i64, expires_at: i64) -> Result<(), NonceError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| NonceError::Unavailable("lock poisoned".into()))?;
        let Inner { seen, order } = &mut *inner;
        // Expiries are pushed in arrival order, which is close to time order; pop from the
        // front while expired, and double-check against the map in case a nonce was re-added.
        while let Some((exp, _)) = order.front() {
            if *exp > now {
                break;
            }
            if let Some((exp, n)) = order.pop_front()
                && seen.get(&n).is_some_and(|e| *e == exp)
            {
                seen.remove(&n);
            }
        }
        if seen.get(nonce).is_some_and(|exp| *exp > now) {
            return Err(NonceError::Replayed);
        }
        if seen.len() >= self.capacity {
            return Err(NonceError::Unavailable("nonce store full".into()));
        }
        let key: Box<str> = nonce.into();
        seen.insert(key.clone(), expires_at);
        order.push_back((expires_at, key));
        Ok(())
    }
}

impl Default for MemoryNonceStore {
    fn default() -> Self {
        Self::new(DEFAULT_MEMORY_NONCE_CAPACITY)
    }
}

impl fmt::Debug for MemoryNonceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryNonceStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl NonceStore for MemoryNonceStore {
    fn check_and_insert<'a>(
        &'a self,
        nonce: &'a str,
        now: i64,
        expires_at: i64,
    ) -> NonceFuture<'a> {
        let r = self.insert(nonce, now, expires_at);
        Box::pin(std::future::ready(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &MemoryNonceStore, n: &str, now: i64) -> Result<(), NonceError> {
        s.insert(n, now, now + 600)
    }

    #[test]
    fn second_use_within_window_is_replay_and_after_expiry_is_fine() {
        let s = MemoryNonceStore::new(10);
        assert_eq!(run(&s, "a", 1000), Ok(()));
        assert_eq!(run(&s, "a", 1599), Err(NonceError::Replayed));
        assert_eq!(run(&s, "a", 1600), Ok(()));
    }

    #[test]
    fn full_store_refuses_instead_of_forgetting() {
        let s = MemoryNonceStore::new(2);
        run(&s, "a", 1000).unwrap();
        run(&s, "b", 1000).unwrap();
        assert!(matches!(
            run(&s, "c", 1000),
            Err(NonceError::Unavailable(_))
        ));
        assert_eq!(run(&s, "a", 1001), Err(NonceError::Replayed));
        // Once the old ones expire there is room again.
        assert_eq!(run(&s, "c", 1600), Ok(()));
        assert_eq!(s.len(), 1);
    }
}
