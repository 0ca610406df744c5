//! The API over real HTTP: a server on port 0 with a fresh database (SQLite and PostgreSQL),
//! called through the signed client as the bridge and the existing plugin would call it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_client::{Answer, Client, Keys};
use jit_proto::keyring::KeyRing;
use jit_proto::sign::SignatureVersion;
use jit_proto::{Clock, ManualClock};
use jit_server::config::Config;
use jit_server::serve::Server;
use serde_json::{Value, json};
use std::sync::Arc;

struct App {
    base: String,
    client: Client,
    v1: Client,
    clock: ManualClock,
    state: jit_server::AppState,
    db_url: String,
    stop: tokio::sync::watch::Sender<bool>,
    /// The moto server a function on DynamoDB keeps its tables in.
    moto: Option<jit_testkit::Moto>,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn spawn_app(pg: bool) -> App {
    let dir = tempfile::tempdir().unwrap();
    let db_url = if pg {
        jit_testkit::fresh_pg_database().unwrap()
    } else {
        format!("sqlite://{}", dir.path().join("jit.db").display())
    };
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db_url.clone()),
        admins: vec!["admin1".into(), "boss@example.com".into()],
        ..Config::default()
    };
    let clock = ManualClock::at(1_764_072_000);
    let server = Server::build(config, Arc::new(clock.clone()))
        .await
        .unwrap()
        .without_workers();
    let addr = server.local_addr().unwrap();
    let stop = server.shutdown_handle();
    let state = server.state.clone();
    tokio::spawn(server.serve());
    let base = format!("http://{addr}");
    App::signed(base, clock, state, db_url, stop, None, dir)
}

/// The same API as the Lambda function answers it (`jit-lambda`): DynamoDB on moto, each call
/// turned into the API Gateway payload 2.0 event Lambda delivers and back, in process so the
/// clock is the test's. (The real binary on cargo-lambda's emulator: `jit-lambda`'s tests.)
async fn spawn_lambda() -> App {
    let dir = tempfile::tempdir().unwrap();
    let moto = jit_testkit::Moto::start().unwrap();
    let sdk = moto.sdk_config().await;
    jit_store::DynamoStore::create_tables(&sdk, "jit-state", "jit-nonces")
        .await
        .unwrap();
    let db_url = "dynamodb://jit-state?nonces=jit-nonces".to_owned();
    let config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        database_url: Some(db_url.clone()),
        aws_region: Some("us-east-1".into()),
        aws_endpoint_url: Some(moto.endpoint.clone()),
        admins: vec!["admin1".into(), "boss@example.com".into()],
        ..Config::default()
    };
    let clock = ManualClock::at(1_764_072_000);
    let backend = jit_server::serve::Backend::prepare(config, Arc::new(clock.clone()), None)
        .await
        .unwrap();
    let state = backend.state.clone();
    let function = Arc::new(
        jit_lambda::Function::new(backend, None, jit_lambda::Emf::new("JitAccess")).stepped(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(jit_lambda::local::serve(function, listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    App::signed(base, clock, state, db_url, stop, Some(moto), dir)
}

fn actor(id: &str) -> Value {
    json!({"user_id": id, "email": format!("{id}@example.com"), "roles": []})
}

const ACCOUNT: &str = "123456789012";

impl App {
    /// An app on `base`, called with the backend ring the server wrote into `dir`.
    fn signed(
        base: String,
        clock: ManualClock,
        state: jit_server::AppState,
        db_url: String,
        stop: tokio::sync::watch::Sender<bool>,
        moto: Option<jit_testkit::Moto>,
        dir: tempfile::TempDir,
    ) -> Self {
        let ring =
            KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
                .unwrap();
        let client =
            Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(clock.clone())).unwrap();
        let v1 = client.clone().with_version(SignatureVersion::V1);
        App {
            base,
            client,
            v1,
            clock,
            state,
            db_url,
            stop,
            moto,
            _dir: dir,
        }
    }

    /// Sets a column of audit event `seq` behind the store's back, on whichever database.
    async fn tamper(&self, seq: i64, column: &str, value: &str) {
        if let Some(moto) = &self.moto {
            let sdk = moto.sdk_config().await;
            aws_sdk_dynamodb::Client::new(&sdk)
                .update_item()
                .table_name("jit-state")
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("A#{:012}", seq / 1000)),
                )
                .key(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("{seq:020}")),
                )
                .update_expression("SET #c = :v")
                .expression_attribute_names("#c", column)
                .expression_attribute_values(
                    ":v",
                    aws_sdk_dynamodb::types::AttributeValue::S(value.to_owned()),
                )
                .send()
                .await
                .unwrap();
            return;
        }
        let sql: &'static str = Box::leak(
            format!("UPDATE audit_events SET {column} = '{value}' WHERE seq = {seq}")
                .into_boxed_str(),
        );
        if self.db_url.starts_with("postgres") {
            jit_testkit::psql(&self.db_url, sql).unwrap();
        } else {
            let store = jit_store::SqlStore::open(&self.db_url).await.unwrap();
            store.raw_execute(sql).await.unwrap();
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.client.post(path, &body).await.unwrap()
    }

    async fn get(&self, pq: &str) -> Answer {
        self.client.get(pq).await.unwrap()
    }

    /// Binds ch1 to the account and sets approvers, as an admin.
    async fn setup_channel(&self, approvers: &[&str], required: u32) {
        let a = self
            .post(
                "/config/bind",
                json!({"actor": actor("admin1"), "channel_id": "ch1", "account_id": ACCOUNT}),
            )
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        let a = self
            .post("/config/approvers", json!({"actor": actor("admin1"), "channel_id": "ch1", "approvers": approvers, "required_approvals": required}))
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }

    async fn create(&self, requester: &str) -> String {
        let a = self
            .post(
                "/requests",
                json!({"actor": actor(requester), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1",
                       "reason": "deploy", "requested_duration_minutes": 60}),
            )
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["request_id"].as_str().unwrap().to_owned()
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let c = reqwest::Client::new();
        let mut rb = c.request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb.body(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn health_is_open_and_everything_else_is_signed(app: App) {
    assert_eq!(
        app.raw("GET", "/healthz", &[], vec![]).await,
        (200, json!({"status": "ok"}))
    );
    let (s, body) = app.raw("GET", "/readyz", &[], vec![]).await;
    assert_eq!(s, 200);
    assert_eq!(body["ready"], true);
    for (m, p) in [
        ("GET", "/requests"),
        ("POST", "/requests"),
        ("GET", "/config/accounts?channel_id=ch1"),
        ("GET", "/audit"),
        ("POST", "/config/bind"),
    ] {
        let (s, body) = app.raw(m, p, &[], vec![]).await;
        assert_eq!(
            (s, &body["code"]),
            (401, &json!("missing_header")),
            "{m} {p}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    assert_eq!(app.get("/nope").await.status, 404);
    // Key use shows in the metrics (key ids only, never secrets).
    assert_eq!(app.get("/requests").await.status, 200);
    let (s, _) = app.raw("GET", "/metrics", &[], vec![]).await;
    assert_eq!(s, 200);
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("jit_key_ring_keys{ring=\"backend\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("jit_key_last_used_timestamp_seconds{ring=\"backend\",key_id=\"key-"),
        "{text}"
    );
    // Requests count under their route template; unmatched paths share one label, and the
    // five unsigned calls above count as authentication failures with no key id.
    for want in [
        "jit_http_requests_total{route=\"/requests\",method=\"GET\",status=\"200\"} 1",
        "jit_http_requests_total{route=\"/requests\",method=\"GET\",status=\"401\"} 1",
        "jit_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "jit_http_request_duration_seconds_count{route=\"/requests\",method=\"POST\"} 1",
        "jit_auth_failures_total{reason=\"missing_header\",key_id=\"unknown\"} 5",
    ] {
        assert!(text.contains(want), "missing {want} in {text}");
    }
    assert!(!text.contains("/nope"), "{text}");
    // Every metric an alert rule reads is one this server writes (the old system's alarms read
    // a field its logs never wrote).
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let mut names: Vec<&str> = Vec::new();
    for (i, _) in rules.match_indices("jit_") {
        let rest = &rules[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        names.push(&rest[..end]);
    }
    // jit_mattermost_* come from the bridge's /metrics (checked in the bridge's test).
    names.retain(|n| *n != "jit_" && !n.starts_with("jit_mattermost_"));
    assert!(names.len() >= 10, "{names:?}");
    for n in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{n}{{")) || l.starts_with(&format!("{n} "))),
            "alerts.yml reads {n}, which /metrics does not write:\n{text}"
        );
    }
    let secret = std::fs::read_to_string(app._dir.path().join("keys/backend.json")).unwrap();
    let secret = KeyRing::parse(&secret)
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .secret()
        .expose()
        .to_vec();
    assert!(!text.contains(std::str::from_utf8(&secret).unwrap()));
}

async fn legacy_plugin_flow_with_v1_signatures_and_its_field_names(app: App) {
    // The existing plugin: v1 signatures, <role>_mm_user_id / <role>_email fields, `jira`.
    let bind = app
        .v1
        .post(
            "/config/bind",
            &json!({"channel_id": "ch1", "account_id": ACCOUNT, "admin_mm_user_id": "admin1"}),
        )
        .await
        .unwrap();
    assert_eq!(bind.status, 200, "{:?}", bind.body);
    let appr = app
        .v1
        .post("/config/approvers", &json!({"channel_id": "ch1", "approvers": ["u2"], "admin_mm_user_id": "admin1", "admin_email": "admin1@example.com"}))
        .await
        .unwrap();
    assert_eq!(appr.status, 200, "{:?}", appr.body);
    let accounts = app.v1.get("/config/accounts?channel_id=ch1").await.unwrap();
    assert_eq!(accounts.body[0]["account_id"], ACCOUNT);
    assert_eq!(accounts.body[0]["approver_mm_user_ids"], json!(["u2"]));
    let created = app
        .v1
        .post(
            "/requests",
            &json!({"account_id": ACCOUNT, "channel_id": "ch1", "requester_mm_user_id": "u1", "requester_email": "alice@example.com",
                    "jira": "OPS-42", "reason": "deploy hotfix", "requested_duration_minutes": 60}),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["request_id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["status"], "PENDING");
    assert_eq!(created.body["jira"], "OPS-42");
    assert_eq!(created.body["requester_email"], "alice@example.com");
    assert_eq!(created.body["requested_duration_minutes"], 60);
    let approved = app
        .v1
        .post(
            &format!("/requests/{id}/approve"),
            &json!({"approver_mm_user_id": "u2", "approver_email": "bob@example.com"}),
        )
        .await
        .unwrap();
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.body["status"], "APPROVED");
    let listed = app
        .v1
        .get("/requests?channel_id=ch1&status=APPROVED&limit=10")
        .await
        .unwrap();
    assert_eq!(listed.body["items"][0]["request_id"], id.as_str());
}

async fn authorisation_rules(app: App) {
    // Non-admins cannot bind or change approvers.
    let a = app
        .post(
            "/config/bind",
            json!({"actor": actor("mallory"), "channel_id": "ch1", "account_id": ACCOUNT}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, Some("admin_required")));
    let a = app
        .post(
            "/config/approvers",
            json!({"actor": actor("mallory"), "channel_id": "ch1", "approvers": ["mallory"]}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, Some("admin_required")));
    // A system admin (role from the bridge) and an admin by email may.
    let a = app
        .post("/config/bind", json!({"actor": {"user_id": "root", "roles": ["system_admin"]}, "channel_id": "ch1", "account_id": ACCOUNT}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = app
        .post("/config/approvers", json!({"actor": {"user_id": "x9", "email": "Boss@Example.com"}, "channel_id": "ch1", "approvers": ["alice", "bob", "carol"], "required_approvals": 2}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    let id = app.create("alice").await;
    let approve = |who: &str| json!({"actor": actor(who)});
    let a = app
        .post(&format!("/requests/{id}/approve"), approve("mallory"))
        .await;
    assert_eq!((a.status, a.code()), (403, Some("not_an_approver")));
    let a = app
        .post(&format!("/requests/{id}/approve"), approve("alice"))
        .await;
    assert_eq!((a.status, a.code()), (403, Some("self_approval_forbidden")));
    let a = app
        .post(&format!("/requests/{id}/approve"), approve("bob"))
        .await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("PENDING")));
    let a = app
        .post(&format!("/requests/{id}/approve"), approve("bob"))
        .await;
    assert_eq!((a.status, a.code()), (409, Some("already_approved")));
    let a = app
        .post(&format!("/requests/{id}/approve"), approve("carol"))
        .await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("APPROVED")));
    assert_eq!(a.body["approvals"].as_array().unwrap().len(), 2);

    // Revoke: not by a bystander; by the requester, yes.
    let a = app
        .post(
            &format!("/requests/{id}/revoke"),
            json!({"actor": actor("mallory")}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, Some("not_allowed_to_revoke")));
    let a = app
        .post(
            &format!("/requests/{id}/revoke"),
            json!({"actor": actor("alice"), "reason": "done early"}),
        )
        .await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("REVOKED")));

    // Cancel: requester or approver only, pending only.
    let id2 = app.create("alice").await;
    let a = app
        .post(
            &format!("/requests/{id2}/cancel"),
            json!({"actor": actor("mallory")}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, Some("not_allowed_to_cancel")));
    let a = app
        .post(
            &format!("/requests/{id2}/cancel"),
            json!({"actor": actor("alice")}),
        )
        .await;
    assert_eq!((a.status, &a.body["status"]), (200, &json!("CANCELLED")));
    let a = app
        .post(
            &format!("/requests/{id2}/cancel"),
            json!({"actor": actor("alice")}),
        )
        .await;
    assert_eq!((a.status, a.code()), (409, Some("invalid_state")));

    // Deny needs an approver.
    let id3 = app.create("alice").await;
    let a = app
        .post(
            &format!("/requests/{id3}/deny"),
            json!({"actor": actor("mallory")}),
        )
        .await;
    assert_eq!((a.status, a.code()), (403, Some("not_an_approver")));
    let a = app
        .post(
            &format!("/requests/{id3}/deny"),
            json!({"actor": actor("bob"), "reason": "not during the freeze"}),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["close_reason"]),
        (200, &json!("not during the freeze"))
    );
}

async fn policy_limits_and_pending_timeout(app: App) {
    app.setup_channel(&["bob"], 1).await;
    let a = app
        .post("/requests", json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": 241}))
        .await;
    assert_eq!((a.status, a.code()), (422, Some("duration_exceeds_policy")));
    let a = app.post("/requests", json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "reason": "x", "requested_duration_minutes": 30})).await;
    assert_eq!((a.status, a.code()), (422, Some("ticket_required")));
    let a = app
        .post("/config/policy", json!({"actor": actor("admin1"), "channel_id": "ch1", "require_ticket": false, "pending_timeout_minutes": 10}))
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body[0]["policy"]["pending_timeout_minutes"], 10);
    let a = app.post("/requests", json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "reason": "x", "requested_duration_minutes": "30"})).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["request_id"].as_str().unwrap().to_owned();
    app.clock.advance_secs(10 * 60);
    let a = app
        .post(
            &format!("/requests/{id}/approve"),
            json!({"actor": actor("bob")}),
        )
        .await;
    assert_eq!((a.status, a.code()), (409, Some("request_timed_out")));
    let a = app.post("/requests", json!({"actor": actor("alice"), "channel_id": "zz", "account_id": ACCOUNT, "reason": "x", "requested_duration_minutes": 30})).await;
    assert_eq!((a.status, a.code()), (422, Some("channel_not_bound")));
}

