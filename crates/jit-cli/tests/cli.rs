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
use std::sync::Arc;

fn jit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jit"))
}

/// A `jit server` process on a free port with `dir` as its data directory; killed on drop.
struct ServerProc {
    child: std::process::Child,
    api: String,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(dir: &std::path::Path, env: &[(&str, &str)]) -> ServerProc {
    let port = jit_testkit::free_port().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jit"));
    cmd.arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{port}"))
        .env("JIT_DATA_DIR", dir)
        .env("JIT_LOG", "warn")
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    jit_testkit::wait_for_port(port, std::time::Duration::from_secs(30)).unwrap();
    ServerProc {
        child,
        api: format!("http://127.0.0.1:{port}"),
    }
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
    use jit_store::prelude::*;
    use jit_store::{SqlStore, WriteCtx};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    for ch in ["ch1", "ch2", "ch3"] {
        let b = jit_core::policy::Binding {
            channel_id: jit_core::types::ChannelId::parse(ch).unwrap(),
            accounts: Default::default(),
            policy: Default::default(),
            updated_at: None,
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

/// `jit admin backup` copies a database while a writer keeps writing; the copy opens, its audit
/// chain verifies, and a second backup to the same file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_restores_and_verifies() {
    use jit_core::audit::AuditDraft;
    use jit_store::prelude::*;
    use jit_store::{SqlStore, WriteCtx};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let store = Arc::new(SqlStore::open(&url).await.unwrap());
    let record = |store: Arc<SqlStore>, n: usize| async move {
        for _ in 0..n {
            store
                .record(WriteCtx::with_audit(
                    vec![AuditDraft::new("config.bound")],
                    SystemClock.now(),
                ))
                .await
                .unwrap();
        }
    };
    record(store.clone(), 200).await;
    let writer = tokio::spawn(record(store.clone(), 300));
    let copy = dir.path().join("backups/jit-copy.db");
    let backup = || {
        jit()
            .args([
                "admin",
                "backup",
                copy.to_str().unwrap(),
                "--database-url",
                &url,
            ])
            .output()
            .unwrap()
    };
    let out = backup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let copy_url = format!("sqlite://{}", copy.display());
    let verify = jit()
        .args(["audit", "verify", "--database-url", &copy_url])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let said = String::from_utf8_lossy(&verify.stdout).to_string();
    let n: i64 = said
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    assert!(
        (200..=500).contains(&n),
        "a consistent point in time: {said}"
    );
    // Restored: the copy opens as a database and serves what it holds.
    let restored = SqlStore::open(&copy_url).await.unwrap();
    assert_eq!(restored.verify_audit().await.unwrap(), n);
    let again = backup();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}

#[test]
fn audit_verify_on_a_mistyped_path_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite://{}", dir.path().join("jti.db").display()),
        format!("sqlite://{}", dir.path().join("typo/jit.db").display()),
        "postgres//localhost/jit".to_owned(),
    ] {
        let out = jit()
            .args(["audit", "verify", "--database-url", &url])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("intact"),
            "{url}"
        );
        assert!(
            stderr.contains("no database at") || stderr.contains("database URL must start"),
            "{url}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

/// Key rotation as one command against a running server that reloads its ring from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_retire_rollback_auto_on_a_live_ring() {
    use jit_client::{Client, Keys};
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &[]);
    let api = server.api.clone();
    let ring_path = dir.path().join("keys/backend.json");
    let source = format!("file:{}", ring_path.display());
    let keys = |args: &[&str]| {
        let mut a = vec!["keys"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--source", &source, "--api", &api, "--api-keys", &source]);
        jit().args(&a).output().unwrap()
    };
    let old_id = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap())
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .id()
        .as_str()
        .to_owned();

    // Rotate: a second key, signing at once (no activation delay in the test).
    let out = keys(&["rotate", "--activation-delay-secs", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ring = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    assert_eq!(ring.len(), 2);
    let new_id = ring
        .signing_key(SystemClock.now())
        .unwrap()
        .id()
        .as_str()
        .to_owned();
    assert_ne!(new_id, old_id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&ring_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // The old key is still in use: a peer that has not reloaded signs with it, a moment after
    // the server started. Its first use is recorded at once, so retire refuses it, even with
    // the overlap at 0 (the recording margin), and status says from when it can go.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    let old_only =
        KeyRing::parse(&serde_json::json!({ &old_id: doc[&old_id] }).to_string()).unwrap();
    let peer = Client::new(&api, Keys::Fixed(Arc::new(old_only)), Arc::new(SystemClock)).unwrap();
    assert_eq!(peer.get("/requests").await.unwrap().status, 200);
    let status = keys(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains(&new_id)
            && text.contains("signing key")
            && text.contains("in use; safe to retire from"),
        "{text}"
    );
    for overlap in ["24", "0"] {
        let refused = keys(&["retire", &old_id, "--overlap-hours", overlap]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains("still in use") && said.contains("can be retired from"),
            "{said}"
        );
    }
    let refused = keys(&["retire", &new_id, "--force"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is the signing key"));

    // Forced, it goes, with a private backup; the server refuses it after.
    let out = keys(&["retire", &old_id, "--overlap-hours", "0", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backups: Vec<_> = std::fs::read_dir(dir.path().join("keys/retired"))
        .unwrap()
        .collect();
    assert_eq!(backups.len(), 1);
    let new_ring = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    assert_eq!(new_ring.len(), 1);
    let c = Client::new(&api, Keys::Fixed(Arc::new(new_ring)), Arc::new(SystemClock)).unwrap();
    assert_eq!(
        c.get("/requests").await.unwrap().status,
        200,
        "the new key works without a restart"
    );

    // Rollback: the retired key is back and signs again.
    let out = keys(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ring = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    assert_eq!(
        ring.signing_key(SystemClock.now()).unwrap().id().as_str(),
        old_id
    );

    // Auto: the newest key is older than 0 days, so a new one is added; of the others, only the
    // one no verifier used within the overlap is retired. `spare` is a key whose activation is
    // far off, last seen by a bridge three days ago.
    let out = keys(&["rotate", "--activation-delay-secs", "999999"]);
    assert!(out.status.success());
    let ring = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    let spare = ring
        .keys()
        .map(|k| k.id().as_str().to_owned())
        .find(|k| *k != old_id && *k != new_id)
        .unwrap();
    let c = Client::new(&api, Keys::Fixed(Arc::new(ring)), Arc::new(SystemClock)).unwrap();
    let long_ago = SystemClock.unix() - 3 * 86_400;
    let a = c
        .post(
            "/admin/keys/usage",
            &serde_json::json!({"ring": "backend", "verifier": "bridge:y",
            "keys": [{"key_id": spare, "last_used_unix": long_ago}]}),
        )
        .await
        .unwrap();
    assert!(a.is_success());
    let out = keys(&[
        "auto",
        "--max-age-days",
        "0",
        "--activation-delay-secs",
        "0",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("rotated") && said.contains(&format!("retired {spare}")),
        "{said}"
    );
    let after = KeyRing::parse(&std::fs::read_to_string(&ring_path).unwrap()).unwrap();
    assert_eq!(
        after.len(),
        3,
        "the keys used recently stay, the unused one went, a new one came"
    );
    assert!(after.get(&old_id).is_some() && after.get(&new_id).is_some());
    assert!(after.get(&spare).is_none());
    drop(server);
}

/// `jit audit export` streams every page, as JSON lines or CSV, to a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_streams_all_pages() {
    use jit_client::{Client, Keys};
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &[("JIT_ADMINS", "admin1")]);
    let api = server.api.clone();
    let keys = format!("file:{}", dir.path().join("keys/backend.json").display());
    let ring =
        KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
            .unwrap();
    let c = Client::new(&api, Keys::Fixed(Arc::new(ring)), Arc::new(SystemClock)).unwrap();
    // 1,205 events: more than one page of 1,000.
    for i in 0..1205 {
        let a = c
            .post("/config/approvers", &serde_json::json!({"actor": {"user_id": "admin1"}, "channel_id": format!("ch{}", i % 7), "approvers": ["bob"]}))
            .await
            .unwrap();
        assert!(a.is_success(), "{:?}", a.body);
    }
    let out = dir.path().join("audit.csv");
    let r = jit()
        .args([
            "audit",
            "export",
            "--api",
            &api,
            "--keys",
            &keys,
            "--format",
            "csv",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.lines().count(),
        1 + 1205,
        "one header, then every event once"
    );
    assert!(text.starts_with("seq,at,type,"));
    let r = jit()
        .args([
            "audit",
            "export",
            "--api",
            &api,
            "--keys",
            &keys,
            "--type",
            "config.approvers_changed",
            "--since",
            "2000-01-01",
        ])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1205);
    assert_eq!(lines[1204]["seq"], 1205);
    drop(server);
}

/// The same commands on a ring in AWS Secrets Manager (moto's server through the real SDK): each
/// edit is a new version that becomes AWSCURRENT, the previous one stays as AWSPREVIOUS.
#[tokio::test]
async fn rotate_and_retire_a_secrets_manager_ring() {
    use aws_sdk_secretsmanager::Client as Sm;
    let moto = jit_testkit::Moto::start().unwrap();
    let sm = Sm::new(&moto.sdk_config().await);
    sm.create_secret()
        .name("jit-signing-key")
        .secret_string(r#"{"key-v1":"0123456789abcdef0123456789abcdef-old"}"#)
        .send()
        .await
        .unwrap();
    let run = |args: &[&str]| {
        let mut a = vec!["keys"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[
            "--source",
            "aws-sm:jit-signing-key",
            "--aws-endpoint-url",
            &moto.endpoint,
            "--aws-region",
            "us-east-1",
        ]);
        jit()
            .args(&a)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap()
    };
    let stage = |s: &'static str| {
        let sm = sm.clone();
        async move {
            let v = sm
                .get_secret_value()
                .secret_id("jit-signing-key")
                .version_stage(s)
                .send()
                .await
                .unwrap();
            KeyRing::parse(v.secret_string().unwrap()).unwrap()
        }
    };
    let out = run(&["rotate", "--activation-delay-secs", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stage("AWSCURRENT").await.len(), 2);
    assert_eq!(
        stage("AWSPREVIOUS").await.len(),
        1,
        "the previous version is kept"
    );
    let refused = run(&["retire", "key-v1"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pass --api"),
        "no usage facts, no retirement"
    );
    let out = run(&["retire", "key-v1", "--force", "--no-backup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let current = stage("AWSCURRENT").await;
    assert_eq!(current.len(), 1);
    assert!(current.get("key-v1").is_none());
    let status = run(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("signing key"));
}

/// The operator CLI against a live server: create, approve, list, revoke; tables and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_cli_drives_a_request() {
    use jit_client::{Client, Keys};
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &[("JIT_ADMINS", "admin1")]);
    let api = server.api.clone();
    let keys = format!("file:{}", dir.path().join("keys/backend.json").display());
    let ring =
        KeyRing::parse(&std::fs::read_to_string(dir.path().join("keys/backend.json")).unwrap())
            .unwrap();
    let c = Client::new(&api, Keys::Fixed(Arc::new(ring)), Arc::new(SystemClock)).unwrap();
    let _ = &c;
    let config = |args: &[&str]| {
        let mut a = vec!["config", "--api", &api, "--keys", &keys];
        a.extend_from_slice(args);
        jit().args(&a).output().unwrap()
    };
    let refused = config(&["--as", "mallory", "bind", "ch1", "123456789012"]);
    assert_eq!(refused.status.code(), Some(1), "only admins configure");
    assert!(
        config(&["--as", "admin1", "bind", "ch1", "123456789012"])
            .status
            .success()
    );
    assert!(
        config(&["--as", "admin1", "approvers", "ch1", "bob"])
            .status
            .success()
    );
    assert!(
        config(&[
            "--as",
            "admin1",
            "policy",
            "ch1",
            "max_request_hours=2",
            "require_ticket=true"
        ])
        .status
        .success()
    );
    let shown = config(&["show", "ch1"]);
    let text = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        text.contains("123456789012") && text.contains("bob") && text.contains("max 2 h"),
        "{text}"
    );
    let cli = |args: &[&str]| {
        let mut a = vec!["requests", "--api", &api, "--keys", &keys];
        a.extend_from_slice(args);
        jit().args(&a).output().unwrap()
    };
    let out = cli(&[
        "--as",
        "alice",
        "--actor-email",
        "alice@example.com",
        "--json",
        "create",
        "--channel",
        "ch1",
        "--account",
        "123456789012",
        "--minutes",
        "30",
        "--ticket",
        "OPS-1",
        "--reason",
        "deploy",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["request_id"].as_str().unwrap().to_owned();
    let refused = cli(&["--as", "mallory", "approve", &id]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("approvers"));
    let out = cli(&["--as", "bob", "approve", &id]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with("ID") && table.contains("APPROVED"),
        "{table}"
    );
    let out = cli(&["--json", "list", "--channel", "ch1"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["request_id"], id.as_str());
    let out = cli(&["--as", "bob", "revoke", &id, "--reason", "break-glass end"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("REVOKED"));
    let completions = jit().args(["completions", "bash"]).output().unwrap();
    assert!(String::from_utf8_lossy(&completions.stdout).contains("requests"));
    drop(server);
}

/// `jit audit export` of 100,000 events streams with flat memory: its peak RSS for the whole
/// trail is about that of a 1,000-event export (`/usr/bin/time -f %M`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_of_100k_events_keeps_memory_flat() {
    use jit_core::audit::AuditDraft;
    use jit_store::prelude::*;
    use jit_store::{SqlStore, WriteCtx};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("jit.db").display());
    {
        let store = SqlStore::open(&db).await.unwrap();
        for batch in 0..200 {
            let drafts: Vec<AuditDraft> = (0..500)
                .map(|i| {
                    let mut d = AuditDraft::new(if batch == 0 && i < 500 {
                        "config.marker"
                    } else {
                        "request.created"
                    });
                    d.actor_id = Some(format!("u{i}"));
                    d.data = serde_json::json!({"reason": "x".repeat(100), "n": batch * 500 + i});
                    d
                })
                .collect();
            store
                .record(WriteCtx::with_audit(drafts, SystemClock.now()))
                .await
                .unwrap();
        }
        assert_eq!(store.verify_audit().await.unwrap(), 100_000);
    }
    let server = spawn_server(dir.path(), &[("JIT_DATABASE_URL", db.as_str())]);
    let api = server.api.clone();
    let keys = format!("file:{}", dir.path().join("keys/backend.json").display());
    let export = |extra: &[&str], out: &str| {
        let mut args = vec![
            "-f",
            "%M",
            env!("CARGO_BIN_EXE_jit"),
            "audit",
            "export",
            "--api",
            &api,
            "--keys",
            &keys,
            "-o",
            out,
        ];
        args.extend_from_slice(extra);
        let o = std::process::Command::new("/usr/bin/time")
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        err.lines().last().unwrap().trim().parse::<u64>().unwrap()
    };
    let all = dir.path().join("all.jsonl");
    let small = dir.path().join("small.jsonl");
    let rss_all = export(&[], all.to_str().unwrap());
    let rss_small = export(&["--type", "config.marker"], small.to_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(&all).unwrap().lines().count(),
        100_000
    );
    assert_eq!(
        std::fs::read_to_string(&small).unwrap().lines().count(),
        500
    );
    eprintln!("audit export peak RSS: 100,000 events {rss_all} KiB, 500 events {rss_small} KiB");
    assert!(
        rss_all < rss_small * 3 / 2,
        "memory grew with the trail: {rss_all} KiB vs {rss_small} KiB"
    );
    drop(server);
}

/// A ring file with one key, with `mode` (Unix).
fn write_ring(path: &std::path::Path, id: &str, mode: u32) {
    std::fs::write(
        path,
        format!(r#"{{"{id}":"0123456789abcdef0123456789abcdef-{id}"}}"#),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
}

/// A server configuration in `dir`: private rings, a SQLite database that does not exist yet,
/// `extra` TOML appended.
fn doctor_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    write_ring(&dir.join("backend.json"), "key-a", 0o600);
    write_ring(&dir.join("callback.json"), "cb-a", 0o600);
    let port = jit_testkit::free_port().unwrap();
    let path = dir.join("jit.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\n{extra}\n[keys]\nbackend = \"file:{d}/backend.json\"\ncallback = \"file:{d}/callback.json\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

/// `jit doctor --json` with `args`: its exit status and its report.
fn doctor(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = jit()
        .arg("doctor")
        .arg("--json")
        .args(args)
        .env_remove("JIT_CONFIG")
        .env_remove("JIT_MM_CONFIG")
        .env_remove("JIT_API_URL")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// The findings of a report with this code.
fn with_code<'a>(report: &'a serde_json::Value, code: &str) -> Vec<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

#[test]
fn doctor_finds_a_key_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = doctor_config(dir.path(), "");
    let cfg = cfg.to_str().unwrap();
    let (code, report) = doctor(&["--config", cfg]);
    assert_eq!(code, Some(0), "warnings only: {report:#}");
    assert!(with_code(&report, "key_file_mode").is_empty());
    // What a fresh configuration is told, as warnings.
    for expected in [
        "database_missing",
        "callbacks_url_unset",
        "provider_dry_run",
    ] {
        assert_eq!(
            with_code(&report, expected).len(),
            1,
            "{expected}: {report:#}"
        );
    }

    #[cfg(unix)]
    {
        write_ring(&dir.path().join("backend.json"), "key-a", 0o644);
        let (code, report) = doctor(&["--config", cfg]);
        assert_eq!(code, Some(1), "{report:#}");
        assert_eq!(report["ok"], false);
        let f = with_code(&report, "key_file_mode");
        assert_eq!(f.len(), 1, "{report:#}");
        assert_eq!(f[0]["status"], "fail");
        assert_eq!(f[0]["check"], "keys");
        assert!(
            f[0]["message"].as_str().unwrap().contains("mode 644"),
            "{report:#}"
        );
        assert!(f[0]["hint"].as_str().unwrap().starts_with("chmod 600 "));
        // The same for people.
        let human = jit()
            .args(["doctor", "--config", cfg])
            .env_remove("JIT_MM_CONFIG")
            .env_remove("JIT_API_URL")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&human.stdout);
        assert!(
            text.contains("FAIL  keys        key_file_mode: keys.backend:")
                && text.contains("hint: chmod 600")
                && text.contains("1 check failed"),
            "{text}"
        );
    }
}

#[test]
fn doctor_finds_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let port = jit_testkit::free_port().unwrap();
    let cfg = doctor_config(
        dir.path(),
        &format!("database_url = \"postgres://jit:s3cret-pw@127.0.0.1:{port}/jit\""),
    );
    let (code, report) = doctor(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{report:#}");
    let f = with_code(&report, "database_unreachable");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["check"], "database");
    assert!(
        !report.to_string().contains("s3cret-pw"),
        "the password is masked: {report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_a_bad_bot_token() {
    let (mm, double) = jit_testkit::mattermost::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = doctor_config(dir.path(), "");
    let bridge = |token: &str| {
        let path = dir.path().join(format!("mm-{}.toml", token.len()));
        std::fs::write(
            &path,
            format!(
                "mattermost_url = \"{mm}\"\nbot_token = \"{token}\"\nslash_tokens = [\"abcdefghijklmnopqrstuvwxyz\"]\ndata_dir = \"{d}\"\nbackend_keys = \"file:{d}/backend.json\"\ncallback_keys = \"file:{d}/callback.json\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        path
    };
    let run = |mm_cfg: std::path::PathBuf| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            doctor(&[
                "--config",
                cfg.to_str().unwrap(),
                "--mattermost-config",
                mm_cfg.to_str().unwrap(),
            ])
        })
    };
    let (code, report) = run(bridge("not-the-bot-token")).await.unwrap();
    assert_eq!(code, Some(1), "{report:#}");
    let f = with_code(&report, "mattermost_token_invalid");
    assert_eq!(f.len(), 1, "{report:#}");
    assert!(
        f[0]["message"].as_str().unwrap().contains("401"),
        "{report:#}"
    );
    assert!(
        !report.to_string().contains("not-the-bot-token"),
        "the token is never shown"
    );

    let (code, report) = run(bridge("bot-token")).await.unwrap();
    assert_eq!(code, Some(0), "{report:#}");
    let mm_findings: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "mattermost")
        .collect();
    assert_eq!(mm_findings.len(), 1, "{report:#}");
    assert_eq!(mm_findings[0]["status"], "ok");
    assert!(
        mm_findings[0]["message"]
            .as_str()
            .unwrap()
            .contains("@jitbot")
    );
    // Mattermost's clock (the double's: this machine's) is compared too.
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "clock"
                && f["status"] == "ok"
                && f["message"].as_str().unwrap().contains("Mattermost")),
        "{report:#}"
    );
    let d = double.lock().unwrap();
    assert_eq!(d.bodies("GET", "/api/v4/users/me").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_clock_skew() {
    // A backend whose clock is an hour ahead: its Date header says so.
    let ahead = SystemClock.now() + time::Duration::hours(1);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = ahead.format(&fmt).unwrap();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let date = date.clone();
            async move { ([("date", date)], "{\"status\":\"ok\"}") }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let cfg = doctor_config(dir.path(), "");
    let (code, report) = tokio::task::spawn_blocking(move || {
        doctor(&["--config", cfg.to_str().unwrap(), "--api", &api])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{report:#}");
    let f = with_code(&report, "clock_skew");
    assert_eq!(f.len(), 1, "{report:#}");
    let m = f[0]["message"].as_str().unwrap();
    assert!(m.contains("ahead of") && m.contains("300 s"), "{m}");
}

/// The embedded default, running: nothing fails; the clock is compared with the server's.
#[test]
fn doctor_passes_a_running_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &[]);
    let listen = server.api.trim_start_matches("http://").to_owned();
    let out = jit()
        .args(["doctor", "--json"])
        .env_remove("JIT_CONFIG")
        .env_remove("JIT_MM_CONFIG")
        .env_remove("JIT_API_URL")
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_LISTEN", &listen)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["failed"], 0);
    for check in ["keys", "database", "clock"] {
        assert!(
            report["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["check"] == check && f["status"] == "ok"),
            "{check}: {report:#}"
        );
    }
    drop(server);
}

/// A relative default key path that is not there: the error says the absolute path it read.
#[test]
fn a_missing_relative_key_file_names_the_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = jit()
        .args(["requests", "list"])
        .env_remove("JIT_CLIENT_KEYS")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let abs = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("jit-data/keys/backend.json");
    assert!(
        stderr.starts_with("error[key_file_missing]: ")
            && stderr.contains(&abs.display().to_string())
            && stderr.contains("\nhint: "),
        "{stderr}"
    );
}

/// Errors in one style: `error[CODE]: message`, a hint where one helps, an API refusal as its
/// code and message (no JSON), each cause once.
#[test]
fn errors_have_one_style() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = jit()
        .args(["server", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error[config_invalid]: "), "{stderr}");
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "the cause once: {stderr}"
    );
    let out = jit().args(["requests", "--frobnicate"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.starts_with("error[usage]: unexpected argument '--frobnicate'")
            && stderr.contains("\nhint: "),
        "{stderr}"
    );
}

/// Break-glass from the terminal: the policy set with chat's words (and an API alias), a
/// self-granted request, the requester's own review refused, another approver's accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_review_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_server(dir.path(), &[("JIT_ADMINS", "admin1")]);
    let api = server.api.clone();
    let keys = format!("file:{}", dir.path().join("keys/backend.json").display());
    let run = |cmd: &str, args: &[&str]| {
        let mut a = vec![cmd, "--api", &api, "--keys", &keys];
        a.extend_from_slice(args);
        jit().args(&a).output().unwrap()
    };
    assert!(
        run("config", &["--as", "admin1", "bind", "ch1", "123456789012"])
            .status
            .success()
    );
    assert!(
        run(
            "config",
            &["--as", "admin1", "approvers", "ch1", "alice", "bob"]
        )
        .status
        .success()
    );
    let bad = run(
        "config",
        &["--as", "admin1", "policy", "ch1", "break-glass=maybe"],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr
            .starts_with("error[invalid_policy_setting]: break-glass: `maybe` should be on or off"),
        "{stderr}"
    );
    let set = run(
        "config",
        &[
            "--as",
            "admin1",
            "policy",
            "ch1",
            "break-glass=on",
            "break_glass_max_minutes=60",
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let out = run(
        "requests",
        &[
            "--as",
            "alice",
            "--actor-email",
            "alice@example.com",
            "--json",
            "create",
            "--channel",
            "ch1",
            "--account",
            "123456789012",
            "--minutes",
            "30",
            "--ticket",
            "INC-1",
            "--reason",
            "prod down",
            "--break-glass",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["request_id"].as_str().unwrap().to_owned();
    assert_eq!(created["review_pending"], true);
    let pending = run("requests", &["--json", "list", "--review-pending"]);
    let listed: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let stranger = run("requests", &["--as", "mallory", "review", &id]);
    assert!(
        String::from_utf8_lossy(&stranger.stderr).starts_with("error[not_an_approver]: "),
        "{}",
        String::from_utf8_lossy(&stranger.stderr)
    );
    let own = run("requests", &["--as", "alice", "review", &id]);
    let stderr = String::from_utf8_lossy(&own.stderr);
    assert_eq!(own.status.code(), Some(1));
    assert!(
        stderr.starts_with("error[self_review_forbidden]: ") && !stderr.contains('{'),
        "{stderr}"
    );
    let out = run(
        "requests",
        &[
            "--as",
            "bob",
            "--json",
            "review",
            &id[..8],
            "--note",
            "checked the session log",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reviewed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reviewed["review_pending"], false);
    let pending = run("requests", &["--json", "list", "--review-pending"]);
    let listed: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert!(listed.as_array().unwrap().is_empty());
    drop(server);
}

/// Pending migrations are a warning (the server applies them at start); migrations this build
/// does not know fail (a newer jit used the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_schema_against_this_build() {
    use jit_store::SqlStore;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jit.db");
    let store = SqlStore::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let cfg = doctor_config(
        dir.path(),
        &format!("database_url = \"sqlite://{}\"", db.display()),
    );
    let run = || {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || doctor(&["--config", cfg.to_str().unwrap()]))
    };
    let (_, report) = run().await.unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "database" && f["status"] == "ok"),
        "{report:#}"
    );
    store
        .raw_execute("DELETE FROM schema_migrations WHERE version = 6")
        .await
        .unwrap();
    let (code, report) = run().await.unwrap();
    assert_eq!(code, Some(0), "{report:#}");
    let f = with_code(&report, "database_pending_migrations");
    assert!(
        f.len() == 1 && f[0]["message"].as_str().unwrap().contains("migrations 6 "),
        "{report:#}"
    );
    store
        .raw_execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
        .await
        .unwrap();
    let (code, report) = run().await.unwrap();
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(with_code(&report, "database_newer_than_binary").len(), 1);
}
