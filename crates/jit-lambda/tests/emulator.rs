//! The function on cargo-lambda's emulator, with DynamoDB and EventBridge Scheduler on moto:
//! signed calls over HTTP through the emulator's API Gateway (payload 2.0) events, the tick and
//! a job's schedule as raw invocations. Needs `cargo-lambda` (scripts/test.sh installs it in
//! `.venv`, or set `JIT_CARGO_LAMBDA`) and moto.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_client::{Client, Keys};
use jit_proto::keyring::KeyRing;
use jit_proto::{Clock, SystemClock};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cargo_lambda() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("JIT_CARGO_LAMBDA") {
        return p.into();
    }
    let venv = jit_testkit::workspace_root().join(".venv/bin/cargo-lambda");
    assert!(
        venv.exists(),
        "cargo-lambda is missing: run scripts/test.sh (pip install --no-deps cargo-lambda into .venv)"
    );
    venv
}

struct Emulated {
    base: String,
    client: Client,
    moto: jit_testkit::Moto,
    _emulator: Kill,
    _function: Kill,
    _dir: tempfile::TempDir,
}

const GROUP: &str = "jit-jobs";

/// Key rings in Secrets Manager (on moto), as the template configures them.
struct SmKeys {
    backend_arn: String,
    callback_arn: String,
    ring: KeyRing,
}

async fn start() -> Emulated {
    let moto = jit_testkit::Moto::start().unwrap();
    start_on(moto, None).await
}

