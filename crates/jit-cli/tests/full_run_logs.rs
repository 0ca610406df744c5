//! A full run of the real binaries, `jit server` and `jit mattermost`, against the Mattermost
//! double, with JSON logs at debug level: a request asked for, approved, granted and revoked in
//! chat, plus refused inputs on both listeners. Afterwards both processes' logs are read line by
//! line: every line is a JSON object with the stable fields, every request has its line and id,
//! audit events are on their own target, and no secret used in the run appears anywhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_testkit::mattermost::{Shared, form};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Proc {
    /// Asks the process to stop (`signal`: TERM or INT) and waits for it.
    fn stop(&mut self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("process {} did not stop on SIG{signal}", self.0.id());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], env: &[(&str, String)], log: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jit"));
    cmd.args(args)
        .env("JIT_LOG", "debug")
        .env("JIT_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().unwrap())
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn calls(d: &Shared, method: &str, suffix: &str) -> Vec<Value> {
    d.lock().unwrap().bodies(method, suffix)
}

fn lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_logs_every_request_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mm_url, double) = jit_testkit::mattermost::spawn().await;
    let (sport, bport) = (
        jit_testkit::free_port().unwrap(),
        jit_testkit::free_port().unwrap(),
    );
    let (server_url, bridge_url) = (
        format!("http://127.0.0.1:{sport}"),
        format!("http://127.0.0.1:{bport}"),
    );
    let (server_log, bridge_log) = (dir.path().join("server.log"), dir.path().join("bridge.log"));
    let mut server = spawn(
        &["server"],
        &[
            ("JIT_LISTEN", format!("127.0.0.1:{sport}")),
            ("JIT_DATA_DIR", data.display().to_string()),
            ("JIT_CALLBACKS_URL", format!("{bridge_url}/jit/webhook")),
        ],
        &server_log,
    );
    jit_testkit::wait_for_port(sport, Duration::from_secs(30)).unwrap();
    let slash_tokens = ["slash-old-3f9a2c71d0e4b5a6", "slash-new-8b41e6f2aa07c9d3"];
    let bridge_secret = "bridge-secret-5d0c1e9b7a3f4e2d8c6b1a0f";
    let bot_token = "bot-token"; // what the double accepts
    let mut bridge = spawn(
        &["mattermost"],
        &[
            ("JIT_MM_LISTEN", format!("127.0.0.1:{bport}")),
            ("JIT_MM_PUBLIC_URL", bridge_url.clone()),
            ("JIT_MM_URL", mm_url.clone()),
            ("JIT_MM_BOT_TOKEN", bot_token.into()),
            ("JIT_MM_SLASH_TOKENS", slash_tokens.join(",")),
            ("JIT_MM_BACKEND_URL", server_url.clone()),
            (
                "JIT_MM_BACKEND_KEYS",
                format!("file:{}", data.join("keys/backend.json").display()),
            ),
            (
                "JIT_MM_CALLBACK_KEYS",
                format!("file:{}", data.join("keys/callback.json").display()),
            ),
            ("JIT_MM_BRIDGE_SECRET", bridge_secret.into()),
            (
                "JIT_MM_DATA_DIR",
                dir.path().join("bridge").display().to_string(),
            ),
            ("JIT_MM_AWS_REGION", "us-east-1".into()),
        ],
        &bridge_log,
    );
    jit_testkit::wait_for_port(bport, Duration::from_secs(30)).unwrap();

    let http = reqwest::Client::new();
    let slash = |token: &str, user: &str, text: &str| {
        http.post(format!("{bridge_url}/mattermost/command"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("token", token),
                ("user_id", user),
                ("channel_id", "ch1"),
                ("team_id", "t1"),
                ("command", "/jit"),
                ("text", text),
                ("trigger_id", &format!("trig-{user}")),
            ]))
            .send()
    };
    let post =
        |path: &str, body: Value| http.post(format!("{bridge_url}{path}")).json(&body).send();
    let [old, new] = slash_tokens;
    assert_eq!(
        slash("wrong-token-0123456789", "ualice", "help")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(slash(old, "ualice", "help").await.unwrap().status(), 200);
    for text in ["bind 123456789012", "approvers @bob"] {
        let r: Value = slash(new, "uadmin", text)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(!r["text"].as_str().unwrap().starts_with("Refused"), "{r}");
    }
    assert_eq!(slash(new, "ualice", "request").await.unwrap().status(), 200);
    let state = calls(&double, "POST", "/actions/dialogs/open")[0]["dialog"]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = post(
        "/mattermost/dialog",
        json!({"type": "dialog_submission", "callback_id": "request", "state": state, "user_id": "ualice",
               "channel_id": "ch1", "submission": {"account": "123456789012", "duration": "30", "ticket": "OPS-7", "reason": "hotfix"},
               "cancelled": false}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let card = calls(&double, "POST", "/api/v4/posts")
        .into_iter()
        .find(|p| p["props"]["attachments"][0]["actions"].is_array())
        .unwrap();
    let ctx = card["props"]["attachments"][0]["actions"][0]["integration"]["context"].clone();
    let id = ctx["request_id"].as_str().unwrap().to_owned();
    let mut forged = ctx.clone();
    forged["action"] = json!("deny");
    let click =
        |c: Value| json!({"user_id": "ubob", "channel_id": "ch1", "trigger_id": "t", "context": c});
    assert_eq!(
        post("/mattermost/action", click(forged))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post("/mattermost/action", click(ctx))
            .await
            .unwrap()
            .status(),
        200
    );
    let thread = |needle: &'static str| {
        let d = double.clone();
        move || {
            calls(&d, "POST", "/api/v4/posts")
                .iter()
                .any(|p| p["message"].as_str().is_some_and(|m| m.contains(needle)))
        }
    };
    wait_for(
        "the grant's line in the card's thread",
        thread("Access granted"),
    )
    .await;
    let r: Value = slash(new, "ualice", &format!("revoke {id} done"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["text"].as_str().unwrap().starts_with("Revoked"), "{r}");
    wait_for("the revocation's line", thread("Access revoked")).await;
    // Refused on the backend (garbled signature) and on the bridge (unsigned callback).
    let r = http
        .post(format!("{server_url}/requests"))
        .header("X-JIT-KeyID", "key-x")
        .header("X-JIT-Timestamp", "1")
        .header("X-JIT-Nonce", "n")
        .header("X-JIT-Signature", "00")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/jit/webhook", json!({"event_id": "e"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.stop("TERM");
    bridge.stop("INT");

    let (s, b) = (lines(&server_log), lines(&bridge_log));
    for (name, log) in [("server", &s), ("bridge", &b)] {
        for l in log.iter() {
            for field in ["timestamp", "level", "target"] {
                assert!(l.get(field).is_some(), "{name}: no {field} in {l}");
            }
            // Our own lines always say what happened (libraries' debug lines may not).
            if l["target"].as_str().is_some_and(|t| t.starts_with("jit")) {
                assert!(l["message"].is_string(), "{name}: no message in {l}");
            }
        }
    }
    let has = |log: &[Value], f: &dyn Fn(&Value) -> bool| log.iter().any(f);
    let request_line = |l: &Value, path: &str, status: u64| {
        l["message"] == "request"
            && l["path"] == path
            && l["status"] == status
            && l["request_id"].as_str().is_some_and(|r| r.len() == 16)
            && l["latency_ms"].is_number()
            && l["method"].is_string()
    };
    assert!(
        has(&s, &|l| request_line(l, "/requests", 201)),
        "server: no request line for the create"
    );
    assert!(
        has(&s, &|l| request_line(l, "/requests", 401)),
        "server: no line for the refusal"
    );
    assert!(has(&s, &|l| l["message"] == "signature rejected"
        && l["reason"].is_string()));
    for kind in [
        "request.created",
        "request.approved",
        "request.granted",
        "request.revoked",
    ] {
        assert!(
            has(&s, &|l| l["target"] == "jit_audit" && l["kind"] == kind),
            "server: no {kind} on the jit_audit target"
        );
    }
    assert!(has(&s, &|l| l["level"] == "DEBUG"), "debug level was on");
    assert!(
        has(&b, &|l| request_line(l, "/mattermost/command", 401)),
        "bridge: no line for the bad token"
    );
    assert!(has(&b, &|l| request_line(l, "/mattermost/action", 200)));
    assert!(
        has(&b, &|l| request_line(l, "/jit/webhook", 200)),
        "bridge: callbacks delivered"
    );
    assert!(has(&b, &|l| l["message"] == "slash command refused"));
    assert!(has(&b, &|l| l["message"] == "callback refused"));
    assert!(has(&b, &|l| l["message"] == "button click refused"));

    // Every secret of the run: both rings' keys, the slash tokens, the bridge secret, the bot
    // token.
    let mut secrets: Vec<String> = vec![bridge_secret.into(), bot_token.into()];
    secrets.extend(slash_tokens.iter().map(|t| (*t).to_owned()));
    for ring in ["backend", "callback"] {
        let text = std::fs::read_to_string(data.join(format!("keys/{ring}.json"))).unwrap();
        let ring = jit_proto::keyring::KeyRing::parse(&text).unwrap();
        for k in ring.keys() {
            secrets.push(String::from_utf8(k.secret().expose().to_vec()).unwrap());
        }
    }
    assert_eq!(secrets.len(), 6);
    for path in [&server_log, &bridge_log] {
        let text = std::fs::read_to_string(path).unwrap();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{}: a secret reached the log",
                path.display()
            );
        }
    }
}

