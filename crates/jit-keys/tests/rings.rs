//! Key rings that reload themselves: from a file, and from AWS Secrets Manager through the real
//! SDK against moto's server on a loopback port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_sdk_secretsmanager::Client as SmClient;
use jit_keys::{FileSource, KeySource, RefreshingRing, RingConfig, SecretsManagerSource};
use jit_proto::keyring::KeyRing;
use jit_proto::sign::{
    Audience, Rejection, RequestParts, SignInput, SignatureVersion, Verifier, VerifierConfig, sign,
};
use jit_proto::{Clock, ManualClock, MemoryNonceStore};
use jit_testkit::Moto;
use std::sync::Arc;
use std::time::Duration;

const S1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const S2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const S3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

/// Signs a request with `kid`/`secret` (as a peer holding that key would) and verifies it
/// through `ring`.
async fn check(
    ring: &RefreshingRing,
    clock: &ManualClock,
    kid: &str,
    secret: &str,
) -> Result<(), Rejection> {
    let peer = KeyRing::parse(&format!(r#"{{"{kid}":"{secret}"}}"#)).unwrap();
    let req = RequestParts {
        method: "POST",
        path_and_query: "/requests",
        body: b"{}",
    };
    let nonce = jit_proto::sign::new_nonce().unwrap();
    let input = SignInput {
        version: SignatureVersion::V2,
        audience: Audience::Backend,
        request: req,
        timestamp: clock.unix(),
        nonce: &nonce,
    };
    let headers = sign(peer.get(kid).unwrap(), &input);
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let verifier = Verifier::new(VerifierConfig::new(Audience::Backend));
    let store = MemoryNonceStore::default();
    ring.verify(&verifier, pairs.as_slice(), &req, &store)
        .await
        .map(|_| ())
}

fn clock() -> ManualClock {
    ManualClock::at(1_764_072_000)
}

#[tokio::test]
async fn never_loaded_ring_rejects_everything_with_no_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let ring = RefreshingRing::new(
        RingConfig::new("backend"),
        Arc::new(FileSource::new(dir.path().join("missing.json"))),
        Arc::new(c.clone()),
    );
    assert!(ring.refresh().await.is_err());
    assert_eq!(check(&ring, &c, "key-v1", S1).await, Err(Rejection::NoKeys));
    let st = ring.status();
    assert!(!st.loaded);
    assert_eq!(st.load_failures, 1, "no_keys does not trigger reloads");
}

#[tokio::test]
async fn file_ring_reloads_on_change_and_keeps_last_good_on_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, format!(r#"{{"key-v1":"{S1}"}}"#)).unwrap();
    let c = clock();
    let src = Arc::new(FileSource::new(&path));
    let ring = RefreshingRing::new(RingConfig::new("backend"), src.clone(), Arc::new(c.clone()));
    ring.refresh().await.unwrap();
    assert!(!src.changed());
    assert_eq!(check(&ring, &c, "key-v1", S1).await, Ok(()));

    // The runbook's jq edit, done to a file: the new key verifies after the change is noticed.
    std::fs::write(&path, format!(r#"{{"key-v1":"{S1}","key-v2":"{S2}"}}"#)).unwrap();
    assert!(src.changed());
    ring.refresh().await.unwrap();
    assert_eq!(check(&ring, &c, "key-v2", S2).await, Ok(()));

    // A broken edit: the last good ring stays, the failure is counted.
    std::fs::write(&path, r#"{"key-v1": "#).unwrap();
    assert!(ring.refresh().await.is_err());
    assert_eq!(ring.status().load_failures, 1);
    assert_eq!(check(&ring, &c, "key-v1", S1).await, Ok(()));
    assert_eq!(check(&ring, &c, "key-v2", S2).await, Ok(()));
}

#[tokio::test]
async fn file_ring_loop_picks_up_a_change_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    std::fs::write(&path, format!(r#"{{"key-v1":"{S1}"}}"#)).unwrap();
    let c = clock();
    let mut cfg = RingConfig::new("backend");
    cfg.file_poll_interval = Duration::from_millis(20);
    let ring = RefreshingRing::new(cfg, Arc::new(FileSource::new(&path)), Arc::new(c.clone()));
    ring.refresh().await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = ring.spawn(stop_rx);
    let mut gen_rx = ring.subscribe();
    let before = *gen_rx.borrow_and_update();
    // Write via rename, as editors and `jit keys rotate` do.
    let tmp = dir.path().join("keys.json.tmp");
    std::fs::write(&tmp, format!(r#"{{"key-v1":"{S1}","key-v2":"{S2}"}}"#)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), gen_rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*gen_rx.borrow() > before);
    assert_eq!(check(&ring, &c, "key-v2", S2).await, Ok(()));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn rings_that_would_share_a_secret_refuse_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&pa, format!(r#"{{"key-v1":"{S1}"}}"#)).unwrap();
    std::fs::write(&pb, format!(r#"{{"cb-v1":"{S2}"}}"#)).unwrap();
    let c: Arc<dyn Clock> = Arc::new(clock());
    let a = RefreshingRing::new(
        RingConfig::new("backend"),
        Arc::new(FileSource::new(&pa)),
        c.clone(),
    );
    let b = RefreshingRing::new(
        RingConfig::new("callback"),
        Arc::new(FileSource::new(&pb)),
        c,
    );
    a.must_not_share_with(&b);
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    std::fs::write(&pb, format!(r#"{{"cb-v1":"{S2}","cb-v2":"{S1}"}}"#)).unwrap();
    let err = b.refresh().await.unwrap_err();
    assert!(err.to_string().contains("same secret"), "{err}");
    assert!(!err.to_string().contains(S1));
    assert_eq!(b.current().len(), 1);
}

async fn put_secret(sm: &SmClient, id: &str, value: &str) {
    sm.put_secret_value()
        .secret_id(id)
        .secret_string(value)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn secrets_manager_ring_follows_the_secret_and_survives_an_outage() {
    let mut moto = Moto::start().unwrap();
    let conf = moto.sdk_config().await;
    let sm = SmClient::new(&conf);
    let id = "jit-signing-key";
    sm.create_secret()
        .name(id)
        .secret_string(format!(r#"{{"key-v1":"{S1}"}}"#))
        .send()
        .await
        .unwrap();

    let c = clock();
    let src = Arc::new(SecretsManagerSource::new(
        &conf,
        id,
        vec!["AWSPENDING".into()],
    ));
    assert_eq!(src.describe(), "aws-sm:jit-signing-key");
    let ring = RefreshingRing::new(RingConfig::new("backend"), src, Arc::new(c.clone()));
    ring.refresh().await.unwrap();
    assert_eq!(check(&ring, &c, "key-v1", S1).await, Ok(()));

    // Runbook step 2: add key-v2. It verifies after the next refresh, with no restart.
    put_secret(&sm, id, &format!(r#"{{"key-v1":"{S1}","key-v2":"{S2}"}}"#)).await;
    ring.refresh().await.unwrap();
    assert_eq!(check(&ring, &c, "key-v2", S2).await, Ok(()));
    assert_eq!(ring.signing_key().unwrap().id().as_str(), "key-v2");

    // Runbook step 7: remove key-v1. Refused after the next refresh.
    put_secret(&sm, id, &format!(r#"{{"key-v2":"{S2}"}}"#)).await;
    ring.refresh().await.unwrap();
    assert_eq!(
        check(&ring, &c, "key-v1", S1).await,
        Err(Rejection::UnknownKey)
    );

    // A key named by a request but not yet loaded triggers one reload (rate-limited).
    c.advance_secs(60);
    put_secret(&sm, id, &format!(r#"{{"key-v2":"{S2}","key-v3":"{S3}"}}"#)).await;
    assert_eq!(
        check(&ring, &c, "key-v3", S3).await,
        Ok(()),
        "reloaded on unknown key"
    );
    put_secret(
        &sm,
        id,
        &format!(r#"{{"key-v2":"{S2}","key-v3":"{S3}","key-v4":"{S1}"}}"#),
    )
    .await;
    assert_eq!(
        check(&ring, &c, "key-v4", S1).await,
        Err(Rejection::UnknownKey),
        "within 10 s: no reload"
    );
    c.advance_secs(10);
    assert_eq!(
        check(&ring, &c, "key-v4", S1).await,
        Ok(()),
        "10 s later: reloaded"
    );

    // Moto goes away: loads fail, verification continues on the last good ring.
    let loads_before = ring.status().loads;
    moto.stop();
    assert!(ring.refresh().await.is_err());
    assert_eq!(ring.status().loads, loads_before);
    assert!(ring.status().load_failures >= 1);
    assert_eq!(check(&ring, &c, "key-v3", S3).await, Ok(()));
    assert_eq!(check(&ring, &c, "key-v2", S2).await, Ok(()));
}

#[tokio::test]
async fn secrets_manager_extra_stages_verify_but_never_sign() {
    let moto = Moto::start().unwrap();
    let conf = moto.sdk_config().await;
    let sm = SmClient::new(&conf);
    let id = "jit-callback-key";
    sm.create_secret()
        .name(id)
        .secret_string(format!(r#"{{"cb-v1":"{S1}"}}"#))
        .send()
        .await
        .unwrap();
    put_secret(&sm, id, &format!(r#"{{"cb-v2":"{S2}"}}"#)).await; // cb-v1 becomes AWSPREVIOUS
    let c = clock();
    let ring = RefreshingRing::new(
        RingConfig::new("callback"),
        Arc::new(SecretsManagerSource::new(
            &conf,
            id,
            vec!["AWSPREVIOUS".into(), "AWSPENDING".into()],
        )),
        Arc::new(c.clone()),
    );
    ring.refresh().await.unwrap();
    assert_eq!(
        check(&ring, &c, "cb-v1", S1).await,
        Ok(()),
        "AWSPREVIOUS verifies"
    );
    assert_eq!(ring.signing_key().unwrap().id().as_str(), "cb-v2");
    assert!(ring.current().get("cb-v1").unwrap().is_verify_only());
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let logs = jit_testkit::Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .json()
        .finish();
    // Global, not per thread: tracing caches per call site whether anyone listens, and a test
    // running in parallel on a thread with no subscriber could otherwise switch a call site
    // off for this one (the test was flaky with `set_default`). Other tests of this binary may
    // log into it too, which only widens the secret check.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let short = "shortsecret-xyzzy";
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(&pa, format!(r#"{{"key-v1":"{S1}","short":"{short}"}}"#)).unwrap();
    std::fs::write(&pb, format!(r#"{{"cb-v1":"{S2}"}}"#)).unwrap();
    let c = clock();
    let a = RefreshingRing::new(
        RingConfig::new("backend"),
        Arc::new(FileSource::new(&pa)),
        Arc::new(c.clone()),
    );
    let b = RefreshingRing::new(
        RingConfig::new("callback"),
        Arc::new(FileSource::new(&pb)),
        Arc::new(c.clone()),
    );
    a.must_not_share_with(&b);
    a.refresh().await.unwrap(); // warns about the short key
    b.refresh().await.unwrap();
    std::fs::write(&pb, format!(r#"{{"cb-v1":"{S2}","cb-v2":"{S1}"}}"#)).unwrap();
    assert!(b.refresh().await.is_err()); // shared secret refused
    std::fs::write(&pa, format!(r#"{{"key-v1":"{S3}", "bad": 7}}"#)).unwrap();
    assert!(a.refresh().await.is_err()); // malformed ring
    assert_eq!(
        check(&a, &c, "key-v9", S3).await,
        Err(Rejection::UnknownKey)
    ); // reload on unknown key
    assert_eq!(
        check(&a, &c, "key-v1", S2).await,
        Err(Rejection::BadSignature)
    );

    let text = logs.text();
    assert!(text.contains("shorter than 32 bytes"), "{text}");
    assert!(text.contains("same secret"), "{text}");
    assert!(text.contains("unknown key id"), "{text}");
    for secret in [S1, S2, S3, short] {
        assert!(!text.contains(secret), "a secret reached the logs:\n{text}");
    }
}

/// Counts the log lines that contain `needle`.
fn count(logs: &jit_testkit::Captured, needle: &str) -> usize {
    logs.text().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn a_broken_ring_file_is_reported_once_per_change_and_not_reloaded_at_every_poll() {
    let logs = jit_testkit::Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.json");
    std::fs::write(&path, format!(r#"{{"k1":"{S1}"}}"#)).unwrap();
    let source = Arc::new(FileSource::new(&path));
    let mut cfg = RingConfig::new("backend");
    cfg.signing_key_id = Some(jit_proto::keyring::KeyId::parse("gone").unwrap());
    let ring = RefreshingRing::new(cfg, source.clone(), Arc::new(clock()));
    ring.refresh().await.unwrap();
    ring.refresh().await.unwrap();
    assert_eq!(
        count(&logs, "pinned signing key gone"),
        1,
        "{}",
        logs.text()
    );

    std::fs::write(&path, "{ not json").unwrap();
    assert!(source.changed());
    for _ in 0..3 {
        assert!(ring.refresh().await.is_err());
    }
    assert_eq!(count(&logs, "load failed"), 1, "{}", logs.text());
    assert!(
        !source.changed(),
        "a failed load has seen the file: the 2 s poll does not reload it again"
    );
    // An edit is news, even when the fault reads the same.
    std::fs::write(&path, "{ still not json, and longer").unwrap();
    assert!(source.changed());
    assert!(ring.refresh().await.is_err());
    assert_eq!(count(&logs, "load failed"), 2, "{}", logs.text());
    // Fixed: one line says so, and the old warnings do not come back.
    std::fs::write(&path, format!(r#"{{"k1":"{S1}"}}"#)).unwrap();
    ring.refresh().await.unwrap();
    assert_eq!(
        count(&logs, "loaded cleanly again"),
        0,
        "still pinned to a missing key"
    );
    assert_eq!(
        count(&logs, "pinned signing key gone"),
        2,
        "{}",
        logs.text()
    );
    assert_eq!(ring.status().load_failures, 4);
}

#[tokio::test]
async fn the_reload_loop_ends_when_its_shutdown_sender_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.json");
    std::fs::write(&path, format!(r#"{{"k1":"{S1}"}}"#)).unwrap();
    let ring = RefreshingRing::new(
        RingConfig::new("backend"),
        Arc::new(FileSource::new(&path)),
        Arc::new(clock()),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = ring.spawn(rx);
    drop(tx);
    // Before, the loop saw `changed()` fail and went round again at once, forever.
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop ended")
        .unwrap();
}
