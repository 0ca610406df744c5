//! `jit-bench --mode lambda`: the Lambda function (`jit-lambda`) on cargo-lambda's emulator,
//! with DynamoDB and EventBridge Scheduler on moto, each figure next to `jit server` on SQLite
//! measured in the same run (the machine is shared and noisy, so the ratios are what to read):
//!
//! 1. init: a fresh function process to its first answered signed call, minus that call's own
//!    duration (N times, same tables); baseline `jit server` start to its first answered call;
//! 2. one signed create + approve, sequential, dry-run provider and a provider taking 50 ms a
//!    call (the `--slow-provider-secs` script, every user fast);
//! 3. revocation lateness on the scheduler path: the job's invocation sent at the grant's end,
//!    as its one-time schedule would; baseline `jit server`'s own worker loop;
//! 4. drift when no schedule fires: `{"jit":"tick"}` every 60 s from a random phase.
//!
//! moto answers every DynamoDB Query by walking the whole table, unlike DynamoDB, so parts 2 to
//! 4 each start on fresh tables, and the table's size and one Query's time are printed after
//! each part. moto is otherwise in memory and answers at once, and the emulator adds its own
//! HTTP hop (the `GET /healthz` floor row).
//!
//! Everything listens on 127.0.0.1; the children get static `testing` credentials and no
//! instance metadata, so nothing leaves the machine.

use anyhow::{Context, bail};
use jit_client::{Client, Keys};
use jit_proto::keyring::KeyRing;
use jit_proto::{Clock, SystemClock};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{ServerProc, pct, slow_provider_script};

/// The schedule group the function puts job schedules in (as `tests/emulator.rs`).
const GROUP: &str = "jit-jobs";
/// Pairs run before the measured ones, on each side.
const WARM_PAIRS: usize = 5;

/// What `--mode lambda` takes from the command line.
#[derive(Debug)]
pub(crate) struct Opts {
    pub server_bin: PathBuf,
    pub lambda_bin: PathBuf,
    pub starts: usize,
    pub pairs: usize,
    pub grants: usize,
}

/// Which grants provider the function and the server run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    DryRun,
    /// The command provider, 50 ms a call.
    Slow50,
}

fn tool(env: &str, venv: &str, what: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        if !p.exists() {
            bail!("{env}={} does not exist ({what})", p.display());
        }
        return Ok(p);
    }
    let p = jit_testkit::workspace_root().join(venv);
    if !p.exists() {
        bail!(
            "{what} is missing: expected {} (scripts/test.sh installs it into .venv) or set {env}",
            p.display()
        );
    }
    Ok(p)
}

