//! Metrics as CloudWatch embedded-metric-format lines on stdout (which Lambda sends to
//! CloudWatch Logs, where they become metrics): the names of `/metrics`, no dimensions, so the
//! template's alarms read them as written.
//!
//! - At each tick: the store's counts (`jit_revocations_overdue`, `jit_grants_active`,
//!   `jit_jobs_late`, `jit_store_up`, `jit_callback_outbox_pending`).
//! - After each invocation: what the counters gained since the last line of this execution
//!   environment (`jit_auth_failures_total`, `jit_http_requests_total`), as counts to sum.

use jit_server::AppState;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes the lines; remembers the counters already reported.
#[derive(Debug)]
pub struct Emf {
    namespace: String,
    auth_failures: AtomicU64,
    requests: AtomicU64,
}

impl Emf {
    /// Lines in `namespace` (the template's alarms use `JitAccess`).
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            auth_failures: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// One EMF line with these values (`(name, value, unit)`).
    pub fn line(&self, at_ms: i64, values: &[(&str, f64, &str)]) -> String {
        let mut root = serde_json::Map::new();
        let metrics: Vec<serde_json::Value> = values
            .iter()
            .map(|(n, _, u)| serde_json::json!({"Name": n, "Unit": u}))
            .collect();
        root.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": at_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [[]],
                    "Metrics": metrics,
                }],
            }),
        );
        for (n, v, _) in values {
            root.insert((*n).to_owned(), serde_json::json!(v));
        }
        serde_json::Value::Object(root).to_string()
    }

    /// The tick's line: the store's counts (`jit_store_up` 0 alone when it did not answer).
    pub fn gauges(&self, g: Option<&jit_store::Gauges>, now: i64) {
        let Some(g) = g else {
            println!("{}", self.line(now, &[("jit_store_up", 0.0, "Count")]));
            return;
        };
        let count = |v: &[(String, i64)], k: &str| {
            v.iter()
                .find(|(s, _)| s == k)
                .map_or(0.0, |(_, n)| *n as f64)
        };
        let late: i64 = g.jobs_late_by_kind.iter().map(|(_, n)| n).sum();
        println!(
            "{}",
            self.line(
                now,
                &[
                    ("jit_store_up", 1.0, "Count"),
                    (
                        "jit_revocations_overdue",
                        count(&g.jobs_late_by_kind, "revoke"),
                        "Count"
                    ),
                    (
                        "jit_grants_active",
                        count(&g.requests_by_status, "GRANTED"),
                        "Count"
                    ),
                    ("jit_jobs_late", late as f64, "Count"),
                    (
                        "jit_callback_outbox_pending",
                        count(&g.outbox_by_status, "PENDING"),
                        "Count"
                    ),
                ],
            )
        );
    }

    /// After an invocation: what the request and refusal counters gained.
    pub fn invocation(&self, st: &AppState) {
        let auth = st.http_metrics.auth_failures.total();
        let reqs = st.http_metrics.requests.total();
        let d_auth = auth.saturating_sub(self.auth_failures.swap(auth, Ordering::Relaxed));
        let d_reqs = reqs.saturating_sub(self.requests.swap(reqs, Ordering::Relaxed));
        if d_auth == 0 && d_reqs == 0 {
            return;
        }
        println!(
            "{}",
            self.line(
                st.clock.now_ms(),
                &[
                    ("jit_auth_failures_total", d_auth as f64, "Count"),
                    ("jit_http_requests_total", d_reqs as f64, "Count"),
                ],
            )
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_line_is_what_cloudwatch_reads() {
        let e = Emf::new("JitAccess");
        let v: serde_json::Value = serde_json::from_str(&e.line(
            1_700_000_000_000,
            &[("jit_revocations_overdue", 2.0, "Count")],
        ))
        .unwrap();
        assert_eq!(v["jit_revocations_overdue"], 2.0);
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "JitAccess");
        assert_eq!(m["Metrics"][0]["Name"], "jit_revocations_overdue");
        assert_eq!(m["Dimensions"], serde_json::json!([[]]));
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}
