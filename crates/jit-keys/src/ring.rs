//! The ring a running process verifies and signs with, kept current by reloading.

use crate::source::{KeySource, LoadError};
use arc_swap::ArcSwap;
use jit_proto::Clock;
use jit_proto::keyring::{KeyEntry, KeyId, KeyRing};
use jit_proto::nonce::NonceStore;
use jit_proto::sign::{HeaderLookup, Rejection, RequestParts, Verified, Verifier};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How a ring reloads.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// A name for logs and metrics: `backend` or `callback`.
    pub name: &'static str,
    /// Full reload period (default 60 s).
    pub refresh_interval: Duration,
    /// How often a file source is checked for changes (default 2 s; a `stat`, not a read).
    pub file_poll_interval: Duration,
    /// Minimum time between reloads triggered by unknown key ids (default 10 s).
    pub unknown_key_reload_interval: Duration,
    /// The pinned signing key id, if configured (the runbook's "Signing Key ID").
    pub signing_key_id: Option<KeyId>,
}

impl RingConfig {
    /// Defaults for the ring called `name`.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            refresh_interval: Duration::from_secs(60),
            file_poll_interval: Duration::from_secs(2),
            unknown_key_reload_interval: Duration::from_secs(10),
            signing_key_id: None,
        }
    }
}

/// A snapshot of a ring's health, for `/readyz`, metrics and `jit keys status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStatus {
    /// The ring's name.
    pub name: &'static str,
    /// Where it loads from.
    pub source: String,
    /// True once a load has succeeded.
    pub loaded: bool,
    /// Increments on every successful load.
    pub generation: u64,
    /// Keys in the ring in use.
    pub key_count: usize,
    /// Successful loads.
    pub loads: u64,
    /// Failed loads.
    pub load_failures: u64,
    /// Unix seconds of the last successful load (0 if none).
    pub last_success_unix: i64,
}

/// How key use is recorded, which is what makes "no verifier used this key within the
/// overlap" a fact that `jit keys retire` can rely on:
/// - a verifier records a key's first use at once, every use at most [`USAGE_FLUSH_SECS`]
///   later, and everything on shutdown;
/// - each record is also a heartbeat (key id [`USAGE_HEARTBEAT_KEY`]), so a verifier that has
///   reported within [`USAGE_LIVE_SECS`] is known to be running and reporting.
///
/// So a running verifier's recorded last use lags the truth by at most `USAGE_FLUSH_SECS`
/// (plus one more flush for a process killed without its shutdown flush): retiring is safe
/// once `last use + overlap + USAGE_MARGIN_SECS` has passed.
pub const USAGE_FLUSH_SECS: i64 = 60;
/// See [`USAGE_FLUSH_SECS`].
pub const USAGE_MARGIN_SECS: i64 = 2 * USAGE_FLUSH_SECS;
/// See [`USAGE_FLUSH_SECS`].
pub const USAGE_LIVE_SECS: i64 = 3 * USAGE_FLUSH_SECS;
/// The key id under which a verifier's heartbeat is kept (never a valid key id).
pub const USAGE_HEARTBEAT_KEY: &str = "*";

/// A verified request, and whether it was the first use of its key in this process.
#[derive(Debug, Clone)]
pub struct VerifiedUse {
    /// What the verifier established.
    pub verified: Verified,
    /// The key's first use here: record it now.
    pub first_use: bool,
}

/// A key ring that reloads itself and never replaces a good ring with a failed load.
pub struct RefreshingRing {
    config: RingConfig,
    source: Arc<dyn KeySource>,
    clock: Arc<dyn Clock>,
    current: ArcSwap<KeyRing>,
    loaded: AtomicBool,
    loads: AtomicU64,
    failures: AtomicU64,
    last_success: AtomicI64,
    last_unknown_reload_ms: AtomicI64,
    reload_lock: tokio::sync::Mutex<()>,
    generation: watch::Sender<u64>,
    sibling: OnceLock<Weak<RefreshingRing>>,
    /// Key id → last time (unix seconds) it verified a request here. In memory; whoever owns a
    /// store persists it coarsely (at most once a minute per key).
    usage: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    /// The warnings of the last load (failure, short keys, missing pinned key): each is logged
    /// when it first appears, not again at every reload while it stays true.
    notes: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl fmt::Debug for RefreshingRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingRing")
            .field("status", &self.status())
            .finish()
    }
}

