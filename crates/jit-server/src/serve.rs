//! Building and running the server: store, key rings (loaded before listening), router,
//! connection limits, graceful shutdown.

use crate::config::Config;
use crate::state::AppState;
use anyhow::Context;
use jit_core::authz::Admins;
use jit_keys::{KeySource, RefreshingRing, RingConfig, SourceSpec};
use jit_proto::keyring::KeyId;
use jit_proto::nonce::{MemoryNonceStore, NonceStore};
use jit_proto::sign::{Audience, Verifier, VerifierConfig};
use jit_proto::{Clock, SystemClock};
#[allow(unused_imports)]
use jit_store::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A server that is bound and ready to serve.
#[derive(Debug)]
pub struct Server {
    /// Shared state (tests reach the store and rings through it).
    pub state: AppState,
    /// The grant lifecycle (tests drive it step by step with `run_due`).
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// The callback dispatcher, when a callback URL is configured.
    pub dispatcher: Option<Arc<crate::callbacks::Dispatcher>>,
    listener: tokio::net::TcpListener,
    /// TLS, trusted proxies and connection limits of the listener.
    edge: jit_http::Edge,
    config: Config,
    shutdown_tx: watch::Sender<bool>,
    workers: bool,
}

async fn key_source(spec: &str, config: &Config) -> anyhow::Result<Arc<dyn KeySource>> {
    let spec = SourceSpec::parse(spec).map_err(anyhow::Error::msg)?;
    Ok(jit_keys::open_source(
        &spec,
        config.aws_region.clone(),
        config.aws_endpoint_url.clone(),
    )
    .await)
}

/// The access provider `config.grants` names (without the metrics wrapper): what `jit server`
/// runs and what `jit doctor` checks with [`jit_grants::AccessProvider::check`].
pub async fn build_provider(
    config: &Config,
) -> anyhow::Result<Arc<dyn jit_grants::AccessProvider>> {
    Ok(match config.grants.provider.as_str() {
        "command" => {
            let mut parts = config.grants.command.iter();
            let program = parts.next().context("grants.command is empty")?;
            Arc::new(jit_grants::CommandProvider::new(
                program,
                parts.cloned().collect(),
                Duration::from_secs(config.grants.command_timeout_secs),
            ))
        }
        "aws-identity-center" => {
            let sdk = jit_keys::aws_sdk_config(
                config.aws_region.clone(),
                config.aws_endpoint_url.clone(),
            )
            .await;
            let instance = config
                .grants
                .instance_arn
                .clone()
                .zip(config.grants.identity_store_id.clone());
            Arc::new(
                jit_grants::IdentityCenterProvider::new(
                    &sdk,
                    instance,
                    jit_grants::Polling::default(),
                )
                .with_default_permission_set(config.grants.default_permission_set_arn.clone())
                .with_active_session_revocation(config.grants.revoke_active_sessions),
            )
        }
        _ => Arc::new(jit_grants::DryRunProvider::new()),
    })
}

impl Server {
    /// Opens the store, loads the key rings, binds the listener. Refuses to start on a
    /// configuration that cannot work (rings that share a secret, an unreachable database).
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        Self::build_with(config, clock, None).await
    }

    /// [`Server::build`] with a given access provider (tests pass a `DryRunProvider` they
    /// inspect).
    pub async fn build_with(
        config: Config,
        clock: Arc<dyn Clock>,
        provider: Option<Arc<dyn jit_grants::AccessProvider>>,
    ) -> anyhow::Result<Self> {
        let Backend {
            state,
            lifecycle,
            dispatcher,
            config,
        } = Backend::prepare(config, clock, provider).await?;
        let edge = jit_http::Edge {
            limits: jit_http::Limits {
                max_connections: config.max_connections,
                ..jit_http::Limits::default()
            },
            tls: jit_http::tls::from_config(&config.tls, Duration::from_secs(2))
                .map_err(anyhow::Error::msg)
                .context("TLS")?,
            trusted_proxies: jit_http::TrustedProxies::parse(&config.trusted_proxies)
                .map_err(anyhow::Error::msg)?,
        };
        let addr: SocketAddr = config.listen.parse().context("listen address")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Self {
            state,
            lifecycle,
            dispatcher,
            listener,
            edge,
            config,
            shutdown_tx,
            workers: true,
        })
    }
}

