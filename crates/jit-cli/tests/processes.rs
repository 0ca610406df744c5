//! Real processes: two `jit server`s on one PostgreSQL with a command provider, killed with
//! SIGKILL at random moments while 200 request → approve → grant → expire cycles run.
//! Afterwards no grant is still assigned, every grant ended within one reconcile interval of its
//! end, every callback arrived (exactly once after dedupe), each job ran once while both
//! servers were up, and the audit chain verifies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_client::{Client, Keys};
use jit_proto::SystemClock;
use jit_proto::keyring::KeyRing;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROVIDER: &str = r#"#!/usr/bin/env python3
import fcntl, json, os, sys, time
action = sys.argv[-1]
t = json.load(sys.stdin)
state = os.environ["JIT_TEST_STATE"]
name = (t["user_email"] + "|" + t["account_id"]).replace("/", "_")
with open(os.path.join(state, "log"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write("%.3f %s %s %d\n" % (time.time(), action, t["request_id"], os.getppid()))
path = os.path.join(state, "assigned", name)
if action == "grant":
    open(path, "w").close()
else:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
"#;

struct Server {
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
    /// Its warnings and errors, appended across restarts (read when an assertion fails).
    log: PathBuf,
}

impl Server {
    fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jit"));
        cmd.arg("server")
            .env("JIT_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        jit_testkit::wait_for_port(self.port, Duration::from_secs(30)).unwrap();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_ring(path: &Path, prefix: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args(["keys", "generate", "--prefix", prefix])
        .output()
        .unwrap();
    std::fs::write(path, out.stdout).unwrap();
}

/// A tiny deterministic generator, so a failing run can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

type Events = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receiver() -> (String, Events) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let app = axum::Router::new().route(
        "/jit/webhook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    let id = headers
                        .get("x-jit-event-id")
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned();
                    sink.lock().unwrap().push((
                        id,
                        v["request_id"].as_str().unwrap().to_owned(),
                        v["status"].as_str().unwrap().to_owned(),
                    ));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jit/webhook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, events)
}

async fn call(clients: &[Client], i: usize, path: &str, body: Value) -> Value {
    // Either server will do; while one is down, the other answers.
    for attempt in 0..200 {
        let c = &clients[(i + attempt) % clients.len()];
        if let Ok(a) = c.post(path, &body).await
            && a.status < 500
        {
            assert!(a.is_success(), "{path}: {} {}", a.status, a.body);
            return a.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no server answered {path}");
}

async fn get(clients: &[Client], pq: &str) -> Value {
    for attempt in 0..200 {
        if let Ok(a) = clients[attempt % clients.len()].get(pq).await
            && a.is_success()
        {
            return a.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no server answered {pq}");
}

fn grant_log(state: &Path) -> BTreeMap<String, Vec<(f64, String, String)>> {
    let mut by_req: BTreeMap<String, Vec<(f64, String, String)>> = BTreeMap::new();
    for line in std::fs::read_to_string(state.join("log"))
        .unwrap_or_default()
        .lines()
    {
        let p: Vec<&str> = line.split(' ').collect();
        by_req.entry(p[2].to_owned()).or_default().push((
            p[0].parse().unwrap(),
            p[1].to_owned(),
            p[3].to_owned(),
        ));
    }
    by_req
}

/// Every line the servers logged (warnings and errors), server by server.
fn servers_logs(dir: &Path) -> Vec<String> {
    (0..2)
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(format!("server{n}.log")))
                .unwrap_or_default()
                .lines()
                .map(|l| format!("server{n}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_killed_at_random_lose_nothing() {
    let db = jit_testkit::fresh_pg_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("assigned")).unwrap();
    let script = dir.path().join("provider.py");
    std::fs::write(&script, PROVIDER).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (backend, callback): (PathBuf, PathBuf) = (
        dir.path().join("backend.json"),
        dir.path().join("callback.json"),
    );
    write_ring(&backend, "key");
    write_ring(&callback, "cb");
    let (hook, events) = receiver().await;
    let env: Vec<(String, String)> = [
        ("JIT_DATA_DIR", dir.path().to_str().unwrap()),
        ("JIT_DATABASE_URL", db.as_str()),
        ("JIT_KEYS_BACKEND", &format!("file:{}", backend.display())),
        ("JIT_KEYS_CALLBACK", &format!("file:{}", callback.display())),
        ("JIT_ADMINS", "admin1"),
        ("JIT_GRANTS_PROVIDER", "command"),
        ("JIT_GRANTS_COMMAND", script.to_str().unwrap()),
        ("JIT_CALLBACKS_URL", hook.as_str()),
        ("JIT_TEST_STATE", state.to_str().unwrap()),
        ("JIT_LOG", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut servers: Vec<Server> = (0..2)
        .map(|n| Server {
            child: None,
            port: jit_testkit::free_port().unwrap(),
            env: env.clone(),
            log: dir.path().join(format!("server{n}.log")),
        })
        .collect();
    // What the servers said about one request, for a failure message.
    let said_about = |id: &str| -> Vec<String> {
        servers_logs(dir.path())
            .into_iter()
            .filter(|l| l.contains(id))
            .collect()
    };
    for s in &mut servers {
        s.start();
    }
    let ring = Arc::new(KeyRing::parse(&std::fs::read_to_string(&backend).unwrap()).unwrap());
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| {
            Client::new(
                &format!("http://127.0.0.1:{}", s.port),
                Keys::Fixed(ring.clone()),
                Arc::new(SystemClock),
            )
            .unwrap()
        })
        .collect();
    let admin = json!({"user_id": "admin1", "email": "admin1@example.com"});
    call(
        &clients,
        0,
        "/config/bind",
        json!({"actor": admin, "channel_id": "ch1", "account_id": "123456789012"}),
    )
    .await;
    call(
        &clients,
        0,
        "/config/approvers",
        json!({"actor": admin, "channel_id": "ch1", "approvers": ["bob"]}),
    )
    .await;

    let cycle = |i: usize| {
        let clients = clients.clone();
        async move {
            let r = call(&clients, i, "/requests", json!({"actor": {"user_id": format!("u{i}"), "email": format!("user{i}@example.com")},
                "channel_id": "ch1", "account_id": "123456789012", "jira": "OPS-1", "reason": "chaos", "requested_duration_minutes": 1})).await;
            let id = r["request_id"].as_str().unwrap().to_owned();
            call(
                &clients,
                i + 1,
                &format!("/requests/{id}/approve"),
                json!({"actor": {"user_id": "bob", "email": "bob@example.com"}}),
            )
            .await;
            id
        }
    };

    // Phase 1, both servers up: 100 cycles; each grant job runs exactly once.
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(cycle(i).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let granted = get(&clients, "/requests?status=GRANTED&limit=200").await["count"]
            .as_u64()
            .unwrap();
        if granted == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grants did not all happen: {granted}/100"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = grant_log(&state);
    for id in &ids {
        let grants = log
            .get(id)
            .map_or(0, |v| v.iter().filter(|(_, a, _)| a == "grant").count());
        assert_eq!(
            grants,
            1,
            "request {id} was granted {grants} times with two servers up: {:?}; the servers said: {:?}",
            log.get(id),
            said_about(id)
        );
    }
    let pids: BTreeSet<&String> = log.values().flatten().map(|(_, _, pid)| pid).collect();
    assert_eq!(pids.len(), 2, "both servers did work");

    // Phase 2: 100 more cycles while the servers are killed and restarted at random, through
    // every grant's end.
    let mut rng = Lcg(0x5eed);
    let chaos_until = Instant::now() + Duration::from_secs(75);
    let mut next_cycle = 100;
    let mut kills = 0;
    while Instant::now() < chaos_until {
        for _ in 0..10 {
            if next_cycle < 200 {
                ids.push(cycle(next_cycle).await);
                next_cycle += 1;
            }
        }
        let victim = usize::try_from(rng.next(2)).unwrap();
        tokio::time::sleep(Duration::from_millis(500 + rng.next(3000))).await;
        servers[victim].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(200 + rng.next(1500))).await;
        servers[victim].start();
    }
    while next_cycle < 200 {
        ids.push(cycle(next_cycle).await);
        next_cycle += 1;
    }
    assert!(kills >= 10, "{kills} kills");

    // Everything ends: wait (on the condition, bounded) for all 200 to expire.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let expired = get(&clients, "/requests?status=EXPIRED&limit=200").await["count"]
            .as_u64()
            .unwrap();
        let n_events = events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.0.clone())
            .collect::<BTreeSet<_>>()
            .len();
        if expired == 200 && n_events >= 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the chaos: {expired}/200 expired, {n_events}/600 callbacks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left: Vec<_> = std::fs::read_dir(state.join("assigned")).unwrap().collect();
    assert!(
        left.is_empty(),
        "{} assignments are still in place",
        left.len()
    );

    // Each grant ended within one reconcile interval (60 s) of its end, downtime included.
    let mut max_late = 0;
    let mut next: Option<String> = None;
    loop {
        let pq = match &next {
            Some(t) => format!("/audit?type=request.expired&limit=1000&next_token={t}"),
            None => "/audit?type=request.expired&limit=1000".into(),
        };
        let page = get(&clients, &pq).await;
        for e in page["events"].as_array().unwrap() {
            max_late = max_late.max(e["data"]["late_ms"].as_i64().unwrap());
        }
        match page["next_token"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert!(max_late <= 60_000, "a grant ended {max_late} ms late");

    // Every callback arrived; after dedupe by event id, exactly one per state change.
    let ev = events.lock().unwrap().clone();
    let mut per: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (eid, rid, status) in &ev {
        per.entry((rid.clone(), status.clone()))
            .or_default()
            .insert(eid.clone());
    }
    for id in &ids {
        for status in ["APPROVED", "GRANTED", "EXPIRED"] {
            let n = per
                .get(&(id.clone(), status.to_owned()))
                .map_or(0, BTreeSet::len);
            assert_eq!(n, 1, "request {id}: {n} distinct {status} events");
        }
    }

    let verify = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args(["audit", "verify", "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    eprintln!(
        "chaos: {kills} kills, max lateness {max_late} ms, {} callback deliveries for {} events",
        ev.len(),
        per.len()
    );
}