/// Wall-clock unix ms, the clock the function and the server stamp times with.
fn wall_ms() -> i64 {
    SystemClock.now_ms()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of milliseconds.
fn q(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(idx).copied().unwrap_or(0.0)
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(0.001)
}

fn actor(id: &str) -> Value {
    json!({"user_id": id, "email": format!("{id}@example.com")})
}

/// The environment every child gets: loopback AWS only, static test credentials.
fn offline_aws(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
}

fn provider_env(cmd: &mut Command, provider: Provider, script: &Path) {
    if provider == Provider::Slow50 {
        cmd.env("JIT_GRANTS_PROVIDER", "command")
            .env("JIT_GRANTS_COMMAND", format!("sh {}", script.display()))
            .env("JIT_GRANTS_COMMAND_TIMEOUT_SECS", "30");
    }
}

/// A running function process: killed on drop; `ready` is when it logged `jit-lambda ready`
/// (right before the runtime asks the emulator for its first event).
struct FnProc {
    _proc: ServerProc,
    spawned: Instant,
    ready: tokio::sync::oneshot::Receiver<Instant>,
}

struct Bench {
    opts: Opts,
    moto: jit_testkit::Moto,
    _emulator: ServerProc,
    rt_port: u16,
    fn_dir: PathBuf,
    srv_dir: PathBuf,
    srv_port: u16,
    script: PathBuf,
    function: Option<FnProc>,
    server: Option<ServerProc>,
    sdk: aws_config::SdkConfig,
    ddb: aws_sdk_dynamodb::Client,
    /// The functions' WARN and ERROR log lines, across restarts.
    warnings: Warnings,
}

type Warnings = Arc<std::sync::Mutex<Vec<String>>>;

impl Bench {
    fn lambda_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.rt_port)
    }

    fn server_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.srv_port)
    }

    /// Starts a fresh function process (the previous one killed first, as Lambda drops an
    /// execution environment).
    fn start_function(&mut self, provider: Provider) -> anyhow::Result<()> {
        self.function = None;
        let mut cmd = Command::new(&self.opts.lambda_bin);
        offline_aws(&mut cmd)
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt", self.rt_port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "jit-access")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("JIT_DATA_DIR", &self.fn_dir)
            .env("JIT_DATABASE_URL", "dynamodb://jit-state?nonces=jit-nonces")
            .env("JIT_AWS_ENDPOINT_URL", &self.moto.endpoint)
            .env("JIT_AWS_REGION", "us-east-1")
            .env("JIT_ADMINS", "admin1")
            .env("JIT_LOG", "warn,jit_lambda=info")
            .env("JIT_SCHEDULER_GROUP", GROUP)
            .env(
                "JIT_SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/jit-scheduler",
            )
            .env(
                "JIT_SCHEDULER_TARGET_ARN",
                "arn:aws:lambda:us-east-1:123456789012:function:jit-access",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        provider_env(&mut cmd, provider, &self.script);
        let spawned = Instant::now();
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (cargo build --release -p jit-lambda first)",
                self.opts.lambda_bin.display()
            )
        })?;
        let (tx, ready) = tokio::sync::oneshot::channel();
        if let Some(out) = child.stdout.take() {
            let warnings = self.warnings.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("jit-lambda ready")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Instant::now());
                    }
                    if (line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
                        && let Ok(mut w) = warnings.lock()
                    {
                        w.push(line);
                    }
                }
            });
        }
        self.function = Some(FnProc {
            _proc: ServerProc(child),
            spawned,
            ready,
        });
        Ok(())
    }

    /// Starts `jit server` on SQLite as `--mode lateness` does (the previous one stopped with
    /// SIGTERM first); returns when it was spawned.
    fn start_server(&mut self, provider: Provider) -> anyhow::Result<Instant> {
        if let Some(s) = self.server.take() {
            s.stop()?;
        }
        let mut cmd = Command::new(&self.opts.server_bin);
        offline_aws(&mut cmd)
            .arg("server")
            .env("JIT_LISTEN", format!("127.0.0.1:{}", self.srv_port))
            .env("JIT_DATA_DIR", &self.srv_dir)
            .env(
                "JIT_DATABASE_URL",
                format!("sqlite://{}", self.srv_dir.join("jit.db").display()),
            )
            .env("JIT_ADMINS", "admin1")
            .env("JIT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        provider_env(&mut cmd, provider, &self.script);
        let spawned = Instant::now();
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (cargo build --release -p jit-cli first)",
                self.opts.server_bin.display()
            )
        })?;
        self.server = Some(ServerProc(child));
        Ok(spawned)
    }

    /// Empty tables (deleted and made again), a fresh function on them, and the channel's
    /// binding and approver; returns the path of a request to read. moto answers a Query by
    /// walking the whole table, so each part starts small, as its figures would on DynamoDB.
    async fn fresh_tables(&mut self, lc: &Client, provider: Provider) -> anyhow::Result<String> {
        self.function = None;
        for t in ["jit-state", "jit-nonces"] {
            self.ddb
                .delete_table()
                .table_name(t)
                .send()
                .await
                .with_context(|| format!("deleting {t} on moto"))?;
        }
        jit_store::DynamoStore::create_tables(&self.sdk, "jit-state", "jit-nonces")
            .await
            .map_err(|e| anyhow::anyhow!("creating the DynamoDB tables on moto: {e}"))?;
        self.start_function(provider)?;
        Ok(format!("/requests/{}", setup(lc).await?))
    }
}

/// A raw invocation of the function, as EventBridge (Scheduler) sends one.
async fn invoke(http: &reqwest::Client, base: &str, payload: &Value) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{base}/2015-03-31/functions/_/invocations"))
        .json(payload)
        .send()
        .await?;
    if r.status() != 200 {
        bail!("invocation {payload}: HTTP {}", r.status());
    }
    Ok(r.json().await?)
}

