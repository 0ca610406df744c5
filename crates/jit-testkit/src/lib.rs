//! Fixtures for tests that start the real thing: moto's AWS endpoint on a free loopback port,
//! PostgreSQL databases, a Mattermost double ([`mattermost`]), and helpers to find the
//! workspace's tools. Nothing here is used outside tests.

pub mod mattermost;

use anyhow::{Context, bail};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free TCP port on 127.0.0.1 (bound, then released; the caller binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `port`, polling a condition (not a timed
/// sleep standing in for synchronisation), up to `limit`.
pub fn wait_for_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            // With nobody listening yet, a connect to a port in the ephemeral range can be
            // given that same port as its source and connect to itself (TCP simultaneous
            // open). That is not the server: keep waiting (the socket closes at once).
            if !is_self_connected(&s) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {limit:?}")
}

fn is_self_connected(s: &TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("JIT_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("moto_server")
}

/// A moto server for this test alone, killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it accepts connections.
    /// Install it with `scripts/test.sh` (a venv in `.venv/`) or set `JIT_MOTO_SERVER`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(free_port()?)
    }

    /// [`Moto::start`] on a given port (to bring AWS up where a process already looks for it).
    pub fn start_on(port: u16) -> anyhow::Result<Self> {
        let bin = moto_binary();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run scripts/test.sh to install moto)",
                    bin.display()
                )
            })?;
        let moto = Self {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        wait_for_port(port, Duration::from_secs(30))?;
        Ok(moto)
    }

    /// Kills the server (to test behaviour while AWS is unreachable).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SDK configuration pointing at this server with static test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let creds =
            aws_credential_types::Credentials::new("testing", "testing", None, None, "moto");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            )
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh, empty PostgreSQL database for one test, created through `psql` with the role
/// `scripts/test.sh` sets up (`JIT_TEST_PG_URL`, which must name a role allowed to create
/// databases). Returns its URL. Fails loudly when PostgreSQL is not configured, so a run
/// without it cannot pass by skipping.
pub fn fresh_pg_database() -> anyhow::Result<String> {
    let base = std::env::var("JIT_TEST_PG_URL").context(
        "JIT_TEST_PG_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    )?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("jit_t_{}_{}", std::process::id(), n);
    let out = Command::new("psql")
        .arg(&base)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!(
            "creating database {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (prefix, _) = base
        .rsplit_once('/')
        .context("JIT_TEST_PG_URL has no database part")?;
    Ok(format!("{prefix}/{name}"))
}

/// Runs SQL against a PostgreSQL URL with `psql` (for tests that tamper with rows directly).
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A log writer that keeps everything written, to grep a run's logs (hand a clone to
/// `tracing_subscriber::fmt().with_writer(move || sink.clone())`).
#[derive(Debug, Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_socket_connected_to_itself_is_not_a_listener() {
        use socket2::{Domain, Socket, Type};
        // TCP simultaneous open: bound to a port, connecting to that same port.
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let addr = s.local_addr().unwrap();
        s.connect(&addr).unwrap();
        let own: TcpStream = s.into();
        assert!(is_self_connected(&own));
        // A real listener's connection is not.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(!is_self_connected(&c));
        wait_for_port(l.local_addr().unwrap().port(), Duration::from_secs(5)).unwrap();
    }
}
