//! `jit-bench --mode growth`: fills the store through the signed API to each size in turn and
//! measures the daily operations at each, so a cost that grows with the store shows as a
//! ratio far above 1 between the sizes. Every size also measures unsigned `GET /healthz`, the
//! machine's baseline at that moment (the machines are shared and noisy).
//!
//! The fill looks like a year of use: nine requests in ten are denied, one in ten is approved
//! and then revoked, and a fixed set of 100 long grants stays live throughout. No callback URL
//! is configured (so callback rows are the retention path's to prune).

use anyhow::{Context, bail};
use jit_client::Client;
use serde_json::{Value, json};
use sha2::Digest;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Operations measured at each size, in table order.
const OPS: &[&str] = &[
    "GET /grants/overdue (nothing overdue)",
    "GET /requests?status=GRANTED",
    "GET /requests?channel_id=… (first page)",
    "GET /requests/{id}",
    "GET /audit?type=drift.removed (0 matches)",
    "GET /audit (first page)",
    "GET /metrics",
    "GET /callbacks?status=PENDING",
    "GET /audit/verify (routine: since the checkpoint)",
    "GET /audit/verify?full=true",
    "export, per 1,000 events",
    "signed create + deny (per call)",
    "idle RSS after 3 reconciles (MiB)",
    "baseline: GET /healthz (unsigned)",
];

/// What one size measured: the median of each operation, in ms (RSS in MiB).
struct Size {
    requests: usize,
    events: u64,
    values: Vec<f64>,
    verify_rate: f64,
    floor_rate: f64,
}

fn actor(id: &str) -> Value {
    json!({"user_id": id, "email": format!("{id}@example.com")})
}

async fn create(c: &Client, user: &str, minutes: u32) -> anyhow::Result<String> {
    let a = c
        .post(
            "/requests",
            &json!({"actor": actor(user), "channel_id": "ch1", "account_id": "123456789012",
                    "jira": "OPS-1", "reason": "growth bench", "requested_duration_minutes": minutes}),
        )
        .await?;
    if a.status != 201 {
        bail!("create: {} {}", a.status, a.body);
    }
    a.body
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("create: no request_id")
}

/// Approves, denies or revokes as bob; a revoke that races the grant job (409 `conflict`) is
/// sent again, as a client would.
async fn decide(c: &Client, id: &str, what: &str) -> anyhow::Result<()> {
    for _ in 0..50 {
        let a = c
            .post(
                &format!("/requests/{id}/{what}"),
                &json!({"actor": actor("bob")}),
            )
            .await?;
        match a.status {
            200 => return Ok(()),
            409 if a.body.get("code").and_then(Value::as_str) == Some("conflict") => continue,
            _ => bail!("{what} {id}: {} {}", a.status, a.body),
        }
    }
    bail!("{what} {id}: still conflicting after 50 tries")
}

