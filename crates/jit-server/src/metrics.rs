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
        header(
            &mut out,
            "jit_http_requests_total",
            "counter",
            "HTTP requests by route template, method and status.",
        );
        for ((route, method, status), n) in &g.requests {
            let _ = writeln!(
                out,
                "jit_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(method)
            );
        }
        header(
            &mut out,
            "jit_http_request_duration_seconds",
            "histogram",
            "Time from request to response.",
        );
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
        header(
            &mut out,
            "jit_auth_failures_total",
            "counter",
            "Refused signatures by reason and key id (`unknown` when the id is not in the ring).",
        );
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

/// A revoke (or grant, or timeout) job still waiting this long past its due time counts as late.
pub const LATE_AFTER_MS: i64 = 60_000;

const STATUSES: [&str; 9] = [
    "PENDING",
    "APPROVED",
    "GRANTED",
    "EXPIRED",
    "REVOKED",
    "DENIED",
    "CANCELLED",
    "TIMED_OUT",
    "ERROR",
];

/// Prometheus text for the store's counts. Every known label value is written, with 0 when
/// there are none, so an alert on `> 0` sees a series from the start. `None` (the store did not
/// answer) writes `jit_store_up 0` and nothing else.
pub fn render_gauges(g: Option<&jit_store::Gauges>, now_ms: i64) -> String {
    let mut out = String::new();
    let up = u8::from(g.is_some());
    header(
        &mut out,
        "jit_store_up",
        "gauge",
        "Whether the store answered the metrics query.",
    );
    let _ = writeln!(out, "jit_store_up {up}");
    let Some(g) = g else { return out };
    let get =
        |rows: &[(String, i64)], k: &str| rows.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
    header(&mut out, "jit_requests", "gauge", "Requests by status.");
    for st in STATUSES {
        let _ = writeln!(
            out,
            "jit_requests{{status=\"{st}\"}} {}",
            get(&g.requests_by_status, st)
        );
    }
    header(
        &mut out,
        "jit_grants_active",
        "gauge",
        "Requests whose access is granted now.",
    );
    let _ = writeln!(
        out,
        "jit_grants_active {}",
        get(&g.requests_by_status, "GRANTED")
    );
    header(
        &mut out,
        "jit_jobs_late",
        "gauge",
        "Lifecycle jobs more than a minute past due or that have failed at least once.",
    );
    for k in ["grant", "revoke", "timeout"] {
        let _ = writeln!(
            out,
            "jit_jobs_late{{kind=\"{k}\"}} {}",
            get(&g.jobs_late_by_kind, k)
        );
    }
    header(
        &mut out,
        "jit_revocations_overdue",
        "gauge",
        "Revocations more than a minute past due or failing.",
    );
    let _ = writeln!(
        out,
        "jit_revocations_overdue {}",
        get(&g.jobs_late_by_kind, "revoke")
    );
    header(
        &mut out,
        "jit_callback_outbox_events",
        "gauge",
        "Callback events by delivery status.",
    );
    for k in ["PENDING", "DELIVERED", "DEAD"] {
        let _ = writeln!(
            out,
            "jit_callback_outbox_events{{status=\"{k}\"}} {}",
            get(&g.outbox_by_status, k)
        );
    }
    let age = g
        .outbox_oldest_pending_ms
        .map_or(0.0, |t| ((now_ms - t).max(0) as f64) / 1000.0);
    header(
        &mut out,
        "jit_callback_outbox_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest callback not yet delivered (0 when none).",
    );
    let _ = writeln!(out, "jit_callback_outbox_oldest_pending_age_seconds {age}");
    out
}

/// Writes the `# HELP` and `# TYPE` lines of a metric.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
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
    fn gauges_write_every_label_and_store_down_writes_only_up() {
        let g = jit_store::Gauges {
            requests_by_status: vec![("GRANTED".into(), 3)],
            outbox_by_status: vec![("DEAD".into(), 2)],
            outbox_oldest_pending_ms: Some(1_000),
            jobs_late_by_kind: vec![("revoke".into(), 1)],
        };
        let t = render_gauges(Some(&g), 11_500);
        for want in [
            "jit_store_up 1",
            "jit_requests{status=\"GRANTED\"} 3",
            "jit_requests{status=\"PENDING\"} 0",
            "jit_grants_active 3",
            "jit_jobs_late{kind=\"revoke\"} 1",
            "jit_jobs_late{kind=\"grant\"} 0",
            "jit_revocations_overdue 1",
            "jit_callback_outbox_events{status=\"DEAD\"} 2",
            "jit_callback_outbox_oldest_pending_age_seconds 10.5",
        ] {
            assert!(t.contains(want), "missing {want} in {t}");
        }
        let down = render_gauges(None, 0);
        assert!(down.contains("jit_store_up 0"));
        assert!(!down.contains("jit_requests"));
    }

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
