//! The bridge's HTTP endpoints: the slash command, button clicks, dialog submissions and the
//! backend's callbacks.

use crate::cards::{button, card};
use crate::client::{Dialog, MmClient};
use crate::commands::{Command, USAGE, parse};
use crate::config::BridgeConfig;
use crate::replies::{
    ActionContext, ActionReply, DialogElement, DialogReply, ErrorBody, SelectOption, SlashReply,
};
use crate::tokens::{BridgeSecret, TokenError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use jit_client::{Client, Keys, Reply, RequestQuery};
use jit_keys::{RefreshingRing, RingConfig};
use jit_proto::sign::{Audience, RequestParts, Verifier, VerifierConfig};
use jit_proto::wire::{
    ActorBody, ActorFields, ApproveBody, ApproversBody, BindBody, CallbackAck, CallbackPayload,
    CreateRequestBody, DecisionBody, ErrorCode, ExtendBody, KeyUsageReport, KeyUse, MinutesInput,
    RequestStatus, RequestView, SetPostBody, UnbindBody,
};
use jit_proto::{Clock, MemoryNonceStore};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

pub use axum::Router;

/// Largest request body the bridge reads (a dialog submission is a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Marks a response as a refused identity (bad slash token, forged button or dialog, bad
/// callback signature): the guard counts it by reason and toward the source's failure limit.
#[derive(Debug, Clone)]
struct Refused {
    reason: &'static str,
    key_id: String,
}

/// Refusals that count toward the source's failure limit: those a caller makes directly (a
/// wrong slash token, a bad callback signature). Forged buttons and dialogs arrive from
/// Mattermost's own address (any user can post an attachment whose action points here), so
/// limiting them would let one user lock everyone out; they are HMACs of 256 bits, which a
/// limit would not protect further. They are counted in the metrics all the same.
fn limits_source(reason: &str) -> bool {
    !matches!(reason, "bad_action_token" | "bad_dialog_state")
}

/// A refusal of malformed input in the API's `{"code", "message"}` shape (Mattermost shows
/// neither; they are for logs, tests and whoever calls the bridge by hand).
fn bad_input(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            code: ErrorCode::parse(code),
            message: message.into(),
        }),
    )
        .into_response()
}

/// The answer to a body the extractor refused: too large, wrong content type, or not parseable.
fn body_rejection(status: StatusCode, form: bool) -> Response {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => bad_input(
            status,
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE if form => bad_input(
            status,
            "unsupported_media_type",
            "send the slash command as application/x-www-form-urlencoded",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => bad_input(
            status,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        _ if form => bad_input(
            StatusCode::BAD_REQUEST,
            "invalid_form",
            "the body is not a valid form",
        ),
        _ => bad_input(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not valid JSON of the expected shape",
        ),
    }
}

/// A refused identity: `body` (which carries the code `reason`), marked for the guard.
/// `key_id` is the claimed key when it is in the ring, `unknown` when not, `none` for tokens.
fn refused<B: serde::Serialize>(
    status: StatusCode,
    body: B,
    reason: &'static str,
    key_id: &str,
) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.extensions_mut().insert(Refused {
        reason,
        key_id: key_id.to_owned(),
    });
    resp
}

/// In front of every route that proves an identity: a source over its failure burst gets 429
/// `too_many_auth_failures` for the rest of the minute; refusals are counted.
async fn guard(
    State(b): State<Bridge>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let me = &b.inner;
    let source = jit_http::source_ip(req.extensions());
    let now = me.now();
    if let Some(ip) = source
        && me.limiter.blocked(ip, now)
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(ErrorBody {
                code: ErrorCode::TooManyAuthFailures,
                message: "too many failed attempts from this address; wait a minute".into(),
            }),
        )
            .into_response();
    }
    let resp = next.run(req).await;
    if let Some(r) = resp.extensions().get::<Refused>() {
        me.http.auth_failure(r.reason, &r.key_id);
        if let Some(ip) = source
            && limits_source(r.reason)
        {
            me.limiter.failed(ip, now);
        }
    }
    resp
}

/// How many callback event ids are remembered for dedupe.
const SEEN_EVENTS: usize = 100_000;

/// The bridge.
#[derive(Debug, Clone)]
pub struct Bridge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: BridgeConfig,
    mm: MmClient,
    backend: Client,
    /// Verifies callbacks.
    callback_ring: Arc<RefreshingRing>,
    /// Signs calls to the backend.
    backend_ring: Arc<RefreshingRing>,
    verifier: Verifier,
    /// This bridge's name as a verifier of the callback ring, in key-use reports.
    usage_name: String,
    /// Which effects of each callback are done (across redeliveries and restarts).
    journal: crate::journal::Journal,
    /// Card posting, one request at a time, so concurrent submissions of one form post one card.
    posting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    nonces: MemoryNonceStore,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    secret: BridgeSecret,
    clock: Arc<dyn Clock>,
    bot_id: tokio::sync::OnceCell<String>,
    /// Configured tokens and those in the slash tokens file, read again when it changes.
    slash_tokens: crate::slash_tokens::SlashTokens,
    http: Arc<jit_http::metrics::HttpMetrics>,
    limiter: jit_http::FailureLimiter,
}

fn ephemeral(text: impl Into<String>) -> Response {
    Json(SlashReply::text(text)).into_response()
}

fn message_of<T>(a: &Reply<T>) -> String {
    a.message().unwrap_or("the backend refused").to_owned()
}

