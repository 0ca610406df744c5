//! End to end with real HTTP: a Mattermost double ↔ the bridge ↔ the backend (with its grant
//! lifecycle and callback dispatcher running). The double speaks Mattermost's payload formats
//! and checks every call the bridge makes against the contract derived from the Mattermost API
//! v4 OpenAPI files (`fixtures/mattermost-contract.json`); a call the spec does not allow fails
//! the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_mattermost::{Bridge, BridgeConfig};
use jit_proto::keyring::KeyRing;
use jit_proto::sign::{Audience, RequestParts, SignInput, SignatureVersion, new_nonce, sign};
use jit_proto::{Clock, ManualClock, SystemClock};
use jit_testkit::mattermost::{Double, Shared, form};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    double: Shared,
    bridge: String,
    backend: jit_client::Client,
    http: reqwest::Client,
    callback_ring: KeyRing,
    clock: ManualClock,
    handle: Bridge,
    mm_url: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl World {
    async fn slash(&self, token: &str, user: &str, text: &str) -> (u16, Value) {
        let body = form(&[
            ("token", token),
            ("user_id", user),
            ("user_name", "whoever"),
            ("channel_id", "ch1"),
            ("channel_name", "ops"),
            ("team_id", "t1"),
            ("team_domain", "acme"),
            ("command", "/jit"),
            ("text", text),
            ("trigger_id", &format!("trig-{user}")),
            ("response_url", "http://127.0.0.1:1/none"),
        ]);
        let r = self
            .http
            .post(format!("{}/mattermost/command", self.bridge))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", format!("Token {token}"))
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.bridge))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    fn calls(&self, method: &str, suffix: &str) -> Vec<Value> {
        self.double.lock().unwrap().bodies(method, suffix)
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&Double) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond(&self.double.lock().unwrap()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn status(&self, id: &str) -> String {
        self.backend
            .get(&format!("/requests/{id}"))
            .await
            .unwrap()
            .body["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn world() -> World {
    // One clock for backend and bridge, moved by hand to reach a grant's end.
    let clock = ManualClock::at(SystemClock.unix());
    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let mm_url_copy = mm_url.clone();

    let bridge_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge_url = format!("http://{}", bridge_listener.local_addr().unwrap());

    let backend_dir = tempfile::tempdir().unwrap();
    let mut config = jit_server::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: backend_dir.path().to_path_buf(),
        admins: vec![],
        ..jit_server::Config::default()
    };
    config.callbacks.url = Some(format!("{bridge_url}/jit/webhook"));
    let server = jit_server::serve::Server::build(config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let backend_url = format!("http://{}", server.local_addr().unwrap());
    tokio::spawn(server.serve());

    let keys = backend_dir.path().join("keys");
    let bridge_dir = tempfile::tempdir().unwrap();
    let cfg = BridgeConfig {
        listen: bridge_listener.local_addr().unwrap().to_string(),
        public_url: bridge_url.clone(),
        mattermost_url: mm_url,
        bot_token: "bot-token".into(),
        slash_tokens: vec![
            "tok-old-0123456789abcdef".into(),
            "tok-new-0123456789abcdef".into(),
        ],
        backend_url: backend_url.clone(),
        backend_keys: format!("file:{}", keys.join("backend.json").display()),
        callback_keys: format!("file:{}", keys.join("callback.json").display()),
        data_dir: bridge_dir.path().to_path_buf(),
        ..BridgeConfig::default()
    };
    cfg.validate().unwrap();
    let bridge = Bridge::build(cfg, Arc::new(clock.clone())).await.unwrap();
    let handle = bridge.clone();
    tokio::spawn(async move {
        bridge
            .serve(bridge_listener, std::future::pending())
            .await
            .unwrap()
    });

    let ring =
        KeyRing::parse(&std::fs::read_to_string(keys.join("backend.json")).unwrap()).unwrap();
    let backend = jit_client::Client::new(
        &backend_url,
        jit_client::Keys::Fixed(Arc::new(ring)),
        Arc::new(clock.clone()),
    )
    .unwrap();
    let callback_ring =
        KeyRing::parse(&std::fs::read_to_string(keys.join("callback.json")).unwrap()).unwrap();
    World {
        double,
        bridge: bridge_url,
        backend,
        http: reqwest::Client::new(),
        callback_ring,
        clock,
        handle,
        mm_url: mm_url_copy,
        _dirs: (backend_dir, bridge_dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_to_grant_and_back_with_every_identity_proven() {
    let w = world().await;

    // Slash command tokens: a wrong one is refused; either configured one works (rotation).
    assert_eq!(w.slash("nope", "uadmin", "help").await.0, 401);
    let (s, r) = w.slash("tok-old-0123456789abcdef", "uadmin", "help").await;
    assert_eq!(s, 200);
    assert!(r["text"].as_str().unwrap().contains("/jit request"));
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "uadmin", "frobnicate")
        .await;
    assert!(
        r["text"].as_str().unwrap().contains("unknown command"),
        "{r}"
    );

    // Admin binds and sets approvers; a non-admin is refused by the backend.
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "uadmin", "bind 123456789012")
        .await;
    assert_eq!(r["text"], "Bound account 123456789012 to this channel.");
    let (_, r) = w
        .slash(
            "tok-new-0123456789abcdef",
            "uadmin",
            "approvers @bob @carol --required 2",
        )
        .await;
    assert_eq!(r["text"], "Approvers: @bob, @carol.");
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "ualice", "bind 210987654321")
        .await;
    assert!(r["text"].as_str().unwrap().starts_with("Refused:"), "{r}");
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "uadmin", "approvers @nobody")
        .await;
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("Unknown users: @nobody")
    );

    // Alice asks: the dialog opens with the channel's account.
    let (s, _) = w
        .slash("tok-new-0123456789abcdef", "ualice", "request")
        .await;
    assert_eq!(s, 200);
    let opened = w.calls("POST", "/actions/dialogs/open");
    assert_eq!(opened.len(), 1);
    let dialog = &opened[0]["dialog"];
    assert_eq!(opened[0]["trigger_id"], "trig-ualice");
    assert_eq!(dialog["elements"][0]["options"][0]["value"], "123456789012");
    let state = dialog["state"].as_str().unwrap().to_owned();
    let submission = |user: &str, state: &str, duration: &str| {
        json!({"type": "dialog_submission", "callback_id": "request", "state": state, "user_id": user, "channel_id": "ch1",
               "team_id": "t1", "submission": {"account": "123456789012", "duration": duration, "ticket": "OPS-1", "reason": "deploy hotfix @channel **now**"},
               "cancelled": false})
    };
    let (_, r) = w
        .post_json("/mattermost/dialog", submission("ualice", &state, "soon"))
        .await;
    assert!(r["errors"]["duration"].is_string(), "{r}");
    let (_, r) = w
        .post_json("/mattermost/dialog", submission("ualice", &state, "999"))
        .await;
    assert!(
        r["errors"]["duration"]
            .as_str()
            .unwrap()
            .contains("4 hours"),
        "policy limit shown on the field: {r}"
    );
    // Dave replays Alice's form: the state is bound to Alice.
    let (s, _) = w
        .post_json("/mattermost/dialog", submission("udave", &state, "30"))
        .await;
    assert_eq!(s, 403);
    let (s, _) = w
        .post_json("/mattermost/dialog", submission("ualice", &state, "30"))
        .await;
    assert_eq!(s, 200);

    // The card is posted with Approve / Deny, and its post id is stored on the request.
    let cards = w.calls("POST", "/api/v4/posts");
    let card = cards
        .iter()
        .find(|p| p["props"]["attachments"][0]["actions"].is_array())
        .unwrap()
        .clone();
    let text = card["props"]["attachments"][0]["text"].as_str().unwrap();
    assert!(
        !text.contains("@channel") && text.contains("\\*\\*now"),
        "user text is inert on the card: {text}"
    );
    let actions = card["props"]["attachments"][0]["actions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(actions.len(), 2);
    let approve_ctx = actions[0]["integration"]["context"].clone();
    let id = approve_ctx["request_id"].as_str().unwrap().to_owned();
    let listed = w.backend.get(&format!("/requests/{id}")).await.unwrap();
    assert!(
        listed.body["post_id"]
            .as_str()
            .is_some_and(|p| p.starts_with('p'))
    );
    assert_eq!(w.status(&id).await, "PENDING");

    let click = |user: &str, ctx: Value| {
        json!({"user_id": user, "user_name": "x", "post_id": "p1", "channel_id": "ch1", "channel_name": "ops", "team_id": "t1",
               "team_domain": "acme", "trigger_id": format!("trig-click-{user}"), "type": "", "data_source": "", "context": ctx})
    };
    // A forged click (context altered to approve another request) is refused; nothing changes.
    let mut forged = approve_ctx.clone();
    forged["action"] = json!("deny");
    let (s, _) = w
        .post_json("/mattermost/action", click("ubob", forged))
        .await;
    assert_eq!(s, 403);
    let (s, _) = w
        .post_json(
            "/mattermost/action",
            click("ubob", json!({"action": "approve", "request_id": id})),
        )
        .await;
    assert_eq!(s, 403, "no token, no click");
    // Dave may not approve: he gets an explanation only he sees.
    let (s, r) = w
        .post_json("/mattermost/action", click("udave", approve_ctx.clone()))
        .await;
    assert_eq!(s, 200);
    assert!(
        r["ephemeral_text"].as_str().unwrap().contains("approvers"),
        "{r}"
    );
    assert_eq!(w.status(&id).await, "PENDING");

    // Two approvals are needed: Carol's is the first of two.
    let (_, r) = w
        .post_json("/mattermost/action", click("ucarol", approve_ctx.clone()))
        .await;
    let fields = r["update"]["props"]["attachments"][0]["fields"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        fields
            .iter()
            .any(|f| f["title"] == "Approvals" && f["value"] == "1 of 2"),
        "{r}"
    );
    assert_eq!(w.status(&id).await, "PENDING");

    // Bob approves: the card updates at once, the grant follows, and the callbacks update the
    // card in place, reply in its thread and tell Alice directly.
    let (s, r) = w
        .post_json("/mattermost/action", click("ubob", approve_ctx.clone()))
        .await;
    assert_eq!(s, 200);
    assert!(
        r["update"]["props"]["attachments"][0]["title"]
            .as_str()
            .unwrap()
            .contains("APPROVED"),
        "{r}"
    );
    w.wait_for("the GRANTED card", |d| {
        d.calls.iter().any(|(m, p, b)| {
            m == "PUT"
                && p.ends_with("/patch")
                && b["props"]["attachments"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("GRANTED"))
        })
    })
    .await;
    assert_eq!(w.status(&id).await, "GRANTED");
    w.wait_for("a direct message to Alice", |d| {
        d.calls
            .iter()
            .any(|(m, p, b)| m == "POST" && p.ends_with("/posts") && b["channel_id"] == "dm-ualice")
    })
    .await;
    let threaded = w
        .calls("POST", "/api/v4/posts")
        .iter()
        .filter(|p| p["root_id"].is_string())
        .count();
    assert!(threaded >= 1, "a line in the card's thread");

    // A forged callback and a replayed one are refused with nothing changed.
    let payload = json!({"event_id": "e-forged", "request_id": id, "status": "EXPIRED", "account_id": "123456789012", "channel_id": "ch1", "actor": "system", "details": {}}).to_string();
    let key = w.callback_ring.signing_key(w.clock.now()).unwrap().clone();
    let nonce = new_nonce().unwrap();
    let input = SignInput {
        version: SignatureVersion::V2,
        audience: Audience::Bridge,
        request: RequestParts {
            method: "POST",
            path_and_query: "/jit/webhook",
            body: payload.as_bytes(),
        },
        timestamp: w.clock.unix(),
        nonce: &nonce,
    };
    let headers = sign(&key, &input);
    let send = |body: String, tamper: bool| {
        let mut rb = w
            .http
            .post(format!("{}/jit/webhook", w.bridge))
            .header("content-type", "application/json")
            .header("X-JIT-Event-ID", "e-forged");
        for (k, v) in &headers {
            let v = if tamper && *k == "X-JIT-Signature" {
                // A different last hex digit (a fixed '0' was no change 1 time in 16).
                let last = if v.ends_with('0') { '1' } else { '0' };
                format!("{}{last}", &v[..63])
            } else {
                v.clone()
            };
            rb = rb.header(*k, v);
        }
        rb.body(body).send()
    };
    let before = w.double.lock().unwrap().calls.len();
    assert_eq!(
        send(payload.clone(), true).await.unwrap().status().as_u16(),
        401,
        "bad signature"
    );
    let backend_audience = SignInput {
        audience: Audience::Backend,
        ..input
    };
    let mut rb = w
        .http
        .post(format!("{}/jit/webhook", w.bridge))
        .header("X-JIT-Event-ID", "e-x");
    for (k, v) in sign(&key, &backend_audience) {
        rb = rb.header(k, v);
    }
    assert_eq!(
        rb.body(payload.clone())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "a request for the backend is not a callback"
    );
    assert_eq!(
        send(payload.clone(), false)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200,
        "genuine"
    );
    assert_eq!(
        send(payload.clone(), false)
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "replayed"
    );
    let after_genuine = w.double.lock().unwrap().calls.len();
    assert!(after_genuine > before);

    // An approver extends it from chat; Alice may not extend her own.
    let (_, r) = w
        .slash(
            "tok-new-0123456789abcdef",
            "ualice",
            &format!("extend {id} 10"),
        )
        .await;
    assert!(r["text"].as_str().unwrap().starts_with("Refused"), "{r}");
    let (_, r) = w
        .slash(
            "tok-new-0123456789abcdef",
            "ubob",
            &format!("extend {id} 10"),
        )
        .await;
    assert_eq!(r["text"], format!("Extended {id} by 10 minutes."));
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "ualice", "status mine")
        .await;
    assert!(r["text"].as_str().unwrap().contains(&id), "{r}");

    // It ends exactly at its (extended) end: the card says so and Alice hears it.
    w.clock.advance_secs(40 * 60);
    w.wait_for("the EXPIRED card", |d| {
        d.calls.iter().any(|(m, p, b)| {
            m == "PUT"
                && p.ends_with("/patch")
                && b["props"]["attachments"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains("EXPIRED"))
        })
    })
    .await;
    assert_eq!(w.status(&id).await, "EXPIRED");
    w.wait_for("the expiry DM", |d| {
        d.calls.iter().any(|(_, _, b)| {
            b["channel_id"] == "dm-ualice"
                && b["message"].as_str().is_some_and(|m| m.contains("ended"))
        })
    })
    .await;
    let (_, r) = w
        .slash("tok-new-0123456789abcdef", "ualice", "status")
        .await;
    assert_eq!(r["text"], "No open requests or active grants.");

    // Deny through the dialog.
    let (s, _) = w
        .slash("tok-new-0123456789abcdef", "ualice", "request")
        .await;
    assert_eq!(s, 200);
    let state2 = w.calls("POST", "/actions/dialogs/open").last().unwrap()["dialog"]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = w
        .post_json("/mattermost/dialog", submission("ualice", &state2, "30"))
        .await;
    assert_eq!(s, 200);
    let card2 = w
        .calls("POST", "/api/v4/posts")
        .into_iter()
        .rev()
        .find(|p| p["props"]["attachments"][0]["actions"].is_array())
        .unwrap();
    let deny_ctx = card2["props"]["attachments"][0]["actions"][1]["integration"]["context"].clone();
    let id2 = deny_ctx["request_id"].as_str().unwrap().to_owned();
    assert_ne!(id2, id);
    let (s, _) = w
        .post_json("/mattermost/action", click("ubob", deny_ctx))
        .await;
    assert_eq!(s, 200);
    let deny_dialog = w
        .calls("POST", "/actions/dialogs/open")
        .last()
        .unwrap()
        .clone();
    assert_eq!(deny_dialog["dialog"]["callback_id"], format!("deny:{id2}"));
    let deny_state = deny_dialog["dialog"]["state"].as_str().unwrap().to_owned();
    let (s, _) = w
        .post_json("/mattermost/dialog", json!({"type": "dialog_submission", "callback_id": format!("deny:{id2}"), "state": deny_state,
            "user_id": "ubob", "channel_id": "ch1", "submission": {"reason": "not during the freeze"}, "cancelled": false}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(w.status(&id2).await, "DENIED");

    // And a request withdrawn from chat.
    let (s, _) = w
        .slash("tok-new-0123456789abcdef", "ualice", "request")
        .await;
    assert_eq!(s, 200);
    let state3 = w.calls("POST", "/actions/dialogs/open").last().unwrap()["dialog"]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = w
        .post_json("/mattermost/dialog", submission("ualice", &state3, "30"))
        .await;
    assert_eq!(s, 200);
    let card3 = w
        .calls("POST", "/api/v4/posts")
        .into_iter()
        .rev()
        .find(|p| p["props"]["attachments"][0]["actions"].is_array())
        .unwrap();
    let id3 =
        card3["props"]["attachments"][0]["actions"][0]["integration"]["context"]["request_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (_, r) = w
        .slash(
            "tok-new-0123456789abcdef",
            "ualice",
            &format!("cancel {id3}"),
        )
        .await;
    assert_eq!(r["text"], format!("Cancelled {id3}."));
    assert_eq!(w.status(&id3).await, "CANCELLED");

    // Key use is a fact: the bridge reports which callback key verified callbacks, the backend
    // keeps it for `jit keys status`.
    w.handle.report_usage("bridge:test").await.unwrap();
    let usage = w.backend.get("/admin/keys/usage").await.unwrap().body;
    let cb_key = w
        .callback_ring
        .keys()
        .next()
        .unwrap()
        .id()
        .as_str()
        .to_owned();
    assert!(
        usage["usage"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["ring"] == "callback"
                && u["verifier"] == "bridge:test"
                && u["key_id"] == cb_key.as_str()),
        "{usage}"
    );

    // `jit mattermost setup`'s call registers the slash command as the API defines it.
    let mm = jit_mattermost::client::MmClient::new(
        &w.mm_url,
        zeroize::Zeroizing::new("bot-token".into()),
    )
    .unwrap();
    mm.create_command("t1", "jit", &format!("{}/mattermost/command", w.bridge))
        .await
        .unwrap();
    let registered = w.calls("POST", "/api/v4/commands");
    assert_eq!(registered[0]["trigger"], "jit");
    assert_eq!(registered[0]["method"], "P");

    // The bridge's /metrics: its requests, its refusals and its Mattermost calls, including
    // every bridge metric the alert rules read.
    let resp = w
        .http
        .get(format!("{}/metrics", w.bridge))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().contains_key("x-request-id"),
        "every response carries its log line's request id"
    );
    let text = resp.text().await.unwrap();
    for want in [
        "jit_http_requests_total{route=\"/mattermost/command\",method=\"POST\",status=\"200\"}",
        "jit_http_requests_total{route=\"/mattermost/command\",method=\"POST\",status=\"401\"} 1",
        "jit_http_request_duration_seconds_count{route=\"/mattermost/dialog\",method=\"POST\"}",
        "jit_auth_failures_total{reason=\"bad_slash_token\",key_id=\"none\"} 1",
        "jit_mattermost_api_requests_total{operation=\"POST /posts\",status=\"201\"}",
        "jit_mattermost_api_requests_total{operation=\"PUT /posts/{post_id}/patch\",status=\"200\"}",
        "jit_mattermost_api_request_duration_seconds_count{operation=\"GET /users/{user_id}\"}",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    let rules = include_str!("../../../deploy/prometheus/alerts.yml");
    for (i, _) in rules.match_indices("jit_mattermost_") {
        let rest = &rules[i..];
        let name = &rest[..rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())];
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
            "alerts.yml reads {name}, which the bridge does not write"
        );
    }

    let v = w.double.lock().unwrap().violations.clone();
    assert!(
        v.is_empty(),
        "calls the Mattermost API does not allow:\n{}",
        v.join("\n")
    );
}

/// The bridge reads its rings from Secrets Manager exactly as the backend does.
#[tokio::test]
async fn rings_in_secrets_manager_load_and_reload() {
    let moto = jit_testkit::Moto::start().unwrap();
    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    for (name, body) in [
        (
            "b",
            r#"{"key-v1":"1111111111111111111111111111111111111111"}"#,
        ),
        (
            "c",
            r#"{"cb-v1":"2222222222222222222222222222222222222222"}"#,
        ),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(body)
            .send()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = BridgeConfig {
        bot_token: "bot-token".into(),
        slash_tokens: vec!["tok-new-0123456789abcdef".into()],
        backend_keys: "aws-sm:b".into(),
        callback_keys: "aws-sm:c".into(),
        aws_region: Some("us-east-1".into()),
        aws_endpoint_url: Some(moto.endpoint.clone()),
        data_dir: dir.path().to_path_buf(),
        ..BridgeConfig::default()
    };
    // The bridge uses the SDK's default credential chain; scripts/test.sh exports moto's dummy
    // credentials for it.
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_ok(),
        "run the suite with scripts/test.sh (it sets moto's test credentials)"
    );
    let bridge = Bridge::build(cfg, Arc::new(SystemClock)).await.unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", l.local_addr().unwrap());
    tokio::spawn(async move { bridge.serve(l, std::future::pending()).await.unwrap() });
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("jit_key_ring_keys{ring=\"backend\"} 1")
            && text.contains("jit_key_ring_keys{ring=\"callback\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("jit_key_ring_load_failures_total{ring=\"backend\"} 0"),
        "{text}"
    );
}

/// The bridge's and the callback endpoint's negative catalogue: every case gets its status and
/// stable code, and none changes anything (no Mattermost call, no backend write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_to_the_bridge_gets_its_code_and_changes_nothing() {
    struct Case {
        name: &'static str,
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        status: u16,
        code: &'static str,
    }
    let w = world().await;
    let good = "tok-new-0123456789abcdef";
    assert_eq!(w.slash(good, "uadmin", "bind 123456789012").await.0, 200);
    assert_eq!(w.slash(good, "uadmin", "approvers @bob").await.0, 200);
    let create = |user: &str| {
        json!({"actor": {"user_id": format!("u{user}"), "email": format!("{user}@example.com"), "roles": []},
               "channel_id": "ch1", "account_id": "123456789012", "jira": "OPS-1", "reason": "x",
               "requested_duration_minutes": 30})
    };
    let a = w.backend.post("/requests", &create("alice")).await.unwrap();
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id_a = a.body["request_id"].as_str().unwrap().to_owned();
    let b = w.backend.post("/requests", &create("dave")).await.unwrap();
    let id_b = b.body["request_id"].as_str().unwrap().to_owned();

    // Genuine tokens, made with the bridge's own secret, to misuse.
    let secret = std::fs::read_to_string(w._dirs.1.path().join("keys/bridge-secret")).unwrap();
    let secret = jit_mattermost::tokens::BridgeSecret::new(secret.trim().as_bytes().to_vec());
    let now = w.clock.unix();
    let later = now + 3600;
    let approve_a = secret.sign(&["approve", &id_a], later);
    let expired_a = secret.sign(&["approve", &id_a], now - 1);
    let escalate_a = secret.sign(&["escalate", &id_a], later);
    let bad_id = secret.sign(&["approve", "../config/bind"], later);
    let request_state = format!(
        "f1:{}",
        secret.sign(&["request", "ualice", "ch1", "f1"], later)
    );
    let deny_a = secret.sign(&["deny", &id_a, "ubob", "ch1"], later);
    let deny_a_expired = secret.sign(&["deny", &id_a, "ubob", "ch1"], now - 1);

    let form_body = |token: &str, text: &str| {
        form(&[
            ("token", token),
            ("user_id", "ualice"),
            ("channel_id", "ch1"),
            ("team_id", "t1"),
            ("command", "/jit"),
            ("text", text),
            ("trigger_id", "trig"),
        ])
        .into_bytes()
    };
    let form_ct = || {
        vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )]
    };
    let json_ct = || vec![("content-type".to_owned(), "application/json".to_owned())];
    let slash = |name, token: &str, header: Option<&str>, text: &str, status, code| {
        let mut headers = form_ct();
        if let Some(h) = header {
            headers.push(("authorization".into(), h.to_owned()));
        }
        Case {
            name,
            method: "POST",
            path: "/mattermost/command".into(),
            headers,
            body: form_body(token, text),
            status,
            code,
        }
    };
    let click = |name, context: Value, status, code| Case {
        name,
        method: "POST",
        path: "/mattermost/action".into(),
        headers: json_ct(),
        body:
            json!({"user_id": "ubob", "channel_id": "ch1", "trigger_id": "t", "context": context})
                .to_string()
                .into_bytes(),
        status,
        code,
    };
    let submit = |name, callback_id: &str, state: &str, user: &str, status, code| {
        Case {
        name,
        method: "POST",
        path: "/mattermost/dialog".into(),
        headers: json_ct(),
        body: json!({"type": "dialog_submission", "callback_id": callback_id, "state": state, "user_id": user,
                     "channel_id": "ch1", "submission": {"account": "123456789012", "duration": "30", "ticket": "OPS-1", "reason": "x"},
                     "cancelled": false})
            .to_string()
            .into_bytes(),
        status,
        code,
    }
    };
    // Callbacks: signed with the callback ring unless a case says otherwise.
    let cb_key = w.callback_ring.signing_key(w.clock.now()).unwrap().clone();
    let backend_ring = KeyRing::parse(
        &std::fs::read_to_string(w._dirs.0.path().join("keys/backend.json")).unwrap(),
    )
    .unwrap();
    let backend_key = backend_ring.keys().next().unwrap().clone();
    let event = |id: &str| {
        json!({"event_id": id, "request_id": id_a, "status": "APPROVED", "actor": "ubob",
               "account_id": "123456789012", "channel_id": "ch1"})
        .to_string()
        .into_bytes()
    };
    let signed = |key: &jit_proto::keyring::KeyEntry,
                  audience: Audience,
                  target: &str,
                  body: &[u8],
                  ts: i64,
                  nonce: &str| {
        let mut h: Vec<(String, String)> = sign(
            key,
            &SignInput {
                version: SignatureVersion::V2,
                audience,
                request: RequestParts {
                    method: "POST",
                    path_and_query: target,
                    body,
                },
                timestamp: ts,
                nonce,
            },
        )
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        h.extend(json_ct());
        h
    };
    let callback = |name, headers: Vec<(String, String)>, body: Vec<u8>, status, code| Case {
        name,
        method: "POST",
        path: "/jit/webhook".into(),
        headers,
        body,
        status,
        code,
    };
    let cb = |body: &[u8], nonce: &str| {
        signed(&cb_key, Audience::Bridge, "/jit/webhook", body, now, nonce)
    };
    let replayed = cb(&event("e-replay"), "nonce-replayed-1");
    let with = |mut h: Vec<(String, String)>, k: &str, v: &str| {
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        h.push((k.to_owned(), v.to_owned()));
        h
    };
    let without = |mut h: Vec<(String, String)>, k: &str| {
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        h
    };
    let good_cb = cb(&event("e-1"), "nonce-good-1");
    let big = vec![b'a'; 70 * 1024];

    let cases = vec![
        // Slash command identity and input.
        slash("slash: no token anywhere", "", None, "help", 401, "bad_slash_token"),
        slash("slash: wrong token in the form", "tok-wrong-0123456789abcd", None, "help", 401, "bad_slash_token"),
        slash("slash: wrong token in the header", "", Some("Token tok-wrong-0123456789abcd"), "help", 401, "bad_slash_token"),
        slash("slash: empty header token", "", Some("Token "), "help", 401, "bad_slash_token"),
        slash("slash: a prefix of a real token", "tok-new-0123456789abcde", None, "help", 401, "bad_slash_token"),
        slash("slash: a real token with a suffix", "tok-new-0123456789abcdef0", None, "help", 401, "bad_slash_token"),
        slash("slash: a real token in another case", "TOK-NEW-0123456789ABCDEF", None, "help", 401, "bad_slash_token"),
        slash("slash: SQL in a request id", good, None, "status ' OR 1=1 --", 200, "invalid_command"),
        slash("slash: a path in a request id", good, None, "revoke ../../config/bind", 200, "invalid_command"),
        slash("slash: unknown subcommand", good, None, "escalate me", 200, "invalid_command"),
        Case {
            name: "slash: JSON instead of a form",
            method: "POST",
            path: "/mattermost/command".into(),
            headers: json_ct(),
            body: json!({"token": good, "text": "help"}).to_string().into_bytes(),
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "slash: oversized form",
            method: "POST",
            path: "/mattermost/command".into(),
            headers: form_ct(),
            body: form_body(good, &"x".repeat(70 * 1024)),
            status: 413,
            code: "body_too_large",
        },
        Case {
            name: "slash: GET",
            method: "GET",
            path: "/mattermost/command".into(),
            headers: vec![],
            body: vec![],
            status: 405,
            code: "method_not_allowed",
        },
        // Buttons.
        click("click: no context", json!({}), 403, "bad_action_token"),
        click("click: forged token", json!({"action": "approve", "request_id": id_a, "token": format!("{later}.{}", "ab".repeat(32))}), 403, "bad_action_token"),
        click("click: garbled token", json!({"action": "approve", "request_id": id_a, "token": "not-a-token"}), 403, "bad_action_token"),
        click("click: another request's token", json!({"action": "approve", "request_id": id_b, "token": approve_a}), 403, "bad_action_token"),
        click("click: approve token used to deny", json!({"action": "deny", "request_id": id_a, "token": approve_a}), 403, "bad_action_token"),
        click("click: expiry moved forward", json!({"action": "approve", "request_id": id_a, "token": expired_a.replacen(&(now - 1).to_string(), &later.to_string(), 1)}), 403, "bad_action_token"),
        click("click: expired token", json!({"action": "approve", "request_id": id_a, "token": expired_a}), 200, "expired_action_token"),
        click("click: signed unknown action", json!({"action": "escalate", "request_id": id_a, "token": escalate_a}), 403, "unknown_action"),
        click("click: signed path as request id", json!({"action": "approve", "request_id": "../config/bind", "token": bad_id}), 403, "bad_action_token"),
        click("click: context is a list", json!([approve_a]), 403, "bad_action_token"),
        Case {
            name: "click: malformed JSON",
            method: "POST",
            path: "/mattermost/action".into(),
            headers: json_ct(),
            body: b"{\"context\": {".to_vec(),
            status: 400,
            code: "invalid_json",
        },
        Case {
            name: "click: form content type",
            method: "POST",
            path: "/mattermost/action".into(),
            headers: form_ct(),
            body: b"context=x".to_vec(),
            status: 415,
            code: "unsupported_media_type",
        },
        // Dialogs.
        submit("dialog: forged request form", "request", &format!("f1:{later}.{}", "cd".repeat(32)), "ualice", 403, "bad_dialog_state"),
        submit("dialog: request form without state", "request", "", "ualice", 403, "bad_dialog_state"),
        submit("dialog: Alice's form submitted by Dave", "request", &request_state, "udave", 403, "bad_dialog_state"),
        submit("dialog: another form id", "request", &request_state.replacen("f1:", "f2:", 1), "ualice", 403, "bad_dialog_state"),
        submit("dialog: deny form without a request", "deny:", "x", "ubob", 403, "bad_dialog_state"),
        submit("dialog: deny state for another request", &format!("deny:{id_b}"), &deny_a, "ubob", 403, "bad_dialog_state"),
        submit("dialog: deny state submitted by another user", &format!("deny:{id_a}"), &deny_a, "ucarol", 403, "bad_dialog_state"),
        submit("dialog: expired deny state", &format!("deny:{id_a}"), &deny_a_expired, "ubob", 200, "expired_dialog_state"),
        submit("dialog: unknown form", "escalate", "x", "ubob", 400, "unknown_form"),
        Case {
            name: "dialog: submission is not an object",
            method: "POST",
            path: "/mattermost/dialog".into(),
            headers: json_ct(),
            body: json!({"callback_id": "request", "state": request_state, "user_id": "ualice", "submission": "x"}).to_string().into_bytes(),
            status: 400,
            code: "invalid_json",
        },
        // Callbacks from the backend.
        callback("callback: unsigned", json_ct(), event("e-2"), 401, "missing_header"),
        callback("callback: no nonce", without(cb(&event("e-3"), "n-3"), "X-JIT-Nonce"), event("e-3"), 401, "missing_header"),
        callback("callback: garbled timestamp", with(cb(&event("e-4"), "n-4"), "X-JIT-Timestamp", "yesterday"), event("e-4"), 401, "malformed_header"),
        callback("callback: garbled signature", with(cb(&event("e-5"), "n-5"), "X-JIT-Signature", "zz"), event("e-5"), 401, "malformed_header"),
        callback("callback: stale timestamp", signed(&cb_key, Audience::Bridge, "/jit/webhook", &event("e-6"), now - 3600, "n-6"), event("e-6"), 401, "stale_timestamp"),
        callback("callback: future timestamp", signed(&cb_key, Audience::Bridge, "/jit/webhook", &event("e-7"), now + 3600, "n-7"), event("e-7"), 401, "stale_timestamp"),
        callback("callback: tampered body", cb(&event("e-8"), "n-8"), event("e-8-tampered"), 401, "bad_signature"),
        Case {
            name: "callback: tampered path",
            method: "POST",
            path: "/jit/webhook?replay=1".into(),
            headers: cb(&event("e-9"), "n-9"),
            body: event("e-9"),
            status: 401,
            code: "bad_signature",
        },
        callback("callback: signed for the backend's audience", signed(&cb_key, Audience::Backend, "/jit/webhook", &event("e-10"), now, "n-10"), event("e-10"), 401, "bad_signature"),
        callback("callback: signed with the backend ring's key", signed(&backend_key, Audience::Bridge, "/jit/webhook", &event("e-11"), now, "n-11"), event("e-11"), 401, "unknown_key"),
        callback("callback: unknown key id", with(cb(&event("e-12"), "n-12"), "X-JIT-KeyID", "cb-19990101"), event("e-12"), 401, "unknown_key"),
        callback("callback: unsupported signature version", with(cb(&event("e-13"), "n-13"), "X-JIT-Signature-Version", "9"), event("e-13"), 401, "unsupported_version"),
        callback("callback: replayed nonce (first use is a bad event id)", replayed.clone(), event("e-replay").iter().map(|b| if *b == b'A' { b'B' } else { *b }).collect(), 401, "bad_signature"),
        callback("callback: signed, not JSON", cb(b"not json", "n-14"), b"not json".to_vec(), 400, "invalid_json"),
        callback("callback: signed, no event id", cb(br#"{"request_id":"x"}"#, "n-15"), br#"{"request_id":"x"}"#.to_vec(), 400, "missing_event_id"),
        callback("callback: oversized", cb(&big, "n-16"), big.clone(), 413, "body_too_large"),
        Case {
            name: "callback: duplicated signature header",
            method: "POST",
            path: "/jit/webhook".into(),
            headers: {
                let mut h = cb(&event("e-17"), "n-17");
                h.push(("X-JIT-Signature".into(), "0".repeat(64)));
                h
            },
            body: event("e-17"),
            status: 401,
            code: "malformed_header",
        },
        Case {
            name: "unknown endpoint",
            method: "POST",
            path: "/mattermost/admin".into(),
            headers: json_ct(),
            body: b"{}".to_vec(),
            status: 404,
            code: "not_found",
        },
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let audit_before = w.backend.get("/audit").await.unwrap().body["count"].clone();
    let calls_before = w.double.lock().unwrap().calls.len();
    let mut failures = Vec::new();
    for c in &cases {
        let mut rb = w
            .http
            .request(c.method.parse().unwrap(), format!("{}{}", w.bridge, c.path));
        for (k, v) in &c.headers {
            rb = rb.header(k, v);
        }
        let r = rb.body(c.body.clone()).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if (status, body["code"].as_str()) != (c.status, Some(c.code)) {
            failures.push(format!(
                "{}: got {status} {body}, want {} {}",
                c.name, c.status, c.code
            ));
        }
        let calls = w.double.lock().unwrap().calls.len();
        if calls != calls_before {
            failures.push(format!("{}: called Mattermost", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        w.backend.get("/audit").await.unwrap().body["count"],
        audit_before,
        "no backend write"
    );
    for id in [&id_a, &id_b] {
        assert_eq!(w.status(id).await, "PENDING");
    }
    let deliver = |headers: &[(String, String)], body: Vec<u8>| {
        let mut rb = w.http.post(format!("{}/jit/webhook", w.bridge));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.body(body).send()
    };
    // The good callback still goes through: none of the refusals used up its event id.
    let r = deliver(&good_cb, event("e-1")).await.unwrap();
    assert_eq!(r.status(), 200);
    // And a nonce once used is refused the second time.
    let first = deliver(&replayed, event("e-replay")).await.unwrap();
    assert_eq!(first.status(), 200);
    let again = deliver(&replayed, event("e-replay")).await.unwrap();
    assert_eq!(again.status(), 401);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "replayed_nonce"
    );

    // Forged clicks arrive from Mattermost's own address: counted, but they never trip the
    // source limit (one user could otherwise lock everyone out).
    for _ in 0..150 {
        let (s, _) = w
            .post_json(
                "/mattermost/action",
                json!({"user_id": "ubob", "channel_id": "ch1", "context": {"action": "approve", "request_id": id_a, "token": "x"}}),
            )
            .await;
        assert_eq!(s, 403);
    }
    // A burst of failures from one address: 429 for the rest of the minute, even with the
    // right token; the next minute it works again.
    let mut limited_after = None;
    for i in 0..200 {
        let (s, _) = w.slash("tok-wrong-0123456789abcd", "ualice", "help").await;
        if s == 429 {
            limited_after = Some(i);
            break;
        }
        assert_eq!(s, 401);
    }
    assert!(limited_after.is_some(), "never limited");
    let (s, r) = w.slash(good, "ualice", "help").await;
    assert_eq!(
        (s, r["code"].as_str()),
        (429, Some("too_many_auth_failures"))
    );
    w.clock.advance_secs(60);
    assert_eq!(w.slash(good, "ualice", "help").await.0, 200);
    let text = w
        .http
        .get(format!("{}/metrics", w.bridge))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "jit_auth_failures_total{reason=\"bad_action_token\",key_id=\"none\"}",
        "jit_auth_failures_total{reason=\"bad_dialog_state\",key_id=\"none\"}",
        "jit_auth_failures_total{reason=\"unknown_key\",key_id=\"unknown\"}",
        "jit_auth_failures_total{reason=\"replayed_nonce\",key_id=\"cb-",
        "jit_http_requests_total{route=\"/mattermost/command\",method=\"POST\",status=\"429\"}",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

/// The bridge never calls a link-local or metadata address: a configured URL naming one is
/// refused at start (names resolving to one are dropped by the clients' resolver, tested in
/// `jit_http::outbound`).
#[tokio::test]
async fn outbound_urls_at_metadata_addresses_are_refused_at_start() {
    for (mm, backend) in [
        ("http://169.254.169.254", "http://127.0.0.1:8080"),
        ("http://127.0.0.1:8065", "http://[fd00:ec2::254]/"),
    ] {
        let cfg = BridgeConfig {
            mattermost_url: mm.into(),
            backend_url: backend.into(),
            ..BridgeConfig::default()
        };
        let e = Bridge::build(cfg, Arc::new(SystemClock)).await.unwrap_err();
        assert!(
            e.to_string().contains("link-local or cloud metadata"),
            "{e}"
        );
    }
}

/// Chat effects happen once: a form submitted again (twice at once, then once more) posts one
/// card; a rate limit on the DM step makes the backend redeliver the event, and the card patch
/// and thread line made before it are not repeated; card updates keep the card's text; the DM
/// names the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_chat_effect_happens_once_whatever_is_resubmitted_or_redelivered() {
    let w = world().await;
    let tok = "tok-new-0123456789abcdef";
    assert_eq!(w.slash(tok, "uadmin", "bind 123456789012").await.0, 200);
    assert_eq!(w.slash(tok, "uadmin", "approvers @bob").await.0, 200);
    assert_eq!(w.slash(tok, "ualice", "request").await.0, 200);
    let state = w.calls("POST", "/actions/dialogs/open")[0]["dialog"]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let submission = json!({"type": "dialog_submission", "callback_id": "request", "state": state, "user_id": "ualice",
        "channel_id": "ch1", "team_id": "t1", "cancelled": false,
        "submission": {"account": "123456789012", "duration": "30", "ticket": "OPS-1", "reason": "deploy"}});
    let (a, b) = tokio::join!(
        w.post_json("/mattermost/dialog", submission.clone()),
        w.post_json("/mattermost/dialog", submission.clone())
    );
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(w.post_json("/mattermost/dialog", submission).await.0, 200);
    let cards: Vec<Value> = w
        .calls("POST", "/api/v4/posts")
        .into_iter()
        .filter(|p| p["props"]["attachments"][0]["actions"].is_array())
        .collect();
    assert_eq!(cards.len(), 1, "one card per request: {cards:?}");
    let card_text = cards[0]["message"].as_str().unwrap().to_owned();
    let ctx = cards[0]["props"]["attachments"][0]["actions"][0]["integration"]["context"].clone();
    let id = ctx["request_id"].as_str().unwrap().to_owned();
    let card_id = w
        .backend
        .get(&format!("/requests/{id}"))
        .await
        .unwrap()
        .body["post_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob approves; the DM step of the APPROVED callback hits a rate limit on each of the
    // client's three tries, so the bridge answers 503 and the backend redelivers.
    for _ in 0..3 {
        w.double
            .lock()
            .unwrap()
            .faults
            .push(("POST".into(), "/channels/direct".into(), 429));
    }
    let click = json!({"user_id": "ubob", "user_name": "bob", "post_id": card_id, "channel_id": "ch1", "channel_name": "ops",
        "team_id": "t1", "team_domain": "acme", "trigger_id": "trig-click", "type": "", "data_source": "", "context": ctx});
    assert_eq!(w.post_json("/mattermost/action", click).await.0, 200);
    w.wait_for("the injected 429", |d| d.faults.is_empty())
        .await;
    // The backend records the failed attempt, then retries after its backoff (its clock is
    // moved by hand, once the failure is recorded).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = w
            .backend
            .get("/callbacks?status=PENDING")
            .await
            .unwrap()
            .body;
        let failed = pending["callbacks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["attempts"].as_i64().unwrap_or(0) >= 1);
        if failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failed delivery was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.clock.advance_secs(5);
    w.wait_for("the DM after the redelivery", |d| {
        d.bodies("POST", "/api/v4/posts").iter().any(|p| {
            p["channel_id"] == "dm-ualice"
                && p["message"].as_str().unwrap_or("").contains("Approved by")
        })
    })
    .await;
    let thread: Vec<String> = w
        .calls("POST", "/api/v4/posts")
        .iter()
        .filter(|p| p["root_id"] == card_id.as_str())
        .map(|p| p["message"].as_str().unwrap().to_owned())
        .collect();
    let approved: Vec<&String> = thread
        .iter()
        .filter(|m| m.contains("Approved by"))
        .collect();
    assert_eq!(approved.len(), 1, "the thread line once: {thread:?}");
    let mut unique = thread.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), thread.len(), "no line twice: {thread:?}");
    let patches = w.calls("PUT", &format!("/posts/{card_id}/patch"));
    assert!(!patches.is_empty());
    for p in &patches {
        assert_eq!(p["message"], card_text.as_str(), "the card keeps its text");
    }
    let dms: Vec<Value> = w
        .calls("POST", "/api/v4/posts")
        .into_iter()
        .filter(|p| p["channel_id"] == "dm-ualice")
        .collect();
    assert!(
        dms.iter()
            .all(|p| p["message"].as_str().unwrap().contains(&id)),
        "{dms:?}"
    );
    let approved_dms = dms
        .iter()
        .filter(|p| p["message"].as_str().unwrap().contains("Approved by"))
        .count();
    assert_eq!(approved_dms, 1);
    assert!(w.double.lock().unwrap().violations.is_empty());
}

/// `jit mattermost setup`'s configuration for a bridge with no slash token configured: the
/// token comes only from the slash tokens file in `dir` (the default, `<data_dir>/keys/`).
fn setup_config(mm_url: &str, public_url: &str, dir: &std::path::Path) -> BridgeConfig {
    let (backend, callback) = jit_server::embedded::key_paths(dir);
    BridgeConfig {
        listen: "127.0.0.1:0".into(),
        public_url: public_url.into(),
        mattermost_url: mm_url.into(),
        bot_token: "bot-token".into(),
        slash_tokens: vec![],
        backend_url: "http://127.0.0.1:9".into(),
        backend_keys: format!("file:{}", backend.display()),
        callback_keys: format!("file:{}", callback.display()),
        data_dir: dir.to_path_buf(),
        ..BridgeConfig::default()
    }
}

fn setup_options(
    rotate_token: bool,
    check_channel: Option<&str>,
) -> jit_mattermost::setup::SetupOptions {
    jit_mattermost::setup::SetupOptions {
        team_id: "t1".into(),
        trigger: "jit".into(),
        rotate_token,
        check_channel: check_channel.map(str::to_owned),
    }
}

/// The slash command as the running bridge sees it from Mattermost.
async fn slash_status(bridge: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{bridge}/mattermost/command"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Token {token}"))
        .body(form(&[
            ("token", token),
            ("user_id", "ualice"),
            ("channel_id", "ch1"),
            ("text", "help"),
        ]))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `jit mattermost setup` can be run again and again: the first run creates the command and
/// writes its token into the slash tokens file, which the running bridge (started with no
/// token at all) accepts without a restart; later runs leave exactly one command, repair one
/// that points elsewhere, and `--rotate-token` replaces the token in the file, after which the
/// bridge accepts the new token and refuses the old one. Mattermost itself runs `/jit help`
/// through the bridge each time (`--check-channel`). Every call is checked against the spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_registers_one_command_however_often_it_runs_and_the_bridge_follows_its_token() {
    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    jit_server::embedded::ensure_key_files(dir.path(), SystemClock.now()).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge_url = format!("http://{}", l.local_addr().unwrap());
    let cfg = setup_config(&mm_url, &bridge_url, dir.path());
    cfg.validate().unwrap();
    let bridge = Bridge::build(cfg.clone(), Arc::new(SystemClock))
        .await
        .unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let _loops = bridge.spawn_rings(stop_rx);
    tokio::spawn(async move { bridge.serve(l, std::future::pending()).await.unwrap() });
    assert_eq!(
        slash_status(&bridge_url, "tok-not-yet-0123456789abc").await,
        401
    );

    let tokens_file = dir.path().join("keys/slash-tokens");
    let registered = |d: &Double| d.commands.clone();
    let opts = setup_options(false, Some("ch1"));

    // First run: created, token written, Mattermost reaches the bridge with it.
    let first = jit_mattermost::setup::run(&cfg, &opts).await.unwrap();
    assert!(first.passed(), "{}", first.render());
    for code in [
        "bot_token_valid",
        "emails_visible",
        "command_created",
        "token_file_written",
        "bridge_answers",
        "mattermost_reaches_bridge",
    ] {
        assert_eq!(
            first.get(code).map(|c| c.status),
            Some(jit_mattermost::setup::Status::Ok),
            "{code}:\n{}",
            first.render()
        );
    }
    // Mattermost reached the bridge on its loopback address: it is allowed.
    assert_eq!(
        first.get("bridge_url_allowed").map(|c| c.status),
        Some(jit_mattermost::setup::Status::Ok),
        "{}",
        first.render()
    );
    let commands = registered(&double.lock().unwrap());
    assert_eq!(commands.len(), 1);
    let token = commands[0]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        commands[0]["url"],
        format!("{bridge_url}/mattermost/command")
    );
    let text = std::fs::read_to_string(&tokens_file).unwrap();
    assert_eq!(text, format!("{token} # team t1 /jit\n"));
    assert!(
        !first.render().contains(&token),
        "the token is never printed"
    );
    assert_eq!(
        slash_status(&bridge_url, &token).await,
        200,
        "accepted without a restart"
    );

    // Second run (without Mattermost calling the bridge): nothing to change, still one
    // command; the bridge's loopback address is a warning naming the setting.
    let second = jit_mattermost::setup::run(&cfg, &setup_options(false, None))
        .await
        .unwrap();
    assert!(second.passed(), "{}", second.render());
    assert!(
        second.get("command_current").is_some() && second.get("token_file_current").is_some(),
        "{}",
        second.render()
    );
    assert_eq!(registered(&double.lock().unwrap()).len(), 1);
    let internal = second.get("bridge_url_internal").unwrap();
    assert_eq!(internal.status, jit_mattermost::setup::Status::Warn);
    let hint = internal.hint.as_deref().unwrap();
    assert!(
        hint.contains(
            "add 127.0.0.1 to System Console > Environment > Developer > Allow untrusted \
             internal connections to (ServiceSettings.AllowedUntrustedInternalConnections)"
        ),
        "{hint}"
    );

    // A command pointing elsewhere (registered by hand, or an old public_url) is updated in
    // place, keeping its id and token.
    double.lock().unwrap().commands[0]["url"] =
        json!("http://old-bridge.example.com/mattermost/command");
    let third = jit_mattermost::setup::run(&cfg, &opts).await.unwrap();
    assert!(third.passed(), "{}", third.render());
    assert!(
        third
            .get("command_updated")
            .unwrap()
            .message
            .contains("was http://old-bridge.example.com")
    );
    let commands = registered(&double.lock().unwrap());
    assert_eq!(commands.len(), 1);
    assert_eq!(
        commands[0]["url"],
        format!("{bridge_url}/mattermost/command")
    );
    assert_eq!(commands[0]["token"], token.as_str());
    assert_eq!(std::fs::read_to_string(&tokens_file).unwrap(), text);

    // --rotate-token: a new token in Mattermost and in the file; the bridge follows.
    let rotated = jit_mattermost::setup::run(&cfg, &setup_options(true, Some("ch1")))
        .await
        .unwrap();
    assert!(rotated.passed(), "{}", rotated.render());
    assert!(
        rotated.get("token_rotated").is_some()
            && rotated.get("mattermost_reaches_bridge").is_some()
    );
    let commands = registered(&double.lock().unwrap());
    assert_eq!(commands.len(), 1);
    let new_token = commands[0]["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert_eq!(
        std::fs::read_to_string(&tokens_file).unwrap(),
        format!("{new_token} # team t1 /jit\n")
    );
    assert_eq!(slash_status(&bridge_url, &new_token).await, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while slash_status(&bridge_url, &token).await != 401 {
        assert!(Instant::now() < deadline, "the old token is still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let d = double.lock().unwrap();
    assert_eq!(
        d.bodies("POST", "/api/v4/commands").len(),
        1,
        "created once"
    );
    assert_eq!(d.bodies("PUT", "/regen_token").len(), 1);
    assert_eq!(d.bodies("POST", "/api/v4/commands/execute").len(), 3);
    assert!(
        d.violations.is_empty(),
        "calls the Mattermost API does not allow:\n{}",
        d.violations.join("\n")
    );
}

/// Each check fails with its own code and names the setting to change: emails hidden from the
/// bot, the bot's token refused (a user's token while personal access tokens are disabled),
/// custom slash commands turned off, and a bridge Mattermost cannot reach.
#[tokio::test]
async fn setup_checks_fail_with_their_codes_and_name_the_setting() {
    use jit_mattermost::setup::{Status, run};
    let failed = |r: &jit_mattermost::setup::Report, code: &str| {
        let c = r
            .get(code)
            .unwrap_or_else(|| panic!("no {code} in\n{}", r.render()));
        assert_eq!(c.status, Status::Fail, "{}", r.render());
        assert!(!r.passed());
        c.hint.clone().unwrap()
    };
    // Nothing listens on port 9: the bridge cannot be reached, from here or from Mattermost.
    let nowhere = "http://127.0.0.1:9";

    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup_config(&mm_url, nowhere, dir.path());
    double.lock().unwrap().emails_hidden = true;
    let r = run(&cfg, &setup_options(false, Some("ch1"))).await.unwrap();
    let hint = failed(&r, "emails_hidden");
    assert!(
        hint.contains("PrivacySettings.ShowEmailAddress") && hint.contains("Show Email Address"),
        "{hint}"
    );
    assert_eq!(
        r.get("command_created").map(|c| c.status),
        Some(Status::Ok),
        "the rest goes on"
    );
    assert_eq!(
        r.get("bridge_not_answering").map(|c| c.status),
        Some(Status::Warn)
    );
    let hint = failed(&r, "bridge_unreachable_from_mattermost");
    assert!(hint.contains("add 127.0.0.1 to System Console > Environment > Developer > Allow untrusted internal connections to"), "{hint}");
    assert!(double.lock().unwrap().violations.is_empty());

    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let cfg = setup_config(&mm_url, nowhere, dir.path());
    double.lock().unwrap().access_tokens_disabled = true;
    let r = run(&cfg, &setup_options(false, None)).await.unwrap();
    let hint = failed(&r, "mattermost_token_invalid");
    assert!(
        hint.contains("ServiceSettings.EnableUserAccessTokens")
            && hint.contains("Enable Personal Access Tokens"),
        "{hint}"
    );
    let calls = double.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 1, "nothing else is tried: {calls:?}");

    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let cfg = setup_config(&mm_url, nowhere, dir.path());
    for _ in 0..3 {
        double
            .lock()
            .unwrap()
            .faults
            .push(("GET".into(), "/api/v4/commands".into(), 501));
    }
    let r = run(&cfg, &setup_options(false, None)).await.unwrap();
    let hint = failed(&r, "slash_commands_disabled");
    assert!(hint.contains("ServiceSettings.EnableCommands"), "{hint}");
    assert!(double.lock().unwrap().commands.is_empty());
    assert!(double.lock().unwrap().violations.is_empty());
}
