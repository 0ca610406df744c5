//! `jit-bench api`: throughput and latency of signed create+approve at N concurrent clients,
//! next to unsigned `GET /healthz` on the same server in the same run. The server is a
//! separate `jit server` process (release build) on a loopback port; the load generator runs
//! on the same 2-core machine, as the floor in docs/benchmarks.md assumes.

use anyhow::{Context, bail};
use clap::Parser;
use jit_client::{Client, Keys};
use jit_proto::SystemClock;
use jit_proto::keyring::KeyRing;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` or `postgres` (PostgreSQL needs JIT_TEST_PG_URL, as set by scripts/test.sh).
    #[arg(long, default_value = "sqlite")]
    db: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The `jit` binary to start.
    #[arg(long, default_value = "target/release/jit")]
    server_bin: PathBuf,
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Default)]
struct Stats {
    latencies_us: Vec<u64>,
    errors: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latencies_us.extend(o.latencies_us);
        self.errors += o.errors;
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(idx).copied().unwrap_or(0) as f64 / 1000.0
    }
}

async fn phase<F, Fut>(clients: usize, secs: u64, f: F) -> (Stats, f64)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Vec<(u64, bool)>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut i = 0usize;
            while Instant::now() < deadline {
                for (us, ok) in f(c * 1_000_000 + i).await {
                    s.latencies_us.push(us);
                    if !ok {
                        s.errors += 1;
                    }
                }
                i += 1;
            }
            s
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            all.merge(s);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    (all, elapsed)
}

fn report(name: &str, s: &Stats, elapsed: f64) -> f64 {
    let rps = s.latencies_us.len() as f64 / elapsed;
    println!(
        "{name:<34} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
        rps,
        s.pct(0.50),
        s.pct(0.99),
        s.errors
    );
    rps
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db_url = match args.db.as_str() {
        "sqlite" => format!("sqlite://{}", dir.path().join("jit.db").display()),
        "postgres" => jit_testkit::fresh_pg_database()?,
        other => bail!("--db must be sqlite or postgres, got {other}"),
    };
    let port = jit_testkit::free_port()?;
    let child = Command::new(&args.server_bin)
        .arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{port}"))
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_DATABASE_URL", &db_url)
        .env("JIT_ADMINS", "admin1")
        .env("JIT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release first)",
                args.server_bin.display()
            )
        })?;
    let _server = ServerProc(child);
    jit_testkit::wait_for_port(port, Duration::from_secs(30))?;
    let base = format!("http://127.0.0.1:{port}");
    let ring = KeyRing::parse(&std::fs::read_to_string(
        dir.path().join("keys/backend.json"),
    )?)?;
    let client = Client::new(&base, Keys::Fixed(Arc::new(ring)), Arc::new(SystemClock))?;
    let actor = |id: &str| json!({"user_id": id, "email": format!("{id}@example.com")});
    for (path, body) in [
        (
            "/config/bind",
            json!({"actor": actor("admin1"), "channel_id": "ch1", "account_id": "123456789012"}),
        ),
        (
            "/config/approvers",
            json!({"actor": actor("admin1"), "channel_id": "ch1", "approvers": ["bob"]}),
        ),
    ] {
        let a = client.post(path, &body).await?;
        if !a.is_success() {
            bail!("set-up {path}: {} {}", a.status, a.body);
        }
    }
    println!(
        "jit-bench api: db={} clients={} seconds={} (server and load generator on this machine, {} cores)",
        args.db,
        args.clients,
        args.seconds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // Warm-up.
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let _ = http.get(format!("{base}/healthz")).send().await;
    }

    let h = http.clone();
    let b = base.clone();
    let (health, he) = phase(args.clients, args.seconds, move |_| {
        let h = h.clone();
        let url = format!("{b}/healthz");
        async move {
            let t = Instant::now();
            let ok = matches!(h.get(&url).send().await, Ok(r) if r.status().is_success());
            vec![(t.elapsed().as_micros() as u64, ok)]
        }
    })
    .await;
    let base_rps = report("baseline: GET /healthz (unsigned)", &health, he);

    let c = client.clone();
    let (signed, se) = phase(args.clients, args.seconds, move |_| {
        let c = c.clone();
        async move {
            let mut out = Vec::with_capacity(2);
            let t = Instant::now();
            let created = c
                .post(
                    "/requests",
                    &json!({"actor": {"user_id": "alice", "email": "alice@example.com"}, "channel_id": "ch1",
                            "account_id": "123456789012", "jira": "OPS-1", "reason": "bench", "requested_duration_minutes": 60}),
                )
                .await;
            let id = match &created {
                Ok(a) if a.status == 201 => a.body.get("request_id").and_then(|v| v.as_str()).map(str::to_owned),
                _ => None,
            };
            out.push((t.elapsed().as_micros() as u64, id.is_some()));
            if let Some(id) = id {
                let t = Instant::now();
                let ok = matches!(
                    c.post(&format!("/requests/{id}/approve"), &json!({"actor": {"user_id": "bob", "email": "bob@example.com"}})).await,
                    Ok(a) if a.status == 200
                );
                out.push((t.elapsed().as_micros() as u64, ok));
            }
            out
        }
    })
    .await;
    let rps = report("signed create+approve (per call)", &signed, se);
    println!(
        "ratio signed/baseline throughput: {:.2}",
        rps / base_rps.max(1.0)
    );
    println!(
        "{}",
        json!({"db": args.db, "clients": args.clients, "baseline_rps": base_rps.round(), "baseline_p50_ms": health.pct(0.5),
               "baseline_p99_ms": health.pct(0.99), "signed_rps": rps.round(), "signed_p50_ms": signed.pct(0.5),
               "signed_p99_ms": signed.pct(0.99), "signed_errors": signed.errors})
    );
    Ok(())
}
