//! The callback dispatcher: delivers queued callback events to the bridge (or the existing
//! plugin), signed with the callback ring's signing key, in order per request, retrying with
//! backoff for at least `max_age` (24 h by default) before an event becomes a dead letter that
//! the API lists and can re-send. Receivers dedupe by `X-JIT-Event-ID`, so delivery at least once
//! is an effect exactly once. Several servers may dispatch at once for the same reason.

use crate::state::AppState;
use jit_proto::KeyEntry;
use jit_proto::sign::{
    Audience, HEADER_KEY_ID, RequestParts, SignInput, SignatureVersion, new_nonce, sign,
};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{OutboxEvent, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Checks the callback URL at start: an http(s) URL whose address (literal or resolved now)
/// is not link-local or a cloud metadata address, unless `allow_link_local`
/// (`callbacks.dangerous_allow_link_local_callbacks`). At delivery the client's resolver
/// ([`jit_http::outbound::SafeResolver`]) drops such addresses from every lookup.
pub async fn check_url(url: &reqwest::Url, allow_link_local: bool) -> anyhow::Result<()> {
    match jit_http::outbound::check_url(url.as_str()).await {
        Err(jit_http::outbound::UrlError::Forbidden(..)) if allow_link_local => Ok(()),
        Err(e @ jit_http::outbound::UrlError::Forbidden(..)) => Err(anyhow::anyhow!(
            "callbacks.url: {e}; set callbacks.dangerous_allow_link_local_callbacks to allow it"
        )),
        Err(e) => Err(anyhow::anyhow!("callbacks.url: {e}")),
        Ok(()) => Ok(()),
    }
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Where callbacks go.
    pub url: reqwest::Url,
    /// v2 for our bridge (audience `bridge`); v1 for the existing plugin.
    pub version: SignatureVersion,
    /// How long an event is retried before it becomes a dead letter.
    pub max_age: Duration,
    /// `dangerous_allow_link_local_callbacks`.
    pub allow_link_local: bool,
    /// The existing plugin as receiver (existing-plugin profile).
    pub existing_plugin: Option<PluginReceiver>,
}

/// How the existing plugin verifies callbacks: over the path it sees (Mattermost strips
/// `/plugins/<id>` first), with the one key id it knows, `backend`, and the one secret it
/// holds. It cannot follow a ring, so the dispatcher follows it: see [`Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginReceiver {
    /// The path the signature covers.
    pub signed_path: String,
}

/// The key id the existing plugin requires in `X-JIT-KeyID`.
pub const PLUGIN_CALLBACK_KEY_ID: &str = "backend";

impl PluginReceiver {
    /// The receiver for callbacks to `url`: signed over `signed_path`, or by default over the
    /// URL's path minus a leading `/plugins/<id>`.
    pub fn new(url: &reqwest::Url, signed_path: Option<String>) -> Self {
        Self {
            signed_path: signed_path.unwrap_or_else(|| plugin_visible_path(url.path())),
        }
    }
}

/// `/plugins/<id>/rest` → `/rest`; any other path is unchanged.
pub fn plugin_visible_path(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/plugins/") else {
        return path.to_owned();
    };
    match rest.find('/') {
        Some(i) => rest.get(i..).unwrap_or("/").to_owned(),
        None => "/".to_owned(),
    }
}

/// The dispatcher.
///
/// Which key signs: for our bridge, which verifies with its whole ring, the callback ring's
/// signing key (the pinned one, else the newest). For the existing plugin, which holds one
/// secret, the key it last accepted while that key is in the ring, else the ring's signing
/// key; on a 401 the other keys of the ring are tried at once, newest first, and the one that
/// is accepted is remembered. Following the runbook on the callback secret (add the new key,
/// edit the plugin, delete the old key) so costs at most one refused delivery per switch and
/// loses none. `POST /admin/keys/callback-signing` (`jit keys use`) switches at once: run at
/// the moment of the plugin edit, it makes the switch refuse nothing.
#[derive(Debug)]
pub struct Dispatcher {
    st: AppState,
    cfg: DispatchConfig,
    http: reqwest::Client,
    /// This dispatcher's name in callback leases.
    owner: String,
}

/// How long a callback being delivered is leased: longer than every key's attempt at the
/// outbound client's 10 s limit.
const DELIVERY_LEASE_MS: i64 = 120_000;

/// Why one delivery attempt failed.
enum Failure {
    /// The receiver refused the signature: another key may work.
    Refused(String),
    /// Anything else: retried later.
    Other(String),
}