/// With file rings only, neither process builds the AWS SDK: nothing asks the instance
/// metadata service for a region or credentials. The metadata endpoint is pointed at a
/// loopback listener (the harness otherwise disables it) and the region is unset, so an SDK
/// chain built at start would connect to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_file_rings_nothing_asks_the_metadata_service() {
    let imds = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    imds.set_nonblocking(true).unwrap();
    let imds_url = format!("http://{}", imds.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mm_url, _double) = jit_testkit::mattermost::spawn().await;
    let (sport, bport) = (
        jit_testkit::free_port().unwrap(),
        jit_testkit::free_port().unwrap(),
    );
    let aws_env = |cmd: &mut Command| {
        cmd.env("AWS_EC2_METADATA_DISABLED", "false")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url)
            .env("HOME", dir.path())
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE");
    };
    let mut server = Command::new(env!("CARGO_BIN_EXE_jit"));
    server
        .arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{sport}"))
        .env("JIT_DATA_DIR", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    aws_env(&mut server);
    let _server = Proc(server.spawn().unwrap());
    jit_testkit::wait_for_port(sport, Duration::from_secs(30)).unwrap();
    let mut bridge = Command::new(env!("CARGO_BIN_EXE_jit"));
    bridge
        .arg("mattermost")
        .env("JIT_MM_LISTEN", format!("127.0.0.1:{bport}"))
        .env("JIT_MM_PUBLIC_URL", format!("http://127.0.0.1:{bport}"))
        .env("JIT_MM_URL", &mm_url)
        .env("JIT_MM_BOT_TOKEN", "bot-token")
        .env("JIT_MM_SLASH_TOKENS", "slash-old-3f9a2c71d0e4b5a6")
        .env("JIT_MM_BACKEND_URL", format!("http://127.0.0.1:{sport}"))
        .env(
            "JIT_MM_BACKEND_KEYS",
            format!("file:{}", data.join("keys/backend.json").display()),
        )
        .env(
            "JIT_MM_CALLBACK_KEYS",
            format!("file:{}", data.join("keys/callback.json").display()),
        )
        .env("JIT_MM_DATA_DIR", dir.path().join("bridge"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    aws_env(&mut bridge);
    let _bridge = Proc(bridge.spawn().unwrap());
    jit_testkit::wait_for_port(bport, Duration::from_secs(30)).unwrap();
    // Both are up and have made their first calls (the bridge's ring loads, the server's
    // readiness check); a metadata request at start would have connected by now.
    for url in [
        format!("http://127.0.0.1:{sport}/readyz"),
        format!("http://127.0.0.1:{bport}/healthz"),
    ] {
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 200, "{url}");
    }
    match imds.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the metadata endpoint: {other:?}"),
    }
}