async fn break_glass_is_self_granted_and_marked_for_review(app: App) {
    app.setup_channel(&["bob"], 1).await;
    let a = app
        .post("/config/policy", json!({"actor": actor("admin1"), "channel_id": "ch1", "break_glass_enabled": true, "break_glass_max_minutes": 30}))
        .await;
    assert_eq!(a.status, 200);
    let a = app
        .post("/requests", json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "INC-9", "reason": "prod down", "requested_duration_minutes": 30, "break_glass": true}))
        .await;
    assert_eq!(
        (a.status, &a.body["status"], &a.body["review_pending"]),
        (201, &json!("APPROVED"), &json!(true))
    );
    let id = a.body["request_id"].as_str().unwrap().to_owned();
    let a = app
        .post(
            &format!("/requests/{id}/review"),
            json!({"actor": actor("alice")}),
        )
        .await;
    assert_eq!(a.code(), Some("not_an_approver"));
    let a = app
        .post(
            &format!("/requests/{id}/review"),
            json!({"actor": actor("bob"), "note": "checked"}),
        )
        .await;
    assert_eq!((a.status, &a.body["review_pending"]), (200, &json!(false)));
    let ev = app.get(&format!("/audit?request_id={id}")).await;
    let kinds: Vec<&str> = ev.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec!["request.created", "request.break_glass", "request.reviewed"]
    );
}

async fn idempotent_create(app: App) {
    app.setup_channel(&["bob"], 1).await;
    let body = json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": 30});
    let create = |body: &Value| {
        let (client, body) = (app.client.clone(), body.clone());
        async move {
            client
                .send(
                    reqwest::Method::POST,
                    "/requests",
                    Some(&body),
                    Some("retry-1"),
                )
                .await
                .unwrap()
        }
    };
    let first = create(&body).await;
    assert_eq!(first.status, 201);
    let again = create(&body).await;
    assert_eq!(again.status, 201);
    assert_eq!(
        again.body, first.body,
        "a retried create returns the first result"
    );
    let listed = app.get("/requests?channel_id=ch1").await;
    assert_eq!(listed.body["count"], 1);
    // Once the card is posted, a replay says so: it answers the request as it is now.
    let id = first.body["request_id"].as_str().unwrap();
    assert_eq!(first.body["post_id"], Value::Null);
    let set = app
        .post(&format!("/requests/{id}/post"), json!({"post_id": "card1"}))
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let later = create(&body).await;
    assert_eq!(later.status, 201);
    assert_eq!(later.body["request_id"], first.body["request_id"]);
    assert_eq!(later.body["post_id"], "card1");
    let mut other = body.clone();
    other["reason"] = json!("different");
    let reused = create(&other).await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, Some("idempotency_key_reused"))
    );
}

async fn bad_input_gets_a_coded_error_and_changes_nothing(app: App) {
    app.setup_channel(&["bob"], 1).await;
    let base = json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": 30});
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"account_id": "12345"}), 400, "invalid_account_id"),
        (
            json!({"requested_duration_minutes": 0}),
            400,
            "invalid_duration",
        ),
        (
            json!({"requested_duration_minutes": "soon"}),
            400,
            "invalid_duration",
        ),
        (json!({"jira": "x".repeat(257)}), 400, "invalid_ticket"),
        (json!({"reason": "x".repeat(2001)}), 400, "invalid_reason"),
        (json!({"channel_id": "ch 1"}), 400, "invalid_channel_id"),
        (
            json!({"actor": {"user_id": "a", "email": "not-an-email"}}),
            400,
            "invalid_email",
        ),
        (json!({"actor": null}), 400, "missing_actor"),
        (json!({"channel_id": 7}), 400, "invalid_field"),
        (
            json!({"permission_set_arn": "ps-1"}),
            400,
            "invalid_permission_set_arn",
        ),
    ];
    for (patch, status, code) in cases {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        let a = app.post("/requests", b).await;
        assert_eq!((a.status, a.code()), (status, Some(code)), "{patch}");
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let bad_query = [
        ("/requests?limit=201", "invalid_limit"),
        ("/requests?limit=0", "invalid_limit"),
        ("/requests?status=GRANTED%27%20OR%201%3D1", "invalid_status"),
        (
            "/requests?channel_id=x%27%20OR%20%271%27%3D%271",
            "invalid_channel_id",
        ),
        ("/requests?colour=red", "unknown_parameter"),
        ("/requests?next_token=garbage", "invalid_next_token"),
        ("/requests?start_date=yesterday", "invalid_parameter"),
        ("/requests/not-a-uuid", "invalid_request_id"),
        ("/audit?limit=1001", "invalid_limit"),
    ];
    for (pq, code) in bad_query {
        let a = app.get(pq).await;
        assert_eq!((a.status, a.code()), (400, Some(code)), "{pq}");
    }
    let a = app
        .get("/requests/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!((a.status, a.code()), (404, Some("request_not_found")));
    // Nothing above created a request or an audit event beyond the set-up.
    assert_eq!(app.get("/requests").await.body["count"], 0);
    assert_eq!(app.get("/audit").await.body["count"], 2);
}

async fn body_limits_and_content_types(app: App) {
    // Oversized: refused before the signature is even checked.
    let big = vec![b'x'; 64 * 1024 + 1];
    let (s, body) = app
        .raw(
            "POST",
            "/requests",
            &[("content-type", "application/json")],
            big,
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (413, Some("body_too_large")));
    // Wrong content type, signed.
    let ring = KeyRing::parse(
        &std::fs::read_to_string(app._dir.path().join("keys/backend.json")).unwrap(),
    )
    .unwrap();
    let key = ring.signing_key(app.clock.now()).unwrap().clone();
    let body = b"channel_id=ch1".to_vec();
    let input = jit_proto::sign::SignInput {
        version: SignatureVersion::V2,
        audience: jit_proto::sign::Audience::Backend,
        request: jit_proto::sign::RequestParts {
            method: "POST",
            path_and_query: "/requests",
            body: &body,
        },
        timestamp: app.clock.unix(),
        nonce: "n-form",
    };
    let mut headers: Vec<(&str, String)> = jit_proto::sign::sign(&key, &input);
    headers.push(("content-type", "application/x-www-form-urlencoded".into()));
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, b) = app.raw("POST", "/requests", &hs, body.clone()).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // The same nonce again is a replay.
    let (s, b) = app.raw("POST", "/requests", &hs, body.clone()).await;
    assert_eq!((s, b["code"].as_str()), (401, Some("replayed_nonce")));
    // Malformed JSON.
    let input = jit_proto::sign::SignInput {
        nonce: "n-json",
        request: jit_proto::sign::RequestParts {
            method: "POST",
            path_and_query: "/requests",
            body: b"{nope",
        },
        ..input
    };
    let mut headers: Vec<(&str, String)> = jit_proto::sign::sign(&key, &input);
    headers.push(("content-type", "application/json".into()));
    let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, b) = app.raw("POST", "/requests", &hs, b"{nope".to_vec()).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("invalid_json")));
}