/// Everything the backend is but its listener and loops: the state (store, rings, provider
/// health), the grant lifecycle and the callback dispatcher. `jit server` binds a listener and
/// runs loops around it; the Lambda function (`jit-lambda`) runs the same parts once per
/// invocation.
#[derive(Debug)]
pub struct Backend {
    /// Shared state.
    pub state: AppState,
    /// The grant lifecycle.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// The callback dispatcher, when a callback URL is configured.
    pub dispatcher: Option<Arc<crate::callbacks::Dispatcher>>,
    /// The configuration it was built from.
    pub config: Config,
}

impl Backend {
    /// The API as `jit server` serves it: the router with the per-request time limit and
    /// request metrics.
    pub fn app(&self) -> axum::Router {
        jit_http::harden(
            crate::api::router(self.state.clone()),
            Duration::from_secs(self.config.request_timeout_secs),
            self.state.http_metrics.clone(),
        )
    }

    /// What `jit server`'s loops do over a minute, done once: reload the key rings, recreate
    /// missing jobs and run what is due, deliver due callbacks, record key use, prune old
    /// callback rows. Returns the store's counts for metrics (none when the store failed).
    pub async fn tick(&self) -> Option<jit_store::Gauges> {
        for ring in [&self.state.backend_ring, &self.state.callback_ring] {
            if let Err(e) = ring.refresh().await {
                tracing::warn!(ring = ring.config().name, error = %e, "key ring reload failed; the last good ring stays");
            }
        }
        match self.lifecycle.reconcile().await {
            Ok(n) if n > 0 => tracing::info!(jobs = n, "tick: reconciled and ran due jobs"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "tick: reconciler failed"),
        }
        if let Some(d) = &self.dispatcher
            && let Err(e) = d.run_due().await
        {
            tracing::error!(error = %e, "tick: callback dispatch failed");
        }
        let st = &self.state;
        record_key_use(st).await;
        prune_callbacks(
            st,
            self.config.callbacks.retention_days,
            self.config.callbacks.url.is_none(),
        )
        .await;
        let now_ms = st.clock.now_ms();
        st.store
            .gauges(now_ms - crate::metrics::LATE_AFTER_MS)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "tick: store counts failed"))
            .ok()
    }

    /// Reloads each key ring whose last successful load is older than its `refresh_interval`:
    /// what the server's reload loop does, for a process that only runs while it answers (an
    /// execution environment the tick never reaches still picks up a rotated key, or drops a
    /// removed one, within the interval).
    pub async fn refresh_stale_rings(&self) {
        let now = self.state.clock.unix();
        for ring in [&self.state.backend_ring, &self.state.callback_ring] {
            let every = i64::try_from(ring.config().refresh_interval.as_secs()).unwrap_or(60);
            if now - ring.status().last_success_unix >= every
                && let Err(e) = ring.refresh().await
            {
                tracing::warn!(ring = ring.config().name, error = %e, "key ring reload failed; the last good ring stays");
            }
        }
    }

    /// Runs the jobs due now and delivers due callbacks (after an API call, or when a job's
    /// schedule fires).
    pub async fn run_due(&self) {
        if let Err(e) = self.lifecycle.run_due().await {
            tracing::error!(error = %e, "running due jobs failed");
        }
        if let Some(d) = &self.dispatcher
            && let Err(e) = d.run_due().await
        {
            tracing::error!(error = %e, "callback dispatch failed");
        }
    }

    /// Opens the store, loads the key rings, builds the provider, lifecycle and dispatcher.
    /// Refuses a configuration that cannot work (rings that share a secret, an unreachable
    /// database, a callback URL that is not allowed).
    pub async fn prepare(
        config: Config,
        clock: Arc<dyn Clock>,
        provider: Option<Arc<dyn jit_grants::AccessProvider>>,
    ) -> anyhow::Result<Self> {
        Self::prepare_with(config, clock, provider, None).await
    }

    /// [`Backend::prepare`], telling `job_hook` of every committed job change (DynamoDB
    /// stores only; the Lambda function keeps its EventBridge schedules with it).
    pub async fn prepare_with(
        config: Config,
        clock: Arc<dyn Clock>,
        provider: Option<Arc<dyn jit_grants::AccessProvider>>,
        job_hook: Option<Arc<dyn jit_store::JobHook>>,
    ) -> anyhow::Result<Self> {
        for (name, on) in [(
            "callbacks.dangerous_allow_link_local_callbacks",
            config.callbacks.dangerous_allow_link_local_callbacks,
        )] {
            if on {
                tracing::warn!(
                    setting = name,
                    "DANGEROUS setting is on: it weakens a security check"
                );
            }
        }
        let (backend_spec, callback_spec) = match (&config.keys.backend, &config.keys.callback) {
            (Some(b), Some(c)) => (b.clone(), c.clone()),
            (None, None) => {
                let created = crate::embedded::ensure_key_files(&config.data_dir, clock.now())?;
                let (b, c) = crate::embedded::key_paths(&config.data_dir);
                if !created.is_empty() {
                    tracing::info!(
                        backend_ring = %b.display(),
                        callback_ring = %c.display(),
                        "generated key rings (mode 0600); point the bridge at them: \
                         keys.backend = \"file:{}\" signs its calls, keys.callback = \"file:{}\" verifies callbacks",
                        b.display(), c.display()
                    );
                }
                (
                    format!("file:{}", b.display()),
                    format!("file:{}", c.display()),
                )
            }
            _ => anyhow::bail!(
                "configure both keys.backend and keys.callback, or neither (embedded default)"
            ),
        };
        let aws = jit_store::AwsOptions {
            region: config.aws_region.clone(),
            endpoint_url: config.aws_endpoint_url.clone(),
            job_hook,
        };
        let store = jit_store::open(&config.database_url(), &aws)
            .await
            .with_context(|| format!("opening the database {}", config.database_url_redacted()))?;
        let mut bcfg = RingConfig::new("backend");
        bcfg.refresh_interval = Duration::from_secs(config.keys.refresh_interval_secs);
        let mut ccfg = RingConfig::new("callback");
        ccfg.refresh_interval = bcfg.refresh_interval;
        ccfg.signing_key_id = config
            .keys
            .callback_signing_key_id
            .as_deref()
            .map(KeyId::parse)
            .transpose()
            .context("keys.callback_signing_key_id")?;
        let backend_ring = RefreshingRing::new(
            bcfg,
            key_source(&backend_spec, &config).await?,
            clock.clone(),
        );
        let callback_ring = RefreshingRing::new(
            ccfg,
            key_source(&callback_spec, &config).await?,
            clock.clone(),
        );
        backend_ring.must_not_share_with(&callback_ring);
        // A ring that does not load at start would answer every call 401 while /healthz said
        // ok: refuse to start instead, naming the ring and its source. (Later, a failed reload
        // keeps the last good ring.)
        for ring in [&backend_ring, &callback_ring] {
            if let Err(e) = ring.refresh().await {
                anyhow::bail!(
                    "the {} key ring did not load: {e}; the server does not start \
                     without its keys (check keys.{})",
                    ring.config().name,
                    ring.config().name,
                );
            }
        }
        if let Some((a, b)) = backend_ring
            .current()
            .shared_secret_with(&callback_ring.current())
        {
            anyhow::bail!(
                "key {a} of the backend ring and key {b} of the callback ring share a secret; use different secrets"
            );
        }
        let mut vcfg = VerifierConfig::new(Audience::Backend);
        vcfg.max_skew_secs = config.keys.max_skew_secs;
        vcfg.require_v2 = config.keys.require_v2;
        let nonces: Arc<dyn NonceStore> = if config.durable_nonces() {
            store.clone()
        } else {
            Arc::new(MemoryNonceStore::default())
        };
        let state = AppState {
            store,
            nonces,
            backend_ring,
            callback_ring,
            verifier: Verifier::new(vcfg),
            clock,
            admins: Admins::new(&config.admins),
            wake: Arc::new(tokio::sync::Notify::new()),
            auth_failures: Arc::new(jit_http::FailureLimiter::new(
                config.auth_failure_burst.max(1),
            )),
            http_metrics: {
                let m = jit_http::metrics::HttpMetrics::default();
                m.expect_refusals(
                    jit_proto::sign::Rejection::ALL.iter().map(|r| r.code()),
                    "unknown",
                );
                Arc::new(m)
            },
            metrics: Arc::new(crate::metrics::Metrics::default()),
            callback_key: Arc::default(),
            provider_health: Arc::default(),
            verifications: Arc::default(),
            verifier_name: {
                let mut id = [0u8; 4];
                let _ = getrandom::fill(&mut id);
                format!("backend:{}", hex::encode(id)).into()
            },
            callback_style: if config.existing_plugin.enabled {
                crate::effects::CallbackStyle::ExistingPlugin
            } else {
                crate::effects::CallbackStyle::Bridge
            },
            existing_plugin: config.existing_plugin.enabled.then_some(
                crate::state::ExistingPlugin {
                    unmarked_keys_are_the_plugins: config
                        .existing_plugin
                        .unmarked_keys_are_the_plugins,
                },
            ),
        };
        if config.existing_plugin.enabled {
            tracing::warn!(
                setting = "existing_plugin.enabled",
                unmarked_keys_are_the_plugins =
                    config.existing_plugin.unmarked_keys_are_the_plugins,
                "existing-plugin profile ON: callbacks go to the Go plugin (v1, key id `backend`, its statuses only); \
                 calls signed with the plugin's keys may bind, set approvers and revoke any grant (the plugin checked the user); \
                 every such call is audited with its key id"
            );
        }
        let provider: Arc<dyn jit_grants::AccessProvider> = match provider {
            Some(p) => p,
            None => build_provider(&config).await?,
        };
        tracing::info!(provider = provider.name(), "access provider");
        let provider: Arc<dyn jit_grants::AccessProvider> = Arc::new(crate::metrics::Metered::new(
            provider,
            state.metrics.clone(),
        ));
        // An unreachable provider does not stop the server (requests can still be asked for
        // and approved; grants retry), but it is said at once and /readyz stays not ready.
        state
            .provider_health
            .start(provider.clone(), state.clock.now_ms())
            .await;
        let mut owner = [0u8; 6];
        let _ = getrandom::fill(&mut owner);
        let lifecycle = crate::lifecycle::Lifecycle::new(
            state.clone(),
            provider,
            format!("{}-{}", std::process::id(), hex::encode(owner)),
            Duration::from_secs(config.reconcile_interval_secs),
            !config.database_url().starts_with("postgres"),
        );
        let dispatcher = match &config.callbacks.url {
            None => {
                tracing::info!(
                    retention_days = config.callbacks.retention_days,
                    "no callbacks.url: callback events wait in the outbox until one is configured, for retention_days at most"
                );
                None
            }
            Some(u) => {
                let url = reqwest::Url::parse(u).with_context(|| format!("callbacks.url {u:?}"))?;
                crate::callbacks::check_url(
                    &url,
                    config.callbacks.dangerous_allow_link_local_callbacks,
                )
                .await?;
                let version =
                    if config.callbacks.signature_version == 1 || config.existing_plugin.enabled {
                        jit_proto::sign::SignatureVersion::V1
                    } else {
                        jit_proto::sign::SignatureVersion::V2
                    };
                Some(crate::callbacks::Dispatcher::new(
                    state.clone(),
                    crate::callbacks::DispatchConfig {
                        url: url.clone(),
                        version,
                        max_age: Duration::from_secs(
                            config.callbacks.max_age_hours.saturating_mul(3600),
                        ),
                        allow_link_local: config.callbacks.dangerous_allow_link_local_callbacks,
                        existing_plugin: config.existing_plugin.enabled.then(|| {
                            crate::callbacks::PluginReceiver::new(
                                &url,
                                config.existing_plugin.callback_signed_path.clone(),
                            )
                        }),
                    },
                )?)
            }
        };
        Ok(Self {
            state,
            lifecycle,
            dispatcher,
            config,
        })
    }
}

