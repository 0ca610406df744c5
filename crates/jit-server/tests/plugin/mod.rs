//! The existing Go plugin (`com.dgwhited.jit-access` 0.1.0) against `jit server` in the
//! existing-plugin profile. Written from the shared contract
//! (`shared/reference/existing-plugin-contract.md`), apart from our bridge's tests:
//!
//! - [`Plugin`] makes exactly the plugin's calls: its routes, its bodies, v1 signatures over
//!   the path without the query, one key; it decodes answers strictly into the plugin's shapes
//!   (arrays where it wants arrays, Go's JSON types; `null` is fine, another type is not).
//! - [`Webhook`] verifies callbacks as the plugin does: Mattermost strips
//!   `/plugins/com.dgwhited.jit-access`, the signature must cover `/webhook`, the key id must be
//!   `backend` and the secret the one `CallbackSigningSecret` it holds.

use super::*;
use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use jit_grants::{DryRunProvider, ProviderError};
use serde::Deserialize;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

const PLUGIN_KEY_ID: &str = "key-20261101";
const PLUGIN_SECRET: &str = "plugin-secret-0123456789abcdef0123456789abcdef";
const CALLBACK_V1: &str = "callback-secret-v1-0123456789abcdef0123456789ab";
const CALLBACK_V2: &str = "callback-secret-v2-0123456789abcdef0123456789ab";
const PREFIX: &str = "/plugins/com.dgwhited.jit-access";

