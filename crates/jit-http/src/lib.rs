//! HTTP plumbing shared by the backend (`jit server`) and the bridge (`jit mattermost`), so both
//! listeners behave the same way under load and abuse:
//!
//! - [`config_file`]: TOML config files whose errors never print a value;
//! - [`metrics`]: counters and histograms in Prometheus text format, and the per-request
//!   middleware that counts requests by route template;
//! - [`FailureLimiter`]: after a burst of failed authentications a source address gets 429 for
//!   the rest of the minute;
//! - [`log_requests`]: one log line per request with a request id (also sent as
//!   `x-request-id`);
//! - [`harden`]: the per-request time limit;
//! - [`outbound`]: outbound clients never reach link-local or cloud metadata addresses;
//! - [`serve`]: the accept loop with the connection-level limits (request head size and
//!   header count, time to send the head, connections open at once) and graceful shutdown.

pub mod config_file;
pub mod metrics;
pub mod outbound;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// Counts authentication failures per source address in one-minute windows; past `burst`
/// failures a source gets 429 for the rest of the window, valid credentials or not, so a key,
/// token or nonce cannot be guessed at speed. The table is bounded (old windows are dropped
/// when it grows past 100,000 sources).
///
/// Behind a reverse proxy every request has the proxy's address, so one attacker can block
/// everyone for a minute; run the listeners where they see client addresses (documented in
/// `docs/security.md`).
#[derive(Debug)]
pub struct FailureLimiter {
    burst: u32,
    /// Source → (minute, failures); plus the minute of the last sweep.
    table: Mutex<(Failures, i64)>,
}

/// Source → (minute, failures in it).
type Failures = HashMap<IpAddr, (i64, u32)>;

/// Most sources tracked in one minute; past it, new sources are not tracked (the table cannot
/// be grown without bound, and sweeping a full table on every failure would cost CPU).
const MAX_SOURCES: usize = 100_000;

/// The key of a source: IPv4 as is, IPv6 by its /64 (one host usually has a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl FailureLimiter {
    /// At most `burst` failures per source per minute.
    pub fn new(burst: u32) -> Self {
        Self {
            burst,
            table: Mutex::new((HashMap::new(), 0)),
        }
    }

    fn window(now: i64) -> i64 {
        now.div_euclid(60)
    }

    /// True when `ip` has used up its failures in the minute of `now` (unix seconds).
    pub fn blocked(&self, ip: IpAddr, now: i64) -> bool {
        self.table
            .lock()
            .map(|t| {
                t.0.get(&source_key(ip))
                    .is_some_and(|(w, n)| *w == Self::window(now) && *n >= self.burst)
            })
            .unwrap_or(false)
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: IpAddr, now: i64) {
        if let Ok(mut guard) = self.table.lock() {
            let (t, swept) = &mut *guard;
            let w = Self::window(now);
            if *swept != w {
                t.retain(|_, (tw, _)| *tw == w);
                *swept = w;
            }
            let key = source_key(ip);
            if t.len() >= MAX_SOURCES && !t.contains_key(&key) {
                return;
            }
            let e = t.entry(key).or_insert((w, 0));
            if e.0 != w {
                *e = (w, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
    }
}

/// The source address of a request, when the listener recorded it
/// (`into_make_service_with_connect_info`).
pub fn source_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// One log line per request: method, path (never the query, which may carry ids users typed),
/// status, latency and a request id that is also returned in `x-request-id`. 5xx are logged
/// at error level, everything else at info.
pub async fn log_requests(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    let request_id = hex::encode(id);
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::error!(request_id, %method, path, status, latency_ms = ms, "request");
    } else {
        tracing::info!(request_id, %method, path, status, latency_ms = ms, "request");
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Wraps a router's routes, innermost first: the time limit (a request that takes longer than
/// `timeout` is answered 503 `timeout`), then the request metrics (by route template), then
/// the log line, so a request cut off by the time limit is still counted and logged.
pub fn harden(
    router: Router,
    timeout: Duration,
    metrics: std::sync::Arc<metrics::HttpMetrics>,
) -> Router {
    router
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(
                    |_: tower::BoxError| async {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(jit_proto::wire::ErrorBody {
                                code: jit_proto::wire::ErrorCode::Timeout,
                                message: "the request took too long".into(),
                            }),
                        )
                            .into_response()
                    },
                ))
                .timeout(timeout),
        )
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(axum::middleware::from_fn(log_requests))
}

/// Connection-level limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes; a larger one is answered
    /// 431 and the connection closed. At least 8 KiB (hyper's minimum).
    pub max_head_bytes: usize,
    /// Most header fields in a request; more is answered 431.
    pub max_headers: usize,
    /// Time a client has to send a request head once it starts one (slow-loris).
    pub header_read_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel's accept queue until one
    /// closes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `router` on `listener` (HTTP/1.1) within `limits` until `shutdown` completes, then
/// stops accepting and lets open connections finish. Each request carries its source address
/// as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::ServiceExt as _;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8 * 1024))
        .max_headers(limits.max_headers);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, give the system a moment.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    // Connections still busy after 30 s (a client that stopped reading) are abandoned.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown began; closing anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_blocked_after_its_burst_until_the_minute_ends() {
        let l = FailureLimiter::new(3);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(!l.blocked(ip, 120));
            l.failed(ip, 120);
        }
        assert!(l.blocked(ip, 179), "blocked for the rest of the minute");
        assert!(!l.blocked(other, 179), "other sources are not");
        assert!(!l.blocked(ip, 180), "a new minute starts afresh");
        l.failed(ip, 180);
        assert!(!l.blocked(ip, 180));
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let l = FailureLimiter::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.failed(a, 0);
        l.failed(b, 0);
        assert!(l.blocked(a, 0) && l.blocked(b, 0), "one /64, one budget");
        assert!(!l.blocked(other, 0));
    }
}