async fn audit_export_pages_and_verification(app: App) {
    app.setup_channel(&["bob"], 1).await;
    for _ in 0..3 {
        let id = app.create("alice").await;
        let a = app
            .post(
                &format!("/requests/{id}/approve"),
                json!({"actor": actor("bob")}),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    // 2 config + 3 × (created, approval_added, approved) = 11 events.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let pq = match &next {
            Some(t) => format!("/audit?limit=4&next_token={t}"),
            None => "/audit?limit=4".into(),
        };
        let page = app.get(&pq).await;
        assert_eq!(page.status, 200);
        for e in page.body["events"].as_array().unwrap() {
            seen.push(e["seq"].as_i64().unwrap());
        }
        match page.body["next_token"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (1..=11).collect::<Vec<_>>());
    // JSON lines and CSV, same filters and paging.
    let c = reqwest::Client::new();
    let signed = |pq: &str| {
        let ring = KeyRing::parse(
            &std::fs::read_to_string(app._dir.path().join("keys/backend.json")).unwrap(),
        )
        .unwrap();
        let key = ring.signing_key(app.clock.now()).unwrap().clone();
        let nonce = jit_proto::sign::new_nonce().unwrap();
        let input = jit_proto::sign::SignInput {
            version: SignatureVersion::V2,
            audience: jit_proto::sign::Audience::Backend,
            request: jit_proto::sign::RequestParts {
                method: "GET",
                path_and_query: pq,
                body: b"",
            },
            timestamp: app.clock.unix(),
            nonce: &nonce,
        };
        let mut rb = c.get(format!("{}{pq}", app.base));
        for (k, v) in jit_proto::sign::sign(&key, &input) {
            rb = rb.header(k, v);
        }
        rb
    };
    let r = signed("/audit?format=jsonl&limit=4").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert_eq!(r.headers()["x-next-token"], "4");
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    let r = signed("/audit?format=csv&type=request.approved")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-next-token").is_none());
    let text = r.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "seq,at,type,actor_id,actor_email,request_id,channel_id,account_id,data,prev_hash,hash"
    );
    assert_eq!(lines.count(), 3);
    let by_type = app.get("/audit?type=request.approved&actor=bob").await;
    assert_eq!(by_type.body["count"], 3);
    let v = app.get("/audit/verify").await;
    assert_eq!((v.status, &v.body["events"]), (200, &json!(11)));
    app.tamper(5, "actor_id", "mallory").await;
    // The routine check starts after the checkpoint the first run recorded: it hashes nothing
    // new, and confirms the checkpoint's own event is unchanged.
    let v = app.get("/audit/verify").await;
    assert_eq!(
        (v.status, &v.body["checked"], &v.body["from_checkpoint"]),
        (200, &json!(0), &json!(11))
    );
    // The full verification finds the edit.
    let v = app.get("/audit/verify?full=true").await;
    assert_eq!((v.status, v.code()), (409, Some("audit_chain_broken")));
    assert!(
        v.body["message"].as_str().unwrap().contains("event 5"),
        "{}",
        v.body
    );
    // Editing the checkpoint's event is found by the routine check too.
    app.tamper(11, "hash", &"0".repeat(64)).await;
    let v = app.get("/audit/verify").await;
    assert_eq!((v.status, v.code()), (409, Some("audit_chain_broken")));
    let bad = app.get("/audit/verify?full=maybe").await;
    assert_eq!((bad.status, bad.code()), (400, Some("invalid_parameter")));
    let gone = app.get("/audit/verify?job=v-nope").await;
    assert_eq!(
        (gone.status, gone.code()),
        (404, Some("verification_not_found"))
    );
    let _ = &app.state;
}

async fn concurrent_approvals_apply_once(app: App) {
    app.setup_channel(&["bob", "carol"], 1).await;
    let id = app.create("alice").await;
    let path = format!("/requests/{id}/approve");
    let (a, b) = tokio::join!(
        app.post(&path, json!({"actor": actor("bob")})),
        app.post(&path, json!({"actor": actor("carol")})),
    );
    let mut statuses = vec![a.status, b.status];
    statuses.sort_unstable();
    assert!(
        statuses == vec![200, 409],
        "{statuses:?}: one approval applies, the other sees a conflict or the new state"
    );
    let r = app.get(&format!("/requests/{id}")).await;
    assert_eq!(r.body["approvals"].as_array().unwrap().len(), 1);
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(super::spawn_app(false).await).await } )* }
        mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(super::spawn_app(true).await).await } )* }
        mod on_lambda { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::spawn_lambda().await).await } )* }
    };
}

both!(
    health_is_open_and_everything_else_is_signed,
    legacy_plugin_flow_with_v1_signatures_and_its_field_names,
    authorisation_rules,
    policy_limits_and_pending_timeout,
    break_glass_is_self_granted_and_marked_for_review,
    idempotent_create,
    bad_input_gets_a_coded_error_and_changes_nothing,
    body_limits_and_content_types,
    audit_export_pages_and_verification,
    concurrent_approvals_apply_once,
);

/// The running server against `docs/openapi.json`: every documented operation is exercised, and
/// each answer's status is documented for it and its body matches the documented schema.
mod openapi {
    use super::*;
    use std::collections::BTreeSet;

    fn spec() -> Value {
        let path = format!("{}/../../docs/openapi.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn resolve<'a>(spec: &'a Value, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                &spec["components"]["schemas"][name]
            }
            None => s,
        }
    }

    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => true,
        }
    }

    /// A small JSON Schema subset: `$ref`, `type` (one or several), `required`, `properties`,
    /// `items`, `enum`.
    fn check(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let s = resolve(spec, schema);
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => type_ok(t, v),
                Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
                _ => true,
            };
            if !ok {
                return Err(format!("{at}: expected {t}, got {v}"));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array)
            && !e.contains(v)
        {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req {
                let r = r.as_str().unwrap();
                if v.get(r).is_none() {
                    return Err(format!("{at}: missing required field {r}"));
                }
            }
        }
        if let (Some(props), Some(obj)) = (
            s.get("properties").and_then(Value::as_object),
            v.as_object(),
        ) {
            for (k, ps) in props {
                if let Some(x) = obj.get(k) {
                    check(spec, ps, x, &format!("{at}.{k}"))?;
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, x) in arr.iter().enumerate() {
                check(spec, items, x, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    struct Checker {
        spec: Value,
        seen: BTreeSet<(String, String)>,
    }

    impl Checker {
        fn record(&mut self, method: &str, template: &str, status: u16, body: &Value) {
            let op = &self.spec["paths"][template][method];
            assert!(
                op.is_object(),
                "{method} {template} is not in docs/openapi.json"
            );
            let r = &op["responses"][status.to_string()];
            assert!(
                r.is_object(),
                "{method} {template} answered {status}, which the spec does not document: {body}"
            );
            let schema = &r["content"]["application/json"]["schema"];
            if !schema.is_null()
                && let Err(e) = check(&self.spec, schema, body, "body")
            {
                panic!("{method} {template} {status}: {e}\n{body}");
            }
            self.seen.insert((method.to_owned(), template.to_owned()));
        }
    }

    #[tokio::test]
    async fn server_matches_the_documented_api() {
        matches_the_documented_api(spawn_app(false).await).await;
    }

    /// The Lambda function answers as documented too (API Gateway's payload 2.0 both ways).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lambda_function_matches_the_documented_api() {
        matches_the_documented_api(spawn_lambda().await).await;
    }

    async fn matches_the_documented_api(app: App) {
        let mut c = Checker {
            spec: spec(),
            seen: BTreeSet::new(),
        };
        for p in ["/healthz", "/readyz", "/metrics"] {
            let (s, b) = app.raw("GET", p, &[], vec![]).await;
            c.record("get", p, s, &b);
        }
        let (s, b) = app.raw("GET", "/requests", &[], vec![]).await;
        c.record("get", "/requests", s, &b);

        let admin = actor("admin1");
        let steps: Vec<(&str, &str, Value)> = vec![
            (
                "/config/bind",
                "/config/bind",
                json!({"actor": admin, "channel_id": "ch1", "account_id": ACCOUNT}),
            ),
            (
                "/config/bind",
                "/config/bind",
                json!({"actor": admin, "channel_id": "ch1", "account_id": "210987654321"}),
            ),
            (
                "/config/approvers",
                "/config/approvers",
                json!({"actor": admin, "channel_id": "ch1", "approvers": ["bob"]}),
            ),
            (
                "/config/policy",
                "/config/policy",
                json!({"actor": admin, "channel_id": "ch1", "require_ticket": false}),
            ),
            (
                "/config/unbind",
                "/config/unbind",
                json!({"actor": admin, "channel_id": "ch1", "account_id": "210987654321"}),
            ),
        ];
        for (path, template, body) in steps {
            let a = app.post(path, body).await;
            assert!(a.is_success(), "{path}: {:?}", a.body);
            c.record("post", template, a.status, &a.body);
        }
        let a = app.post("/admin/keys/usage", json!({"ring": "callback", "verifier": "bridge:t", "keys": [{"key_id": "cb-1", "last_used_unix": 5}]})).await;
        c.record("post", "/admin/keys/usage", a.status, &a.body);
        let create = json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "reason": "x", "requested_duration_minutes": 30});
        let mut ids = Vec::new();
        for _ in 0..3 {
            let a = app.post("/requests", create.clone()).await;
            c.record("post", "/requests", a.status, &a.body);
            ids.push(a.body["request_id"].as_str().unwrap().to_owned());
        }
        let bad = app
            .post(
                "/requests",
                json!({"actor": actor("alice"), "channel_id": "ch1"}),
            )
            .await;
        c.record("post", "/requests", bad.status, &bad.body);
        let (a, b, d) = (&ids[0], &ids[1], &ids[2]);
        let steps: Vec<(String, &str, Value)> = vec![
            (
                format!("/requests/{a}/approve"),
                "/requests/{id}/approve",
                json!({"actor": actor("bob")}),
            ),
            (
                format!("/requests/{a}/approve"),
                "/requests/{id}/approve",
                json!({"actor": actor("bob")}),
            ),
            (
                format!("/requests/{a}/post"),
                "/requests/{id}/post",
                json!({"post_id": "p0st1d"}),
            ),
            (
                format!("/requests/{a}/revoke"),
                "/requests/{id}/revoke",
                json!({"actor": actor("alice")}),
            ),
            (
                format!("/requests/{b}/deny"),
                "/requests/{id}/deny",
                json!({"actor": actor("bob"), "reason": "no"}),
            ),
            (
                format!("/requests/{d}/review"),
                "/requests/{id}/review",
                json!({"actor": actor("bob")}),
            ),
            (
                format!("/requests/{d}/cancel"),
                "/requests/{id}/cancel",
                json!({"actor": actor("alice")}),
            ),
            (
                format!("/requests/{a}/extend"),
                "/requests/{id}/extend",
                json!({"actor": actor("bob"), "minutes": 10}),
            ),
            (
                "/callbacks/0000deadbeef/resend".to_owned(),
                "/callbacks/{event_id}/resend",
                json!({}),
            ),
            (
                "/admin/keys/callback-signing".to_owned(),
                "/admin/keys/callback-signing",
                json!({"key_id": app.state.callback_ring.current().keys().next().unwrap().id().as_str()}),
            ),
            (
                "/admin/keys/callback-signing".to_owned(),
                "/admin/keys/callback-signing",
                json!({"key_id": "not-in-the-ring"}),
            ),
        ];
        for (path, template, body) in steps {
            let a = app.post(&path, body).await;
            c.record("post", template, a.status, &a.body);
        }
        for (pq, template) in [
            (format!("/requests/{a}"), "/requests/{id}"),
            ("/requests/nope".to_owned(), "/requests/{id}"),
            ("/requests?status=REVOKED&limit=5".to_owned(), "/requests"),
            (
                "/config/accounts?channel_id=ch1".to_owned(),
                "/config/accounts",
            ),
            ("/audit?limit=3".to_owned(), "/audit"),
            ("/audit/verify".to_owned(), "/audit/verify"),
            ("/grants/overdue".to_owned(), "/grants/overdue"),
            ("/admin/keys/usage".to_owned(), "/admin/keys/usage"),
            ("/callbacks?status=PENDING".to_owned(), "/callbacks"),
        ] {
            let r = app.get(&pq).await;
            c.record("get", template, r.status, &r.body);
        }
        let documented: BTreeSet<(String, String)> = c.spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), p.clone()))
            })
            .collect();
        let missing: Vec<_> = documented.difference(&c.seen).collect();
        assert!(
            missing.is_empty(),
            "documented but not exercised: {missing:?}"
        );
    }
}