// ---- The plugin's shapes, with Go's JSON types --------------------------------------------

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct JitConfig {
    channel_id: Option<String>,
    account_id: Option<String>,
    approver_mm_user_ids: Option<Vec<String>>,
    approval_policy: Option<String>,
    allow_self_approval: Option<bool>,
    max_request_hours: Option<i64>,
    session_duration_minutes: Option<i64>,
    updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct JitRequest {
    request_id: Option<String>,
    account_id: Option<String>,
    channel_id: Option<String>,
    requester_mm_user_id: Option<String>,
    requester_email: Option<String>,
    jira: Option<String>,
    reason: Option<String>,
    requested_duration_minutes: Option<i64>,
    status: Option<String>,
    created_at: Option<String>,
    approved_at: Option<String>,
    denied_at: Option<String>,
    grant_time: Option<String>,
    revoked_at: Option<String>,
    expired_at: Option<String>,
    end_time: Option<String>,
    approver_mm_user_id: Option<String>,
    approver_email: Option<String>,
    identity_store_user_id: Option<String>,
    assignment_status: Option<String>,
    error_details: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ReportingResponse {
    items: Option<Vec<JitRequest>>,
    next_token: Option<String>,
    filters: Option<HashMap<String, String>>,
}

/// What the plugin shows for a failed call: the body's `message`, else the raw body.
#[derive(Debug, Deserialize)]
struct PluginError {
    message: Option<String>,
}

fn parse_time(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("not RFC 3339: {s:?} ({e})"))
}

// ---- The plugin's client --------------------------------------------------------------------

struct Plugin {
    http: reqwest::Client,
    base: String,
    clock: ManualClock,
}

fn v1_signature(
    secret: &[u8],
    ts: &str,
    nonce: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    let canonical = format!(
        "{ts}\n{nonce}\n{method}\n{path}\n{}",
        hex::encode(sha2::Sha256::digest(body))
    );
    let mut mac = jit_proto::keyring::HmacSha256::new_from_slice(secret).unwrap();
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Plugin {
    /// One call as the plugin makes it: JSON content type, v1 over the path without the query.
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (u16, Vec<u8>) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let path = path_and_query.split('?').next().unwrap();
        let ts = self.clock.unix().to_string();
        let nonce = jit_proto::sign::new_nonce().unwrap();
        let sig = v1_signature(PLUGIN_SECRET.as_bytes(), &ts, &nonce, method, path, &bytes);
        let r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path_and_query}", self.base),
            )
            .header("Content-Type", "application/json")
            .header("X-JIT-KeyID", PLUGIN_KEY_ID)
            .header("X-JIT-Timestamp", ts)
            .header("X-JIT-Nonce", nonce)
            .header("X-JIT-Signature", sig)
            .body(bytes)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// A call that must succeed, decoded into the plugin's type.
    async fn ok<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        pq: &str,
        body: Option<Value>,
        want: &[u16],
    ) -> T {
        let (s, b) = self.call(method, pq, body).await;
        assert!(
            want.contains(&s),
            "{method} {pq}: {s} {}",
            String::from_utf8_lossy(&b)
        );
        serde_json::from_slice(&b).unwrap_or_else(|e| {
            panic!(
                "{method} {pq}: the plugin cannot decode this ({e}): {}",
                String::from_utf8_lossy(&b)
            )
        })
    }

    /// A call that must fail with a message the plugin can show.
    async fn refused(&self, method: &str, pq: &str, body: Option<Value>) -> (u16, String) {
        let (s, b) = self.call(method, pq, body).await;
        assert!(s >= 400, "{method} {pq}: {s}");
        let e: PluginError = serde_json::from_slice(&b).unwrap();
        (s, e.message.expect("a message the plugin shows"))
    }

    async fn accounts(&self, channel: &str) -> Vec<JitConfig> {
        self.ok(
            "GET",
            &format!("/config/accounts?channel_id={channel}"),
            None,
            &[200],
        )
        .await
    }

    async fn request(&self, user: &str, minutes: i64) -> JitRequest {
        // The dialog: the plugin checks the channel's binding first.
        assert!(!self.accounts("ch1").await.is_empty());
        self.ok(
            "POST",
            "/requests",
            Some(
                json!({"account_id": ACCOUNT, "channel_id": "ch1", "requester_mm_user_id": user,
                        "requester_email": format!("{user}@example.com"), "jira": "OPS-7",
                        "reason": "deploy", "requested_duration_minutes": minutes}),
            ),
            &[200, 201],
        )
        .await
    }

    /// The Approve button: the approver check (from the config), then the call.
    async fn approve(&self, id: &str, user: &str) {
        let cfg = self.accounts("ch1").await;
        assert!(
            cfg.iter().any(|c| c
                .approver_mm_user_ids
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a == user)),
            "the plugin would not show Approve to {user}"
        );
        let (s, b) = self
            .call(
                "POST",
                &format!("/requests/{id}/approve"),
                Some(json!({"approver_mm_user_id": user, "approver_email": format!("{user}@example.com")})),
            )
            .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }

    async fn status_of(&self, id: &str) -> JitRequest {
        let r: ReportingResponse = self
            .ok("GET", &format!("/requests?request_id={id}"), None, &[200])
            .await;
        let mut items = r.items.expect("items");
        assert_eq!(items.len(), 1, "/jit status {id}");
        items.remove(0)
    }
}

// ---- The plugin's webhook -------------------------------------------------------------------

#[derive(Clone, Default)]
struct Webhook {
    /// The plugin's `CallbackSigningSecret` (the System Console edit changes it).
    secret: Arc<Mutex<String>>,
    /// Accepted callbacks: (status, payload).
    accepted: Arc<Mutex<Vec<(String, Value)>>>,
    /// Refused deliveries.
    refused: Arc<std::sync::atomic::AtomicUsize>,
    nonces: Arc<Mutex<HashSet<String>>>,
    clock: Option<ManualClock>,
}