/// Delay before retry number `attempts + 1`: 1 s doubling to at most five minutes.
fn backoff(attempts: i64) -> i64 {
    i64::try_from(crate::lifecycle::backoff(attempts).as_millis()).unwrap_or(300_000)
}

impl Dispatcher {
    /// A dispatcher (no redirects followed: a redirect could lead anywhere).
    pub fn new(st: AppState, cfg: DispatchConfig) -> Result<Arc<Self>, reqwest::Error> {
        let http = jit_http::outbound::client(cfg.allow_link_local)?;
        let mut id = [0u8; 6];
        let _ = getrandom::fill(&mut id);
        let owner = format!("dispatcher:{}:{}", std::process::id(), hex::encode(id));
        Ok(Arc::new(Self {
            st,
            cfg,
            http,
            owner,
        }))
    }

    /// Delivers every callback due now (the next one of each request); returns how many were
    /// delivered.
    pub async fn run_due(&self) -> Result<usize, StoreError> {
        let mut delivered = 0;
        // Each pass delivers the next event of every request; a delivered event makes the
        // request's following one due, so repeat while passes deliver.
        for _ in 0..100 {
            let n = self.run_pass().await?;
            delivered += n;
            if n == 0 {
                break;
            }
        }
        Ok(delivered)
    }

    async fn run_pass(&self) -> Result<usize, StoreError> {
        let now = crate::effects_ms(self.st.clock.now());
        let due = self.st.store.due_callbacks(now, 100).await?;
        let mut delivered = 0;
        for ev in due {
            // Leased to this dispatcher while it delivers: another server on the database skips
            // it (and takes it over if this one dies mid-delivery, once the lease runs out).
            let now = crate::effects_ms(self.st.clock.now());
            if !self
                .st
                .store
                .claim_callback(&ev.event_id, &self.owner, now + DELIVERY_LEASE_MS, now)
                .await?
            {
                continue;
            }
            match self.deliver(&ev).await {
                Ok(()) => {
                    self.st
                        .store
                        .callback_delivered(&ev.event_id, crate::effects_ms(self.st.clock.now()))
                        .await?;
                    self.st.metrics.callback_deliveries.inc(&["delivered"]);
                    delivered += 1;
                }
                Err(e) => {
                    let now = crate::effects_ms(self.st.clock.now());
                    let max_age = i64::try_from(self.cfg.max_age.as_millis()).unwrap_or(i64::MAX);
                    let dead = now - ev.created_ms >= max_age;
                    self.st.metrics.callback_deliveries.inc(&[if dead {
                        "dead"
                    } else {
                        "failed"
                    }]);
                    if dead {
                        tracing::error!(event_id = %ev.event_id, request_id = %ev.request_id, attempts = ev.attempts + 1,
                            error = %e, "callback undeliverable for too long; kept as a dead letter (GET /callbacks?status=DEAD)");
                    } else {
                        tracing::warn!(event_id = %ev.event_id, request_id = %ev.request_id, attempts = ev.attempts + 1, error = %e, "callback delivery failed; will retry");
                    }
                    self.st
                        .store
                        .callback_failed(&ev.event_id, now + backoff(ev.attempts), &e, dead)
                        .await?;
                }
            }
        }
        Ok(delivered)
    }

