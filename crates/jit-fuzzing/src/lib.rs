//! Fuzz harnesses. Each `pub fn` takes the fuzzer's bytes and panics only when a property is
//! broken; `fuzz/fuzz_targets/*.rs` are one-line wrappers, and `tests/corpus.rs` replays every
//! committed corpus file through the same functions on each test run.
//!
//! The HTTP harnesses drive the real routers in process (`tower::ServiceExt::oneshot`): the
//! backend's on a real SQLite store, the bridge's with Mattermost and the backend pointed at a
//! closed loopback port. Inputs are signed by the harness where a signature is needed, so the
//! fuzzer explores what lies behind the signature check rather than bouncing off it.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::Request;
use jit_proto::keyring::{KeyEntry, KeyRing};
use jit_proto::sign::{Audience, RequestParts, SignInput, SignatureVersion};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// The fixed time of every harness (signatures use it; nothing expires during a run).
pub const NOW: i64 = 1_764_072_000;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("fuzz-{:020}", N.fetch_add(1, Ordering::Relaxed))
}

fn signed_headers(
    key: &KeyEntry,
    audience: Audience,
    method: &str,
    target: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    jit_proto::sign::sign(
        key,
        &SignInput {
            version: SignatureVersion::V2,
            audience,
            request: RequestParts {
                method,
                path_and_query: target,
                body,
            },
            timestamp: NOW,
            nonce: &nonce(),
        },
    )
}

/// Sends one request through `router` and returns the status and the body as JSON (`Null`
/// when it is not JSON).
fn send(router: &axum::Router, req: Request<Body>) -> (u16, Value) {
    runtime().block_on(async {
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

/// The request, or `None` when the target or a header is not valid HTTP (it could never reach
/// a server).
fn request(
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Option<Request<Body>> {
    let mut b = Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let mut req = b.body(Body::from(body)).ok()?;
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40_000,
        ))));
    Some(req)
}

/// Splits fuzz input into `n` parts on 0xff bytes (missing parts are empty).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = data.splitn(n, |b| *b == 0xff).collect();
    v.resize(n, &[]);
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Signature headers and verification