impl Bridge {
    /// Loads the key rings and builds the bridge.
    pub async fn build(cfg: BridgeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // Both clients' resolvers also refuse these addresses for names; a literal address in
        // the URL is refused here.
        for (name, url) in [
            ("mattermost_url", &cfg.mattermost_url),
            ("backend_url", &cfg.backend_url),
        ] {
            jit_http::outbound::check_url(url)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        let source = |spec: &str| {
            let spec = jit_keys::SourceSpec::parse(spec).map_err(anyhow::Error::msg);
            let (region, endpoint) = (cfg.aws_region.clone(), cfg.aws_endpoint_url.clone());
            async move { anyhow::Ok(jit_keys::open_source(&spec?, region, endpoint).await) }
        };
        let mut bcfg = RingConfig::new("backend");
        bcfg.refresh_interval = std::time::Duration::from_secs(cfg.refresh_interval_secs);
        bcfg.signing_key_id = cfg
            .backend_signing_key_id
            .as_deref()
            .map(jit_proto::keyring::KeyId::parse)
            .transpose()?;
        let mut ccfg = RingConfig::new("callback");
        ccfg.refresh_interval = bcfg.refresh_interval;
        let backend_ring =
            RefreshingRing::new(bcfg, source(&cfg.backend_keys).await?, clock.clone());
        let callback_ring =
            RefreshingRing::new(ccfg, source(&cfg.callback_keys).await?, clock.clone());
        backend_ring.must_not_share_with(&callback_ring);
        // As for the server: without its keys the bridge could only refuse every callback and
        // fail every backend call, so it does not start.
        for r in [&backend_ring, &callback_ring] {
            if let Err(e) = r.refresh().await {
                anyhow::bail!(
                    "the {} key ring did not load: {e}; the bridge does not start without its keys",
                    r.config().name
                );
            }
        }
        let backend = Client::new(
            &cfg.backend_url,
            Keys::Refreshing(backend_ring.clone()),
            clock.clone(),
        )?;
        let mm = MmClient::new(&cfg.mattermost_url, Zeroizing::new(cfg.bot_token.clone()))?;
        let secret = BridgeSecret::new(cfg.bridge_secret()?.to_vec());
        let slash_tokens =
            crate::slash_tokens::SlashTokens::open(&cfg.slash_tokens, cfg.slash_tokens_path())?;
        if slash_tokens.count() == 0 {
            tracing::warn!(
                file = %slash_tokens.path().display(),
                "no slash command token yet: slash commands are refused until `jit mattermost setup` \
                 writes one into the slash tokens file (picked up within 2 s, no restart)"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mm,
                backend,
                callback_ring,
                backend_ring,
                verifier: Verifier::new(VerifierConfig::new(Audience::Bridge)),
                journal: crate::journal::Journal::open(Some(&cfg.data_dir)).map_err(|e| {
                    anyhow::anyhow!(
                        "opening the callback journal in {}: {e}",
                        cfg.data_dir.display()
                    )
                })?,
                posting: Mutex::new(HashMap::new()),
                usage_name: {
                    let mut id = [0u8; 4];
                    let _ = getrandom::fill(&mut id);
                    format!("bridge:{}", hex::encode(id))
                },
                nonces: MemoryNonceStore::default(),
                seen: Mutex::new((HashSet::new(), VecDeque::new())),
                secret,
                clock,
                bot_id: tokio::sync::OnceCell::new(),
                slash_tokens,
                http: {
                    let m = jit_http::metrics::HttpMetrics::default();
                    m.expect_refusals(
                        jit_proto::sign::Rejection::ALL.iter().map(|r| r.code()),
                        "unknown",
                    );
                    m.expect_refusals(
                        ["bad_slash_token", "bad_action_token", "bad_dialog_state"],
                        "none",
                    );
                    Arc::new(m)
                },
                limiter: jit_http::FailureLimiter::new(cfg.auth_failure_burst),
                cfg,
            }),
        })
    }

    /// Starts the key rings' reload loops, the slash tokens file's (looked at every 2 s), and
    /// the once-a-minute report of which callback keys verified callbacks here (the backend
    /// keeps it for `jit keys status`).
    pub fn spawn_rings(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let me = self.inner.clone();
        let every_secs = u64::try_from(jit_keys::USAGE_FLUSH_SECS).unwrap_or(60);
        let reporter = jit_keys::every(
            std::time::Duration::from_secs(every_secs),
            shutdown.clone(),
            true,
            move || {
                let me = me.clone();
                async move {
                    if let Err(e) = me.report_usage(&me.usage_name).await {
                        tracing::warn!(error = %e, "reporting key usage failed");
                    }
                }
            },
        );
        let me = self.inner.clone();
        let slash_tokens = jit_keys::every(
            crate::slash_tokens::POLL_INTERVAL,
            shutdown.clone(),
            false,
            move || {
                me.slash_tokens.reload_if_changed();
                std::future::ready(())
            },
        );
        vec![
            self.inner.backend_ring.spawn(shutdown.clone()),
            self.inner.callback_ring.spawn(shutdown),
            reporter,
            slash_tokens,
        ]
    }

    /// Reports callback key use to the backend now (the loop calls it every minute).
    pub async fn report_usage(&self, verifier: &str) -> anyhow::Result<()> {
        self.inner.report_usage(verifier).await
    }

    /// Serves the bridge on `listener` until `shutdown` completes, then lets open connections
    /// finish. Limits: `max_connections` connections, request heads of 16 KiB and 64 headers,
    /// 10 s to send a head ([`jit_http::Limits`]); HTTPS when `tls` is set (a pair that does not
    /// load refuses to serve); `X-Forwarded-For` believed from `trusted_proxies` only.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let cfg = &self.inner.cfg;
        let edge = jit_http::Edge {
            limits: jit_http::Limits {
                max_connections: cfg.max_connections,
                ..jit_http::Limits::default()
            },
            tls: jit_http::tls::from_config(&cfg.tls, std::time::Duration::from_secs(2))
                .map_err(std::io::Error::other)?,
            trusted_proxies: jit_http::TrustedProxies::parse(&cfg.trusted_proxies)
                .map_err(std::io::Error::other)?,
        };
        jit_http::serve(listener, self.router(), edge, shutdown).await
    }

    /// The routes Mattermost and the backend call, with the body size limit, the time limit
    /// per request, the failure limit, metrics and the request log.
    pub fn router(&self) -> Router {
        let proven = Router::new()
            .route("/mattermost/command", post(command))
            .route("/mattermost/action", post(action))
            .route("/mattermost/dialog", post(dialog))
            .route("/jit/webhook", post(webhook))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), guard));
        let app = Router::new()
            .route(
                "/healthz",
                get(|| async {
                    Json(jit_proto::wire::Health {
                        status: "ok".into(),
                    })
                }),
            )
            .route("/metrics", get(metrics))
            .merge(proven)
            .fallback(|| async {
                bad_input(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
            })
            .method_not_allowed_fallback(|| async {
                bad_input(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this endpoint takes POST",
                )
            })
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone());
        jit_http::harden(
            app,
            std::time::Duration::from_secs(self.inner.cfg.request_timeout_secs),
            self.inner.http.clone(),
        )
    }
}

