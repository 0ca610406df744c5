//! `jit-bench api`: throughput and latency of signed create+approve at N concurrent clients,
//! next to unsigned `GET /healthz` on the same server in the same run. The server is a
//! separate `jit server` process (release build) on a loopback port; the load generator runs
//! on the same 2-core machine, as the floor in docs/benchmarks.md assumes.

mod growth;
mod lambda;

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
    /// `api` (throughput and latency), `lateness` (revocation lateness of 1,000 grants ending
    /// in the same minute, next to one grant ending alone), `growth` (the daily operations
    /// at each of `--sizes`, with the ratio between the smallest and the largest) or `lambda`
    /// (the Lambda function on cargo-lambda's emulator with DynamoDB and Scheduler on moto:
    /// init, create+approve, revocation lateness by job invocation and by tick alone, each next
    /// to `jit server` on SQLite).
    #[arg(long, default_value = "api")]
    mode: String,
    /// For `--mode growth`: store sizes in requests, filled through the signed API in turn.
    #[arg(long, value_delimiter = ',', default_value = "10000,300000")]
    sizes: Vec<usize>,
    /// For `--mode growth`: runs of each operation per size (the median is reported).
    #[arg(long, default_value_t = 15)]
    repeat: usize,
    /// Grants for `--mode lateness` (default 1000) and for each lateness part of `--mode lambda`
    /// (default 20).
    #[arg(long)]
    grants: Option<usize>,
    /// For `--mode lambda`: fresh function (and server) processes whose init is measured.
    #[arg(long, default_value_t = 5)]
    starts: usize,
    /// For `--mode lambda`: measured create+approve pairs on each side, per provider.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// For `--mode lambda`: the function binary.
    #[arg(long, default_value = "target/release/jit-lambda")]
    lambda_bin: PathBuf,
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
    /// For `--mode lateness`: a provider with realistic latency instead of the instant dry-run:
    /// the `command` provider running a script where 1 call in 10 (every call for the users
    /// `slow*`, a tenth of the grants) takes this many seconds and the rest take 50 ms.
    #[arg(long)]
    slow_provider_secs: Option<u64>,
}