/// Arbitrary values for the five `X-JIT-*` headers, method, target and body into header
/// parsing, `Verifier::verify` (real ring, real nonce store) and `canonical_query`. Nothing may
/// verify without a 64-character signature (a random one verifying would be a forgery).
pub fn verify(data: &[u8]) {
    use jit_proto::nonce::MemoryNonceStore;
    use jit_proto::sign::{SignedHeaders, Verifier, VerifierConfig};
    let p = parts(data, 8);
    let [kid, ts, nonce, sig, ver, method, target, body] =
        [0, 1, 2, 3, 4, 5, 6, 7].map(|i| text(p.get(i).copied().unwrap_or_default()));
    let mut headers = vec![
        ("X-JIT-KeyID", kid.as_str()),
        ("X-JIT-Timestamp", ts.as_str()),
        ("X-JIT-Nonce", nonce.as_str()),
        ("X-JIT-Signature", sig.as_str()),
    ];
    if !ver.is_empty() {
        headers.push(("X-JIT-Signature-Version", ver.as_str()));
    }
    let _ = SignedHeaders::parse(headers.as_slice());
    let ring = KeyRing::parse(r#"{"key-1":"0123456789abcdef0123456789abcdef","default":"x"}"#)
        .unwrap_or_default();
    let v = Verifier::new(VerifierConfig::new(Audience::Backend));
    let store = MemoryNonceStore::new(16);
    let req = RequestParts {
        method: &method,
        path_and_query: &target,
        body: body.as_bytes(),
    };
    let r = runtime().block_on(v.verify(&ring, headers.as_slice(), &req, NOW, &store));
    assert!(r.is_err() || sig.len() == 64, "verified a short signature");
    let _ = jit_proto::sign::canonical_query(&target);
}

/// Arbitrary text into `KeyRing::parse`, then the signing-key choice and serialisation: no
/// panic, and a parsed ring serialises and parses back with as many keys.
pub fn keyring(data: &[u8]) {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    match KeyRing::parse(t) {
        Ok(ring) => {
            let _ = ring.signing_key(time::OffsetDateTime::UNIX_EPOCH);
            let again = ring.to_secret_string().expect("a parsed ring serialises");
            let back = KeyRing::parse(&again).expect("a serialised ring parses");
            assert_eq!(back.keys().count(), ring.keys().count(), "round trip");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge

struct BridgeHarness {
    router: axum::Router,
    callback_key: Arc<KeyEntry>,
    _dir: tempfile::TempDir,
}

/// The slash token the bridge harness accepts.
pub const SLASH_TOKEN: &str = "fuzz-slash-token-0123456789";

fn bridge() -> &'static BridgeHarness {
    static B: OnceLock<BridgeHarness> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("time");
        jit_server::embedded::ensure_key_files(dir.path(), now).expect("keys");
        let (backend, callback) = jit_server::embedded::key_paths(dir.path());
        let ring =
            KeyRing::parse(&std::fs::read_to_string(&callback).expect("ring")).expect("ring");
        let callback_key = ring.keys().next().expect("a key").clone();
        // Nothing listens on port 9 of the loopback: calls out fail at once.
        let cfg = jit_mattermost::BridgeConfig {
            listen: "127.0.0.1:0".into(),
            public_url: "http://127.0.0.1:9".into(),
            mattermost_url: "http://127.0.0.1:9".into(),
            bot_token: "fuzz-bot-token".into(),
            slash_tokens: vec![SLASH_TOKEN.into()],
            backend_url: "http://127.0.0.1:9".into(),
            backend_keys: format!("file:{}", backend.display()),
            callback_keys: format!("file:{}", callback.display()),
            aws_region: Some("us-east-1".into()),
            bridge_secret: "fuzz-bridge-secret-0123456789abcdef".into(),
            data_dir: dir.path().to_path_buf(),
            // Every input comes from one address: with a limit, the fuzzer would soon see
            // nothing but 429s and stop reaching the handlers.
            auth_failure_burst: u32::MAX,
            ..jit_mattermost::BridgeConfig::default()
        };
        let clock = Arc::new(jit_proto::ManualClock::at(NOW));
        let b = runtime()
            .block_on(jit_mattermost::Bridge::build(cfg, clock))
            .expect("bridge");
        BridgeHarness {
            router: b.router(),
            callback_key,
            _dir: dir,
        }
    })
}

/// Every answer of the bridge is JSON with a stable `code` when it refuses, and never a 500.
fn check_bridge_answer(what: &str, status: u16, body: &Value) {
    assert!(status != 500, "{what}: 500 {body}");
    if (400..500).contains(&status) && status != 405 {
        assert!(
            body.get("code").and_then(Value::as_str).is_some(),
            "{what}: {status} without a code: {body}"
        );
    }
}

/// The slash command: the fuzzer's bytes are the form body (with the right token in the
/// header, so parsing is reached), and their text goes through `commands::parse`. Ids that
/// reach a URL must be request ids.
pub fn slash(data: &[u8]) -> u16 {
    use jit_mattermost::commands::{Command, parse, request_id};
    let t = text(data);
    if let Ok(Command::Revoke { id, .. } | Command::Cancel { id } | Command::Extend { id, .. }) =
        parse(&t)
    {
        assert_eq!(request_id(&id).as_deref(), Ok(id.as_str()), "id {id:?}");
    }
    let h = bridge();
    let req = request(
        "POST",
        "/mattermost/command",
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("authorization", format!("Token {SLASH_TOKEN}")),
        ],
        data.to_vec(),
    )
    .expect("a fixed request");
    let (status, body) = send(&h.router, req);
    check_bridge_answer("slash", status, &body);
    status
}

/// Button clicks and dialog submissions: the first byte picks the endpoint, the rest is the
/// JSON body. Nothing the fuzzer makes can carry a valid token, so nothing may succeed.
pub fn interactive(data: &[u8]) {
    let Some((sel, body)) = data.split_first() else {
        return;
    };
    let path = if sel % 2 == 0 {
        "/mattermost/action"
    } else {
        "/mattermost/dialog"
    };
    let h = bridge();
    let req = request(
        "POST",
        path,
        &[("content-type", "application/json".to_owned())],
        body.to_vec(),
    )
    .expect("a fixed request");
    let (status, answer) = send(&h.router, req);
    check_bridge_answer(path, status, &answer);
    let code = answer.get("code").and_then(Value::as_str).unwrap_or("");
    let cancelled = status == 200 && answer.is_null();
    assert!(
        status >= 400 || code.starts_with("expired_") || cancelled,
        "{path}: an unsigned input was accepted: {status} {answer}"
    );
}