impl Inner {
    async fn report_usage(&self, verifier: &str) -> anyhow::Result<()> {
        // Sent even when no key was used: the report is also this verifier's heartbeat.
        let usage = self.callback_ring.usage();
        let keys: Vec<KeyUse> = usage
            .iter()
            .map(|(k, t)| KeyUse {
                key_id: k.clone(),
                last_used_unix: *t,
            })
            .collect();
        let a = self
            .backend
            .report_key_usage(&KeyUsageReport {
                ring: "callback".into(),
                verifier: verifier.to_owned(),
                keys,
            })
            .await?;
        anyhow::ensure!(
            a.is_success(),
            "the backend refused the usage report: {}",
            message_of(&a)
        );
        Ok(())
    }

    fn now(&self) -> i64 {
        self.clock.unix()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.public_url.trim_end_matches('/'))
    }

    fn slash_token_ok(&self, given: &str) -> bool {
        // Compared against every accepted token, in constant time each.
        self.slash_tokens.accepts(given)
    }

    /// The actor as the backend needs it: email and roles from Mattermost, never from the
    /// payload's display names.
    async fn actor(&self, user_id: &str, channel_id: &str) -> anyhow::Result<ActorBody> {
        let u = self.mm.user(user_id).await?;
        let mut roles: Vec<String> = u
            .roles
            .split_whitespace()
            .filter(|r| *r == "system_admin")
            .map(str::to_owned)
            .collect();
        if let Ok(m) = self.mm.channel_member(channel_id, user_id).await
            && m.roles.split_whitespace().any(|r| r == "channel_admin")
        {
            roles.push("channel_admin".into());
        }
        // Servers that hide emails answer "": leave it out (decisions go by user id).
        Ok(ActorBody {
            user_id: u.id,
            email: (!u.email.is_empty()).then_some(u.email),
            roles,
        })
    }

    async fn bot_id(&self) -> anyhow::Result<String> {
        Ok(self
            .bot_id
            .get_or_try_init(|| async { self.mm.me().await.map(|u| u.id) })
            .await?
            .clone())
    }

    fn buttons(&self, request_id: &str) -> Vec<crate::client::Action> {
        let exp = self.now() + self.cfg.action_ttl_secs;
        let url = self.url("/mattermost/action");
        ["approve", "deny"]
            .iter()
            .map(|a| {
                let ctx = ActionContext {
                    action: (*a).to_owned(),
                    request_id: request_id.to_owned(),
                    token: self.secret.sign(&[a, request_id], exp),
                };
                let (name, style) = if *a == "approve" {
                    ("Approve", "good")
                } else {
                    ("Deny", "danger")
                };
                button(a, name, style, &url, ctx)
            })
            .collect()
    }

    fn card_for(&self, req: &RequestView) -> crate::client::Attachment {
        let buttons = if req.status == RequestStatus::Pending {
            self.buttons(&req.request_id)
        } else {
            Vec::new()
        };
        card(req, self.cfg.ticket_url_template.as_deref(), buttons)
    }
}