/// The provider script of `--slow-provider-secs`: reads the target on stdin; `slow*` users'
/// calls take `secs`, every other call 50 ms (a quick AWS API round trip).
fn slow_provider_script(dir: &std::path::Path, secs: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join("slow-provider.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nin=$(cat)\ncase \"$in\" in\n  *'\"user_email\":\"slow'*) sleep {secs} ;;\n  *) sleep 0.05 ;;\nesac\nexit 0\n"
        ),
    )?;
    Ok(path)
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ServerProc {
    /// Stops the server as systemd would (SIGTERM) and waits for it to exit, so SQLite
    /// checkpoints and closes its write-ahead log.
    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .context("kill -TERM")?;
        let t = Instant::now();
        while self.0.try_wait()?.is_none() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "the server did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
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
    if args.mode == "lambda" {
        if args.db != "sqlite" {
            bail!("--mode lambda compares with `jit server` on SQLite only");
        }
        return lambda::run(lambda::Opts {
            server_bin: args.server_bin,
            lambda_bin: args.lambda_bin,
            starts: args.starts,
            pairs: args.pairs,
            grants: args.grants.unwrap_or(20),
        })
        .await;
    }
    let dir = tempfile::tempdir()?;
    let db_url = match args.db.as_str() {
        "sqlite" => format!("sqlite://{}", dir.path().join("jit.db").display()),
        "postgres" => jit_testkit::fresh_pg_database()?,
        other => bail!("--db must be sqlite or postgres, got {other}"),
    };
    let port = jit_testkit::free_port()?;
    // Baseline for start-to-ready: the same binary starting and exiting (`jit --version`).
    let t = Instant::now();
    Command::new(&args.server_bin)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {} --version", args.server_bin.display()))?;
    let exec_ms = t.elapsed().as_secs_f64() * 1000.0;
    let spawned = Instant::now();
    let mut cmd = Command::new(&args.server_bin);
    if let Some(secs) = args.slow_provider_secs {
        let script = slow_provider_script(dir.path(), secs)?;
        cmd.env("JIT_GRANTS_PROVIDER", "command")
            .env("JIT_GRANTS_COMMAND", format!("sh {}", script.display()))
            .env("JIT_GRANTS_COMMAND_TIMEOUT_SECS", (secs + 30).to_string());
    }
    if args.mode == "growth" {
        // Reconciles often, so "idle RSS after 3 reconciles" is quick to reach.
        cmd.env("JIT_RECONCILE_INTERVAL_SECS", "2");
    }
    cmd.arg("server")
        .env("JIT_LISTEN", format!("127.0.0.1:{port}"))
        .env("JIT_DATA_DIR", dir.path())
        .env("JIT_DATABASE_URL", &db_url)
        .env("JIT_ADMINS", "admin1")
        .env("JIT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let bin = args.server_bin.clone();
    let mut start = move || -> anyhow::Result<ServerProc> {
        cmd.spawn()
            .map(ServerProc)
            .with_context(|| format!("starting {} (cargo build --release first)", bin.display()))
    };
    let mut server = Some(start()?);
    let pid = server.as_ref().map_or(0, |s| s.0.id());
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await?;
    let ready_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    let idle_rss = rss_kib(pid);
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
    if args.mode == "growth" {
        return growth::run(
            &client,
            &base,
            (&mut server, &mut start),
            (&args.db, &db_url),
            &args.sizes,
            args.clients,
            args.repeat,
        )
        .await;
    }
    if args.mode == "lateness" {
        return lateness(
            &client,
            args.grants.unwrap_or(1000),
            args.clients,
            args.slow_provider_secs,
        )
        .await;
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
    let loaded_rss = rss_kib(pid);
    let rps = report("signed create+approve (per call)", &signed, se);
    let own_rss = rss_kib(std::process::id());
    println!(
        "start to ready (first start: keys generated, store migrated): {ready_ms:.0} ms; baseline `jit --version` {exec_ms:.1} ms; ratio {:.1}",
        ready_ms / exec_ms.max(0.1)
    );
    println!(
        "server RSS idle {:.1} MiB, after load {:.1} MiB (ratio {:.2}); baseline: this load generator {:.1} MiB",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        loaded_rss as f64 / (idle_rss.max(1) as f64),
        own_rss as f64 / 1024.0
    );
    println!(
        "ratio signed/baseline throughput: {:.2}",
        rps / base_rps.max(1.0)
    );
    println!(
        "{}",
        json!({"db": args.db, "clients": args.clients, "baseline_rps": base_rps.round(), "baseline_p50_ms": health.pct(0.5),
               "baseline_p99_ms": health.pct(0.99), "signed_rps": rps.round(), "signed_p50_ms": signed.pct(0.5),
               "signed_p99_ms": signed.pct(0.99), "signed_errors": signed.errors, "start_to_ready_ms": ready_ms.round(),
               "exec_baseline_ms": exec_ms, "rss_idle_kib": idle_rss, "rss_loaded_kib": loaded_rss, "bench_rss_kib": own_rss})
    );
    Ok(())
}

/// Polls `/readyz` every 2 ms until it answers 200.
async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("the server was not ready within 30 s")
}

/// Resident set size of a process in KiB (0 if unreadable).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Creates and approves `n` one-minute grants (distinct users) with `clients` concurrent
/// clients, waits until all have expired, and returns the `late_ms` of each from the audit trail.
/// Makes `n` one-minute grants (every tenth for a `slow*` user when `slow`), waits until all
/// have expired, and returns the lateness of the others' revocations.
async fn expire_batch(
    client: &Client,
    n: usize,
    clients: usize,
    tag: &str,
    slow: bool,
) -> anyhow::Result<Vec<i64>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow_ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..clients.min(n) {
        let (c, next, tag, slow_ids) = (
            client.clone(),
            next.clone(),
            tag.to_owned(),
            slow_ids.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let who = if slow && i % 10 == 9 { format!("slow{i}") } else { format!("{tag}{i}") };
                let a = c
                    .post("/requests", &json!({"actor": {"user_id": who, "email": format!("{who}@example.com")},
                        "channel_id": "ch1", "account_id": "123456789012", "jira": "OPS-1", "reason": "lateness", "requested_duration_minutes": 1}))
                    .await?;
                let id = a.body.get("request_id").and_then(|v| v.as_str()).context("create failed")?.to_owned();
                let b = c.post(&format!("/requests/{id}/approve"), &json!({"actor": {"user_id": "bob", "email": "bob@example.com"}})).await?;
                if !b.is_success() {
                    bail!("approve: {} {}", b.status, b.body);
                }
                if !who.starts_with("slow") {
                    ids.push(id);
                } else {
                    slow_ids.lock().map_err(|_| anyhow::anyhow!("lock"))?.push(id);
                }
            }
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    let expected = ids.len();
    let deadline = Instant::now() + Duration::from_secs(if slow { 400 } else { 240 });
    let mut late = Vec::new();
    while Instant::now() < deadline {
        late.clear();
        let mut next: Option<String> = None;
        loop {
            let pq = match &next {
                Some(t) => format!("/audit?type=request.expired&limit=1000&next_token={t}"),
                None => "/audit?type=request.expired&limit=1000".to_owned(),
            };
            let page = client.get(&pq).await?;
            for e in page
                .body
                .get("events")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
            {
                let rid = e
                    .get("request_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if ids.contains(rid) {
                    late.push(
                        e.get("data")
                            .and_then(|d| d.get("late_ms"))
                            .and_then(|v| v.as_i64())
                            .unwrap_or(-1),
                    );
                }
            }
            match page.body.get("next_token").and_then(|v| v.as_str()) {
                Some(t) => next = Some(t.to_owned()),
                None => break,
            }
        }
        if late.len() == expected {
            return Ok(late);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("only {} of {expected} grants expired in time", late.len())
}

fn pct(v: &[i64], p: f64) -> i64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(idx).copied().unwrap_or(0)
}

async fn lateness(
    client: &Client,
    n: usize,
    clients: usize,
    slow_secs: Option<u64>,
) -> anyhow::Result<()> {
    let provider = match slow_secs {
        Some(s) => format!(
            "command provider: 1 call in 10 takes {s} s, the rest 50 ms; lateness of the others"
        ),
        None => "dry-run provider".to_owned(),
    };
    println!(
        "jit-bench lateness: one grant ending alone, then {n} grants ending in the same minute (SQLite, {provider})"
    );
    let alone = expire_batch(client, 1, 1, "solo", false).await?;
    println!(
        "baseline: 1 grant            late {} ms",
        alone.first().copied().unwrap_or(-1)
    );
    let late = expire_batch(client, n, clients, "u", slow_secs.is_some()).await?;
    println!(
        "{n} grants in one minute     p50 {} ms  p99 {} ms  max {} ms",
        pct(&late, 0.5),
        pct(&late, 0.99),
        late.iter().max().copied().unwrap_or(0)
    );
    println!(
        "{}",
        json!({"baseline_late_ms": alone.first(), "grants": n, "measured": late.len(), "slow_provider_secs": slow_secs,
               "p50_ms": pct(&late, 0.5), "p99_ms": pct(&late, 0.99), "max_ms": late.iter().max()})
    );
    Ok(())
}
