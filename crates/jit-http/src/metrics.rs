//! Metrics in Prometheus text format, without a registry: each metric is a value the owner
//! renders into the `/metrics` text.
//!
//! Labels are bounded by construction: routes are the router's templates (`/requests/{id}`),
//! never raw paths (unmatched paths share the label `unmatched`); reasons and results are fixed
//! codes; key ids are reduced to `unknown` by the caller when not in the ring. An attacker
//! cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Request latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets for outbound calls (AWS, Mattermost, commands), in seconds.
pub const CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Writes the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value per the Prometheus text format.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="x",b="y"}` (plus `extra` pairs at the end), or "" with no labels.
fn labels(names: &[&str], values: &[String], extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", esc(v)))
        .collect();
    pairs.extend(extra.iter().map(|(n, v)| format!("{n}=\"{}\"", esc(v))));
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

fn key(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// A counter with labels.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl Counter {
    /// A counter called `name` with these label names (without labels, it exists at 0).
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        let mut values = BTreeMap::new();
        if labels.is_empty() {
            values.insert(Vec::new(), 0);
        }
        Self {
            name,
            help,
            labels,
            values: Mutex::new(values),
        }
    }

    /// Adds one to the series with these label values (in the order of the names).
    pub fn inc(&self, values: &[&str]) {
        let mut g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry(key(values)).or_default() += 1;
    }

    /// Makes a series exist with 0, so alerts see it from the start.
    pub fn touch(&self, values: &[&str]) {
        let mut g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(key(values)).or_default();
    }

    /// The value of one series (0 when it does not exist).
    pub fn get(&self, values: &[&str]) -> u64 {
        let g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&key(values)).copied().unwrap_or(0)
    }

    /// The sum over every series.
    pub fn total(&self) -> u64 {
        let g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        g.values().sum()
    }

    /// Appends the metric's text.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, "counter", self.help);
        let g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for (k, n) in g.iter() {
            let _ = writeln!(out, "{}{} {n}", self.name, labels(self.labels, k, &[]));
        }
    }
}

#[derive(Debug, Clone)]
struct Series {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Series {
    fn empty(buckets: usize) -> Self {
        Self {
            counts: vec![0; buckets],
            sum: 0.0,
            count: 0,
        }
    }
}

/// A histogram with labels.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl Histogram {
    /// A histogram called `name` with these label names and bucket upper bounds (without
    /// labels, it exists with zero counts from the start).
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        let mut values = BTreeMap::new();
        if labels.is_empty() {
            values.insert(Vec::new(), Series::empty(buckets.len()));
        }
        Self {
            name,
            help,
            labels,
            buckets,
            values: Mutex::new(values),
        }
    }

    /// Records one observation in the series with these label values.
    pub fn observe(&self, values: &[&str], v: f64) {
        let mut g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let s = g
            .entry(key(values))
            .or_insert_with(|| Series::empty(self.buckets.len()));
        for (c, le) in s.counts.iter_mut().zip(self.buckets) {
            if v <= *le {
                *c += 1;
            }
        }
        s.sum += v;
        s.count += 1;
    }

    /// Number of observations in one series.
    pub fn count(&self, values: &[&str]) -> u64 {
        let g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        g.get(&key(values)).map_or(0, |s| s.count)
    }

    /// Appends the metric's text.
    pub fn render(&self, out: &mut String) {
        header(out, self.name, "histogram", self.help);
        let g = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.name;
        for (k, s) in g.iter() {
            for (le, c) in self.buckets.iter().zip(&s.counts) {
                let l = labels(self.labels, k, &[("le", &le.to_string())]);
                let _ = writeln!(out, "{n}_bucket{l} {c}");
            }
            let l = labels(self.labels, k, &[("le", "+Inf")]);
            let _ = writeln!(out, "{n}_bucket{l} {}", s.count);
            let l = labels(self.labels, k, &[]);
            let _ = writeln!(out, "{n}_sum{l} {}", s.sum);
            let _ = writeln!(out, "{n}_count{l} {}", s.count);
        }
    }
}

/// Request and authentication-failure metrics of one listener.
#[derive(Debug)]
pub struct HttpMetrics {
    /// `jit_http_requests_total{route,method,status}`.
    pub requests: Counter,
    /// `jit_http_request_duration_seconds{route,method}`.
    pub duration: Histogram,
    /// `jit_auth_failures_total{reason,key_id}`.
    pub auth_failures: Counter,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Counter::new(
                "jit_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            duration: Histogram::new(
                "jit_http_request_duration_seconds",
                "Time from request to response.",
                &["route", "method"],
                LATENCY_BUCKETS,
            ),
            auth_failures: Counter::new(
                "jit_auth_failures_total",
                "Refused signatures and tokens by reason and key id (`unknown` when the id is not in the ring, `none` for tokens without one).",
                &["reason", "key_id"],
            ),
        }
    }
}

impl HttpMetrics {
    /// Counts one finished request.
    pub fn observe(&self, route: &str, method: &str, status: u16, secs: f64) {
        self.requests.inc(&[route, method, &status.to_string()]);
        self.duration.observe(&[route, method], secs);
    }

    /// Counts one refused request. `key_id` must already be reduced to a known id, `unknown`
    /// or `none` by the caller.
    pub fn auth_failure(&self, reason: &str, key_id: &str) {
        self.auth_failures.inc(&[reason, key_id]);
    }

    /// Makes the refusal series of these reasons exist at 0 with `key_id`, so an alert on
    /// `increase()` sees the first refusal (a series born at 1 shows no increase).
    pub fn expect_refusals<'a>(&self, reasons: impl IntoIterator<Item = &'a str>, key_id: &str) {
        for r in reasons {
            self.auth_failures.touch(&[r, key_id]);
        }
    }

    /// Prometheus text for the counters so far.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.duration.render(&mut out);
        self.auth_failures.render(&mut out);
        out
    }
}

/// Router middleware (`middleware::from_fn_with_state(metrics, track)` as the outer layer of
/// a router): counts every request under its route template.
pub async fn track(
    axum::extract::State(m): axum::extract::State<Arc<HttpMetrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    m.observe(
        &route,
        &method,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// The method as a label: the standard ones by name, anything else `other` (hyper accepts any
/// token as a method, and each would otherwise be a new series).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

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
        for want in [
            "jit_http_requests_total{route=\"/requests\",method=\"POST\",status=\"201\"} 2",
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"0.005\"} 1",
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"0.25\"} 2",
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"5\"} 2",
            "jit_http_request_duration_seconds_bucket{route=\"/requests\",method=\"POST\",le=\"+Inf\"} 3",
            "jit_http_request_duration_seconds_count{route=\"/requests\",method=\"POST\"} 3",
            "jit_auth_failures_total{reason=\"bad_signature\",key_id=\"k\\\"1\"} 1",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m: axum::http::Method = "FOO123".parse().unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
    }

    #[test]
    fn unlabelled_metrics_and_touched_series() {
        let c = Counter::new("x_total", "X.", &[]);
        c.inc(&[]);
        let h = Histogram::new("y_seconds", "Y.", &[], &[1.0]);
        let mut before = String::new();
        h.render(&mut before);
        assert!(
            before.contains("y_seconds_count 0\n"),
            "exists before any observation"
        );
        h.observe(&[], 0.5);
        let r = Counter::new("z_total", "Z.", &["result"]);
        r.touch(&["error"]);
        let mut t = String::new();
        c.render(&mut t);
        h.render(&mut t);
        r.render(&mut t);
        for want in [
            "# TYPE x_total counter\nx_total 1\n",
            "y_seconds_bucket{le=\"1\"} 1\n",
            "y_seconds_bucket{le=\"+Inf\"} 1\n",
            "y_seconds_count 1\n",
            "z_total{result=\"error\"} 0\n",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}