/// Prometheus text: key rings, requests by route and status with latency, refusals by reason,
/// and Mattermost API calls by operation and status.
async fn metrics(State(b): State<Bridge>) -> Response {
    let me = &b.inner;
    let mut text = jit_keys::prometheus(&[&me.backend_ring, &me.callback_ring], me.now());
    text.push_str(&me.http.render());
    text.push_str(&me.mm.metrics().render());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            jit_http::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Slash command

async fn command(
    State(b): State<Bridge>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let me = &b.inner;
    let Form(form) = match form {
        Ok(f) => f,
        Err(r) => return body_rejection(r.status(), true),
    };
    let header_token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Token "))
        .map(str::trim);
    let token = header_token
        .or_else(|| form.get("token").map(String::as_str))
        .unwrap_or("");
    if !me.slash_token_ok(token) {
        tracing::warn!(reason = "bad_slash_token", "slash command refused");
        return refused(
            StatusCode::UNAUTHORIZED,
            SlashReply::refusal(
                ErrorCode::BadSlashToken,
                "This command did not come from Mattermost.",
            ),
            "bad_slash_token",
            "none",
        );
    }
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (user_id, channel_id, text, trigger_id) = (
        get("user_id"),
        get("channel_id"),
        get("text"),
        get("trigger_id"),
    );
    let cmd = match parse(text) {
        Ok(c) => c,
        Err(e) => {
            return Json(SlashReply::refusal(
                ErrorCode::InvalidCommand,
                format!("{}\n\n{USAGE}", e.0),
            ))
            .into_response();
        }
    };
    if cmd == Command::Help {
        return ephemeral(USAGE);
    }
    let actor = match me.actor(user_id, channel_id).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "looking up the user in Mattermost failed");
            return ephemeral("Could not look you up in Mattermost; try again in a moment.");
        }
    };
    match run_command(me, cmd, &actor, user_id, channel_id, trigger_id).await {
        Ok(Some(text)) => ephemeral(text),
        Ok(None) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "command failed");
            ephemeral("Something went wrong talking to the backend; try again in a moment.")
        }
    }
}

fn short_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