/// Callbacks: the fuzzer's bytes are the body, signed with the callback ring, so event parsing
/// is reached; and the same bytes, read as a request, are rendered into a card and a thread
/// line, where every `@` of user text must be defused.
pub fn callback(data: &[u8]) {
    let h = bridge();
    let mut headers = signed_headers(
        &h.callback_key,
        Audience::Bridge,
        "POST",
        "/jit/webhook",
        data,
    );
    headers.push(("content-type", "application/json".to_owned()));
    let (status, body) = send(
        &h.router,
        request("POST", "/jit/webhook", &headers, data.to_vec()).expect("a fixed request"),
    );
    check_bridge_answer("callback", status, &body);
    assert!(
        matches!(status, 200 | 400 | 413 | 503),
        "callback: {status} {body}"
    );
    // The same bytes as the user text of a request (reason, ticket, decision note, email).
    {
        let t = text(data);
        let req = jit_proto::wire::RequestView {
            request_id: "93669ef5-87f7-4a82-b7c7-9a327e335a76".into(),
            status: jit_proto::wire::RequestStatus::Denied,
            channel_id: "ch1".into(),
            account_id: "123456789012".into(),
            permission_set_arn: None,
            requester_mm_user_id: "u1".into(),
            requester_email: t.clone(),
            jira: Some(t.clone()),
            reason: Some(t.clone()),
            requested_duration_minutes: 60,
            created_at: String::new(),
            pending_deadline: String::new(),
            required_approvals: 1,
            approvals: Vec::new(),
            approved_at: None,
            approver_mm_user_id: None,
            approver_email: None,
            grant_time: None,
            granted_at: None,
            end_time: None,
            denied_at: None,
            revoked_at: None,
            expired_at: None,
            closed_at: None,
            closed_by: None,
            close_reason: Some(t),
            error_message: None,
            error_details: None,
            break_glass: false,
            review_pending: false,
            post_id: None,
            version: 1,
        };
        let card = jit_mattermost::cards::card(&req, Some("https://t.example/{ticket}"), vec![]);
        assert_inert("card text", &card.text);
        for f in &card.fields {
            if matches!(f.title.as_str(), "Decision note" | "Ticket") {
                assert_inert(&f.title, &f.value);
            }
        }
    }
    let t = text(data);
    let inert = jit_mattermost::cards::inert(&t);
    assert_inert("inert", &inert);
}

