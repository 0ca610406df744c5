//! Whether the access provider can work: checked once at start (a warning names the fault),
//! then again by `/readyz` while it fails, at most every [`RECHECK_MS`], so a server that
//! started before Identity Center was reachable becomes ready once it is, and says why until
//! then.

use jit_grants::AccessProvider;
use jit_proto::wire::ProviderReadiness;
use std::sync::{Arc, Mutex, OnceLock};

/// Least time between two checks of a failing provider (`/readyz` is unauthenticated: it must
/// not turn into a stream of AWS calls).
pub const RECHECK_MS: i64 = 5_000;

/// The provider's last check.
#[derive(Debug, Default)]
pub struct ProviderHealth {
    provider: OnceLock<Arc<dyn AccessProvider>>,
    /// `None`: passed (or not yet built). `Some((reason, checked_at_ms))`: failing.
    failing: Mutex<Option<(String, i64)>>,
    /// Serialises checks, so concurrent probes wait for one call.
    checking: tokio::sync::Mutex<()>,
}

impl ProviderHealth {
    /// Checks `provider` now and keeps it for later checks; returns the reason it failed.
    pub async fn start(&self, provider: Arc<dyn AccessProvider>, now_ms: i64) -> Option<String> {
        let _ = self.provider.set(provider);
        self.check(now_ms).await
    }

    async fn check(&self, now_ms: i64) -> Option<String> {
        let provider = self.provider.get()?;
        let _one = self.checking.lock().await;
        let reason = provider.check().await.err().map(|e| e.to_string());
        let was_failing = self.failing.lock().is_ok_and(|f| f.is_some());
        match &reason {
            Some(r) if !was_failing => tracing::warn!(
                provider = provider.name(),
                reason = %r,
                "the access provider is not usable; /readyz says not ready until it is"
            ),
            None if was_failing => {
                tracing::info!(
                    provider = provider.name(),
                    "the access provider is usable again"
                );
            }
            _ => {}
        }
        if let Ok(mut f) = self.failing.lock() {
            *f = reason.clone().map(|r| (r, now_ms));
        }
        reason
    }

    /// The access provider, once the server has built it (handlers ask it for configuration it
    /// reports, such as session durations).
    pub fn provider(&self) -> Option<Arc<dyn AccessProvider>> {
        self.provider.get().cloned()
    }

    /// The provider's readiness; a failing provider is checked again when its last check is
    /// older than [`RECHECK_MS`].
    pub async fn readiness(&self, now_ms: i64) -> ProviderReadiness {
        let name = self.provider.get().map_or("none", |p| p.name()).to_owned();
        let last = self.failing.lock().ok().and_then(|f| f.clone());
        let reason = match last {
            None => None,
            Some((_, at)) if now_ms.saturating_sub(at) >= RECHECK_MS => self.check(now_ms).await,
            Some((reason, _)) => Some(reason),
        };
        ProviderReadiness {
            name,
            ready: reason.is_none(),
            reason,
        }
    }
}