async fn run_command(
    me: &Inner,
    cmd: Command,
    actor: &ActorBody,
    user_id: &str,
    channel_id: &str,
    trigger_id: &str,
) -> anyhow::Result<Option<String>> {
    fn done<T>(a: Reply<T>, ok: String) -> String {
        if a.is_success() {
            ok
        } else {
            format!("Refused: {}", message_of(&a))
        }
    }
    let who = || ActorFields::of(actor.clone());
    let backend = &me.backend;
    Ok(Some(match cmd {
        Command::Help => USAGE.to_owned(),
        Command::Request => {
            let a = backend.accounts(channel_id).await?;
            let bound = match a.outcome {
                Ok(b) => b,
                Err(e) => return Ok(Some(format!("Refused: {}", e.message))),
            };
            let Some(first) = bound.first() else {
                return Ok(Some("This channel has no bound AWS accounts yet; an admin runs `/jit bind <account-id>`.".into()));
            };
            let accounts: Vec<String> = bound.iter().map(|b| b.account_id.clone()).collect();
            let policy = &first.policy;
            let max_minutes = policy.max_request_hours * 60;
            let sets: Vec<String> = bound
                .iter()
                .flat_map(|b| b.permission_set_arns.iter().cloned())
                .collect();
            let several = bound.iter().any(|b| b.permission_set_arns.len() > 1);
            let option = |text: &str, value: &str| SelectOption {
                text: text.to_owned(),
                value: value.to_owned(),
            };
            let mut elements = vec![DialogElement {
                display_name: "AWS account".into(),
                name: "account".into(),
                kind: "select".into(),
                options: accounts.iter().map(|a| option(a, a)).collect(),
                default: (accounts.len() == 1)
                    .then(|| accounts.first().cloned().unwrap_or_default()),
                ..DialogElement::default()
            }];
            if several {
                elements.push(DialogElement {
                    display_name: "Permission set".into(),
                    name: "permission_set".into(),
                    kind: "select".into(),
                    optional: true,
                    options: sets.iter().map(|a| option(short_arn(a), a)).collect(),
                    ..DialogElement::default()
                });
            }
            elements.push(DialogElement {
                display_name: "Duration (minutes)".into(),
                name: "duration".into(),
                kind: "text".into(),
                subtype: Some("number".into()),
                default: Some("60".into()),
                help_text: Some(format!("At most {max_minutes} minutes.")),
                ..DialogElement::default()
            });
            // A ticket, a reason, or (the old backend's rule) either one.
            let either = policy.require_ticket_or_reason;
            elements.push(DialogElement {
                display_name: "Ticket".into(),
                name: "ticket".into(),
                kind: "text".into(),
                optional: !policy.require_ticket,
                max_length: Some(256),
                placeholder: Some("OPS-123".into()),
                ..DialogElement::default()
            });
            elements.push(DialogElement {
                display_name: "Reason".into(),
                name: "reason".into(),
                kind: "textarea".into(),
                optional: either,
                max_length: Some(2000),
                ..DialogElement::default()
            });
            // A fresh id per form: two forms opened in the same second are two requests, while
            // re-submitting one form (same state) stays one request (the idempotency key).
            let form_id = jit_proto::sign::new_nonce()
                .map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
            let token = me
                .secret
                .sign(&["request", user_id, channel_id, &form_id], me.now() + 3600);
            let state = format!("{form_id}:{token}");
            let dialog = Dialog {
                callback_id: "request".into(),
                title: "Request access".into(),
                introduction_text: "Access is granted for the approved time only, then removed."
                    .into(),
                elements,
                submit_label: "Request".into(),
                state,
                notify_on_cancel: false,
            };
            me.mm
                .open_dialog(trigger_id, &me.url("/mattermost/dialog"), &dialog)
                .await?;
            return Ok(None);
        }
        Command::Bind {
            account,
            permission_set,
        } => done(
            backend
                .bind(&BindBody {
                    who: who(),
                    channel_id: channel_id.to_owned(),
                    account_id: account.clone(),
                    permission_set_arn: permission_set,
                    permission_set_arns: Vec::new(),
                })
                .await?,
            format!("Bound account {account} to this channel."),
        ),
        Command::Unbind { account } => done(
            backend
                .unbind(&UnbindBody {
                    who: who(),
                    channel_id: channel_id.to_owned(),
                    account_id: account.clone(),
                })
                .await?,
            format!("Unbound account {account}."),
        ),
        Command::Approvers {
            usernames,
            required,
        } => {
            let users = me.mm.users_by_usernames(&usernames).await?;
            let unknown: Vec<&String> = usernames
                .iter()
                .filter(|n| !users.iter().any(|u| &u.username == *n))
                .collect();
            if !unknown.is_empty() {
                return Ok(Some(format!(
                    "Unknown users: {}",
                    unknown
                        .iter()
                        .map(|n| format!("@{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            done(
                backend
                    .set_approvers(&ApproversBody {
                        who: who(),
                        channel_id: channel_id.to_owned(),
                        approvers: users.iter().map(|u| u.id.clone()).collect(),
                        required_approvals: required,
                    })
                    .await?,
                format!(
                    "Approvers: {}.",
                    usernames
                        .iter()
                        .map(|n| format!("@{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
        Command::Policy { mut changes } => {
            changes.who = who();
            changes.channel_id = channel_id.to_owned();
            done(
                backend.set_policy(&changes).await?,
                "Policy updated.".into(),
            )
        }
        Command::Revoke { id, reason } => done(
            backend
                .revoke(&id, &DecisionBody { who: who(), reason })
                .await?,
            format!("Revoked {id}; access is being removed."),
        ),
        Command::Cancel { id } => done(
            backend
                .cancel(
                    &id,
                    &DecisionBody {
                        who: who(),
                        reason: None,
                    },
                )
                .await?,
            format!("Cancelled {id}."),
        ),
        Command::Extend { id, minutes } => done(
            backend
                .extend(
                    &id,
                    &ExtendBody {
                        who: who(),
                        minutes: MinutesInput::from_u32(minutes),
                    },
                )
                .await?,
            format!("Extended {id} by {minutes} minutes."),
        ),
        Command::Status { mine } => {
            let q = RequestQuery {
                channel_id: Some(channel_id.to_owned()),
                status: Some("PENDING,APPROVED,GRANTED".into()),
                limit: Some(50),
                requester_mm_user_id: mine.then(|| user_id.to_owned()),
                ..RequestQuery::default()
            };
            let items = match backend.list_requests(&q).await?.outcome {
                Ok(page) => page.items,
                Err(e) => return Ok(Some(format!("Refused: {}", e.message))),
            };
            if items.is_empty() {
                "No open requests or active grants.".to_owned()
            } else {
                items
                    .iter()
                    .map(|r| {
                        // The end is known once access is in place.
                        let end = r
                            .grant_time
                            .as_ref()
                            .and(r.end_time.as_deref())
                            .unwrap_or("—");
                        format!(
                            "* `{}` {} — {} on {} until {}",
                            r.request_id,
                            crate::cards::status_name(r.status),
                            r.requester_email,
                            r.account_id,
                            end
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// Buttons

#[derive(Debug, Deserialize)]
struct ActionRequest {
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    channel_id: String,
    #[serde(default)]
    trigger_id: String,
    #[serde(default)]
    context: LenientContext,
}

/// A button's context as sent: the bridge's own, or anything else (which fails the token check
/// like a forged one, rather than the body's parse).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum LenientContext {
    Ours(ActionContext),
    Other(serde::de::IgnoredAny),
}

impl Default for LenientContext {
    fn default() -> Self {
        Self::Ours(ActionContext::default())
    }
}

async fn action(
    State(b): State<Bridge>,
    req: Result<Json<ActionRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let me = &b.inner;
    let Json(req) = match req {
        Ok(r) => r,
        Err(r) => return body_rejection(r.status(), false),
    };
    let ActionContext {
        action: act,
        request_id,
        token,
    } = match req.context {
        LenientContext::Ours(c) => c,
        LenientContext::Other(_) => ActionContext::default(),
    };
    match me.secret.verify(&token, &[&act, &request_id], me.now()) {
        Ok(()) => {}
        Err(TokenError::Expired) => {
            return Json(ActionReply::refusal(
                ErrorCode::ExpiredActionToken,
                "This card's buttons have expired; use /jit status.",
            ))
            .into_response();
        }
        Err(e) => {
            tracing::warn!(reason = %e, "button click refused");
            return refused(
                StatusCode::FORBIDDEN,
                ActionReply::refusal(ErrorCode::BadActionToken, "This button is not valid."),
                "bad_action_token",
                "none",
            );
        }
    }
    if !matches!(act.as_str(), "approve" | "deny") {
        return (
            StatusCode::FORBIDDEN,
            Json(ActionReply::refusal(
                ErrorCode::UnknownAction,
                "Unknown action.",
            )),
        )
            .into_response();
    }
    if crate::commands::request_id(&request_id).is_err() {
        return (
            StatusCode::FORBIDDEN,
            Json(ActionReply::refusal(
                ErrorCode::BadActionToken,
                "This button is not valid.",
            )),
        )
            .into_response();
    }
    let actor = match me.actor(&req.user_id, &req.channel_id).await {
        Ok(a) => a,
        Err(_) => {
            return Json(ActionReply::say(
                "Could not look you up in Mattermost; try again.",
            ))
            .into_response();
        }
    };
    match act.as_str() {
        "approve" => match me
            .backend
            .approve(
                &request_id,
                &ApproveBody {
                    who: ActorFields::of(actor),
                },
            )
            .await
        {
            Ok(Reply { outcome: Ok(r), .. }) => {
                Json(ActionReply::redraw(me.card_for(&r))).into_response()
            }
            Ok(a) => Json(ActionReply::say(message_of(&a))).into_response(),
            Err(_) => {
                Json(ActionReply::say("The backend is unavailable; try again.")).into_response()
            }
        },
        "deny" => {
            let state = me.secret.sign(
                &["deny", &request_id, &req.user_id, &req.channel_id],
                me.now() + 3600,
            );
            let dialog = Dialog {
                callback_id: format!("deny:{request_id}"),
                title: "Deny access".into(),
                introduction_text: String::new(),
                elements: vec![DialogElement {
                    display_name: "Reason".into(),
                    name: "reason".into(),
                    kind: "textarea".into(),
                    optional: true,
                    max_length: Some(2000),
                    ..DialogElement::default()
                }],
                submit_label: "Deny".into(),
                state,
                notify_on_cancel: false,
            };
            match me
                .mm
                .open_dialog(&req.trigger_id, &me.url("/mattermost/dialog"), &dialog)
                .await
            {
                Ok(()) => Json(ActionReply::default()).into_response(),
                Err(_) => {
                    Json(ActionReply::say("Could not open the form; try again.")).into_response()
                }
            }
        }
        _ => (
            StatusCode::FORBIDDEN,
            Json(ActionReply::refusal(
                ErrorCode::UnknownAction,
                "Unknown action.",
            )),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Dialogs

#[derive(Debug, Deserialize)]
struct DialogSubmission {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    channel_id: String,
    #[serde(default)]
    submission: serde_json::Map<String, Value>,
    #[serde(default)]
    cancelled: bool,
}

fn field_for(code: ErrorCode) -> Option<&'static str> {
    use ErrorCode::*;
    match code {
        InvalidDuration | DurationExceedsPolicy => Some("duration"),
        InvalidTicket | TicketRequired | TicketOrReasonRequired => Some("ticket"),
        InvalidReason | ReasonRequired => Some("reason"),
        InvalidAccountId | AccountNotBound => Some("account"),
        PermissionSetRequired | PermissionSetNotBound | InvalidPermissionSetArn => {
            Some("permission_set")
        }
        _ => None,
    }
}

async fn dialog(
    State(b): State<Bridge>,
    d: Result<Json<DialogSubmission>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let me = &b.inner;
    let Json(d) = match d {
        Ok(d) => d,
        Err(r) => return body_rejection(r.status(), false),
    };
    if d.cancelled {
        return StatusCode::OK.into_response();
    }
    let sub = |k: &str| match d.submission.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if d.callback_id == "request" {
        let (form_id, token) = d.state.split_once(':').unwrap_or(("", ""));
        let checked = me.secret.verify(
            token,
            &["request", &d.user_id, &d.channel_id, form_id],
            me.now(),
        );
        if checked == Err(TokenError::Expired) {
            return Json(DialogReply::refusal(
                ErrorCode::ExpiredDialogState,
                "This form has expired; run /jit request again.",
            ))
            .into_response();
        }
        if checked.is_err() {
            tracing::warn!(reason = "bad_dialog_state", "dialog submission refused");
            return refused(
                StatusCode::FORBIDDEN,
                DialogReply::refusal(
                    ErrorCode::BadDialogState,
                    "This form is not valid; run /jit request again.",
                ),
                "bad_dialog_state",
                "none",
            );
        }
        let duration = sub("duration");
        if duration.trim().parse::<u32>().map_or(true, |m| m == 0) {
            return Json(DialogReply::field(
                "duration",
                "Enter a whole number of minutes.",
            ))
            .into_response();
        }
        let actor = match me.actor(&d.user_id, &d.channel_id).await {
            Ok(a) => a,
            Err(_) => {
                return Json(DialogReply::error(
                    "Could not look you up in Mattermost; try again.",
                ))
                .into_response();
            }
        };
        let optional = |k: &str| Some(sub(k)).filter(|v| !v.is_empty());
        let body = CreateRequestBody {
            who: ActorFields::of(actor),
            channel_id: d.channel_id.clone(),
            account_id: sub("account"),
            permission_set_arn: optional("permission_set"),
            jira: optional("ticket"),
            reason: optional("reason"),
            requested_duration_minutes: MinutesInput(duration.trim().to_owned()),
            break_glass: None,
        };
        // The same submitted form (same state) creates one request, however often it is retried.
        let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(d.state.as_bytes()));
        let a = match me.backend.create_request(&body, Some(&key)).await {
            Ok(a) => a,
            Err(_) => {
                return Json(DialogReply::error("The backend is unavailable; try again."))
                    .into_response();
            }
        };
        let created = match a.outcome {
            Ok(r) => r,
            Err(e) => {
                return match field_for(e.code) {
                    Some(f) => Json(DialogReply::field(f, e.message)).into_response(),
                    None => Json(DialogReply::error(e.message)).into_response(),
                };
            }
        };
        let id = created.request_id.clone();
        // One card per request, however often (and however concurrently) the form is
        // submitted: a replay answers the request as it is now, and under this lock a second
        // submission sees the first one's post id.
        let lock = me
            .posting
            .lock()
            .map(|mut m| m.entry(id.clone()).or_default().clone())
            .unwrap_or_default();
        let _one = lock.lock().await;
        let created = match crate::commands::request_id(&id) {
            Ok(rid) => match me.backend.get_request(&rid).await {
                Ok(Reply { outcome: Ok(r), .. }) => r,
                _ => created,
            },
            Err(_) => created,
        };
        if created.post_id.is_some() {
            // A re-submitted form: the request and its card exist already.
            if let Ok(mut m) = me.posting.lock() {
                m.remove(&id);
            }
            return StatusCode::OK.into_response();
        }
        let posted = me
            .mm
            .create_post(
                &d.channel_id,
                &card_message(&created),
                None,
                &[me.card_for(&created)],
            )
            .await;
        let answer = match posted {
            Ok(post_id) => {
                if let Err(e) = me.backend.set_post(&id, &SetPostBody { post_id }).await {
                    tracing::error!(request_id = %id, error = %e, "recording the card's post id failed");
                }
                StatusCode::OK.into_response()
            }
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "posting the approval card failed");
                Json(DialogReply::error("Your request is recorded but its card could not be posted; submit again to retry.")).into_response()
            }
        };
        // Only now, with the post id stored: a submission that comes after finds it.
        if let Ok(mut m) = me.posting.lock() {
            m.remove(&id);
        }
        return answer;
    }
    if let Some(request_id) = d.callback_id.strip_prefix("deny:") {
        let checked = me.secret.verify(
            &d.state,
            &["deny", request_id, &d.user_id, &d.channel_id],
            me.now(),
        );
        if checked == Err(TokenError::Expired) {
            return Json(DialogReply::refusal(
                ErrorCode::ExpiredDialogState,
                "This form has expired; click Deny again.",
            ))
            .into_response();
        }
        if checked.is_err() {
            tracing::warn!(reason = "bad_dialog_state", "dialog submission refused");
            return refused(
                StatusCode::FORBIDDEN,
                DialogReply::refusal(ErrorCode::BadDialogState, "This form is not valid."),
                "bad_dialog_state",
                "none",
            );
        }
        let actor = match me.actor(&d.user_id, &d.channel_id).await {
            Ok(a) => a,
            Err(_) => {
                return Json(DialogReply::error(
                    "Could not look you up in Mattermost; try again.",
                ))
                .into_response();
            }
        };
        let reason = Some(sub("reason")).filter(|r| !r.is_empty());
        return match me
            .backend
            .deny(
                request_id,
                &DecisionBody {
                    who: ActorFields::of(actor),
                    reason,
                },
            )
            .await
        {
            Ok(a) if a.is_success() => StatusCode::OK.into_response(),
            Ok(a) => Json(DialogReply::error(message_of(&a))).into_response(),
            Err(_) => {
                Json(DialogReply::error("The backend is unavailable; try again.")).into_response()
            }
        };
    }
    (
        StatusCode::BAD_REQUEST,
        Json(DialogReply::refusal(
            ErrorCode::UnknownForm,
            "Unknown form.",
        )),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Callbacks from the backend

fn line_for(status: &str, req: &RequestView, actor: &str) -> String {
    let end = req.end_time.as_deref().unwrap_or("");
    match status {
        "APPROVED" => format!("Approved by {actor}."),
        "GRANTED" => format!("Access granted until {end}."),
        "EXPIRED" => "Access ended.".into(),
        "REVOKED" => format!("Access revoked by {actor}."),
        "DENIED" => format!("Denied by {actor}."),
        "CANCELLED" => "Request cancelled.".into(),
        "TIMED_OUT" => "Nobody decided in time; the request timed out.".into(),
        "EXTENDED" => format!("Extended until {end}."),
        "ERROR" => format!(
            "Something needs a human: {}",
            req.error_message
                .as_deref()
                .unwrap_or("see the backend log")
        ),
        other => other.to_owned(),
    }
}

async fn webhook(
    State(b): State<Bridge>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let me = &b.inner;
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_rejection(r.status(), false),
    };
    let rp = RequestParts {
        method: "POST",
        path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()),
        body: &body,
    };
    let verified = me
        .callback_ring
        .verify(&me.verifier, &headers, &rp, &me.nonces)
        .await;
    if let Ok(u) = &verified
        && u.first_use
    {
        // A key's first use is reported at once (`jit keys retire` relies on it); later uses
        // go with the once-a-minute report.
        let me = me.clone();
        tokio::spawn(async move {
            if let Err(e) = me.report_usage(&me.usage_name).await {
                tracing::warn!(error = %e, "reporting a callback key's first use failed");
            }
        });
    }
    if let Err(r) = verified {
        tracing::warn!(reason = r.code(), "callback refused");
        let claimed = headers
            .get(jit_proto::sign::HEADER_KEY_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let known = if me.callback_ring.current().get(claimed).is_some() {
            claimed
        } else {
            "unknown"
        };
        let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        return refused(
            status,
            ErrorBody {
                code: r.into(),
                message: format!("the callback's signature was refused ({})", r.code()),
            },
            r.code(),
            known,
        );
    }
    // The event id comes from the signed body (the header is not signed); without one there is
    // nothing to dedupe by, so it is refused rather than silently collapsed with others.
    #[derive(Deserialize)]
    struct EventId {
        #[serde(default)]
        event_id: Option<String>,
    }
    let event_id = match serde_json::from_slice::<EventId>(&body) {
        Err(_) => {
            return bad_input(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the callback body is not a JSON object",
            );
        }
        Ok(EventId { event_id: Some(e) }) if !e.is_empty() => e,
        Ok(_) => {
            return bad_input(
                StatusCode::BAD_REQUEST,
                "missing_event_id",
                "the callback has no event_id",
            );
        }
    };
    let ev: CallbackPayload = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bad_input(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the callback is not a callback payload ({e})"),
            );
        }
    };
    // Reserve the id before the work, so an overlapping retry is not processed twice.
    let fresh = me
        .seen
        .lock()
        .map(|mut s| {
            let fresh = s.0.insert(event_id.clone());
            if fresh {
                s.1.push_back(event_id.clone());
                while s.1.len() > SEEN_EVENTS {
                    if let Some(old) = s.1.pop_front() {
                        s.0.remove(&old);
                    }
                }
            }
            fresh
        })
        .unwrap_or(false);
    if !fresh {
        return Json(CallbackAck {
            ok: true,
            duplicate: true,
            dropped: None,
        })
        .into_response();
    }
    let dropped = |why: &str| {
        Json(CallbackAck {
            ok: true,
            duplicate: false,
            dropped: Some(why.to_owned()),
        })
        .into_response()
    };
    let release = || {
        if let Ok(mut s) = me.seen.lock() {
            s.0.remove(&event_id);
        }
    };
    let status = ev.status.as_str();
    let request_id = ev.request_id.as_str();
    let actor = ev.actor.as_deref().unwrap_or("system");
    let req = match crate::commands::request_id(request_id) {
        Err(_) => return dropped("not a request id"),
        Ok(id) => match me.backend.get_request(&id).await {
            Ok(Reply { outcome: Ok(r), .. }) => r,
            Ok(a) if a.status == 404 => {
                tracing::warn!(
                    request_id,
                    "callback for a request the backend does not know; dropped"
                );
                return dropped("unknown request");
            }
            _ => {
                release();
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        },
    };
    let channel = req.channel_id.as_str();
    let line = inert_line(status, &req, actor);
    // Each effect at most once per event id: one done before a failure (a 429 on the DM, say)
    // is skipped when the backend redelivers the event.
    let done = |effect| me.journal.is_done(&event_id, effect);
    let mark = |effect| {
        me.journal
            .done(&event_id, effect)
            .map_err(|e| crate::client::MmError::Status {
                status: 503,
                message: format!("recording a done effect: {e}"),
            })
    };
    use crate::journal::Effect;
    let result: Result<(), crate::client::MmError> = async {
        match req.post_id.as_deref() {
            Some(post_id) => {
                let mut card_gone = false;
                if !done(Effect::Card) {
                    match me
                        .mm
                        .patch_post(post_id, &card_message(&req), &[me.card_for(&req)])
                        .await
                    {
                        Ok(()) => mark(Effect::Card)?,
                        // The card is gone (deleted, channel archived): say it in the channel
                        // instead, with a fresh card.
                        Err(crate::client::MmError::Status {
                            status: 400..=428 | 430..=499,
                            ..
                        }) => card_gone = true,
                        Err(e) => return Err(e),
                    }
                }
                if !done(Effect::Line) {
                    if card_gone {
                        me.mm
                            .create_post(
                                channel,
                                &format!("Request {request_id}: {line}"),
                                None,
                                &[me.card_for(&req)],
                            )
                            .await?;
                        mark(Effect::Card)?;
                    } else {
                        me.mm
                            .create_post(channel, &line, Some(post_id), &[])
                            .await?;
                    }
                    mark(Effect::Line)?;
                }
            }
            None => {
                if !done(Effect::Line) {
                    me.mm
                        .create_post(channel, &format!("Request {request_id}: {line}"), None, &[])
                        .await?;
                    mark(Effect::Line)?;
                }
            }
        }
        if matches!(
            status,
            "APPROVED" | "DENIED" | "GRANTED" | "EXPIRED" | "REVOKED"
        ) && !done(Effect::Dm)
        {
            let requester = req.requester_mm_user_id.as_str();
            let bot = me
                .bot_id()
                .await
                .map_err(|e| crate::client::MmError::Status {
                    status: 503,
                    message: e.to_string(),
                })?;
            let dm = me.mm.direct_channel(&bot, requester).await?;
            let account = req.account_id.as_str();
            me.mm
                .create_post(
                    &dm,
                    &format!("Your access request {request_id} for {account}: {line}"),
                    None,
                    &[],
                )
                .await?;
            mark(Effect::Dm)?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Json(CallbackAck {
            ok: true,
            ..CallbackAck::default()
        })
        .into_response(),
        // Mattermost refused for good (a 4xx other than a rate limit): retrying for a day would
        // only hold back this request's later events. Logged and acknowledged.
        Err(crate::client::MmError::Status { status, message })
            if (400..500).contains(&status) && status != 429 =>
        {
            tracing::error!(
                request_id,
                status,
                message,
                "Mattermost refused a callback's update; dropped"
            );
            dropped(&message)
        }
        Err(e) => {
            release();
            tracing::error!(error = %e, request_id, "delivering a callback to Mattermost failed; the backend will retry");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// The card's message text: the same at creation and at every update (a patch replaces it).
fn card_message(req: &RequestView) -> String {
    format!(
        "{} asks for access.",
        crate::cards::inert(&req.requester_email)
    )
}

/// The thread line for a status, with user text made inert.
fn inert_line(status: &str, req: &RequestView, actor: &str) -> String {
    let mut r = req.clone();
    r.error_message = r.error_message.as_deref().map(crate::cards::inert);
    line_for(status, &r, &crate::cards::inert(actor))
}