/// Every `@` is followed by a zero-width space (no `@channel` ping), and no Markdown link
/// opener survives unescaped.
fn assert_inert(what: &str, s: &str) {
    let chars: Vec<char> = s.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '@' {
            assert_eq!(
                chars.get(i + 1),
                Some(&'\u{200B}'),
                "{what}: a live @ in {s:?}"
            );
        }
        if *c == '[' && what != "Ticket" {
            let escaped = i > 0 && chars.get(i - 1) == Some(&'\\');
            assert!(escaped, "{what}: a live [ in {s:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend API

struct ApiHarness {
    router: axum::Router,
    key: Arc<KeyEntry>,
    request_id: String,
    _dir: tempfile::TempDir,
}

fn api() -> &'static ApiHarness {
    static A: OnceLock<ApiHarness> = OnceLock::new();
    A.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = jit_server::Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(format!("sqlite://{}", dir.path().join("jit.db").display())),
            admins: vec!["admin".into()],
            auth_failure_burst: u32::MAX,
            ..jit_server::Config::default()
        };
        let clock = Arc::new(jit_proto::ManualClock::at(NOW));
        let server = runtime()
            .block_on(jit_server::Server::build(config, clock))
            .expect("server");
        let router = jit_server::api::router(server.state.clone());
        let (backend, _) = jit_server::embedded::key_paths(dir.path());
        let ring =
            KeyRing::parse(&std::fs::read_to_string(backend).expect("ring")).expect("ring");
        let key = ring.keys().next().expect("a key").clone();
        let mut h = ApiHarness {
            router,
            key,
            request_id: String::new(),
            _dir: dir,
        };
        // A channel with an account and an approver, and one pending request to act on.
        let admin = r#"{"user_id":"admin","email":"admin@example.com","roles":[]}"#;
        for (path, body) in [
            (
                "/config/bind",
                format!(r#"{{"actor":{admin},"channel_id":"ch1","account_id":"123456789012"}}"#),
            ),
            (
                "/config/approvers",
                format!(r#"{{"actor":{admin},"channel_id":"ch1","approvers":["bob"]}}"#),
            ),
            (
                "/requests",
                r#"{"actor":{"user_id":"alice","email":"alice@example.com","roles":[]},"channel_id":"ch1","account_id":"123456789012","jira":"OPS-1","reason":"x","requested_duration_minutes":30}"#.to_owned(),
            ),
        ] {
            let (status, answer) = signed_api(&h, "POST", path, body.as_bytes());
            assert!(status < 300, "set-up {path}: {status} {answer}");
            if let Some(id) = answer.get("request_id").and_then(Value::as_str) {
                h.request_id = id.to_owned();
            }
        }
        h
    })
}

fn signed_api(h: &ApiHarness, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    let mut headers = signed_headers(&h.key, Audience::Backend, method, target, body);
    if method == "POST" {
        headers.push(("content-type", "application/json".to_owned()));
    }
    match request(method, target, &headers, body.to_vec()) {
        Some(req) => send(&h.router, req),
        None => (0, Value::Null),
    }
}

const POSTS: [&str; 13] = [
    "/requests",
    "/requests/{id}/approve",
    "/requests/{id}/deny",
    "/requests/{id}/revoke",
    "/requests/{id}/cancel",
    "/requests/{id}/review",
    "/requests/{id}/post",
    "/requests/{id}/extend",
    "/config/bind",
    "/config/unbind",
    "/config/approvers",
    "/config/policy",
    "/admin/keys/usage",
];

const GETS: [&str; 4] = ["/requests", "/audit", "/callbacks", "/grants/overdue"];

/// API bodies and query strings, signed so they reach the handlers: the first byte picks the
/// route (a POST with the rest as its body, or a GET with the rest as its query string, or a
/// POST to a request id taken from the input). Never a 5xx, and every refusal has a code.
pub fn api_bodies(data: &[u8]) -> u16 {
    let Some((sel, rest)) = data.split_first() else {
        return 0;
    };
    let h = api();
    let sel = usize::from(*sel);
    let (method, target, body) = match sel % 3 {
        0 | 1 => {
            let route = POSTS
                .get((sel / 3) % POSTS.len())
                .copied()
                .unwrap_or("/requests");
            ("POST", route.replace("{id}", &h.request_id), rest.to_vec())
        }
        _ if sel % 2 == 0 => {
            let route = GETS
                .get((sel / 6) % GETS.len())
                .copied()
                .unwrap_or("/requests");
            let q: String = text(rest)
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '#')
                .collect();
            ("GET", format!("{route}?{q}"), Vec::new())
        }
        _ => {
            let p = parts(rest, 2);
            let id: String = text(p.first().copied().unwrap_or_default())
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.%~".contains(*c))
                .collect();
            (
                "POST",
                format!("/requests/{id}/approve"),
                p.get(1).copied().unwrap_or_default().to_vec(),
            )
        }
    };
    let (status, answer) = signed_api(h, method, &target, &body);
    if status == 0 {
        return 0;
    }
    assert!(status < 500, "{method} {target}: {status} {answer}");
    if std::env::var_os("JIT_FUZZ_DEBUG").is_some() {
        eprintln!("{method} {target}: {status} {answer}");
    }
    if status >= 400 && status != 404 && status != 405 {
        assert!(
            answer.get("code").and_then(Value::as_str).is_some(),
            "{method} {target}: {status} without a code: {answer}"
        );
    }
    status
}
