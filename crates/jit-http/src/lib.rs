//! HTTP plumbing shared by the backend (`jit server`) and the bridge (`jit mattermost`), so both
//! listeners behave the same way under load and abuse:
//!
//! - [`metrics`]: counters and histograms in Prometheus text format, and the per-request
//!   middleware that counts requests by route template;
//! - [`FailureLimiter`]: after a burst of failed authentications a source address gets 429 for
//!   the rest of the minute;
//! - [`log_requests`]: one log line per request with a request id (also sent as
//!   `x-request-id`);
//! - [`harden`]: the per-request time limit and the limit on requests served at once.

pub mod metrics;

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
    table: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl FailureLimiter {
    /// At most `burst` failures per source per minute.
    pub fn new(burst: u32) -> Self {
        Self {
            burst,
            table: Mutex::new(HashMap::new()),
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
                t.get(&ip)
                    .is_some_and(|(w, n)| *w == Self::window(now) && *n >= self.burst)
            })
            .unwrap_or(false)
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: IpAddr, now: i64) {
        if let Ok(mut t) = self.table.lock() {
            let w = Self::window(now);
            if t.len() > 100_000 {
                t.retain(|_, (tw, _)| *tw == w);
            }
            let e = t.entry(ip).or_insert((w, 0));
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

/// Listener limits: a request that takes longer than `timeout` is answered 503 `timeout`; at
/// most `max_in_flight` requests are served at once (the rest wait for a slot); every request
/// gets its log line.
pub fn harden(router: Router, timeout: Duration, max_in_flight: usize) -> Router {
    router.layer(axum::middleware::from_fn(log_requests)).layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                |_: tower::BoxError| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({
                            "code": "timeout",
                            "message": "the request took too long",
                        })),
                    )
                        .into_response()
                },
            ))
            .timeout(timeout)
            .concurrency_limit(max_in_flight.max(1)),
    )
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
}