/// The grant lifecycle with an injected clock: the workers are stepped by hand.
mod lifecycle {
    use super::*;
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use jit_grants::{DryRunCall, DryRunProvider, ProviderError};
    use std::sync::Mutex;

    const PRINCIPAL: &str = "alice@example.com|123456789012|";

    struct LApp {
        app: App,
        provider: Arc<DryRunProvider>,
        lifecycle: Arc<jit_server::lifecycle::Lifecycle>,
        dispatcher: Option<Arc<jit_server::callbacks::Dispatcher>>,
    }

    async fn spawn(pg: bool, callback_url: Option<String>) -> LApp {
        spawn_with(pg, callback_url, DryRunProvider::new()).await
    }

    async fn spawn_with(pg: bool, callback_url: Option<String>, provider: DryRunProvider) -> LApp {
        let dir = tempfile::tempdir().unwrap();
        let db_url = if pg {
            jit_testkit::fresh_pg_database().unwrap()
        } else {
            format!("sqlite://{}", dir.path().join("jit.db").display())
        };
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db_url.clone()),
            admins: vec!["admin1".into()],
            ..Config::default()
        };
        config.callbacks.url = callback_url;
        let clock = ManualClock::at(1_764_072_000);
        let provider = Arc::new(provider);
        let server = Server::build_with(config, Arc::new(clock.clone()), Some(provider.clone()))
            .await
            .unwrap()
            .without_workers();
        let addr = server.local_addr().unwrap();
        let stop = server.shutdown_handle();
        let state = server.state.clone();
        let lifecycle = server.lifecycle.clone();
        let dispatcher = server.dispatcher.clone();
        tokio::spawn(server.serve());
        let base = format!("http://{addr}");
        let ring =
            KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
                .unwrap();
        let client =
            Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(clock.clone())).unwrap();
        let v1 = client.clone().with_version(SignatureVersion::V1);
        let app = App {
            base,
            client,
            v1,
            clock,
            state,
            db_url,
            stop,
            moto: None,
            _dir: dir,
        };
        app.setup_channel(&["bob", "carol"], 1).await;
        LApp {
            app,
            provider,
            lifecycle,
            dispatcher,
        }
    }

    impl LApp {
        async fn request(&self, minutes: u32) -> String {
            let a = self
                .app
                .post("/requests", json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": minutes}))
                .await;
            assert_eq!(a.status, 201, "{:?}", a.body);
            a.body["request_id"].as_str().unwrap().to_owned()
        }

        async fn approve(&self, id: &str) {
            let a = self
                .app
                .post(
                    &format!("/requests/{id}/approve"),
                    json!({"actor": actor("bob")}),
                )
                .await;
            assert_eq!(a.body["status"], "APPROVED", "{:?}", a.body);
        }

        async fn status(&self, id: &str) -> Value {
            self.app.get(&format!("/requests/{id}")).await.body
        }

        async fn step(&self) -> usize {
            self.lifecycle.run_due().await.unwrap()
        }

        fn advance(&self, secs: i64) {
            self.app.clock.advance_secs(secs);
        }
    }

    async fn approval_delay_does_not_shorten_the_grant(pg: bool) {
        let l = spawn(pg, None).await;
        let id = l.request(60).await;
        l.advance(50 * 60);
        l.approve(&id).await;
        assert_eq!(l.step().await, 1);
        let r = l.status(&id).await;
        assert_eq!(r["status"], "GRANTED");
        let granted = time::OffsetDateTime::parse(
            r["granted_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let end = time::OffsetDateTime::parse(
            r["end_time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(
            end - granted,
            time::Duration::minutes(60),
            "the full approved duration, counted from the grant"
        );
        assert!(l.provider.is_assigned(PRINCIPAL));
        l.advance(60 * 60 - 1);
        l.step().await;
        assert_eq!(
            l.status(&id).await["status"],
            "GRANTED",
            "not a second early"
        );
        l.advance(1);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "EXPIRED");
        assert!(!l.provider.is_assigned(PRINCIPAL));
        let ev = l
            .app
            .get(&format!("/audit?request_id={id}&type=request.expired"))
            .await;
        assert_eq!(ev.body["events"][0]["data"]["late_ms"], 0);
    }

    async fn overlapping_grants_keep_access_until_the_last_ends(pg: bool) {
        let l = spawn(pg, None).await;
        let a = l.request(60).await;
        let b = l.request(120).await;
        l.approve(&a).await;
        l.approve(&b).await;
        l.step().await;
        assert_eq!(
            (
                l.status(&a).await["status"].clone(),
                l.status(&b).await["status"].clone()
            ),
            (json!("GRANTED"), json!("GRANTED"))
        );
        l.advance(3600);
        l.step().await;
        assert_eq!(l.status(&a).await["status"], "EXPIRED");
        assert!(
            l.provider.is_assigned(PRINCIPAL),
            "the second grant still needs the assignment"
        );
        l.advance(3600);
        l.step().await;
        assert_eq!(l.status(&b).await["status"], "EXPIRED");
        assert!(!l.provider.is_assigned(PRINCIPAL));
        assert_eq!(
            l.provider.calls(),
            vec![
                DryRunCall::Grant(PRINCIPAL.into()),
                DryRunCall::Revoke(PRINCIPAL.into())
            ]
        );
    }

    async fn a_standing_assignment_survives(pg: bool) {
        let l = spawn(pg, None).await;
        l.provider.preassign(PRINCIPAL);
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        l.advance(30 * 60);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "EXPIRED");
        assert!(
            l.provider.is_assigned(PRINCIPAL),
            "a standing assignment is never removed"
        );
        assert!(
            !l.provider
                .calls()
                .iter()
                .any(|c| matches!(c, DryRunCall::Revoke(_)))
        );
    }

    async fn a_failing_revoke_is_retried_for_an_hour_and_then_succeeds(pg: bool) {
        let l = spawn(pg, None).await;
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        let m = metrics_text(&l.app.base).await;
        assert!(m.contains("jit_grants_active 1"), "{m}");
        assert!(m.contains("jit_revocations_overdue 0"), "{m}");
        l.provider
            .fail_next((0..20).map(|i| ProviderError::Retry(format!("throttled {i}"))));
        l.advance(30 * 60);
        let mut elapsed = 0;
        let mut seen_overdue = false;
        let mut seen_metric = false;
        while elapsed <= 2 * 3600 {
            l.step().await;
            if l.status(&id).await["status"] == "EXPIRED" {
                break;
            }
            let o = l.app.get("/grants/overdue").await;
            if o.body["count"] == 1 {
                seen_overdue = true;
                assert_eq!(o.body["overdue"][0]["request_id"], id.as_str());
            }
            seen_metric |= metrics_text(&l.app.base)
                .await
                .contains("jit_revocations_overdue 1");
            l.advance(60);
            elapsed += 60;
        }
        assert!(seen_overdue, "the stuck revoke was visible as overdue");
        assert!(seen_metric, "the stuck revoke showed in the metrics");
        let m = metrics_text(&l.app.base).await;
        for want in [
            "jit_revocations_overdue 0",
            "jit_grants_active 0",
            "jit_requests{status=\"EXPIRED\"} 1",
            "jit_store_up 1",
            "jit_provider_calls_total{provider=\"dry-run\",operation=\"revoke\",result=\"retry\"} 20",
            "jit_provider_calls_total{provider=\"dry-run\",operation=\"revoke\",result=\"ok\"} 1",
            "jit_provider_calls_total{provider=\"dry-run\",operation=\"grant\",result=\"ok\"} 1",
            "jit_provider_call_duration_seconds_count{provider=\"dry-run\",operation=\"revoke\"} 21",
            // Removed more than an hour after its end: past the 3600 s bucket.
            "jit_revocation_lateness_seconds_bucket{le=\"3600\"} 0",
            "jit_revocation_lateness_seconds_bucket{le=\"+Inf\"} 1",
        ] {
            assert!(m.contains(want), "missing {want} in {m}");
        }
        assert_eq!(
            l.status(&id).await["status"],
            "EXPIRED",
            "it got through in the end"
        );
        assert!(
            elapsed >= 3600,
            "twenty failures with backoff take over an hour ({elapsed} s)"
        );
        assert!(!l.provider.is_assigned(PRINCIPAL));
        assert_eq!(l.app.get("/grants/overdue").await.body["count"], 0);
    }

    async fn a_pending_request_times_out(pg: bool) {
        let l = spawn(pg, None).await;
        let id = l.request(30).await;
        l.advance(8 * 3600 - 1);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "PENDING");
        l.advance(1);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "TIMED_OUT");
    }

    /// With a provider that revokes active sessions (here the dry run playing one; the
    /// Identity Center side is `jit-grants/tests/aws.rs` against moto): only an early revoke that
    /// really removed the assignment asks for it; an expiry, or a revoke while another grant
    /// still gives the same access, does not. `GET /config/accounts` shows the session duration.
    async fn an_early_revoke_revokes_active_sessions_and_nothing_else_does(pg: bool) {
        let l = spawn_with(pg, None, DryRunProvider::new().with_sessions("PT1H")).await;
        let revoked_sessions = || {
            l.provider
                .calls()
                .iter()
                .filter(|c| matches!(c, DryRunCall::RevokeSessions(_)))
                .count()
        };
        let accounts = l.app.get("/config/accounts?channel_id=ch1").await;
        assert_eq!(
            accounts.body[0]["role_session_durations"],
            json!([{"permission_set_arn": "default", "session_duration": "PT1H"}])
        );

        let a = l.request(60).await;
        l.approve(&a).await;
        l.step().await;
        let r = l
            .app
            .post(
                &format!("/requests/{a}/revoke"),
                json!({"actor": actor("alice")}),
            )
            .await;
        assert_eq!(r.body["status"], "REVOKED");
        l.step().await;
        assert!(!l.provider.is_assigned(PRINCIPAL));
        assert_eq!(
            l.provider.calls().last(),
            Some(&DryRunCall::RevokeSessions(PRINCIPAL.into())),
            "after the assignment is gone"
        );
        let ev = l
            .app
            .get(&format!(
                "/audit?request_id={a}&type=request.access_removed"
            ))
            .await;
        assert_eq!(
            ev.body["events"][0]["data"]["active_sessions_revoked"],
            true
        );

        // An expiry ends on time by design: nothing more.
        let b = l.request(60).await;
        l.approve(&b).await;
        l.step().await;
        l.advance(3600);
        l.step().await;
        assert_eq!(l.status(&b).await["status"], "EXPIRED");
        assert_eq!(revoked_sessions(), 1);

        // Revoking one of two overlapping grants keeps the assignment, and so the sessions.
        let c = l.request(60).await;
        let d = l.request(120).await;
        l.approve(&c).await;
        l.approve(&d).await;
        l.step().await;
        l.app
            .post(
                &format!("/requests/{c}/revoke"),
                json!({"actor": actor("alice")}),
            )
            .await;
        l.step().await;
        assert!(l.provider.is_assigned(PRINCIPAL));
        assert_eq!(revoked_sessions(), 1);
        let ev = l
            .app
            .get(&format!(
                "/audit?request_id={c}&type=request.access_removed"
            ))
            .await;
        assert_eq!(
            ev.body["events"][0]["data"]["active_sessions_revoked"],
            false
        );

        // A provider without sessions shows none: the existing plugin's shape is unchanged.
        let plain = spawn(pg, None).await;
        let accounts = plain.app.get("/config/accounts?channel_id=ch1").await;
        assert!(accounts.body[0].get("role_session_durations").is_none());
        assert!(accounts.body[0].get("account_id").is_some());
    }

    async fn revoke_removes_access_at_once_and_extend_moves_the_end(pg: bool) {
        let l = spawn(pg, None).await;
        let a = l.request(60).await;
        l.approve(&a).await;
        l.step().await;
        let r = l
            .app
            .post(
                &format!("/requests/{a}/revoke"),
                json!({"actor": actor("alice"), "reason": "done"}),
            )
            .await;
        assert_eq!(r.body["status"], "REVOKED");
        l.step().await;
        assert!(!l.provider.is_assigned(PRINCIPAL));
        let ev = l
            .app
            .get(&format!(
                "/audit?request_id={a}&type=request.access_removed"
            ))
            .await;
        assert_eq!(ev.body["count"], 1);
        // A revocation's lateness counts from the moment it was revoked (here: none).
        let m = metrics_text(&l.app.base).await;
        assert!(
            m.contains("jit_revocation_lateness_seconds_bucket{le=\"0.01\"} 1"),
            "{m}"
        );

        let b = l.request(60).await;
        l.approve(&b).await;
        l.step().await;
        let e = l
            .app
            .post(
                &format!("/requests/{b}/extend"),
                json!({"actor": actor("alice"), "minutes": 30}),
            )
            .await;
        assert_eq!(
            e.code(),
            Some("not_an_approver"),
            "the requester is not an approver here"
        );
        let e = l
            .app
            .post(
                &format!("/requests/{b}/extend"),
                json!({"actor": actor("carol"), "minutes": 30}),
            )
            .await;
        assert_eq!(e.status, 200, "{:?}", e.body);
        let e2 = l
            .app
            .post(
                &format!("/requests/{b}/extend"),
                json!({"actor": actor("carol"), "minutes": 200}),
            )
            .await;
        assert_eq!(e2.code(), Some("duration_exceeds_policy"));
        l.advance(3600);
        l.step().await;
        assert_eq!(
            l.status(&b).await["status"],
            "GRANTED",
            "extended by 30 minutes"
        );
        l.advance(1800);
        l.step().await;
        assert_eq!(l.status(&b).await["status"], "EXPIRED");
    }

    async fn a_permanent_grant_failure_needs_a_human(pg: bool) {
        let l = spawn(pg, None).await;
        l.provider.fail_next([ProviderError::Permanent(
            "no such user in the identity store".into(),
        )]);
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        let r = l.status(&id).await;
        assert_eq!(r["status"], "ERROR");
        assert!(
            r["error_message"]
                .as_str()
                .unwrap()
                .contains("no such user")
        );
        assert!(
            l.app.state.store.list_jobs(None).await.unwrap().is_empty(),
            "no job left behind for it"
        );
    }

    async fn the_reconciler_recreates_a_lost_job(pg: bool) {
        let l = spawn(pg, None).await;
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        if l.app.db_url.starts_with("postgres") {
            jit_testkit::psql(&l.app.db_url, "DELETE FROM jobs").unwrap();
        } else {
            jit_store::SqlStore::open(&l.app.db_url)
                .await
                .unwrap()
                .raw_execute("DELETE FROM jobs")
                .await
                .unwrap();
        }
        l.advance(30 * 60);
        assert_eq!(l.step().await, 0, "nothing scheduled any more");
        l.lifecycle.reconcile().await.unwrap();
        assert_eq!(l.status(&id).await["status"], "EXPIRED");
        assert!(!l.provider.is_assigned(PRINCIPAL));
        let m = metrics_text(&l.app.base).await;
        for want in [
            "jit_reconciler_runs_total{check=\"jobs\",result=\"ok\"} 1",
            "jit_reconciler_runs_total{check=\"jobs\",result=\"error\"} 0",
            // Ended on time (the reconciler ran at the end time).
            "jit_revocation_lateness_seconds_bucket{le=\"0.01\"} 1",
        ] {
            assert!(m.contains(want), "missing {want} in {m}");
        }
    }

    /// A callback receiver that verifies signatures with the callback ring and records events.
    #[derive(Clone)]
    struct Receiver {
        events: Arc<Mutex<Vec<(String, Value)>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        ring: Arc<Mutex<Option<KeyRing>>>,
        clock: ManualClock,
    }

    async fn receive(
        axum::extract::State(r): axum::extract::State<Receiver>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::http::StatusCode {
        if r.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
        }
        let ring = r.ring.lock().unwrap().take().unwrap();
        let v = jit_proto::sign::Verifier::new(jit_proto::sign::VerifierConfig::new(
            jit_proto::sign::Audience::Bridge,
        ));
        let req = jit_proto::sign::RequestParts {
            method: "POST",
            path_and_query: uri.path(),
            body: &body,
        };
        let ok = v
            .verify(
                &ring,
                &headers,
                &req,
                r.clock.unix(),
                &jit_proto::MemoryNonceStore::default(),
            )
            .await;
        *r.ring.lock().unwrap() = Some(ring);
        if ok.is_err() {
            return axum::http::StatusCode::UNAUTHORIZED;
        }
        let id = headers
            .get("x-jit-event-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        r.events
            .lock()
            .unwrap()
            .push((id, serde_json::from_slice(&body).unwrap()));
        axum::http::StatusCode::OK
    }

    async fn callbacks_arrive_signed_in_order_and_dead_letters_can_be_resent(pg: bool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jit/webhook", listener.local_addr().unwrap());
        let l = spawn(pg, Some(url)).await;
        let ring = KeyRing::parse(
            &std::fs::read_to_string(l.app._dir.path().join("keys/callback.json")).unwrap(),
        )
        .unwrap();
        let rx = Receiver {
            events: Arc::default(),
            fail: Arc::default(),
            ring: Arc::new(Mutex::new(Some(ring))),
            clock: l.app.clock.clone(),
        };
        let router = axum::Router::new()
            .route("/jit/webhook", axum::routing::post(receive))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let d = l.dispatcher.clone().unwrap();

        let id = l.request(30).await;
        l.approve(&id).await;
        assert_eq!(d.run_due().await.unwrap(), 1, "APPROVED");
        l.step().await;
        l.advance(30 * 60);
        l.step().await;
        assert_eq!(
            d.run_due().await.unwrap(),
            2,
            "GRANTED, then EXPIRED, in order"
        );
        let denied = l.request(30).await;
        let a = l
            .app
            .post(
                &format!("/requests/{denied}/deny"),
                json!({"actor": actor("bob"), "reason": "no"}),
            )
            .await;
        assert_eq!(a.status, 200);
        d.run_due().await.unwrap();
        let got: Vec<(String, String)> = rx
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| {
                (
                    v["request_id"].as_str().unwrap().to_owned(),
                    v["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (id.clone(), "APPROVED".into()),
                (id.clone(), "GRANTED".into()),
                (id.clone(), "EXPIRED".into()),
                (denied.clone(), "DENIED".into())
            ]
        );
        // Re-delivering nothing: every event went exactly once.
        assert_eq!(d.run_due().await.unwrap(), 0);
        let (event_id, first) = rx.events.lock().unwrap()[0].clone();
        assert_eq!(first["event_id"], event_id.as_str());
        assert_eq!(first["actor"], "bob@example.com");
        assert_eq!(first["details"]["duration_minutes"], "30");

        // The receiver goes down: retried with backoff, dead after 24 h, then re-sent.
        rx.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let c = l.request(30).await;
        let a = l
            .app
            .post(
                &format!("/requests/{c}/cancel"),
                json!({"actor": actor("alice")}),
            )
            .await;
        assert_eq!(a.status, 200);
        for _ in 0..300 {
            d.run_due().await.unwrap();
            l.advance(300);
        }
        let dead = l.app.get("/callbacks?status=DEAD").await;
        assert_eq!(dead.body["count"], 1, "{:?}", dead.body);
        let dead_id = dead.body["callbacks"][0]["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(dead.body["callbacks"][0]["attempts"].as_i64().unwrap() > 200);
        let m = metrics_text(&l.app.base).await;
        assert!(
            m.contains("jit_callback_deliveries_total{result=\"dead\"} 1"),
            "{m}"
        );
        let failed: u64 = metric_value(&m, "jit_callback_deliveries_total{result=\"failed\"}");
        assert!(failed > 200, "every failed attempt is counted ({failed})");
        assert!(metric_value(&m, "jit_callback_deliveries_total{result=\"delivered\"}") >= 1);
        rx.fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let r = l
            .app
            .post(&format!("/callbacks/{dead_id}/resend"), json!({}))
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(d.run_due().await.unwrap(), 1);
        assert_eq!(
            rx.events.lock().unwrap().last().unwrap().1["status"],
            "CANCELLED"
        );
        assert_eq!(l.app.get("/callbacks?status=DEAD").await.body["count"], 0);
    }

    async fn an_interrupted_grant_is_never_taken_for_a_standing_one(pg: bool) {
        let l = spawn(pg, None).await;
        // The provider assigns, then times out: the retry finds the assignment in place.
        l.provider
            .succeed_then_fail_next([ProviderError::Retry("status polling deadline".into())]);
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "APPROVED");
        l.advance(2);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "GRANTED");
        l.advance(30 * 60);
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "EXPIRED");
        assert!(
            !l.provider.is_assigned(PRINCIPAL),
            "removed at the end: it was ours, not standing"
        );
    }

    async fn revoking_during_an_interrupted_grant_removes_what_it_made(pg: bool) {
        let l = spawn(pg, None).await;
        l.provider
            .succeed_then_fail_next([ProviderError::Retry("status polling deadline".into())]);
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        assert!(
            l.provider.is_assigned(PRINCIPAL),
            "the provider acted before failing"
        );
        let r = l
            .app
            .post(
                &format!("/requests/{id}/revoke"),
                json!({"actor": actor("bob")}),
            )
            .await;
        assert_eq!(r.body["status"], "REVOKED");
        l.advance(2);
        l.step().await;
        assert!(
            !l.provider.is_assigned(PRINCIPAL),
            "withdrawn before the grant completed: access taken away"
        );
        assert!(l.app.state.store.list_jobs(None).await.unwrap().is_empty());
    }

    async fn a_grant_cannot_be_extended_after_its_end_and_standing_survives_drift(pg: bool) {
        let l = spawn(pg, None).await;
        l.provider.preassign(PRINCIPAL);
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        l.advance(30 * 60);
        let e = l
            .app
            .post(
                &format!("/requests/{id}/extend"),
                json!({"actor": actor("carol"), "minutes": 10}),
            )
            .await;
        assert_eq!(e.code(), Some("grant_ended"));
        l.step().await;
        assert_eq!(l.status(&id).await["status"], "EXPIRED");
        assert!(
            l.lifecycle.check_drift(true).await.unwrap().is_empty(),
            "a standing assignment is not drift"
        );
        assert!(l.provider.is_assigned(PRINCIPAL));
    }

    async fn drift_is_reported_and_removed_only_where_this_system_made_it(pg: bool) {
        let l = spawn(pg, None).await;
        let id = l.request(30).await;
        l.approve(&id).await;
        l.step().await;
        assert!(
            l.lifecycle.check_drift(false).await.unwrap().is_empty(),
            "a running grant is not drift"
        );
        l.advance(30 * 60);
        l.step().await;
        // Someone puts the assignment back by hand; a user we never granted also holds one.
        l.provider.preassign(PRINCIPAL);
        l.provider.preassign("stranger@example.com|123456789012|");
        let found = l.lifecycle.check_drift(false).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].user_email.as_str(), found[0].removed),
            ("alice@example.com", false)
        );
        assert!(l.provider.is_assigned(PRINCIPAL), "report only");
        let found = l.lifecycle.check_drift(true).await.unwrap();
        assert!(found[0].removed);
        assert!(!l.provider.is_assigned(PRINCIPAL));
        assert!(
            l.provider.is_assigned("stranger@example.com|123456789012|"),
            "not ours: left alone"
        );
        let ev = l.app.get("/audit?type=drift.removed").await;
        assert_eq!(ev.body["count"], 1);
        let m = metrics_text(&l.app.base).await;
        for want in [
            "jit_drift_assignments_total{action=\"detected\"} 1",
            "jit_drift_assignments_total{action=\"removed\"} 1",
            "jit_reconciler_runs_total{check=\"drift\",result=\"ok\"} 3",
            "jit_reconciler_runs_total{check=\"drift\",result=\"error\"} 0",
        ] {
            assert!(m.contains(want), "missing {want} in {m}");
        }
    }

    /// A second server on `db_url` (its own pool, owner names and in-process locks, as another
    /// process would have), stepped by hand like the first.
    async fn second_server(
        db_url: &str,
        callback_url: Option<String>,
        provider: Arc<dyn jit_grants::AccessProvider>,
        clock: ManualClock,
    ) -> (
        jit_server::state::AppState,
        Arc<jit_server::lifecycle::Lifecycle>,
        Option<Arc<jit_server::callbacks::Dispatcher>>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db_url.to_owned()),
            ..Config::default()
        };
        config.callbacks.url = callback_url;
        let server = Server::build_with(config, Arc::new(clock), Some(provider))
            .await
            .unwrap()
            .without_workers();
        (
            server.state.clone(),
            server.lifecycle.clone(),
            server.dispatcher.clone(),
            dir,
        )
    }

    /// Removes access only when released; says when a revoke is waiting.
    #[derive(Debug)]
    struct HeldRevoke {
        inner: Arc<DryRunProvider>,
        entered: tokio::sync::mpsc::UnboundedSender<()>,
        release: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait::async_trait]
    impl jit_grants::AccessProvider for HeldRevoke {
        fn name(&self) -> &'static str {
            "held-revoke"
        }
        async fn grant(
            &self,
            t: &jit_grants::Target,
        ) -> Result<jit_grants::Assigned, ProviderError> {
            self.inner.grant(t).await
        }
        async fn revoke(&self, t: &jit_grants::Target) -> Result<(), ProviderError> {
            let _ = self.entered.send(());
            let _permit = self.release.acquire().await;
            self.inner.revoke(t).await
        }
    }

    /// Waits (bounded) until `cond` holds, checking every 10 ms: for a state another task
    /// reaches, never as a guess at how long something takes.
    async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond().await {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Two servers on one PostgreSQL: one ends alice's first grant (its provider call held
    /// open), the other starts her second grant of the same account. The second waits for the
    /// first (a database lock per principal), so it finds the access gone and puts it back;
    /// without the lock it would take the old assignment as still there, and the first
    /// server's removal would leave a GRANTED request with no access.
    #[tokio::test]
    async fn overlapping_grant_and_revoke_on_two_servers_never_remove_access_early() {
        let l = spawn(true, None).await;
        let shared = Arc::new(DryRunProvider::new());
        let (etx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let held: Arc<dyn jit_grants::AccessProvider> = Arc::new(HeldRevoke {
            inner: shared.clone(),
            entered: etx,
            release: release.clone(),
        });
        let (_s1, one, _, _d1) =
            second_server(&l.app.db_url, None, held, l.app.clock.clone()).await;
        let (s2, two, _, _d2) =
            second_server(&l.app.db_url, None, shared.clone(), l.app.clock.clone()).await;

        let first = l.request(60).await;
        l.approve(&first).await;
        assert_eq!(one.run_due().await.unwrap(), 1);
        assert!(shared.is_assigned(PRINCIPAL));
        l.advance(3600);
        let ending = {
            let one = one.clone();
            tokio::spawn(async move { one.run_due().await.unwrap() })
        };
        entered.recv().await.unwrap();
        // The first server is inside its provider call. Now the second grant arrives.
        let second = l.request(120).await;
        l.approve(&second).await;
        let starting = {
            let two = two.clone();
            tokio::spawn(async move { two.run_due().await.unwrap() })
        };
        until(
            "the second server waits, or (without the lock) grants",
            async || {
                s2.metrics
                    .render()
                    .contains("jit_principal_lock_waits_total 1")
                    || l.status(&second).await["status"] == "GRANTED"
            },
        )
        .await;
        release.add_permits(1);
        ending.await.unwrap();
        starting.await.unwrap();
        assert_eq!(l.status(&first).await["status"], "EXPIRED");
        assert_eq!(l.status(&second).await["status"], "GRANTED");
        assert!(
            shared.is_assigned(PRINCIPAL),
            "the second grant has its access"
        );
        assert!(
            s2.metrics
                .render()
                .contains("jit_principal_lock_waits_total")
        );
    }

    /// Two dispatchers on one PostgreSQL: an event being delivered by one is leased, and the
    /// other skips it, so the receiver gets it once.
    #[tokio::test]
    async fn two_dispatchers_never_deliver_one_event_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jit/webhook", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (etx, mut entered) = tokio::sync::mpsc::unbounded_channel::<()>();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let router = {
            let (seen, release) = (seen.clone(), release.clone());
            axum::Router::new().route(
                "/jit/webhook",
                axum::routing::post(move |headers: HeaderMap| {
                    let (seen, release, etx) = (seen.clone(), release.clone(), etx.clone());
                    async move {
                        let id = headers["x-jit-event-id"].to_str().unwrap().to_owned();
                        let first = {
                            let mut s = seen.lock().unwrap();
                            s.push(id);
                            s.len() == 1
                        };
                        if first {
                            let _ = etx.send(());
                            let _permit = release.acquire().await;
                        }
                        axum::http::StatusCode::OK
                    }
                }),
            )
        };
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let l = spawn(true, Some(url.clone())).await;
        let (_s2, _, two, _d2) = second_server(
            &l.app.db_url,
            Some(url),
            Arc::new(DryRunProvider::new()),
            l.app.clock.clone(),
        )
        .await;
        let (one, two) = (l.dispatcher.clone().unwrap(), two.unwrap());
        let id = l.request(30).await;
        l.approve(&id).await;
        let delivering = {
            let one = one.clone();
            tokio::spawn(async move { one.run_due().await.unwrap() })
        };
        entered.recv().await.unwrap();
        assert_eq!(
            two.run_due().await.unwrap(),
            0,
            "the event in delivery is leased to the other dispatcher"
        );
        release.add_permits(1);
        assert_eq!(delivering.await.unwrap(), 1);
        let seen = seen.lock().unwrap().clone();
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(seen, unique, "each event once: {seen:?}");
        assert_eq!(seen.len(), 1);
    }

    /// A provider whose calls for `slow*` users hang until released; reports every revoke.
    #[derive(Debug)]
    struct Gated {
        inner: DryRunProvider,
        release: Arc<tokio::sync::Notify>,
        hanging: tokio::sync::mpsc::UnboundedSender<String>,
        revoked: tokio::sync::mpsc::UnboundedSender<String>,
    }

    #[async_trait::async_trait]
    impl jit_grants::AccessProvider for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        async fn grant(
            &self,
            t: &jit_grants::Target,
        ) -> Result<jit_grants::Assigned, ProviderError> {
            if t.user_email.starts_with("slow") {
                let _ = self.hanging.send(t.user_email.clone());
                self.release.notified().await;
            }
            self.inner.grant(t).await
        }
        async fn revoke(&self, t: &jit_grants::Target) -> Result<(), ProviderError> {
            let r = self.inner.revoke(t).await;
            let _ = self.revoked.send(t.user_email.clone());
            r
        }
    }

    /// One user's provider call hanging does not delay another user's revoke: the worker loop
    /// runs each job on its own and keeps claiming while slow calls run (issue 12, item 1).
    async fn a_slow_provider_call_delays_nobody_elses_revoke(pg: bool) {
        let dir = tempfile::tempdir().unwrap();
        let db_url = if pg {
            jit_testkit::fresh_pg_database().unwrap()
        } else {
            format!("sqlite://{}", dir.path().join("jit.db").display())
        };
        let config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(db_url.clone()),
            admins: vec!["admin1".into()],
            ..Config::default()
        };
        let clock = ManualClock::at(1_764_072_000);
        let (tx, mut revoked) = tokio::sync::mpsc::unbounded_channel();
        let (htx, mut hanging) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let provider = Arc::new(Gated {
            inner: DryRunProvider::new(),
            release: release.clone(),
            hanging: htx,
            revoked: tx,
        });
        let server = Server::build_with(config, Arc::new(clock.clone()), Some(provider))
            .await
            .unwrap()
            .without_workers();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = server.shutdown_handle();
        let (state, lifecycle) = (server.state.clone(), server.lifecycle.clone());
        tokio::spawn(server.serve());
        let ring =
            KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
                .unwrap();
        let client =
            Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(clock.clone())).unwrap();
        let app = App {
            base,
            v1: client.clone().with_version(SignatureVersion::V1),
            client,
            clock: clock.clone(),
            state,
            db_url,
            stop,
            moto: None,
            _dir: dir,
        };
        app.setup_channel(&["bob"], 1).await;
        let make = |who: &'static str| {
            let app = &app;
            async move {
                let a = app.post("/requests", json!({"actor": {"user_id": who, "email": format!("{who}@example.com")}, "channel_id": "ch1",
                    "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": 60})).await;
                let id = a.body["request_id"].as_str().unwrap().to_owned();
                let b = app
                    .post(
                        &format!("/requests/{id}/approve"),
                        json!({"actor": actor("bob")}),
                    )
                    .await;
                assert_eq!(b.status, 200, "{:?}", b.body);
                id
            }
        };
        // Alice is granted first (the dry-run answers at once).
        let alice = make("alice").await;
        lifecycle.run_due().await.unwrap();
        assert_eq!(
            app.get(&format!("/requests/{alice}")).await.body["status"],
            "GRANTED"
        );
        // Then a grant whose provider call hangs, with the worker loop running.
        let slow = make("slowpoke").await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = lifecycle.spawn(stop_rx);
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), hanging.recv())
            .await
            .expect("the slow grant started")
            .unwrap();
        assert_eq!(first, "slowpoke@example.com");
        // Alice's grant ends while the slow call still hangs: her revoke runs anyway.
        app.clock.advance_secs(3600);
        app.state.wake.notify_one();
        let who = tokio::time::timeout(std::time::Duration::from_secs(10), revoked.recv())
            .await
            .expect("alice's revoke ran while another call hung")
            .unwrap();
        assert_eq!(who, "alice@example.com");
        assert_eq!(
            app.get(&format!("/requests/{slow}")).await.body["status"],
            "APPROVED",
            "still hanging"
        );
        release.notify_one();
        let _ = stop_tx.send(true);
        let _ = worker.await;
    }

    macro_rules! both {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite { $( #[tokio::test] async fn $name() { super::$name(false).await } )* }
            mod on_postgres { $( #[tokio::test] async fn $name() { super::$name(true).await } )* }
        };
    }

    both!(
        a_slow_provider_call_delays_nobody_elses_revoke,
        approval_delay_does_not_shorten_the_grant,
        overlapping_grants_keep_access_until_the_last_ends,
        a_standing_assignment_survives,
        a_failing_revoke_is_retried_for_an_hour_and_then_succeeds,
        a_pending_request_times_out,
        revoke_removes_access_at_once_and_extend_moves_the_end,
        an_early_revoke_revokes_active_sessions_and_nothing_else_does,
        a_permanent_grant_failure_needs_a_human,
        the_reconciler_recreates_a_lost_job,
        callbacks_arrive_signed_in_order_and_dead_letters_can_be_resent,
        drift_is_reported_and_removed_only_where_this_system_made_it,
        an_interrupted_grant_is_never_taken_for_a_standing_one,
        revoking_during_an_interrupted_grant_removes_what_it_made,
        a_grant_cannot_be_extended_after_its_end_and_standing_survives_drift,
    );
}

/// The negative catalogue of the API: each case gets its status and code, and none leaves any
/// state behind (no request, no audit event beyond the set-up).
mod negative {
    use super::*;
    use jit_proto::sign::{Audience, RequestParts, SignInput, sign};

    struct Case {
        name: &'static str,
        method: &'static str,
        target: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        status: u16,
        code: &'static str,
    }

    #[allow(clippy::too_many_arguments)] // a test helper mirroring every signed field
    /// Signed headers for `method target body` at `ts` with `kid`'s key (`version` 1 or 2).
    fn signed(
        ring: &KeyRing,
        kid: &str,
        version: u8,
        method: &str,
        target: &str,
        body: &[u8],
        ts: i64,
        nonce: &str,
    ) -> Vec<(String, String)> {
        let key = ring.get(kid).unwrap();
        let input = SignInput {
            version: if version == 1 {
                SignatureVersion::V1
            } else {
                SignatureVersion::V2
            },
            audience: Audience::Backend,
            request: RequestParts {
                method,
                path_and_query: target,
                body,
            },
            timestamp: ts,
            nonce,
        };
        let mut h: Vec<(String, String)> = sign(key, &input)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        if !body.is_empty() {
            h.push(("content-type".into(), "application/json".into()));
        }
        h
    }

    #[tokio::test]
    async fn every_bad_input_gets_its_code_and_changes_nothing() {
        bad_inputs(spawn_app(false).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_bad_input_gets_its_code_and_changes_nothing_on_lambda() {
        bad_inputs(spawn_lambda().await).await;
    }

    async fn bad_inputs(app: App) {
        app.setup_channel(&["bob"], 1).await;
        let id = app.create("alice").await;
        let before_audit = app.get("/audit").await.body["count"].as_u64().unwrap();
        let ring = KeyRing::parse(
            &std::fs::read_to_string(app._dir.path().join("keys/backend.json")).unwrap(),
        )
        .unwrap();
        let kid = ring.keys().next().unwrap().id().as_str().to_owned();
        let now = app.clock.unix();
        let body = |v: Value| v.to_string().into_bytes();
        let create = body(
            json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": ACCOUNT, "jira": "OPS-1", "reason": "x", "requested_duration_minutes": 30}),
        );
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            format!("neg-{n}")
        };
        let s = |m: &str, t: &str, b: &[u8], ts: i64, nonce: &str| {
            signed(&ring, &kid, 2, m, t, b, ts, nonce)
        };
        let with = |mut h: Vec<(String, String)>, name: &str, value: &str| {
            h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            h.push((name.to_owned(), value.to_owned()));
            h
        };
        let without = |mut h: Vec<(String, String)>, name: &str| {
            h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            h
        };
        let approve = format!("/requests/{id}/approve");
        let case = |name, method, target: &str, headers, body: Vec<u8>, status, code| Case {
            name,
            method,
            target: target.to_owned(),
            headers,
            body,
            status,
            code,
        };
        let replay = s("GET", "/requests", b"", now, "replayed-once");
        let mut cases = vec![
            case(
                "no signature headers",
                "GET",
                "/requests",
                vec![],
                vec![],
                401,
                "missing_header",
            ),
            case(
                "missing nonce",
                "GET",
                "/requests",
                without(s("GET", "/requests", b"", now, &nonce()), "X-JIT-Nonce"),
                vec![],
                401,
                "missing_header",
            ),
            case(
                "missing key id",
                "GET",
                "/requests",
                without(s("GET", "/requests", b"", now, &nonce()), "X-JIT-KeyID"),
                vec![],
                401,
                "missing_header",
            ),
            case(
                "garbled timestamp",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-Timestamp",
                    "12:00",
                ),
                vec![],
                401,
                "malformed_header",
            ),
            case(
                "signature not hex",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-Signature",
                    &"zz".repeat(32),
                ),
                vec![],
                401,
                "malformed_header",
            ),
            case(
                "signature too short",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-Signature",
                    "abcd",
                ),
                vec![],
                401,
                "malformed_header",
            ),
            case(
                "key id with spaces",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-KeyID",
                    "key one",
                ),
                vec![],
                401,
                "malformed_header",
            ),
            case(
                "unknown signature version",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-Signature-Version",
                    "3",
                ),
                vec![],
                401,
                "unsupported_version",
            ),
            case(
                "stale timestamp",
                "GET",
                "/requests",
                s("GET", "/requests", b"", now - 301, &nonce()),
                vec![],
                401,
                "stale_timestamp",
            ),
            case(
                "future timestamp",
                "GET",
                "/requests",
                s("GET", "/requests", b"", now + 301, &nonce()),
                vec![],
                401,
                "stale_timestamp",
            ),
            case(
                "replayed nonce (first use)",
                "GET",
                "/requests",
                replay.clone(),
                vec![],
                200,
                "",
            ),
            case(
                "replayed nonce",
                "GET",
                "/requests",
                replay,
                vec![],
                401,
                "replayed_nonce",
            ),
            case(
                "tampered path",
                "POST",
                &format!("/requests/{id}/deny"),
                s(
                    "POST",
                    &approve,
                    &body(json!({"actor": actor("bob")})),
                    now,
                    &nonce(),
                ),
                body(json!({"actor": actor("bob")})),
                401,
                "bad_signature",
            ),
            case(
                "tampered query",
                "GET",
                "/requests?status=DENIED",
                s("GET", "/requests?status=PENDING", b"", now, &nonce()),
                vec![],
                401,
                "bad_signature",
            ),
            case(
                "tampered body",
                "POST",
                "/requests",
                s("POST", "/requests", &create, now, &nonce()),
                body(json!({"actor": actor("mallory")})),
                401,
                "bad_signature",
            ),
            case(
                "tampered method",
                "POST",
                "/requests",
                s("GET", "/requests", &create, now, &nonce()),
                create.clone(),
                401,
                "bad_signature",
            ),
            case(
                "tampered key id",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-KeyID",
                    "key-other",
                ),
                vec![],
                401,
                "unknown_key",
            ),
            case(
                "retired key",
                "GET",
                "/requests",
                with(
                    s("GET", "/requests", b"", now, &nonce()),
                    "X-JIT-KeyID",
                    "key-20200101",
                ),
                vec![],
                401,
                "unknown_key",
            ),
            case(
                "oversized body",
                "POST",
                "/requests",
                vec![("content-type".into(), "application/json".into())],
                vec![b' '; 70_000],
                413,
                "body_too_large",
            ),
            case(
                "malformed JSON",
                "POST",
                "/requests",
                s("POST", "/requests", b"{\"a\":", now, &nonce()),
                b"{\"a\":".to_vec(),
                400,
                "invalid_json",
            ),
            case(
                "JSON array body",
                "POST",
                "/requests",
                s("POST", "/requests", b"[1,2]", now, &nonce()),
                b"[1,2]".to_vec(),
                400,
                "invalid_json",
            ),
            case(
                "form body",
                "POST",
                "/requests",
                with(
                    s("POST", "/requests", b"a=1", now, &nonce()),
                    "content-type",
                    "application/x-www-form-urlencoded",
                ),
                b"a=1".to_vec(),
                415,
                "unsupported_media_type",
            ),
            case(
                "invalid request id",
                "GET",
                "/requests/1%20OR%201=1",
                s("GET", "/requests/1%20OR%201=1", b"", now, &nonce()),
                vec![],
                400,
                "invalid_request_id",
            ),
            case(
                "request id that does not decode",
                "POST",
                "/requests/%FF%FE/approve",
                s(
                    "POST",
                    "/requests/%FF%FE/approve",
                    &body(json!({"actor": actor("bob")})),
                    now,
                    &nonce(),
                ),
                body(json!({"actor": actor("bob")})),
                400,
                "invalid_path",
            ),
            case(
                "unknown request id",
                "GET",
                "/requests/00000000-0000-4000-8000-000000000009",
                s(
                    "GET",
                    "/requests/00000000-0000-4000-8000-000000000009",
                    b"",
                    now,
                    &nonce(),
                ),
                vec![],
                404,
                "request_not_found",
            ),
            case(
                "injection in channel filter",
                "GET",
                "/requests?channel_id=ch1%27%3BDROP%20TABLE%20requests",
                s(
                    "GET",
                    "/requests?channel_id=ch1%27%3BDROP%20TABLE%20requests",
                    b"",
                    now,
                    &nonce(),
                ),
                vec![],
                400,
                "invalid_channel_id",
            ),
            case(
                "injection in status filter",
                "GET",
                "/requests?status=PENDING%27%20OR%20%271",
                s(
                    "GET",
                    "/requests?status=PENDING%27%20OR%20%271",
                    b"",
                    now,
                    &nonce(),
                ),
                vec![],
                400,
                "invalid_status",
            ),
            case(
                "injection in audit type",
                "GET",
                "/audit?type=x%27%20OR%201%3D1",
                s("GET", "/audit?type=x%27%20OR%201%3D1", b"", now, &nonce()),
                vec![],
                400,
                "invalid_parameter",
            ),
            case(
                "unknown parameter",
                "GET",
                "/requests?sort=desc",
                s("GET", "/requests?sort=desc", b"", now, &nonce()),
                vec![],
                400,
                "unknown_parameter",
            ),
            case(
                "limit too high",
                "GET",
                "/requests?limit=500",
                s("GET", "/requests?limit=500", b"", now, &nonce()),
                vec![],
                400,
                "invalid_limit",
            ),
            case(
                "forged next token",
                "GET",
                "/requests?next_token=1_..%2Fetc",
                s("GET", "/requests?next_token=1_..%2Fetc", b"", now, &nonce()),
                vec![],
                400,
                "invalid_next_token",
            ),
        ];
        for (name, patch, status, code) in [
            (
                "invalid account id",
                json!({"account_id": "12345678901x"}),
                400,
                "invalid_account_id",
            ),
            (
                "zero duration",
                json!({"requested_duration_minutes": 0}),
                400,
                "invalid_duration",
            ),
            (
                "negative duration",
                json!({"requested_duration_minutes": -5}),
                400,
                "invalid_duration",
            ),
            (
                "duration over the policy",
                json!({"requested_duration_minutes": 600}),
                422,
                "duration_exceeds_policy",
            ),
            (
                "ticket too long",
                json!({"jira": "T".repeat(300)}),
                400,
                "invalid_ticket",
            ),
            (
                "control characters in the reason",
                json!({"reason": "a\u{0007}b"}),
                400,
                "invalid_reason",
            ),
            ("no actor", json!({"actor": null}), 400, "missing_actor"),
            (
                "actor with a bad email",
                json!({"actor": {"user_id": "alice", "email": "alice@"}}),
                400,
                "invalid_email",
            ),
        ] {
            let mut b: Value = serde_json::from_slice(&create).unwrap();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    b.as_object_mut().unwrap().remove(k);
                } else {
                    b[k] = v.clone();
                }
            }
            let bytes = b.to_string().into_bytes();
            cases.push(case(
                name,
                "POST",
                "/requests",
                s("POST", "/requests", &bytes, now, &nonce()),
                bytes,
                status,
                code,
            ));
        }
        let bind = body(
            json!({"actor": actor("mallory"), "channel_id": "ch1", "account_id": "210987654321"}),
        );
        cases.push(case(
            "non-admin rebinds",
            "POST",
            "/config/bind",
            s("POST", "/config/bind", &bind, now, &nonce()),
            bind,
            403,
            "admin_required",
        ));
        let appr = body(json!({"actor": actor("mallory")}));
        cases.push(case(
            "non-approver approves",
            "POST",
            &approve,
            s("POST", &approve, &appr, now, &nonce()),
            appr,
            403,
            "not_an_approver",
        ));
        let long_key = "k".repeat(200);
        cases.push(case(
            "idempotency key too long",
            "POST",
            "/requests",
            with(
                s("POST", "/requests", &create, now, &nonce()),
                "Idempotency-Key",
                &long_key,
            ),
            create.clone(),
            400,
            "invalid_idempotency_key",
        ));

        assert!(cases.len() >= 40, "{} cases", cases.len());
        let http = reqwest::Client::new();
        for c in &cases {
            let mut rb = http.request(
                c.method.parse().unwrap(),
                format!("{}{}", app.base, c.target),
            );
            for (k, v) in &c.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            let r = rb.body(c.body.clone()).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(status, c.status, "{}: {v}", c.name);
            if !c.code.is_empty() {
                assert_eq!(v["code"], c.code, "{}", c.name);
            }
        }
        // Nothing was created, decided or configured by any of them.
        assert_eq!(app.get("/requests").await.body["count"], 1);
        assert_eq!(
            app.get(&format!("/requests/{id}")).await.body["status"],
            "PENDING"
        );
        assert_eq!(
            app.get("/audit").await.body["count"].as_u64().unwrap(),
            before_audit
        );
    }

    #[tokio::test]
    async fn a_burst_of_failed_signatures_gets_429_until_the_minute_passes() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(format!("sqlite://{}", dir.path().join("jit.db").display())),
            auth_failure_burst: 3,
            ..Config::default()
        };
        let clock = ManualClock::at(1_764_072_000);
        let server = Server::build(config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_workers();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = server.shutdown_handle();
        tokio::spawn(server.serve());
        let ring =
            KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
                .unwrap();
        let c = Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(clock.clone())).unwrap();
        let http = reqwest::Client::new();
        for _ in 0..3 {
            assert_eq!(
                http.get(format!("{base}/requests"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
                401
            );
        }
        let blocked = c.get("/requests").await.unwrap();
        assert_eq!(
            (blocked.status, blocked.code()),
            (429, Some("too_many_auth_failures")),
            "even a valid call, for the rest of the minute"
        );
        assert_eq!(
            http.get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            200,
            "probes stay open"
        );
        clock.advance_secs(60);
        assert_eq!(c.get("/requests").await.unwrap().status, 200);
        let _ = stop.send(true);
    }

    #[tokio::test]
    async fn a_missing_key_ring_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.keys.backend = Some(format!("file:{}", dir.path().join("nope.json").display()));
        config.keys.callback = Some(format!("file:{}", dir.path().join("cb.json").display()));
        let Err(e) = Server::build(config, Arc::new(ManualClock::at(1_764_072_000))).await else {
            panic!("no server without its keys");
        };
        let e = e.to_string();
        assert!(e.contains("backend key ring did not load"), "{e}");
        assert!(e.contains("nope.json"), "names the file: {e}");
    }

    #[tokio::test]
    async fn an_unreachable_identity_center_keeps_readyz_not_ready_until_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let port = jit_testkit::free_port().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(format!("sqlite://{}", dir.path().join("jit.db").display())),
            aws_region: Some("us-east-1".into()),
            aws_endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            ..Config::default()
        };
        config.grants.provider = "aws-identity-center".into();
        let clock = ManualClock::at(1_764_072_000);
        let server = Server::build(config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_workers();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = server.shutdown_handle();
        tokio::spawn(server.serve());
        let readyz = || async {
            let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
            let status = r.status().as_u16();
            let body: jit_proto::wire::Readiness = r.json().await.unwrap();
            (status, body)
        };
        let (status, body) = readyz().await;
        assert_eq!(status, 503);
        assert!(!body.ready);
        assert_eq!(body.provider.name, "aws-identity-center");
        let reason = body.provider.reason.unwrap_or_default();
        assert!(reason.contains("ListInstances"), "{reason}");
        let _moto = jit_testkit::Moto::start_on(port).unwrap();
        // Checked again only after RECHECK_MS of the server's clock.
        assert_eq!(readyz().await.0, 503);
        clock.advance_secs(5);
        let (status, body) = readyz().await;
        assert_eq!((status, body.provider.reason), (200, None));
        assert!(body.ready && body.provider.ready);
        let _ = stop.send(true);
    }

    #[tokio::test]
    async fn v1_is_refused_when_v2_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            database_url: Some(format!("sqlite://{}", dir.path().join("jit.db").display())),
            ..Config::default()
        };
        config.keys.require_v2 = true;
        let clock = ManualClock::at(1_764_072_000);
        let server = Server::build(config, Arc::new(clock.clone()))
            .await
            .unwrap()
            .without_workers();
        let base = format!("http://{}", server.local_addr().unwrap());
        let stop = server.shutdown_handle();
        tokio::spawn(server.serve());
        let ring =
            KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
                .unwrap();
        let c = Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(clock.clone())).unwrap();
        let v1 = c
            .clone()
            .with_version(SignatureVersion::V1)
            .get("/requests")
            .await
            .unwrap();
        assert_eq!((v1.status, v1.code()), (401, Some("unsupported_version")));
        assert_eq!(c.get("/requests").await.unwrap().status, 200);
        let _ = stop.send(true);
    }
}

/// The unsigned metrics text of a running server.
/// The value of the series written exactly as `series` (0 when absent).
fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The existing Go plugin's contract, apart from our bridge's tests.
mod plugin;