impl RefreshingRing {
    /// A ring that has not loaded yet (it rejects everything with `no_keys` until it does).
    pub fn new(config: RingConfig, source: Arc<dyn KeySource>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            config,
            source,
            clock,
            current: ArcSwap::from_pointee(KeyRing::empty()),
            loaded: AtomicBool::new(false),
            loads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_success: AtomicI64::new(0),
            last_unknown_reload_ms: AtomicI64::new(i64::MIN / 2),
            reload_lock: tokio::sync::Mutex::new(()),
            generation: watch::channel(0).0,
            sibling: OnceLock::new(),
            usage: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            notes: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// Declares that `self` and `other` must never share a secret (the bridge-to-backend and
    /// the callback rings). A reload that would make them share one is refused.
    pub fn must_not_share_with(self: &Arc<Self>, other: &Arc<Self>) {
        let _ = self.sibling.set(Arc::downgrade(other));
        let _ = other.sibling.set(Arc::downgrade(self));
    }

    /// The ring's settings.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The ring in use now.
    pub fn current(&self) -> Arc<KeyRing> {
        self.current.load_full()
    }

    /// The key that signs now, if any.
    pub fn signing_key(&self) -> Option<Arc<KeyEntry>> {
        self.current.load().signing_key(self.clock.now()).cloned()
    }

    /// Receives the generation number after every successful load.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A snapshot of counters and state.
    pub fn status(&self) -> RingStatus {
        RingStatus {
            name: self.config.name,
            source: self.source.describe(),
            loaded: self.loaded.load(Ordering::SeqCst),
            generation: *self.generation.borrow(),
            key_count: self.current.load().len(),
            loads: self.loads.load(Ordering::Relaxed),
            load_failures: self.failures.load(Ordering::Relaxed),
            last_success_unix: self.last_success.load(Ordering::Relaxed),
        }
    }

    /// Loads the ring once (the one-step function the loop and the tests call). On failure the
    /// last good ring stays in use, and the failure is counted. Each warning is logged once,
    /// and again only when the source changes, not at every reload while it persists.
    pub async fn refresh(&self) -> Result<(), LoadError> {
        let _guard = self.reload_lock.lock().await;
        // An edited file is news: whatever it still gets wrong is said again.
        if self.source.changed()
            && let Ok(mut last) = self.notes.lock()
        {
            last.clear();
        }
        let mut notes = std::collections::BTreeSet::new();
        let result = match self.load_checked(&mut notes).await {
            Ok(ring) => {
                for id in ring.short_keys() {
                    notes.insert(format!(
                        "key {id} is shorter than 32 bytes; rotate it with `jit keys rotate`"
                    ));
                }
                let count = ring.len();
                self.current.store(Arc::new(ring));
                self.loaded.store(true, Ordering::SeqCst);
                self.loads.fetch_add(1, Ordering::Relaxed);
                self.last_success
                    .store(self.clock.unix(), Ordering::Relaxed);
                self.generation.send_modify(|g| *g += 1);
                tracing::debug!(ring = self.config.name, keys = count, "key ring loaded");
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                notes.insert(format!(
                    "key ring load failed; keeping the last good ring: {e}"
                ));
                Err(e)
            }
        };
        self.log_new_notes(notes);
        result
    }

    fn log_new_notes(&self, notes: std::collections::BTreeSet<String>) {
        let Ok(mut last) = self.notes.lock() else {
            return;
        };
        for note in notes.difference(&last) {
            tracing::warn!(ring = self.config.name, "{note}");
        }
        if !last.is_empty() && notes.is_empty() {
            tracing::info!(ring = self.config.name, "key ring loaded cleanly again");
        }
        *last = notes;
    }

    async fn load_checked(
        &self,
        notes: &mut std::collections::BTreeSet<String>,
    ) -> Result<KeyRing, LoadError> {
        let mut ring = self.source.load().await?;
        if !ring.pin_if_present(self.config.signing_key_id.as_ref()) {
            notes.insert(format!(
                "the pinned signing key {} is not in the ring (removed?); the newest key signs instead",
                self.config
                    .signing_key_id
                    .as_ref()
                    .map_or("?", KeyId::as_str)
            ));
        }
        if let Some(other) = self.sibling.get().and_then(Weak::upgrade)
            && let Some((a, b)) = ring.shared_secret_with(&other.current())
        {
            return Err(LoadError::SharedSecret(format!(
                "key {a} of the {} ring has the same secret as key {b} of the {} ring; \
                 the two rings must use different secrets",
                self.config.name, other.config.name
            )));
        }
        Ok(ring)
    }

    /// Verifies a request. When the key id is unknown, reloads once (at most every
    /// `unknown_key_reload_interval`) and tries again, so a freshly added key works at once.
    pub async fn verify(
        &self,
        verifier: &Verifier,
        headers: &(impl HeaderLookup + ?Sized),
        req: &RequestParts<'_>,
        nonces: &dyn NonceStore,
    ) -> Result<VerifiedUse, Rejection> {
        let r = self
            .verify_once_or_reload(verifier, headers, req, nonces)
            .await;
        r.map(|v| {
            let first_use = self.note_use(v.key_id.as_str());
            VerifiedUse {
                verified: v,
                first_use,
            }
        })
    }

    /// Notes a verified use; true when it is the first use of that key here, which the owner
    /// records at once (later uses are recorded with the periodic flush).
    fn note_use(&self, key_id: &str) -> bool {
        let now = self.clock.unix();
        let Ok(mut u) = self.usage.lock() else {
            return false;
        };
        match u.get_mut(key_id) {
            Some(t) => {
                *t = (*t).max(now);
                false
            }
            None => {
                u.insert(key_id.to_owned(), now);
                true
            }
        }
    }

    /// When each key last verified a request in this process (unix seconds).
    pub fn usage(&self) -> Vec<(String, i64)> {
        self.usage
            .lock()
            .map(|u| u.iter().map(|(k, t)| (k.clone(), *t)).collect())
            .unwrap_or_default()
    }

    async fn verify_once_or_reload(
        &self,
        verifier: &Verifier,
        headers: &(impl HeaderLookup + ?Sized),
        req: &RequestParts<'_>,
        nonces: &dyn NonceStore,
    ) -> Result<Verified, Rejection> {
        let ring = self.current.load_full();
        let first = verifier
            .verify(&ring, headers, req, self.clock.unix(), nonces)
            .await;
        if first != Err(Rejection::UnknownKey) || !self.may_reload_for_unknown_key() {
            return first;
        }
        tracing::info!(
            ring = self.config.name,
            "unknown key id; reloading the ring once"
        );
        if self.refresh().await.is_err() {
            return first;
        }
        let ring = self.current.load_full();
        verifier
            .verify(&ring, headers, req, self.clock.unix(), nonces)
            .await
    }

    fn may_reload_for_unknown_key(&self) -> bool {
        let now = self.clock.now().unix_timestamp_nanos() / 1_000_000;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let min =
            i64::try_from(self.config.unknown_key_reload_interval.as_millis()).unwrap_or(i64::MAX);
        let last = self.last_unknown_reload_ms.load(Ordering::SeqCst);
        now.saturating_sub(last) >= min
            && self
                .last_unknown_reload_ms
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Reloads every `refresh_interval`, and sooner when a file source changes (checked every
    /// `file_poll_interval`), until `shutdown` turns true or its sender is dropped.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let poll = self
            .config
            .file_poll_interval
            .min(self.config.refresh_interval);
        let mut last_full = tokio::time::Instant::now();
        crate::periodic::every(poll, shutdown, false, move || {
            let due = last_full.elapsed() >= this.config.refresh_interval;
            if due {
                last_full = tokio::time::Instant::now();
            }
            let this = Arc::clone(&this);
            async move {
                if due || this.source.changed() {
                    let _ = this.refresh().await;
                }
            }
        })
    }
}

/// Prometheus text for key rings: keys in use, loads, failed loads, age of the ring in use, and
/// when each key last verified a request here. Key ids are not secret; secrets never appear.
pub fn prometheus(rings: &[&RefreshingRing], now_unix: i64) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let st: Vec<RingStatus> = rings.iter().map(|r| r.status()).collect();
    metric(
        "jit_key_ring_keys",
        "gauge",
        "Keys in the ring in use.",
        st.iter()
            .map(|s| (format!("ring=\"{}\"", s.name), s.key_count.to_string()))
            .collect(),
    );
    metric(
        "jit_key_ring_loads_total",
        "counter",
        "Successful ring loads.",
        st.iter()
            .map(|s| (format!("ring=\"{}\"", s.name), s.loads.to_string()))
            .collect(),
    );
    metric(
        "jit_key_ring_load_failures_total",
        "counter",
        "Failed ring loads (the last good ring stays in use).",
        st.iter()
            .map(|s| (format!("ring=\"{}\"", s.name), s.load_failures.to_string()))
            .collect(),
    );
    metric(
        "jit_key_ring_age_seconds",
        "gauge",
        "Seconds since the ring in use was loaded (-1 if it never loaded).",
        st.iter()
            .map(|s| {
                (
                    format!("ring=\"{}\"", s.name),
                    if s.loaded {
                        (now_unix - s.last_success_unix).to_string()
                    } else {
                        "-1".into()
                    },
                )
            })
            .collect(),
    );
    let mut used = Vec::new();
    for r in rings {
        for (k, t) in r.usage() {
            used.push((
                format!(
                    "ring=\"{}\",key_id=\"{}\"",
                    r.config().name,
                    k.replace(['"', '\\', '\n'], "_")
                ),
                t.to_string(),
            ));
        }
    }
    metric(
        "jit_key_last_used_timestamp_seconds",
        "gauge",
        "When each key last verified a request here.",
        used,
    );
    out
}
