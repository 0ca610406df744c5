//! Shared state of the API handlers.

use jit_core::authz::Admins;
use jit_keys::RefreshingRing;
use jit_proto::Clock;
use jit_proto::nonce::NonceStore;
use jit_proto::sign::Verifier;
use jit_store::Store;
#[allow(unused_imports)]
use jit_store::prelude::*;
use std::sync::Arc;

/// Everything a handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Replay protection for signed calls.
    pub nonces: Arc<dyn NonceStore>,
    /// Verifies bridge-to-backend calls.
    pub backend_ring: Arc<RefreshingRing>,
    /// Signs callbacks.
    pub callback_ring: Arc<RefreshingRing>,
    /// Signature policy (skew, v2 requirement, audience `backend`).
    pub verifier: Verifier,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Configured administrators.
    pub admins: Admins,
    /// Wakes the lifecycle worker when a write scheduled a job.
    pub wake: Arc<tokio::sync::Notify>,
    /// Authentication failures per source address, for the 429 after a burst.
    pub auth_failures: Arc<jit_http::FailureLimiter>,
    /// Request and authentication-failure counters for `/metrics`.
    pub http_metrics: Arc<jit_http::metrics::HttpMetrics>,
    /// Lifecycle, provider and callback counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What callbacks are sent (the existing plugin gets fewer, shorter ones).
    pub callback_style: crate::effects::CallbackStyle,
    /// The existing-plugin profile, when on.
    pub existing_plugin: Option<ExistingPlugin>,
    /// Which callback key the receiver accepts (the existing plugin holds one secret): see
    /// `callbacks::Dispatcher`.
    pub callback_key: Arc<std::sync::Mutex<CallbackKey>>,
    /// This process's name as a verifier of the backend ring (`backend:<random>`), under which
    /// its key use is recorded.
    pub verifier_name: Arc<str>,
    /// Whether the access provider can work, for `/readyz`.
    pub provider_health: Arc<crate::health::ProviderHealth>,
    /// Audit verification runs (`GET /audit/verify`).
    pub verifications: Arc<crate::verifications::Verifications>,
}

/// What the dispatcher knows of the receiver's callback key.
#[derive(Debug, Default)]
pub struct CallbackKey {
    /// The key the receiver last accepted, or the one an operator switched to.
    pub key: Option<jit_proto::KeyId>,
    /// The ring's pin when `key` was set.
    pub pin: Option<jit_proto::KeyId>,
}

/// The existing-plugin profile's trust rule, as the API applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingPlugin {
    /// Unmarked keys count as the plugin's.
    pub unmarked_keys_are_the_plugins: bool,
}

impl ExistingPlugin {
    /// Whether a call verified with `key` vouches for the plugin's own admin checks.
    pub fn vouches(&self, key: &jit_proto::KeyEntry) -> bool {
        match key.roles() {
            Some(roles) => roles.contains(&jit_proto::KeyRole::Plugin),
            None => self.unmarked_keys_are_the_plugins,
        }
    }
}

impl AppState {
    /// 16 random bytes, for request ids. Falls back to time-derived bytes only if the OS
    /// generator fails, which it does not on supported platforms.
    pub fn random_id(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        if getrandom::fill(&mut b).is_err() {
            let n = self.clock.now().unix_timestamp_nanos().to_le_bytes();
            b = n;
        }
        b
    }
}