async fn start_on(moto: jit_testkit::Moto, sm: Option<SmKeys>) -> Emulated {
    let sdk = moto.sdk_config().await;
    jit_store::DynamoStore::create_tables(&sdk, "jit-state", "jit-nonces")
        .await
        .unwrap();
    aws_sdk_scheduler::Client::new(&sdk)
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = jit_testkit::free_port().unwrap();
    let emulator = Command::new(cargo_lambda())
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .arg("--manifest-path")
        .arg(jit_testkit::workspace_root().join("crates/jit-lambda/Cargo.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let emulator = Kill(emulator);
    jit_testkit::wait_for_port(port, Duration::from_secs(60)).unwrap();
    let mut function = Command::new(env!("CARGO_BIN_EXE_jit-lambda"));
    if let Some(k) = &sm {
        function
            .env("JIT_KEYS_BACKEND", format!("aws-sm:{}", k.backend_arn))
            .env("JIT_KEYS_CALLBACK", format!("aws-sm:{}", k.callback_arn));
    }
    let function = function
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "jit-access")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_DATABASE_URL", "dynamodb://jit-state?nonces=jit-nonces")
        .env("JIT_AWS_ENDPOINT_URL", &moto.endpoint)
        .env("JIT_AWS_REGION", "us-east-1")
        .env("JIT_ADMINS", "admin1")
        .env("JIT_SCHEDULER_GROUP", GROUP)
        .env(
            "JIT_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/jit-scheduler",
        )
        .env(
            "JIT_SCHEDULER_TARGET_ARN",
            "arn:aws:lambda:us-east-1:123456789012:function:jit-access",
        )
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let function = Kill(function);
    let base = format!("http://127.0.0.1:{port}");
    // The function writes its key rings at start (the embedded default): wait for them.
    let backend = dir.path().join("keys/backend.json");
    let ring = match sm {
        Some(k) => k.ring,
        None => loop {
            if let Ok(text) = std::fs::read_to_string(&backend)
                && let Ok(r) = KeyRing::parse(&text)
            {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        },
    };
    let client = Client::new(
        &base,
        Keys::Fixed(Arc::new(ring)),
        Arc::new(SystemClock) as Arc<dyn Clock>,
    )
    .unwrap();
    Emulated {
        base,
        client,
        moto,
        _emulator: emulator,
        _function: function,
        _dir: dir,
    }
}

fn actor(id: &str) -> Value {
    json!({"user_id": id, "email": format!("{id}@example.com"), "roles": []})
}

impl Emulated {
    async fn post(&self, path: &str, body: Value) -> jit_client::Answer {
        // The function answers once it has started: retry while the emulator has no runtime.
        for _ in 0..200 {
            match self.client.post(path, &body).await {
                Ok(a) if a.status != 502 && a.status != 500 => return a,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("the function never answered {path}");
    }

    async fn invoke(&self, payload: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/2015-03-31/functions/_/invocations", self.base))
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn schedule_exists(&self, name: &str) -> bool {
        let sdk = self.moto.sdk_config().await;
        aws_sdk_scheduler::Client::new(&sdk)
            .get_schedule()
            .name(name)
            .group_name(GROUP)
            .send()
            .await
            .is_ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_ticks_and_job_schedules_work_on_the_emulator() {
    let f = start().await;
    let a = f
        .post(
            "/config/bind",
            json!({"actor": actor("admin1"), "channel_id": "ch1", "account_id": "123456789012"}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = f
        .post(
            "/config/approvers",
            json!({"actor": actor("admin1"), "channel_id": "ch1", "approvers": ["bob"], "required_approvals": 1}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = f
        .post(
            "/requests",
            json!({"actor": actor("alice"), "channel_id": "ch1", "account_id": "123456789012",
                   "jira": "OPS-1", "reason": "deploy", "requested_duration_minutes": 60}),
        )
        .await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["request_id"].as_str().unwrap().to_owned();
    // Pending: its timeout has a one-time schedule.
    assert!(f.schedule_exists(&format!("timeout-{id}")).await);
    let a = f
        .post(
            &format!("/requests/{id}/approve"),
            json!({"actor": actor("bob")}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The grant ran in the approving invocation, before it returned.
    let g = f.client.get(&format!("/requests/{id}")).await.unwrap();
    assert_eq!(g.body["status"], "GRANTED", "{:?}", g.body);
    assert!(
        f.schedule_exists(&format!("revoke-{id}")).await,
        "the revoke is scheduled at its end"
    );
    assert!(
        !f.schedule_exists(&format!("timeout-{id}")).await,
        "the timeout's schedule went with it"
    );
    // A job's schedule firing, and the tick, are invocations like the scheduler sends.
    let out = f
        .invoke(json!({"jit": "job", "kind": "revoke", "request_id": id}))
        .await;
    assert_eq!(out["ok"], true);
    let out = f.invoke(json!({"jit": "tick"})).await;
    assert_eq!(
        (out["ok"].clone(), out["store_up"].clone()),
        (json!(true), json!(true))
    );
    // Still granted: the revoke is not due yet.
    let g = f.client.get(&format!("/requests/{id}")).await.unwrap();
    assert_eq!(g.body["status"], "GRANTED");
    // An early revoke runs at once and takes the schedule away.
    let a = f
        .post(
            &format!("/requests/{id}/revoke"),
            json!({"actor": actor("admin1"), "reason": "done"}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let g = f.client.get(&format!("/requests/{id}")).await.unwrap();
    assert_eq!(g.body["status"], "REVOKED", "{:?}", g.body);
    assert!(!f.schedule_exists(&format!("revoke-{id}")).await);
    // Unsigned calls are refused, as by `jit server`.
    let r = reqwest::Client::new()
        .get(format!("{}/requests/{id}", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The trail verifies on DynamoDB.
    let v = f.client.get("/audit/verify").await.unwrap();
    assert_eq!(v.status, 200, "{:?}", v.body);
}

const S1: &str = "backend-secret-1-0123456789abcdef0123456789abcdef";
const S2: &str = "backend-secret-2-0123456789abcdef0123456789abcdef";

/// Rings from Secrets Manager: the function loads them at start and keeps them warm; a key the
/// old runbook adds (a new secret value) is taken at the next tick, with no redeploy or restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_come_from_secrets_manager_and_a_new_key_is_taken_at_the_tick() {
    let moto = jit_testkit::Moto::start().unwrap();
    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    let arn = |o: aws_sdk_secretsmanager::operation::create_secret::CreateSecretOutput| {
        o.arn().unwrap().to_owned()
    };
    let backend_arn = arn(sm
        .create_secret()
        .name("jit-signing-key")
        .secret_string(format!(r#"{{"key-v1":"{S1}"}}"#))
        .send()
        .await
        .unwrap());
    let callback_arn = arn(sm
        .create_secret()
        .name("jit-callback-key")
        .secret_string(r#"{"cb-v1":"callback-secret-0123456789abcdef0123456789ab"}"#)
        .send()
        .await
        .unwrap());
    let ring = KeyRing::parse(&format!(r#"{{"key-v1":"{S1}"}}"#)).unwrap();
    let f = start_on(
        moto,
        Some(SmKeys {
            backend_arn: backend_arn.clone(),
            callback_arn,
            ring,
        }),
    )
    .await;
    let a = f
        .post(
            "/config/bind",
            json!({"actor": actor("admin1"), "channel_id": "ch1", "account_id": "123456789012"}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    // The runbook's step: the secret gains key-v2 (a new AWSCURRENT version).
    sm.put_secret_value()
        .secret_id(&backend_arn)
        .secret_string(format!(r#"{{"key-v1":"{S1}","key-v2":"{S2}"}}"#))
        .send()
        .await
        .unwrap();
    let keys_in_ring = || async {
        let m = reqwest::get(format!("{}/metrics", f.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .find(|l| l.starts_with("jit_key_ring_keys{") && l.contains("ring=\"backend\""))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(keys_in_ring().await.as_deref(), Some("1"));
    let out = f.invoke(json!({"jit": "tick"})).await;
    assert_eq!(out["ok"], true);
    assert_eq!(
        keys_in_ring().await.as_deref(),
        Some("2"),
        "the tick reloaded the ring from Secrets Manager"
    );
    // A caller that signs with key-v2 only (its newest key) is now verified.
    let v2 = Client::new(
        &f.base,
        Keys::Fixed(Arc::new(
            KeyRing::parse(&format!(r#"{{"key-v2":"{S2}"}}"#)).unwrap(),
        )),
        Arc::new(SystemClock) as Arc<dyn Clock>,
    )
    .unwrap();
    let a = v2.get("/config/accounts?channel_id=ch1").await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
}