async fn webhook(
    axum::extract::State(w): axum::extract::State<Webhook>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    use std::sync::atomic::Ordering;
    let refuse = || {
        w.refused.fetch_add(1, Ordering::SeqCst);
        axum::http::StatusCode::UNAUTHORIZED
    };
    // Mattermost strips the plugin's prefix; the plugin verifies the path it sees.
    let Some(seen) = uri.path().strip_prefix(PREFIX) else {
        return axum::http::StatusCode::NOT_FOUND;
    };
    assert_eq!(seen, "/webhook");
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if h("X-JIT-KeyID") != "backend" {
        return refuse();
    }
    let ts = h("X-JIT-Timestamp");
    let now = w.clock.as_ref().unwrap().unix();
    if ts.parse::<i64>().map_or(true, |t| (t - now).abs() > 300) {
        return refuse();
    }
    let nonce = h("X-JIT-Nonce");
    let secret = w.secret.lock().unwrap().clone();
    let want = v1_signature(secret.as_bytes(), &ts, &nonce, "POST", seen, &body);
    if want != h("X-JIT-Signature") {
        return refuse();
    }
    if !w.nonces.lock().unwrap().insert(nonce) {
        return refuse();
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(!v["channel_id"].as_str().unwrap().is_empty());
    for (k, d) in v["details"].as_object().cloned().unwrap_or_default() {
        assert!(d.is_string(), "details.{k} must be a string: {d}");
    }
    let status = v["status"].as_str().unwrap().to_owned();
    w.accepted.lock().unwrap().push((status, v));
    axum::http::StatusCode::OK
}

impl Webhook {
    fn statuses(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn refusals(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

// ---- The deployment -------------------------------------------------------------------------

/// Where the backend runs: `jit server` on SQLite or PostgreSQL, or the Lambda function on
/// DynamoDB (moto), its calls turned into API Gateway events in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Sqlite,
    Postgres,
    Lambda,
}

struct Deployment {
    /// The moto server of a function on DynamoDB.
    _moto: Option<jit_testkit::Moto>,
    plugin: Plugin,
    hook: Webhook,
    state: jit_server::AppState,
    provider: Arc<DryRunProvider>,
    lifecycle: Arc<jit_server::lifecycle::Lifecycle>,
    dispatcher: Arc<jit_server::callbacks::Dispatcher>,
    clock: ManualClock,
    callback_file: std::path::PathBuf,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self._stop.send(true);
    }
}

/// The old system's keys as its operators have them (the runbook's JSON objects of plain
/// strings), the profile on, callbacks to the plugin's webhook URL on Mattermost.
async fn deploy(on: On, pin: Option<&str>) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let backend_file = dir.path().join("signing.json");
    let callback_file = dir.path().join("callback.json");
    std::fs::write(
        &backend_file,
        json!({ PLUGIN_KEY_ID: PLUGIN_SECRET }).to_string(),
    )
    .unwrap();
    std::fs::write(&callback_file, json!({ "key-v1": CALLBACK_V1 }).to_string()).unwrap();
    let clock = ManualClock::at(1_764_072_000);
    let hook = Webhook {
        secret: Arc::new(Mutex::new(CALLBACK_V1.into())),
        clock: Some(clock.clone()),
        ..Webhook::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{PREFIX}/webhook", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route(&format!("{PREFIX}/webhook"), axum::routing::post(webhook))
        .with_state(hook.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let mut moto = None;
    let db_url = match on {
        On::Postgres => jit_testkit::fresh_pg_database().unwrap(),
        On::Sqlite => format!("sqlite://{}", dir.path().join("jit.db").display()),
        On::Lambda => {
            let m = jit_testkit::Moto::start().unwrap();
            jit_store::DynamoStore::create_tables(&m.sdk_config().await, "jit-state", "jit-nonces")
                .await
                .unwrap();
            moto = Some(m);
            "dynamodb://jit-state?nonces=jit-nonces".to_owned()
        }
    };
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db_url),
        aws_region: Some("us-east-1".into()),
        aws_endpoint_url: moto.as_ref().map(|m| m.endpoint.clone()),
        ..Config::default()
    };
    config.keys.backend = Some(format!("file:{}", backend_file.display()));
    config.keys.callback = Some(format!("file:{}", callback_file.display()));
    config.keys.callback_signing_key_id = pin.map(str::to_owned);
    config.callbacks.url = Some(url);
    config.existing_plugin.enabled = true;
    let provider = Arc::new(DryRunProvider::new());
    let (base, stop, state, lifecycle, dispatcher) = if on == On::Lambda {
        let backend = jit_server::serve::Backend::prepare(
            config,
            Arc::new(clock.clone()),
            Some(provider.clone()),
        )
        .await
        .unwrap();
        let (state, lifecycle) = (backend.state.clone(), backend.lifecycle.clone());
        let dispatcher = backend
            .dispatcher
            .clone()
            .expect("callbacks are configured");
        let function = Arc::new(
            jit_lambda::Function::new(backend, None, jit_lambda::Emf::new("JitAccess")).stepped(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(jit_lambda::local::serve(function, listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        (base, stop, state, lifecycle, dispatcher)
    } else {
        let server = Server::build_with(config, Arc::new(clock.clone()), Some(provider.clone()))
            .await
            .unwrap()
            .without_workers();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = server.shutdown_handle();
        let state = server.state.clone();
        let lifecycle = server.lifecycle.clone();
        let dispatcher = server.dispatcher.clone().expect("callbacks are configured");
        tokio::spawn(server.serve());
        (base, stop, state, lifecycle, dispatcher)
    };
    Deployment {
        _moto: moto,
        plugin: Plugin {
            http: reqwest::Client::new(),
            base,
            clock: clock.clone(),
        },
        hook,
        state,
        provider,
        lifecycle,
        dispatcher,
        clock,
        callback_file,
        _stop: stop,
        _dir: dir,
    }
}

impl Deployment {
    /// The workers, stepped: grants and revokes, then callbacks.
    async fn settle(&self) {
        self.lifecycle.run_due().await.unwrap();
        self.dispatcher.run_due().await.unwrap();
    }

    /// `/jit bind` and `/jit approvers` as a system admin (the plugin checked; it sends no actor).
    async fn configure(&self) {
        let c: JitConfig = self
            .plugin
            .ok(
                "POST",
                "/config/bind",
                Some(json!({"channel_id": "ch1", "account_id": ACCOUNT})),
                &[200],
            )
            .await;
        assert_eq!(c.account_id.as_deref(), Some(ACCOUNT));
        assert_eq!(c.max_request_hours, Some(4), "the old default");
        let all: Vec<JitConfig> = self
            .plugin
            .ok(
                "POST",
                "/config/approvers",
                Some(json!({"channel_id": "ch1", "approver_ids": ["bob", "carol"]})),
                &[200],
            )
            .await;
        assert_eq!(
            all[0].approver_mm_user_ids.as_deref(),
            Some(&["bob".to_owned(), "carol".to_owned()][..])
        );
    }

    /// Edits the callback ring file as the runbook's `jq` does, and lets the ring reload.
    async fn edit_callback_ring(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let mut m: serde_json::Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(&self.callback_file).unwrap()).unwrap();
        edit(&mut m);
        std::fs::write(&self.callback_file, Value::Object(m).to_string()).unwrap();
        self.state.callback_ring.refresh().await.unwrap();
    }

    /// `n` grants through the plugin, then a delivery round: every GRANTED so far (`expected`,
    /// counted up) has arrived.
    async fn wave(&self, n: usize, expected: &mut usize) {
        for i in 0..n {
            self.granted(&format!("user{i}")).await;
        }
        *expected += n;
        self.dispatcher.run_due().await.unwrap();
        assert_eq!(
            self.hook.statuses().len(),
            *expected,
            "every GRANTED arrived"
        );
    }

    /// A request made, approved and granted through the plugin; its id.
    async fn granted(&self, user: &str) -> String {
        let r = self.plugin.request(user, 60).await;
        let id = r.request_id.unwrap();
        self.plugin.approve(&id, "bob").await;
        self.lifecycle.run_due().await.unwrap();
        id
    }
}

async fn every_plugin_flow_works(on: On) {
    let d = deploy(on, None).await;
    let p = &d.plugin;

    // info on an unbound channel: [].
    assert!(p.accounts("ch1").await.is_empty());
    // bind, approvers (no actor: the plugin's key vouches; the audit trail names it).
    d.configure().await;
    let trail = d
        .state
        .store
        .list_audit(&jit_store::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .0;
    let bound = trail
        .iter()
        .find(|e| e.draft.kind == "config.bound")
        .unwrap();
    assert_eq!(bound.draft.data["authorised_by_plugin_key"], PLUGIN_KEY_ID);
    assert_eq!(bound.draft.actor_id, None);

    // info.
    let info = p.accounts("ch1").await;
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].allow_self_approval, Some(false));

    // request: 201, a JitRequest with the projected end.
    let r = p.request("alice", 60).await;
    let id = r.request_id.clone().unwrap();
    assert_eq!(r.status.as_deref(), Some("PENDING"));
    let created = parse_time(r.created_at.as_deref().unwrap());
    let end = parse_time(r.end_time.as_deref().unwrap());
    assert_eq!(end - created, time::Duration::minutes(60));
    // The old rules: a ticket or a reason; at most 4 hours.
    let (s, msg) = p
        .refused(
            "POST",
            "/requests",
            Some(json!({"account_id": ACCOUNT, "channel_id": "ch1",
            "requester_mm_user_id": "alice", "requester_email": "alice@example.com",
            "requested_duration_minutes": 60})),
        )
        .await;
    assert_eq!(s, 422, "{msg}");
    let (_, msg) = p
        .refused(
            "POST",
            "/requests",
            Some(json!({"account_id": ACCOUNT, "channel_id": "ch1",
            "requester_mm_user_id": "alice", "requester_email": "alice@example.com", "reason": "x",
            "requested_duration_minutes": 241})),
        )
        .await;
    assert!(msg.contains("4 hours"), "{msg}");

    // approve: GRANTED, one callback with the old details; no APPROVED callback.
    d.clock.advance_secs(600);
    p.approve(&id, "bob").await;
    d.settle().await;
    assert_eq!(d.hook.statuses(), ["GRANTED"]);
    let granted = d.hook.accepted.lock().unwrap()[0].1.clone();
    assert_eq!(
        granted["details"],
        json!({"requester_email": "alice@example.com", "duration_minutes": "60"})
    );
    assert_eq!(granted["request_id"], id.as_str());

    // status <id>, by the 8 characters the status table shows: approver, grant time, end.
    let short = &id[..8];
    let s = p.status_of(short).await;
    assert_eq!(s.request_id.as_deref(), Some(id.as_str()));
    assert_eq!(s.status.as_deref(), Some("GRANTED"));
    assert_eq!(s.approver_email.as_deref(), Some("bob@example.com"));
    let grant = parse_time(s.grant_time.as_deref().unwrap());
    assert_eq!(
        parse_time(s.end_time.as_deref().unwrap()) - grant,
        time::Duration::minutes(60)
    );
    assert!(
        grant > created + time::Duration::minutes(9),
        "the approval delay is not eaten"
    );

    // status: the channel's page.
    let page: ReportingResponse = p.ok("GET", "/requests?channel_id=ch1", None, &[200]).await;
    assert!(
        page.items
            .unwrap()
            .iter()
            .any(|i| i.request_id.as_deref() == Some(id.as_str()))
    );

    // revoke by someone who is neither requester nor approver nor configured admin: the plugin
    // checked they are a system admin. GET, then POST, by the short id.
    let shown: JitRequest = p
        .ok("GET", &format!("/requests/{short}"), None, &[200])
        .await;
    assert_eq!(shown.status.as_deref(), Some("GRANTED"));
    let (st, b) = p
        .call(
            "POST",
            &format!("/requests/{short}/revoke"),
            Some(json!({"actor_mm_user_id": "sysadmin1", "actor_email": "root@example.com"})),
        )
        .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    d.settle().await;
    assert_eq!(d.hook.statuses(), ["GRANTED", "REVOKED"]);
    let s = p.status_of(&id).await;
    assert_eq!(s.status.as_deref(), Some("REVOKED"));
    assert!(s.revoked_at.is_some());
    let revoked = d
        .state
        .store
        .list_audit(&jit_store::AuditFilter {
            limit: 100,
            kind: Some("request.revoked".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .0;
    assert_eq!(
        revoked[0].draft.data["authorised_by_plugin_key"],
        PLUGIN_KEY_ID
    );

    // deny: the plugin redraws the card itself, so no DENIED callback.
    let r = p.request("alice", 30).await;
    let deny_id = r.request_id.unwrap();
    let (st, b) = p
        .call("POST", &format!("/requests/{deny_id}/deny"),
              Some(json!({"denier_mm_user_id": "carol", "denier_email": "carol@example.com", "reason": "not now"})))
        .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    d.settle().await;
    assert_eq!(d.hook.statuses(), ["GRANTED", "REVOKED"]);
    let s = p.status_of(&deny_id).await;
    assert_eq!(s.status.as_deref(), Some("DENIED"));
    assert!(s.denied_at.is_some());

    // expiry: EXPIRED at the end.
    let exp_id = d.granted("dave").await;
    d.dispatcher.run_due().await.unwrap();
    d.clock.advance_secs(3600);
    d.settle().await;
    assert_eq!(
        d.hook.statuses(),
        ["GRANTED", "REVOKED", "GRANTED", "EXPIRED"]
    );
    let s = p.status_of(&exp_id).await;
    assert_eq!(s.status.as_deref(), Some("EXPIRED"));
    assert!(s.expired_at.is_some());

    // error: a permanent grant failure, shown as "Error".
    d.provider
        .fail_next([ProviderError::Permanent("AccessDenied: not allowed".into())]);
    let r = p.request("erin", 30).await;
    let err_id = r.request_id.unwrap();
    p.approve(&err_id, "carol").await;
    d.settle().await;
    assert_eq!(d.hook.statuses().last().map(String::as_str), Some("ERROR"));
    let s = p.status_of(&err_id).await;
    assert_eq!(s.status.as_deref(), Some("ERROR"));
    assert!(s.error_details.unwrap().contains("AccessDenied"));

    // Errors carry a message the plugin shows.
    let (s, msg) = p
        .refused(
            "GET",
            "/requests/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert!(!msg.is_empty());
    assert_eq!(d.hook.refusals(), 0, "no callback was refused");
}

/// The runbook on the callback secret, literally (step 2: add the new key; step 4: the
/// plugin's secret is changed; step 7: the old key is deleted; no restarts), with callbacks
/// flowing throughout: none is lost, and at most one delivery is refused per switch.
async fn callback_key_rotation_by_the_runbook_loses_nothing(on: On, pin: Option<&str>) {
    let d = deploy(on, pin).await;
    d.configure().await;
    let mut expected = 0;
    let mut wave = async |d: &Deployment, n: usize| d.wave(n, &mut expected).await;
    wave(&d, 5).await;
    // Step 2: the new key joins the ring (the jq step adds a plain string).
    d.edit_callback_ring(|m| {
        m.insert("key-v2".into(), json!(CALLBACK_V2));
    })
    .await;
    wave(&d, 5).await;
    assert_eq!(
        d.hook.refusals(),
        0,
        "the plugin still holds the old secret, and gets it"
    );
    // Step 4: the plugin's configuration is edited to the new secret.
    *d.hook.secret.lock().unwrap() = CALLBACK_V2.into();
    wave(&d, 5).await;
    assert!(
        d.hook.refusals() <= 1,
        "{} refused at the switch",
        d.hook.refusals()
    );
    let after_switch = d.hook.refusals();
    // Step 7: the old key is deleted (a pin on it must not freeze the ring).
    d.edit_callback_ring(|m| {
        m.remove("key-v1");
    })
    .await;
    assert!(
        d.state.callback_ring.current().get("key-v1").is_none(),
        "the ring reloaded"
    );
    wave(&d, 5).await;
    assert_eq!(
        d.hook.refusals(),
        after_switch,
        "nothing refused after the old key went"
    );
}

/// `jit keys rotate --ring callback` (a new key that signs after an activation delay), then
/// `jit keys use` at the moment of the plugin edit: no delivery is refused at all.
async fn rotation_by_command_refuses_none(on: On) {
    let d = deploy(on, None).await;
    d.configure().await;
    let mut expected = 0;
    let mut wave = async |d: &Deployment, n: usize| d.wave(n, &mut expected).await;
    wave(&d, 3).await;
    // What `rotate` writes: a richer entry that signs after the activation delay.
    let now = d.clock.now();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    d.edit_callback_ring(|m| {
        m.insert(
            "cb-20261202".into(),
            json!({"secret": CALLBACK_V2, "created_at": fmt(now), "not_before": fmt(now + time::Duration::seconds(120))}),
        );
    })
    .await;
    wave(&d, 3).await;
    // Past the activation delay the new key is the ring's signing key, but the plugin still
    // holds the old secret: the backend keeps the key the plugin accepts.
    d.clock.advance_secs(180);
    wave(&d, 3).await;
    assert_eq!(d.hook.refusals(), 0);
    // The plugin edit, and at that moment `jit keys use cb-20261202 --ring callback`.
    let ring = KeyRing::parse(&json!({ PLUGIN_KEY_ID: PLUGIN_SECRET }).to_string()).unwrap();
    let admin = Client::new(
        &d.plugin.base,
        Keys::Fixed(Arc::new(ring)),
        Arc::new(d.clock.clone()),
    )
    .unwrap();
    let sw = admin
        .switch_callback_key(&jit_proto::wire::CallbackKeySwitch {
            key_id: "cb-20261202".into(),
        })
        .await
        .unwrap();
    assert_eq!(sw.outcome.unwrap().key_id, "cb-20261202");
    *d.hook.secret.lock().unwrap() = CALLBACK_V2.into();
    wave(&d, 3).await;
    d.edit_callback_ring(|m| {
        m.remove("key-v1");
    })
    .await;
    wave(&d, 3).await;
    assert_eq!(d.hook.refusals(), 0, "no delivery refused");
    // A key that is not in the ring is refused, with a message.
    let bad = admin
        .switch_callback_key(&jit_proto::wire::CallbackKeySwitch {
            key_id: "key-v1".into(),
        })
        .await
        .unwrap();
    assert_eq!(bad.status, 404);
    assert!(bad.message().unwrap().contains("key-v1"));
    let trail = d
        .state
        .store
        .list_audit(&jit_store::AuditFilter {
            limit: 10,
            kind: Some("keys.callback_signing_switched".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .0;
    assert_eq!(trail[0].draft.data["key_id"], "cb-20261202");
}

async fn rotation_unpinned(on: On) {
    callback_key_rotation_by_the_runbook_loses_nothing(on, None).await
}

async fn rotation_with_a_pin_on_the_old_key(on: On) {
    callback_key_rotation_by_the_runbook_loses_nothing(on, Some("key-v1")).await
}

/// A refused delivery for one request holds back only that request's later events.
async fn a_refused_callback_never_holds_back_other_requests(on: On) {
    let d = deploy(on, None).await;
    d.configure().await;
    let first = d.granted("alice").await;
    // The plugin holds a secret the backend does not have at all: every delivery is refused.
    *d.hook.secret.lock().unwrap() = "something-else-entirely-0123456789abcdef".into();
    d.dispatcher.run_due().await.unwrap();
    assert!(d.hook.statuses().is_empty());
    *d.hook.secret.lock().unwrap() = CALLBACK_V1.into();
    // alice's event waits for its backoff; dan's, new, goes at once.
    d.granted("dan").await;
    d.dispatcher.run_due().await.unwrap();
    let got = d.hook.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_ne!(got[0].1["request_id"], first.as_str());
    // After the backoff, alice's arrives too.
    d.clock.advance_secs(5);
    d.dispatcher.run_due().await.unwrap();
    assert_eq!(d.hook.statuses(), ["GRANTED", "GRANTED"]);
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::On::Sqlite).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(super::On::Postgres).await } )* }
        mod on_lambda { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::On::Lambda).await } )* }
    };
}

both!(
    every_plugin_flow_works,
    rotation_by_command_refuses_none,
    rotation_unpinned,
    rotation_with_a_pin_on_the_old_key,
    a_refused_callback_never_holds_back_other_requests,
);