/// Fills from `from` to `to` requests with `clients` concurrent clients.
async fn fill(c: &Client, from: usize, to: usize, clients: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(from));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, next) = (c.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let user = format!("u{}", i % 5000);
                let id = create(&c, &user, 60).await?;
                if i % 10 == 0 {
                    decide(&c, &id, "approve").await?;
                    decide(&c, &id, "revoke").await?;
                } else {
                    decide(&c, &id, "deny").await?;
                }
                if i % 20_000 == 0 && i > from {
                    let rate = (i - from) as f64 / started.elapsed().as_secs_f64();
                    eprintln!("  filled {i} requests ({rate:.0} requests/s)");
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The median wall time of `n` sequential runs of `f`, in ms.
async fn median_ms<F, Fut>(n: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().context("no runs")
}

async fn get_ok(c: &Client, path: &str) -> anyhow::Result<Value> {
    let a = c.get(path).await?;
    if a.status != 200 {
        bail!("GET {path}: {} {}", a.status, a.body);
    }
    Ok(a.body)
}

/// Runs a verification to its end (following the 202 with `?job=`); returns the events.
async fn verify(c: &Client, query: &str) -> anyhow::Result<u64> {
    // Each wait stays well inside the client's 10 s timeout: a long run answers 202 and is
    // followed by its job id.
    let mut a = c.get(&format!("/audit/verify?{query}wait=5")).await?;
    while a.status == 202 {
        let job = a
            .body
            .get("job")
            .and_then(Value::as_str)
            .context("202 without a job")?
            .to_owned();
        a = c.get(&format!("/audit/verify?job={job}&wait=5")).await?;
    }
    if a.status != 200 {
        bail!("verify: {} {}", a.status, a.body);
    }
    Ok(a.body
        .get("events")
        .and_then(Value::as_u64)
        .unwrap_or_default())
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("jit_reconciler_runs_total{") && l.contains("check=\"jobs\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// SHA-256 throughput of this machine now (bytes/s), over 64 MiB.
fn sha256_bytes_per_sec() -> f64 {
    let buf = vec![0x5a_u8; 64 << 20];
    let t = Instant::now();
    let d = sha2::Sha256::digest(&buf);
    std::hint::black_box(d);
    buf.len() as f64 / t.elapsed().as_secs_f64()
}

/// Bytes hashed per event (prev hash, newline, canonical array), from a page of the trail.
fn hashed_bytes_per_event(page: &Value) -> f64 {
    let events = page["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        return 300.0;
    }
    let total: usize = events
        .iter()
        .map(|e| {
            let canonical = json!([
                e["seq"],
                1_700_000_000_000_i64,
                e["type"],
                e["actor_id"],
                e["actor_email"],
                e["request_id"],
                e["channel_id"],
                e["account_id"],
                e["data"]
            ]);
            65 + canonical.to_string().len()
        })
        .sum();
    total as f64 / events.len() as f64
}

#[allow(clippy::too_many_lines)]
async fn measure(
    c: &Client,
    base: &str,
    pid: u32,
    requests: usize,
    repeat: usize,
) -> anyhow::Result<Size> {
    let http = reqwest::Client::new();
    let page: jit_proto::wire::RequestList =
        serde_json::from_value(get_ok(c, "/requests?channel_id=ch1&limit=1").await?)?;
    let some_id = page
        .items
        .first()
        .context("no request to read")?
        .request_id
        .clone();
    let mut values = Vec::new();
    let ops: Vec<String> = vec![
        "/grants/overdue".into(),
        "/requests?status=GRANTED".into(),
        "/requests?channel_id=ch1".into(),
        format!("/requests/{some_id}"),
        "/audit?type=drift.removed".into(),
        "/audit".into(),
    ];
    for path in &ops {
        let v = median_ms(repeat, || async { get_ok(c, path).await.map(|_| ()) })
            .await
            .with_context(|| format!("GET {path} at {requests} requests"))?;
        eprintln!("  {requests} requests: GET {path}: {v:.2} ms");
        values.push(v);
    }
    values.push(
        median_ms(repeat, || async {
            let r = http.get(format!("{base}/metrics")).send().await?;
            anyhow::ensure!(r.status().is_success(), "metrics: {}", r.status());
            r.text().await?;
            Ok(())
        })
        .await?,
    );
    let cb = "/callbacks?status=PENDING".to_owned();
    values.push(
        median_ms(repeat, || async { get_ok(c, &cb).await.map(|_| ()) })
            .await
            .context("GET /callbacks?status=PENDING")?,
    );
    eprintln!("  {requests} requests: metrics and callbacks measured; verifying");
    // The first routine run records a checkpoint; the repeats then check what was added since.
    verify(c, "")
        .await
        .context("the first routine verification")?;
    values.push(
        median_ms(repeat, || async { verify(c, "").await.map(|_| ()) })
            .await
            .context("routine verification")?,
    );
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let full = median_ms(3, || {
        let events = events.clone();
        async move {
            events.store(verify(c, "full=true&").await?, Ordering::Relaxed);
            Ok(())
        }
    })
    .await
    .context("full verification")?;
    let events = events.load(Ordering::Relaxed);
    eprintln!("  {requests} requests: full verification of {events} events: {full:.0} ms");
    values.push(full);
    let verify_rate = events as f64 / (full / 1000.0);
    let trail_page = get_ok(c, "/audit?limit=1000").await?;
    let floor_rate = sha256_bytes_per_sec() / hashed_bytes_per_event(&trail_page);
    // Export: every page of the trail as JSON lines.
    let t = Instant::now();
    let (mut next, mut rows) = (None::<String>, 0_u64);
    loop {
        let q = match &next {
            Some(tok) => format!("/audit?format=jsonl&limit=1000&next_token={tok}"),
            None => "/audit?format=jsonl&limit=1000".to_owned(),
        };
        let p = c.get_text(&q).await?;
        anyhow::ensure!(p.status == 200, "export: {}", p.status);
        rows += p.text.lines().count() as u64;
        match p.next_token {
            Some(tok) => next = Some(tok),
            None => break,
        }
    }
    values.push(t.elapsed().as_secs_f64() * 1000.0 / (rows.max(1) as f64 / 1000.0));
    // Writes at this size: create + deny, per call.
    values.push(
        median_ms(repeat, || async {
            let id = create(c, "writer", 60).await?;
            decide(c, &id, "deny").await
        })
        .await?
            / 2.0,
    );
    // Idle RSS once three more reconciles have run (every 2 s in this bench).
    let text = |r: reqwest::Response| async move { r.text().await };
    let m0 = reconciles(&text(http.get(format!("{base}/metrics")).send().await?).await?);
    let waited = Instant::now();
    loop {
        let m = reconciles(&text(http.get(format!("{base}/metrics")).send().await?).await?);
        if m >= m0 + 3 {
            break;
        }
        anyhow::ensure!(
            waited.elapsed() < Duration::from_secs(120),
            "the reconciler did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    values.push(crate::rss_kib(pid) as f64 / 1024.0);
    values.push(
        median_ms(repeat.max(50), || async {
            let r = http.get(format!("{base}/healthz")).send().await?;
            anyhow::ensure!(r.status().is_success(), "healthz");
            Ok(())
        })
        .await?,
    );
    Ok(Size {
        requests,
        events,
        values,
        verify_rate,
        floor_rate,
    })
}

/// PostgreSQL after a fill: the fill wrote at 100 times a real rate for many minutes, and left
/// autovacuum far behind, vacuuming and analysing the grown tables while they are measured
/// (on a 2-core machine, a core taken from the server). A store grown over a year at a real
/// rate is met with autovacuum caught up. `VACUUM (ANALYZE)` brings the database to that
/// state, so both sizes are measured in it; how many autovacuum workers were still running is
/// printed first.
async fn settle_postgres(url: &str) -> anyhow::Result<()> {
    use sqlx::{Connection as _, Executor as _};
    let mut conn = sqlx::postgres::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL to vacuum")?;
    let busy: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
    )
    .fetch_one(&mut conn)
    .await?;
    let t = Instant::now();
    conn.execute("VACUUM (ANALYZE)").await?;
    eprintln!(
        "  postgres: {busy} autovacuum workers were running after the fill; VACUUM (ANALYZE) took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The running server and how to start it again on the same store.
type Restart<'a> = (
    &'a mut Option<crate::ServerProc>,
    &'a mut dyn FnMut() -> anyhow::Result<crate::ServerProc>,
);

/// The growth run: set-up is done (channel bound, bob approves).
///
/// After each fill the server is stopped (SIGTERM) and started again on the same store, and
/// only then measured: a year-old store is met by a server that has been running on it, not
/// by one that has just taken a burst of writes far above any real rate (its allocator's high
/// water mark, a write-ahead log grown under the load, a full replay window of nonces), which
/// would differ between the sizes for reasons other than the size.
pub async fn run(
    c: &Client,
    base: &str,
    (server, start): Restart<'_>,
    (db, db_url): (&str, &str),
    sizes: &[usize],
    clients: usize,
    repeat: usize,
) -> anyhow::Result<()> {
    println!(
        "jit-bench growth: db={db} sizes={sizes:?} clients={clients} repeat={repeat} ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    // 100 grants that stay live for the whole run (4 h, the default policy's maximum).
    for i in 0..100 {
        let id = create(c, &format!("live{i}"), 240).await?;
        decide(c, &id, "approve").await?;
    }
    let mut done = 100;
    let mut results: Vec<Size> = Vec::new();
    for &size in sizes {
        let t = Instant::now();
        fill(c, done, size, clients).await?;
        eprintln!(
            "filled to {size} requests in {:.0} s; measuring",
            t.elapsed().as_secs_f64()
        );
        done = size.max(done);
        if let Some(old) = server.take() {
            old.stop()?;
        }
        if db == "postgres" {
            settle_postgres(db_url).await?;
        }
        let fresh = start()?;
        let pid = fresh.0.id();
        *server = Some(fresh);
        crate::wait_ready(base).await?;
        results.push(measure(c, base, pid, size, repeat).await?);
    }
    let (Some(first), Some(last)) = (results.first(), results.last()) else {
        bail!("no sizes")
    };
    println!();
    println!(
        "| operation (median ms) | {} requests ({} events) | {} requests ({} events) | ratio |",
        first.requests, first.events, last.requests, last.events
    );
    println!("|---|---|---|---|");
    for (i, name) in OPS.iter().enumerate() {
        let value = |s: &Size| s.values.get(i).copied().unwrap_or(f64::NAN);
        let (a, b) = (value(first), value(last));
        println!("| {name} | {a:.2} | {b:.2} | {:.2}× |", b / a.max(1e-9));
    }
    for s in &results {
        println!(
            "full verification at {} events: {:.0} events/s; SHA-256 floor for the same bytes {:.0} events/s ({:.0}% of the floor)",
            s.events,
            s.verify_rate,
            s.floor_rate,
            100.0 * s.verify_rate / s.floor_rate.max(1.0)
        );
    }
    let hb = OPS.len() - 1;
    let (hb_first, hb_last) = (
        first.values.get(hb).copied().unwrap_or(f64::NAN),
        last.values.get(hb).copied().unwrap_or(f64::NAN),
    );
    println!(
        "baseline drift: /healthz {:.3} ms → {:.3} ms ({:.2}×)",
        hb_first,
        hb_last,
        hb_last / hb_first.max(1e-9)
    );
    Ok(())
}