async fn client_for(base: &str, dir: &Path) -> anyhow::Result<Client> {
    let path = dir.join("keys/backend.json");
    let t = Instant::now();
    let ring = loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(r) = KeyRing::parse(&text)
        {
            break r;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("no key ring at {} after 60 s", path.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(Client::new(
        base,
        Keys::Fixed(Arc::new(ring)),
        Arc::new(SystemClock),
    )?)
}

/// Polls a signed call every 2 ms until it answers 200: (when the answered call was sent,
/// when its answer came).
async fn first_answer(c: &Client, path: &str) -> anyhow::Result<(Instant, Instant)> {
    let t = Instant::now();
    loop {
        let sent = Instant::now();
        if let Ok(a) = c.get(path).await
            && a.status == 200
        {
            return Ok((sent, Instant::now()));
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("{path} not answered within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn setup(c: &Client) -> anyhow::Result<String> {
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
        let a = c.post(path, &body).await?;
        if !a.is_success() {
            bail!("set-up {path}: {} {}", a.status, a.body);
        }
    }
    let (id, _, _) = pair(c, "setup", 60).await?;
    Ok(id)
}

/// One signed create + approve: (request id, create ms, approve ms).
async fn pair(c: &Client, user: &str, minutes: u32) -> anyhow::Result<(String, f64, f64)> {
    let t = Instant::now();
    let a = c
        .post(
            "/requests",
            &json!({"actor": actor(user), "channel_id": "ch1", "account_id": "123456789012",
                    "jira": "OPS-1", "reason": "lambda bench", "requested_duration_minutes": minutes}),
        )
        .await?;
    let create = ms(t.elapsed());
    if a.status != 201 {
        bail!("create: {} {}", a.status, a.body);
    }
    let id = a
        .body
        .get("request_id")
        .and_then(Value::as_str)
        .context("create answered no request_id")?
        .to_owned();
    let t = Instant::now();
    let b = c
        .post(
            &format!("/requests/{id}/approve"),
            &json!({"actor": actor("bob")}),
        )
        .await?;
    let approve = ms(t.elapsed());
    if b.status != 200 {
        bail!("approve: {} {}", b.status, b.body);
    }
    Ok((id, create, approve))
}

/// The grant's end (unix ms) once it is GRANTED, polling up to 30 s.
async fn granted_end(c: &Client, id: &str) -> anyhow::Result<i64> {
    let t = Instant::now();
    loop {
        let g = c.get(&format!("/requests/{id}")).await?;
        if g.body.get("status").and_then(Value::as_str) == Some("GRANTED") {
            let end = g
                .body
                .get("end_time")
                .and_then(Value::as_str)
                .context("no end_time")?;
            let end =
                time::OffsetDateTime::parse(end, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("end_time {end}"))?;
            return Ok(i64::try_from(end.unix_timestamp_nanos() / 1_000_000)?);
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("{id} not GRANTED after 30 s: {}", g.body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `late_ms` of every `request.expired` event, by request.
async fn expired_late(c: &Client) -> anyhow::Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    let mut next: Option<String> = None;
    loop {
        let pq = match &next {
            Some(t) => format!("/audit?type=request.expired&limit=1000&next_token={t}"),
            None => "/audit?type=request.expired&limit=1000".to_owned(),
        };
        let page = c.get(&pq).await?;
        if page.status != 200 {
            bail!("GET /audit: {} {}", page.status, page.body);
        }
        for e in page
            .body
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let (Some(id), Some(late)) = (
                e.get("request_id").and_then(Value::as_str),
                e.get("data")
                    .and_then(|d| d.get("late_ms"))
                    .and_then(Value::as_i64),
            ) {
                out.insert(id.to_owned(), late);
            }
        }
        match page.body.get("next_token").and_then(Value::as_str) {
            Some(t) => next = Some(t.to_owned()),
            None => return Ok(out),
        }
    }
}

/// `late_ms` of each of `ids` from `c`'s trail, waiting up to `limit` for all of them.
async fn late_of(c: &Client, ids: &[String], limit: Duration) -> anyhow::Result<Vec<i64>> {
    let t = Instant::now();
    loop {
        let all = expired_late(c).await?;
        let late: Vec<i64> = ids.iter().filter_map(|id| all.get(id).copied()).collect();
        if late.len() == ids.len() {
            return Ok(late);
        }
        if t.elapsed() > limit {
            bail!(
                "only {} of {} grants expired in time",
                late.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// moto's state of the table: (items in it, ms of one Query of an empty partition, median of
/// 5). moto answers a Query by walking every item of the table, so this grows with the table;
/// DynamoDB's does not.
async fn moto_probe(ddb: &aws_sdk_dynamodb::Client) -> anyhow::Result<(i32, f64)> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        ddb.query()
            .table_name("jit-state")
            .key_condition_expression("pk = :p")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S("bench#absent".into()),
            )
            .send()
            .await
            .context("Query on moto")?;
        times.push(ms(t.elapsed()));
    }
    let mut items = 0;
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name("jit-state")
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start)
            .send()
            .await
            .context("Scan on moto")?;
        items += page.count();
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok((items, q(&times, 0.5)));
        }
    }
}

async fn sleep_until_wall(at_ms: i64) {
    let wait = at_ms - wall_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
    }
}

fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(wall_ms());
    h.finish()
}

fn row(name: &str, lambda: &str, base: &str, r: &str) {
    println!("{name:<50} {lambda:>22} {base:>22} {r:>13}");
}

fn stats_ms(v: &[i64]) -> (i64, i64, i64) {
    (
        pct(v, 0.5),
        pct(v, 0.99),
        v.iter().max().copied().unwrap_or(0),
    )
}

/// Until SIGINT or SIGTERM, so the children are killed (on drop) when the bench is stopped.
async fn interrupted() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub(crate) async fn run(opts: Opts) -> anyhow::Result<()> {
    let warnings = Warnings::default();
    let out = tokio::select! {
        r = measure(opts, warnings.clone()) => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    let w = warnings.lock().map(|w| w.clone()).unwrap_or_default();
    if !w.is_empty() {
        eprintln!(
            "the function logged {} WARN/ERROR lines; the last ones:",
            w.len()
        );
        for line in w.iter().rev().take(10).rev() {
            eprintln!("  {line}");
        }
    }
    out
}

/// One create + approve, tried up to 3 times (moto fails a call now and then): the request id.
async fn pair_retry(c: &Client, user: &str, minutes: u32) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..3 {
        match pair(c, user, minutes).await {
            Ok((id, _, _)) => return Ok(id),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

fn ratio_pair(a: (f64, f64), b: (f64, f64), digits: usize) -> String {
    format!(
        "{:.digits$} / {:.digits$}",
        ratio(a.0, b.0),
        ratio(a.1, b.1)
    )
}

async fn measure(opts: Opts, warnings: Warnings) -> anyhow::Result<()> {
    let started = Instant::now();
    for (bin, build) in [
        (&opts.lambda_bin, "jit-lambda"),
        (&opts.server_bin, "jit-cli"),
    ] {
        if !bin.exists() {
            bail!(
                "{} is missing: cargo build --release -p {build}",
                bin.display()
            );
        }
    }
    tool(
        "JIT_MOTO_SERVER",
        ".venv/bin/moto_server",
        "moto (moto_server)",
    )?;
    let cargo_lambda = tool("JIT_CARGO_LAMBDA", ".venv/bin/cargo-lambda", "cargo-lambda")?;
    if opts.starts == 0 || opts.pairs == 0 || opts.grants == 0 {
        bail!("--starts, --pairs and --grants must be at least 1");
    }

    // AWS on moto: the tables and the schedule group, as the template makes them.
    let moto = jit_testkit::Moto::start()?;
    let sdk = moto.sdk_config().await;
    jit_store::DynamoStore::create_tables(&sdk, "jit-state", "jit-nonces")
        .await
        .map_err(|e| anyhow::anyhow!("creating the DynamoDB tables on moto: {e}"))?;
    aws_sdk_scheduler::Client::new(&sdk)
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .context("creating the schedule group on moto")?;

    let dir = tempfile::tempdir()?;
    let (fn_dir, srv_dir) = (dir.path().join("function"), dir.path().join("server"));
    std::fs::create_dir_all(&fn_dir)?;
    std::fs::create_dir_all(&srv_dir)?;
    // Every user is fast: each provider call takes 50 ms (`sleep 0.05` in a shell).
    let script = slow_provider_script(dir.path(), 1)?;

    // The emulator: the Lambda runtime API and the invoke API on one loopback port; the function
    // registers as `_` when it polls `/.rt`. It runs `cargo metadata` (offline: no registry).
    let rt_port = jit_testkit::free_port()?;
    let mut emu = Command::new(&cargo_lambda);
    offline_aws(&mut emu)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(rt_port.to_string())
        .arg("--manifest-path")
        .arg(jit_testkit::workspace_root().join("crates/jit-lambda/Cargo.toml"))
        .env("CARGO_NET_OFFLINE", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let emulator = ServerProc(
        emu.spawn()
            .with_context(|| format!("starting {}", cargo_lambda.display()))?,
    );
    jit_testkit::wait_for_port(rt_port, Duration::from_secs(120))
        .context("cargo-lambda's emulator did not come up")?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut b = Bench {
        opts,
        ddb: aws_sdk_dynamodb::Client::new(&sdk),
        sdk,
        moto,
        _emulator: emulator,
        rt_port,
        fn_dir,
        srv_dir,
        srv_port: jit_testkit::free_port()?,
        script,
        function: None,
        server: None,
        warnings,
    };
    let lbase = b.lambda_base();

    // First starts (keys generated, schema made): not measured.
    b.start_function(Provider::DryRun)?;
    let lc = client_for(&lbase, &b.fn_dir).await?;
    let l_probe = format!("/requests/{}", setup(&lc).await?);
    b.start_server(Provider::DryRun)?;
    let sc = client_for(&b.server_base(), &b.srv_dir).await?;
    first_answer(&sc, "/readyz").await?;
    let s_probe = format!("/requests/{}", setup(&sc).await?);

    println!(
        "jit-bench lambda: jit-lambda on cargo-lambda's emulator (DynamoDB and EventBridge Scheduler on moto) \
         next to `jit server` on SQLite, same run, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // 1. Init: a fresh process each time, the same tables and key rings.
    let (mut l_init, mut l_first, mut l_own, mut l_warm) = (vec![], vec![], vec![], vec![]);
    let (mut s_init, mut s_first, mut s_own, mut s_warm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..b.opts.starts {
        b.start_function(Provider::DryRun)?;
        // The emulator holds an invocation until a runtime asks for it (as Lambda holds the
        // request that caused a cold start): the call goes out at once and is answered after
        // init. Its own duration runs from the runtime's first poll (the function's
        // `jit-lambda ready` line, logged right before it) to the answer.
        let a = lc.get(&l_probe).await?;
        let answered = Instant::now();
        if a.status != 200 {
            bail!("first call to a fresh function: {} {}", a.status, a.body);
        }
        let f = b.function.as_mut().context("no function")?;
        let ready = (&mut f.ready)
            .await
            .context("the function never logged `jit-lambda ready`")?;
        l_init.push(ms(ready - f.spawned));
        l_first.push(ms(answered - f.spawned));
        l_own.push(ms(answered - ready));
        let t = Instant::now();
        lc.get(&l_probe).await?;
        l_warm.push(ms(t.elapsed()));

        let spawned = b.start_server(Provider::DryRun)?;
        let (sent, answered) = first_answer(&sc, &s_probe).await?;
        s_init.push(ms(sent - spawned));
        s_first.push(ms(answered - spawned));
        s_own.push(ms(answered - sent));
        let t = Instant::now();
        sc.get(&s_probe).await?;
        s_warm.push(ms(t.elapsed()));
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let mm = |v: &[f64]| (q(v, 0.5), max(v));
    let p5095 = |v: &[f64]| (q(v, 0.5), q(v, 0.95));
    println!();
    row(
        "measure",
        "lambda (emulator)",
        "baseline jit server",
        "ratio",
    );
    row(
        &format!("1. init, {} fresh processes: median / max", b.opts.starts),
        &format!("{:.0} / {:.0} ms", q(&l_init, 0.5), max(&l_init)),
        &format!("{:.0} / {:.0} ms", q(&s_init, 0.5), max(&s_init)),
        &ratio_pair(mm(&l_init), mm(&s_init), 1),
    );
    row(
        "   spawn to first answer: median / max",
        &format!("{:.0} / {:.0} ms", q(&l_first, 0.5), max(&l_first)),
        &format!("{:.0} / {:.0} ms", q(&s_first, 0.5), max(&s_first)),
        &ratio_pair(mm(&l_first), mm(&s_first), 1),
    );
    row(
        "   first call's own duration / warm: median",
        &format!("{:.1} / {:.1} ms", q(&l_own, 0.5), q(&l_warm, 0.5)),
        &format!("{:.1} / {:.1} ms", q(&s_own, 0.5), q(&s_warm, 0.5)),
        &ratio_pair(
            (q(&l_own, 0.5), q(&l_warm, 0.5)),
            (q(&s_own, 0.5), q(&s_warm, 0.5)),
            1,
        ),
    );

    // What every call through the function pays before its own work: the emulator's hop, the
    // runtime, and the due-job and callback queries after the answer (an unsigned
    // `GET /healthz`, which reads nothing itself).
    let (mut l_health, mut s_health) = (vec![], vec![]);
    for i in 0..WARM_PAIRS + b.opts.pairs {
        let t = Instant::now();
        let r = http.get(format!("{lbase}/healthz")).send().await?;
        let lh = ms(t.elapsed());
        let t = Instant::now();
        let r2 = http
            .get(format!("{}/healthz", b.server_base()))
            .send()
            .await?;
        let sh = ms(t.elapsed());
        if !r.status().is_success() || !r2.status().is_success() {
            bail!("GET /healthz: {} / {}", r.status(), r2.status());
        }
        if i >= WARM_PAIRS {
            l_health.push(lh);
            s_health.push(sh);
        }
    }
    row(
        "   floor: unsigned GET /healthz p50 / p95",
        &format!("{:.1} / {:.1} ms", q(&l_health, 0.5), q(&l_health, 0.95)),
        &format!("{:.1} / {:.1} ms", q(&s_health, 0.5), q(&s_health, 0.95)),
        &ratio_pair(p5095(&l_health), p5095(&s_health), 1),
    );
    let mut probes = Vec::new();

    // 2. Signed create + approve, one at a time, the two targets taking turns; each provider on
    // fresh tables.
    let mut pairs_json = Vec::new();
    for provider in [Provider::DryRun, Provider::Slow50] {
        if provider != Provider::DryRun {
            b.fresh_tables(&lc, provider).await?;
            b.start_server(provider)?;
            first_answer(&sc, &s_probe).await?;
        }
        let (mut lp, mut la, mut sp, mut sa) = (vec![], vec![], vec![], vec![]);
        let (mut l_err, mut s_err) = (0usize, 0usize);
        let (tag, name) = match provider {
            Provider::DryRun => ("d", "dry-run provider"),
            Provider::Slow50 => ("p", "provider 50 ms/call"),
        };
        for i in 0..WARM_PAIRS + b.opts.pairs {
            let l = pair(&lc, &format!("{tag}{i}"), 60).await;
            let s = pair(&sc, &format!("{tag}{i}"), 60).await;
            if i < WARM_PAIRS {
                continue;
            }
            match l {
                Ok((_, c, a)) => {
                    lp.push(c + a);
                    la.push(a);
                }
                Err(e) => {
                    l_err += 1;
                    eprintln!("lambda pair {i} ({name}) failed: {e:#}");
                }
            }
            match s {
                Ok((_, c, a)) => {
                    sp.push(c + a);
                    sa.push(a);
                }
                Err(e) => {
                    s_err += 1;
                    eprintln!("server pair {i} ({name}) failed: {e:#}");
                }
            }
            if (l_err + s_err) * 10 > b.opts.pairs {
                bail!("more than one pair in ten failed ({name})");
            }
        }
        let errs = |n: usize| {
            if n > 0 {
                format!(" ({n} failed)")
            } else {
                String::new()
            }
        };
        row(
            &format!("2. create+approve, {name}: p50 / p95"),
            &format!("{:.1} / {:.1} ms{}", q(&lp, 0.5), q(&lp, 0.95), errs(l_err)),
            &format!("{:.1} / {:.1} ms{}", q(&sp, 0.5), q(&sp, 0.95), errs(s_err)),
            &ratio_pair(p5095(&lp), p5095(&sp), 1),
        );
        row(
            "   of which approve: p50 / p95",
            &format!("{:.1} / {:.1} ms", q(&la, 0.5), q(&la, 0.95)),
            &format!("{:.1} / {:.1} ms", q(&sa, 0.5), q(&sa, 0.95)),
            &ratio_pair(p5095(&la), p5095(&sa), 1),
        );
        pairs_json.push(json!({"provider": name, "pairs": b.opts.pairs, "lambda_failed": l_err, "server_failed": s_err,
            "lambda_p50_ms": q(&lp, 0.5), "lambda_p95_ms": q(&lp, 0.95), "lambda_approve_p50_ms": q(&la, 0.5),
            "server_p50_ms": q(&sp, 0.5), "server_p95_ms": q(&sp, 0.95), "server_approve_p50_ms": q(&sa, 0.5)}));
        probes.push((format!("2 {name}"), moto_probe(&b.ddb).await?));
    }
    b.start_server(Provider::DryRun)?;
    first_answer(&sc, &s_probe).await?;
    let l_probe = b.fresh_tables(&lc, Provider::DryRun).await?;
    // Warm the fresh function before its grants are made (its cold start is measured above).
    lc.get(&l_probe).await?;

    // 3. Revocation lateness. The server's grants first; 20 s later the function's, so the
    // two batches end 20 s apart and do not compete for the two cores.
    let k = b.opts.grants;
    let batch_start = Instant::now();
    let mut s_ids = Vec::new();
    for i in 0..k {
        s_ids.push(pair_retry(&sc, &format!("late{i}"), 1).await?);
    }
    tokio::time::sleep_until((batch_start + Duration::from_secs(20)).into()).await;
    let mut l_grants = Vec::new();
    for i in 0..k {
        let id = pair_retry(&lc, &format!("late{i}"), 1).await?;
        let end = granted_end(&lc, &id).await?;
        l_grants.push((id, end));
    }
    // After the first end no HTTP call reaches the function (each runs what is due after it):
    // only the invocations, each sent at its grant's end as its schedule would be.
    let mut tasks = Vec::new();
    for (id, end) in l_grants.clone() {
        let (http, lbase) = (http.clone(), lbase.clone());
        tasks.push(tokio::spawn(async move {
            sleep_until_wall(end).await;
            let sent = wall_ms();
            let out = invoke(
                &http,
                &lbase,
                &json!({"jit": "job", "kind": "revoke", "request_id": id}),
            )
            .await?;
            let back = wall_ms();
            if out.get("ok") != Some(&json!(true)) {
                bail!("the job invocation answered {out}");
            }
            Ok::<_, anyhow::Error>((end, sent, back))
        }));
    }
    let mut timings = Vec::new();
    for t in tasks {
        timings.push(t.await??);
    }
    let l_late: Vec<i64> = timings.iter().map(|(end, _, back)| back - end).collect();
    // The emulator runs one instance, so an invocation that comes while the one before runs
    // waits for it (Lambda would start another execution environment): split the lateness
    // into that wait and the invocation's own duration.
    timings.sort_by_key(|(_, sent, _)| *sent);
    let (mut waited, mut own) = (Vec::new(), Vec::new());
    let mut busy_until = i64::MIN;
    for (_, sent, back) in &timings {
        let began = (*sent).max(busy_until);
        waited.push(began - sent);
        own.push(back - began);
        busy_until = busy_until.max(*back);
    }
    let spread_s = match (timings.first(), timings.last()) {
        (Some(a), Some(z)) => (z.0 - a.0) as f64 / 1000.0,
        _ => 0.0,
    };
    let l_ids: Vec<String> = l_grants.iter().map(|(id, _)| id.clone()).collect();
    for id in &l_ids {
        let g = lc.get(&format!("/requests/{id}")).await?;
        let st = g.body.get("status").and_then(Value::as_str).unwrap_or("");
        if st != "EXPIRED" && st != "REVOKED" {
            bail!("{id} is {st} after its job's invocation returned");
        }
    }
    let l_audit = late_of(&lc, &l_ids, Duration::from_secs(10)).await?;
    let s_late = late_of(&sc, &s_ids, Duration::from_secs(120)).await?;
    let (lp50, lp99, lmax) = stats_ms(&l_late);
    let (ap50, ap99, amax) = stats_ms(&l_audit);
    let (sp50, sp99, smax) = stats_ms(&s_late);
    let f = |(a, b, c): (i64, i64, i64)| (a as f64, b as f64, c as f64);
    let r3 = |l: (i64, i64, i64), s: (i64, i64, i64)| {
        let (l, s) = (f(l), f(s));
        format!(
            "{:.0} / {:.0} / {:.0}",
            ratio(l.0, s.0),
            ratio(l.1, s.1),
            ratio(l.2, s.2)
        )
    };
    row(
        &format!("3. revoke lateness, {k} grants: p50 / p99 / max"),
        &format!("{lp50} / {lp99} / {lmax} ms"),
        &format!("{sp50} / {sp99} / {smax} ms"),
        &r3((lp50, lp99, lmax), (sp50, sp99, smax)),
    );
    row(
        "   lambda: the trail's late_ms (access removed)",
        &format!("{ap50} / {ap99} / {amax} ms"),
        &format!("{sp50} / {sp99} / {smax} ms"),
        &r3((ap50, ap99, amax), (sp50, sp99, smax)),
    );
    let (op50, op99, omax) = stats_ms(&own);
    let (wp50, wp99, wmax) = stats_ms(&waited);
    println!(
        "   lambda, {k} ends over {spread_s:.1} s: invocation's own duration p50 / p99 / max {op50} / {op99} / {omax} ms; \
         waited for the one before (one instance) {wp50} / {wp99} / {wmax} ms"
    );
    probes.push(("3".to_owned(), moto_probe(&b.ddb).await?));

    // 4. No schedule fires: only the tick, every 60 s from a random phase.
    let l_probe = b.fresh_tables(&lc, Provider::DryRun).await?;
    lc.get(&l_probe).await?;
    let mut t_grants = Vec::new();
    for i in 0..k {
        let id = pair_retry(&lc, &format!("tick{i}"), 1).await?;
        let end = granted_end(&lc, &id).await?;
        t_grants.push((id, end));
    }
    let phase_ms = random_u64() % 60_000;
    let first = wall_ms() + i64::try_from(phase_ms)?;
    let max_end = t_grants.iter().map(|(_, e)| *e).max().unwrap_or(0);
    let mut ticks: Vec<(i64, i64)> = Vec::new();
    for n in 0.. {
        sleep_until_wall(first + n * 60_000).await;
        let start = wall_ms();
        let out = invoke(&http, &lbase, &json!({"jit": "tick"})).await?;
        let back = wall_ms();
        if out.get("ok") != Some(&json!(true)) {
            bail!("the tick answered {out}");
        }
        ticks.push((start, back));
        if start >= max_end {
            break;
        }
    }
    let t_ids: Vec<String> = t_grants.iter().map(|(id, _)| id.clone()).collect();
    let t_audit = late_of(&lc, &t_ids, Duration::from_secs(10)).await?;
    let mut drift = Vec::new();
    let mut outside = 0;
    for ((_, end), late) in t_grants.iter().zip(&t_audit) {
        let removed = end + late;
        match ticks
            .iter()
            .find(|(s, r)| *s <= removed && removed <= *r + 5)
        {
            Some((_, r)) => drift.push(r - end),
            None => {
                outside += 1;
                drift.push(*late);
            }
        }
    }
    let tick_ms: Vec<f64> = ticks.iter().map(|(s, r)| (r - s) as f64).collect();
    let (dp50, _, dmax) = stats_ms(&drift);
    row(
        &format!("4. tick only, {k} grants: p50 / max"),
        &format!("{dp50} / {dmax} ms"),
        &format!("{sp50} / {smax} ms"),
        &format!(
            "{:.0} / {:.0}",
            ratio(dp50 as f64, sp50 as f64),
            ratio(dmax as f64, smax as f64)
        ),
    );
    let bound = 60_000.0 + max(&tick_ms);
    println!(
        "   {} ticks from phase {:.1} s, each {:.0} ms median / {:.0} ms max; bound 60 s + tick = {:.1} s: {}{}",
        ticks.len(),
        phase_ms as f64 / 1000.0,
        q(&tick_ms, 0.5),
        max(&tick_ms),
        bound / 1000.0,
        if (dmax as f64) <= bound {
            "within"
        } else {
            "EXCEEDED"
        },
        if outside > 0 {
            format!(" ({outside} revoked outside a tick)")
        } else {
            String::new()
        }
    );
    probes.push(("4".to_owned(), moto_probe(&b.ddb).await?));
    println!(
        "   moto at the end of each part (fresh tables each), items in jit-state / one Query: {}",
        probes
            .iter()
            .map(|(at, (n, t))| format!("{at}: {n} / {t:.1} ms"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let total = started.elapsed().as_secs_f64();
    println!("total {total:.0} s");
    println!(
        "{}",
        json!({"starts": b.opts.starts, "lambda_init_ms": l_init, "server_init_ms": s_init,
               "lambda_first_answer_ms": l_first, "server_first_answer_ms": s_first,
               "lambda_healthz_p50_ms": q(&l_health, 0.5), "server_healthz_p50_ms": q(&s_health, 0.5),
               "pairs": pairs_json, "grants": k,
               "lambda_late_ms": {"p50": lp50, "p99": lp99, "max": lmax},
               "lambda_audit_late_ms": {"p50": ap50, "p99": ap99, "max": amax},
               "lambda_invocation_own_ms": {"p50": op50, "p99": op99, "max": omax},
               "lambda_invocation_waited_ms": {"p50": wp50, "p99": wp99, "max": wmax}, "ends_spread_s": spread_s,
               "server_late_ms": {"p50": sp50, "p99": sp99, "max": smax},
               "tick_phase_ms": phase_ms, "tick_ms": tick_ms, "tick_drift_ms": {"p50": dp50, "max": dmax},
               "outside_tick": outside, "moto_items_and_query_ms": probes, "total_s": total.round()})
    );
    Ok(())
}