    /// The keys to try, in order (see [`Dispatcher`]).
    fn candidates(&self) -> Vec<Arc<KeyEntry>> {
        let ring = self.st.callback_ring.current();
        let now = self.st.clock.now();
        let first = ring.signing_key(now).cloned();
        if self.cfg.existing_plugin.is_none() {
            return first.into_iter().collect();
        }
        let mut out: Vec<Arc<KeyEntry>> = Vec::new();
        if let Ok(mut acc) = self.st.callback_key.lock() {
            let pin = ring.pinned_signing_key().cloned();
            if pin.is_some() && pin != acc.pin {
                // The operator switched the pin: follow it now.
                acc.key = pin.clone();
            }
            acc.pin = pin;
            if let Some(k) = acc.key.as_ref().and_then(|id| ring.get(id.as_str())) {
                out.push(Arc::clone(k));
            }
        }
        out.extend(first);
        out.extend(ring.signers_newest_first(now));
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|k| seen.insert(k.id().clone()));
        out
    }

    async fn deliver(&self, ev: &OutboxEvent) -> Result<(), String> {
        let keys = self.candidates();
        if keys.is_empty() {
            return Err("the callback ring has no signing key".into());
        }
        let mut last = String::new();
        for (i, key) in keys.iter().enumerate() {
            match self.attempt(ev, key).await {
                Ok(()) => {
                    if self.cfg.existing_plugin.is_some()
                        && let Ok(mut acc) = self.st.callback_key.lock()
                        && acc.key.as_ref() != Some(key.id())
                    {
                        tracing::info!(key_id = %key.id().as_str(), "the callback receiver accepts this key; signing with it from now on");
                        acc.key = Some(key.id().clone());
                    }
                    return Ok(());
                }
                Err(Failure::Refused(e)) if self.cfg.existing_plugin.is_some() => {
                    tracing::warn!(event_id = %ev.event_id, key_id = %key.id().as_str(), attempt = i + 1,
                        "the callback receiver refused the signature; trying the ring's next key");
                    last = e;
                }
                Err(Failure::Refused(e) | Failure::Other(e)) => return Err(e),
            }
        }
        Err(last)
    }

    async fn attempt(&self, ev: &OutboxEvent, key: &KeyEntry) -> Result<(), Failure> {
        let pq = match &self.cfg.existing_plugin {
            Some(p) => p.signed_path.clone(),
            None => match self.cfg.url.query() {
                Some(q) => format!("{}?{q}", self.cfg.url.path()),
                None => self.cfg.url.path().to_owned(),
            },
        };
        let nonce = new_nonce().map_err(|e| Failure::Other(e.to_string()))?;
        let input = SignInput {
            version: self.cfg.version,
            audience: Audience::Bridge,
            request: RequestParts {
                method: "POST",
                path_and_query: &pq,
                body: ev.payload.as_bytes(),
            },
            timestamp: self.st.clock.unix(),
            nonce: &nonce,
        };
        let mut rb = self
            .http
            .post(self.cfg.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-JIT-Event-ID", &ev.event_id)
            .body(ev.payload.clone());
        for (k, v) in sign(key, &input) {
            // v1's canonical string does not cover the key id, so the plugin's fixed id can
            // stand in for the ring's.
            if self.cfg.existing_plugin.is_some() && k.eq_ignore_ascii_case(HEADER_KEY_ID) {
                rb = rb.header(k, PLUGIN_CALLBACK_KEY_ID);
            } else {
                rb = rb.header(k, v);
            }
        }
        // Without the URL: a callback URL can carry a token in its query.
        let resp = rb
            .send()
            .await
            .map_err(|e| Failure::Other(jit_http::outbound::describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            Err(Failure::Refused(format!("the receiver answered {status}")))
        } else {
            Err(Failure::Other(format!("the receiver answered {status}")))
        }
    }

    /// Delivers every `interval` (and when woken) until `shutdown`.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        crate::serve::every(Duration::from_millis(500), shutdown, false, move || {
            let this = Arc::clone(&this);
            async move {
                if let Err(e) = this.run_due().await {
                    tracing::error!(error = %e, "callback dispatch failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_sees_the_path_without_its_prefix() {
        assert_eq!(
            plugin_visible_path("/plugins/com.dgwhited.jit-access/webhook"),
            "/webhook"
        );
        assert_eq!(plugin_visible_path("/plugins/x"), "/");
        assert_eq!(plugin_visible_path("/jit/webhook"), "/jit/webhook");
        let u =
            reqwest::Url::parse("https://mm.example.com/plugins/com.dgwhited.jit-access/webhook")
                .unwrap();
        assert_eq!(PluginReceiver::new(&u, None).signed_path, "/webhook");
        assert_eq!(
            PluginReceiver::new(&u, Some("/hook".into())).signed_path,
            "/hook"
        );
    }

    #[tokio::test]
    async fn link_local_and_metadata_addresses_are_refused_unless_dangerously_allowed() {
        for bad in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
        ] {
            let u = reqwest::Url::parse(bad).unwrap();
            let e = check_url(&u, false).await.unwrap_err().to_string();
            assert!(e.contains("dangerous_allow_link_local_callbacks"), "{e}");
            assert!(check_url(&u, true).await.is_ok());
        }
        for ok in ["http://127.0.0.1:8065/jit/webhook", "https://10.0.0.5/hook"] {
            assert!(
                check_url(&reqwest::Url::parse(ok).unwrap(), false)
                    .await
                    .is_ok(),
                "{ok}"
            );
        }
        assert!(
            check_url(&reqwest::Url::parse("ftp://x/").unwrap(), false)
                .await
                .is_err()
        );
    }
}
