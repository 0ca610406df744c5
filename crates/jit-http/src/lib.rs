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
//!   header count, time to send the head, connections open at once), TLS ([`tls`]), the
//!   client address behind trusted proxies ([`TrustedProxies`]) and graceful shutdown.

pub mod config_file;
pub mod metrics;
pub mod outbound;
pub mod tls;

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
/// Behind a reverse proxy every request has the proxy's address, so one attacker could block
/// everyone for a minute: list the proxies in `trusted_proxies` ([`TrustedProxies`]) and the
/// client address they forward is counted instead.
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

/// The client address of a request as [`serve`] worked it out: the peer's address, or the
/// address a trusted proxy forwarded ([`TrustedProxies::client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The source address of a request: the client address [`serve`] recorded, else the peer's
/// (`ConnectInfo`, as `into_make_service_with_connect_info` records it).
pub fn source_ip(ext: &axum::http::Extensions) -> Option<IpAddr> {
    ext.get::<ClientIp>().map(|c| c.0).or_else(|| {
        ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

/// The addresses whose `X-Forwarded-For` is believed (`trusted_proxies`: addresses or CIDR
/// blocks). Empty by default: the header is then ignored, since anyone can send it.
///
/// The client is found by walking `X-Forwarded-For` from the right (the hop nearest to us)
/// past every trusted address; the first untrusted one is the client. Entries left of it were
/// written by the client itself and are never believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32` and the like.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.as_ref().trim();
                e.parse::<ipnet::IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!("trusted_proxies: {e:?} is not an IP address or CIDR block")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` carrying these `X-Forwarded-For` values.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(client) {
                        return client;
                    }
                }
                // A hop we cannot read: stop at the last address we could.
                Err(_) => return client,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
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

/// How a listener meets its clients: the connection limits, TLS, and the proxies it trusts.
#[derive(Clone, Default)]
pub struct Edge {
    /// Connection-level limits.
    pub limits: Limits,
    /// HTTPS only when set ([`tls::from_config`]).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// Serves `router` on `listener` (HTTP/1.1, over TLS when `edge.tls` is set) within
/// `edge.limits` until `shutdown` completes, then stops accepting and lets open connections
/// finish. Each request carries the peer's address as `ConnectInfo<SocketAddr>` and the client
/// address as [`ClientIp`]. A TLS handshake must finish within the head read timeout.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    edge: Edge,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Edge {
        limits,
        tls,
        trusted_proxies,
    } = edge;
    let trusted_proxies = std::sync::Arc::new(trusted_proxies);
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
        let proxies = trusted_proxies.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let client = proxies.client(
                    addr.ip(),
                    req.headers()
                        .get_all("x-forwarded-for")
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(addr));
                req.extensions_mut().insert(ClientIp(client));
                router.clone().oneshot(req.map(axum::body::Body::new))
            });
        match &tls {
            None => {
                let conn = graceful
                    .watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            Some(acceptor) => {
                // The handshake runs on the connection's task, so a slow client delays only
                // itself; the watcher is registered once the stream is ready.
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                let watcher = graceful.watcher();
                let http = http.clone();
                tokio::spawn(async move {
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn =
                                watcher.watch(http.serve_connection(
                                    hyper_util::rt::TokioIo::new(stream),
                                    service,
                                ));
                            let _ = conn.await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, peer = %addr, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                    }
                    drop(slot);
                });
            }
        }
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
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let client = |peer: &str, xff: &[&str]| t.client(ip(peer), xff.iter().copied());
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client("203.0.113.5", &["1.1.1.1"]), ip("203.0.113.5"));
        // A trusted peer: walk right to left past trusted hops.
        assert_eq!(
            client("10.0.0.1", &["1.1.1.1, 198.51.100.2", "192.0.2.7"]),
            ip("198.51.100.2")
        );
        // Only trusted hops: the leftmost of them.
        assert_eq!(client("10.0.0.1", &["10.9.9.9"]), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        // An unreadable hop stops the walk at the last readable one.
        assert_eq!(client("10.0.0.1", &["1.1.1.1, junk"]), ip("10.0.0.1"));
        // IPv4-mapped peers count as IPv4.
        assert_eq!(client("::ffff:10.0.0.1", &["1.2.3.4"]), ip("1.2.3.4"));
        assert_eq!(client("2001:db8::1", &["1.2.3.4"]), ip("1.2.3.4"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example"]).is_err());
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
