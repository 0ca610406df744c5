//! HTTP and authentication metrics for `GET /metrics`, in Prometheus text format.
//!
//! Labels are bounded: the route is the router's template (`/requests/{id}`), never the raw
//! path, so an attacker cannot grow the label set; unmatched paths share the label
//! `unmatched`. Authentication failures are counted by reason (a fixed set of codes) and by
//! the key id only when that id is in the ring; any other claimed id counts as `unknown`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds, in seconds, of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (c, le) in self.counts.iter_mut().zip(LATENCY_BUCKETS.iter()) {
            if secs <= *le {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) → count.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (route, method) → latency.
    latency: BTreeMap<(String, String), Histogram>,
    /// (reason, key id or `unknown`) → count.
    auth_failures: BTreeMap<(String, String), u64>,
}

/// Counters shared by the request middleware and the signature check.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    inner: Mutex<Inner>,
}

impl HttpMetrics {
    /// Counts one finished request.
    pub fn observe(&self, route: &str, method: &str, status: u16, secs: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        g.latency
            .entry((route.to_owned(), method.to_owned()))
            .or_default()
            .observe(secs);
    }

    /// Counts one refused signature. `key_id` must already be reduced to a known id or
    /// `unknown` by the caller.
    pub fn auth_failure(&self, reason: &str, key_id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.auth_failures
            .entry((reason.to_owned(), key_id.to_owned()))
            .or_default() += 1;
    }

    /// Prometheus text for the counters so far.
    pub fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP jit_http_requests_total HTTP requests by route template, method and status.\n# TYPE jit_http_requests_total counter\n");
        for ((route, method, status), n) in &g.requests {
            let _ = writeln!(
                out,
                "jit_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        out.push_str("# HELP jit_http_request_duration_seconds Time from request to response.\n# TYPE jit_http_request_duration_seconds histogram\n");
        for ((route, method), h) in &g.latency {
            let (r, m) = (esc(route), esc(method));
            for (le, c) in LATENCY_BUCKETS.iter().zip(h.counts.iter()) {
                let _ = writeln!(
                    out,
                    "jit_http_request_duration_seconds_bucket{{route=\"{r}\",method=\"{m}\",le=\"{le}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "jit_http_request_duration_seconds_bucket{{route=\"{r}\",method=\"{m}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "jit_http_request_duration_seconds_sum{{route=\"{r}\",method=\"{m}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "jit_http_request_duration_seconds_count{{route=\"{r}\",method=\"{m}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP jit_auth_failures_total Refused signatures by reason and key id (`unknown` when the id is not in the ring).\n# TYPE jit_auth_failures_total counter\n");
        for ((reason, key), n) in &g.auth_failures {
            let _ = writeln!(
                out,
                "jit_auth_failures_total{{reason=\"{}\",key_id=\"{}\"}} {n}",
                esc(reason),
                esc(key)
            );
        }
        out
    }
}

/// Escapes a label value per the Prometheus text format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Router middleware: counts every request under its route template.
pub async fn track(
    axum::extract::State(m): axum::extract::State<std::sync::Arc<HttpMetrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    m.observe(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_labels_escaped() {
        let m = HttpMetrics::default();
        m.observe("/requests", "POST", 201, 0.003);
        m.observe("/requests", "POST", 201, 0.2);
        m.observe("/requests", "POST", 400, 7.0);
        m.auth_failure("bad_signature", "k\"1");
        let t = m.render();
        assert!(t.contains(
            "jit_http_requests_total{route=\"/requests\",method=\"POST\",status=\"201\"} 2"
        ));
        assert!(t.contains(
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"0.005\"} 1"
        ));
        assert!(t.contains(
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"0.25\"} 2"
        ));
        assert!(t.contains(
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"5\"} 2"
        ));
        assert!(t.contains(
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"+Inf\"} 3"
        ));
        assert!(
            t.contains("jit_auth_failures_total{reason=\"bad_signature\",key_id=\"k\\\"1\"} 1")
        );
    }
}
