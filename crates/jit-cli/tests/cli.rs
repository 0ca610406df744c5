//! The `jit` binary as an operator runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_proto::keyring::KeyRing;
use jit_proto::sign::{Audience, RequestParts, Verifier, VerifierConfig};
use jit_proto::{Clock, MemoryNonceStore, SystemClock};
use std::process::Command;

fn jit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jit"))
}

#[test]
fn keys_generate_prints_a_runbook_ready_ring() {
    let out = jit()
        .args(["keys", "generate", "--prefix", "cb"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, secret) = v.as_object().unwrap().iter().next().unwrap();
    assert!(id.starts_with("cb-20") && id.len() == 11, "{id}");
    let s = secret.as_str().unwrap();
    assert_eq!(s.len(), 64);
    assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    // It parses as a ring, and two runs differ.
    KeyRing::parse(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    let again = jit().args(["keys", "generate"]).output().unwrap();
    assert_ne!(again.stdout, out.stdout);
}

#[tokio::test]
async fn sign_prints_headers_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.json");
    std::fs::write(&path, r#"{"key-v1":"0123456789abcdef0123456789abcdef-1","key-v2":"0123456789abcdef0123456789abcdef-2"}"#).unwrap();
    let body = r#"{"actor":{"user_id":"u1"}}"#;
    let out = jit()
        .args([
            "sign",
            "--keys",
            &format!("file:{}", path.display()),
            "-X",
            "post",
            "--path",
            "/requests/abc/revoke?x=1",
            "-d",
            body,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let headers: Vec<(&str, &str)> = text.lines().map(|l| l.split_once(": ").unwrap()).collect();
    assert!(
        headers.contains(&("X-JIT-KeyID", "key-v2")),
        "newest key signs: {text}"
    );
    let ring = KeyRing::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let v = Verifier::new(VerifierConfig::new(Audience::Backend));
    let req = RequestParts {
        method: "POST",
        path_and_query: "/requests/abc/revoke?x=1",
        body: body.as_bytes(),
    };
    v.verify(
        &ring,
        headers.as_slice(),
        &req,
        SystemClock.unix(),
        &MemoryNonceStore::default(),
    )
    .await
    .unwrap();

    let curl = jit()
        .args([
            "sign",
            "--keys",
            &format!("file:{}", path.display()),
            "--path",
            "/requests",
            "--curl",
            "http://127.0.0.1:8080",
            "--v1",
        ])
        .output()
        .unwrap();
    let line = String::from_utf8(curl.stdout).unwrap();
    assert!(
        line.starts_with("curl -sS -X GET 'http://127.0.0.1:8080/requests'"),
        "{line}"
    );
    assert!(
        line.contains("-H 'X-JIT-Signature: ") && !line.contains("Signature-Version"),
        "{line}"
    );
    assert!(
        !line.contains("0123456789abcdef0123456789abcdef"),
        "the secret never appears"
    );

    let missing = jit()
        .args(["sign", "--keys", "file:/nonexistent", "--path", "/x"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}

#[tokio::test]
async fn audit_verify_fails_on_an_edited_and_on_a_deleted_row() {
    use jit_core::audit::AuditDraft;
    use jit_store::{SqlStore, Store, WriteCtx};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    for ch in ["ch1", "ch2", "ch3"] {
        let b = jit_core::policy::Binding {
            channel_id: jit_core::types::ChannelId::parse(ch).unwrap(),
            accounts: Default::default(),
            policy: Default::default(),
            version: 0,
        };
        store
            .save_binding(
                &b,
                0,
                WriteCtx::new(AuditDraft::new("config.bound"), SystemClock.now()),
            )
            .await
            .unwrap();
    }
    let verify = || {
        jit()
            .args(["audit", "verify", "--database-url", &url])
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 events"));

    store
        .raw_execute("UPDATE audit_events SET type = 'config.unbound' WHERE seq = 2")
        .await
        .unwrap();
    let edited = verify();
    assert_eq!(edited.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&edited.stderr).contains("event 2 was modified"));

    store
        .raw_execute("UPDATE audit_events SET type = 'config.bound' WHERE seq = 2")
        .await
        .unwrap();
    assert!(verify().status.success());
    store
        .raw_execute("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();
    let deleted = verify();
    assert_eq!(deleted.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&deleted.stderr).contains("event 2 is missing"));
}