impl Server {
    /// Serve the API only: no lifecycle or dispatcher loops (tests step them by hand).
    pub fn without_workers(mut self) -> Self {
        self.workers = false;
        self
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops the server when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Serves until the shutdown handle fires, then drains in-flight requests.
    pub async fn serve(self) -> anyhow::Result<()> {
        let Self {
            state,
            lifecycle,
            dispatcher,
            listener,
            edge,
            config,
            shutdown_tx,
            workers,
        } = self;
        let mut tasks = vec![
            state.backend_ring.spawn(shutdown_tx.subscribe()),
            state.callback_ring.spawn(shutdown_tx.subscribe()),
        ];
        if workers {
            if config.drift.enabled {
                let every = Duration::from_secs(config.drift.interval_secs.max(60));
                tasks.push(lifecycle.spawn_drift(
                    every,
                    config.drift.remove,
                    shutdown_tx.subscribe(),
                ));
            }
            tasks.push(lifecycle.spawn(shutdown_tx.subscribe()));
            if let Some(d) = &dispatcher {
                tasks.push(d.spawn(shutdown_tx.subscribe()));
            }
        }
        if config.durable_nonces() {
            tasks.push(spawn_nonce_purge(state.clone(), shutdown_tx.subscribe()));
        }
        tasks.push(spawn_usage_recorder(state.clone(), shutdown_tx.subscribe()));
        tasks.push(spawn_callback_pruner(
            state.clone(),
            config.callbacks.retention_days,
            config.callbacks.url.is_none(),
            shutdown_tx.subscribe(),
        ));
        let metrics = state.http_metrics.clone();
        let app = jit_http::harden(
            crate::api::router(state),
            Duration::from_secs(config.request_timeout_secs),
            metrics,
        );
        let mut rx = shutdown_tx.subscribe();
        jit_http::serve(listener, app, edge, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await?;
        let _ = shutdown_tx.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

pub(crate) use jit_keys::every;

/// Prunes callback rows past the retention, at start and every hour: delivered and dead ones
/// (the audit trail keeps the record), and with no callbacks.url, undelivered ones too.
fn spawn_callback_pruner(
    state: AppState,
    retention_days: u64,
    undelivered: bool,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    every(Duration::from_secs(3600), shutdown, false, move || {
        let state = state.clone();
        async move { prune_callbacks(&state, retention_days, undelivered).await }
    })
}

/// Deletes expired durable nonces once a minute.
fn spawn_nonce_purge(
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    every(Duration::from_secs(60), shutdown, false, move || {
        let state = state.clone();
        async move {
            if let Err(e) = state.store.purge_nonces(state.clock.unix()).await {
                tracing::warn!(error = %e, "purging expired nonces failed");
            }
        }
    })
}

/// Persists when each backend-ring key last verified a request here, with this verifier's
/// heartbeat, every `USAGE_FLUSH_SECS` and once more at shutdown (first uses are recorded at
/// once by the auth layer).
fn spawn_usage_recorder(
    state: AppState,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every_secs = u64::try_from(jit_keys::USAGE_FLUSH_SECS).unwrap_or(60);
    every(Duration::from_secs(every_secs), shutdown, true, move || {
        let state = state.clone();
        async move { record_key_use(&state).await }
    })
}

/// Records the backend ring's key use and this verifier's heartbeat (failures are logged: the
/// next round records them).
async fn record_key_use(state: &AppState) {
    let mut usage = state.backend_ring.usage();
    usage.push((jit_keys::USAGE_HEARTBEAT_KEY.to_owned(), state.clock.unix()));
    if let Err(e) = state
        .store
        .record_key_usage("backend", &state.verifier_name, &usage)
        .await
    {
        tracing::warn!(error = %e, "recording key usage failed");
    }
}

/// Deletes callback rows older than the retention (and undelivered ones too with `undelivered`).
async fn prune_callbacks(state: &AppState, retention_days: u64, undelivered: bool) {
    let keep_ms = i64::try_from(retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
    let before = state.clock.now_ms().saturating_sub(keep_ms);
    match state.store.prune_callbacks(before, undelivered).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, retention_days, "pruned old callback rows"),
        Err(e) => tracing::warn!(error = %e, "pruning callback rows failed"),
    }
}

/// Runs the server until SIGTERM or ctrl-c.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    tracing::info!(
        listen = %config.listen,
        database = %config.database_url_redacted(),
        durable_nonces = config.durable_nonces(),
        require_v2 = config.keys.require_v2,
        "starting jit server"
    );
    let server = Server::build(config, clock).await?;
    let addr = server.local_addr()?;
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    tracing::info!(%addr, tls = server.edge.tls.is_some(), "listening");
    server.serve().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
