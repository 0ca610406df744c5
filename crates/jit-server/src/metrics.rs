//! The backend's own metrics for `GET /metrics`: the store's counts (requests by status, late
//! jobs, the callback outbox) read at scrape time, and the lifecycle's counters and histograms
//! (revocation lateness, provider calls, callback deliveries, reconciler and drift runs).
//! Request and authentication-failure metrics are [`jit_http::metrics::HttpMetrics`].

use jit_grants::{AccessProvider, Assigned, ProviderError, Target};
use jit_http::metrics::{CALL_BUCKETS, Counter, Histogram, header};
use std::fmt::Write as _;
use std::sync::Arc;

/// Buckets of the revocation lateness histogram, in seconds.
pub const LATENESS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Counters and histograms written by the lifecycle, the callback dispatcher and the
/// provider wrapper. Every result label that an alert reads exists from the start with 0.
#[derive(Debug)]
pub struct Metrics {
    /// `jit_revocation_lateness_seconds`: from a grant's end (or its revocation) to its access
    /// being removed.
    pub revocation_lateness: Histogram,
    /// `jit_provider_calls_total{provider,operation,result}`; result is `ok`, `retry`
    /// (temporary failure) or `permanent`.
    pub provider_calls: Counter,
    /// `jit_provider_call_duration_seconds{provider,operation}`.
    pub provider_duration: Histogram,
    /// `jit_callback_deliveries_total{result}`; result is `delivered`, `failed` (will be
    /// retried) or `dead` (became a dead letter).
    pub callback_deliveries: Counter,
    /// `jit_reconciler_runs_total{check,result}`; check is `jobs` (missing lifecycle jobs) or
    /// `drift` (assignments with no grant behind them), result `ok` or `error`.
    pub reconciler_runs: Counter,
    /// `jit_drift_assignments_total{action}`; action is `detected` or `removed`.
    pub drift_assignments: Counter,
    /// `jit_principal_lock_waits_total`: a job found its principal locked by another server
    /// (PostgreSQL) and waited.
    pub principal_lock_waits: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            revocation_lateness: Histogram::new(
                "jit_revocation_lateness_seconds",
                "Time from a grant's end (or its revocation) to its access being removed.",
                &[],
                LATENESS_BUCKETS,
            ),
            provider_calls: Counter::new(
                "jit_provider_calls_total",
                "Access provider calls by provider, operation and result (ok, retry, permanent).",
                &["provider", "operation", "result"],
            ),
            provider_duration: Histogram::new(
                "jit_provider_call_duration_seconds",
                "Access provider call latency.",
                &["provider", "operation"],
                CALL_BUCKETS,
            ),
            callback_deliveries: Counter::new(
                "jit_callback_deliveries_total",
                "Callback delivery attempts by result (delivered, failed, dead).",
                &["result"],
            ),
            reconciler_runs: Counter::new(
                "jit_reconciler_runs_total",
                "Reconciler runs by check (jobs, drift) and result (ok, error).",
                &["check", "result"],
            ),
            drift_assignments: Counter::new(
                "jit_drift_assignments_total",
                "Assignments this system made that no grant explains, by action (detected, removed).",
                &["action"],
            ),
            principal_lock_waits: Counter::new(
                "jit_principal_lock_waits_total",
                "Times a job waited for another server's job of the same user, account and permission set.",
                &[],
            ),
        };
        m.principal_lock_waits.touch(&[]);
        for r in ["delivered", "failed", "dead"] {
            m.callback_deliveries.touch(&[r]);
        }
        for c in ["jobs", "drift"] {
            for r in ["ok", "error"] {
                m.reconciler_runs.touch(&[c, r]);
            }
        }
        for a in ["detected", "removed"] {
            m.drift_assignments.touch(&[a]);
        }
        m
    }
}

impl Metrics {
    /// Prometheus text of everything here.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.revocation_lateness.render(&mut out);
        self.provider_calls.render(&mut out);
        self.provider_duration.render(&mut out);
        self.callback_deliveries.render(&mut out);
        self.reconciler_runs.render(&mut out);
        self.drift_assignments.render(&mut out);
        self.principal_lock_waits.render(&mut out);
        out
    }

    fn provider_call<T>(
        &self,
        provider: &str,
        op: &str,
        start: std::time::Instant,
        r: &Result<T, ProviderError>,
    ) {
        let result = match r {
            Ok(_) => "ok",
            Err(ProviderError::Retry(_)) => "retry",
            Err(ProviderError::Permanent(_)) => "permanent",
        };
        self.provider_calls.inc(&[provider, op, result]);
        self.provider_duration
            .observe(&[provider, op], start.elapsed().as_secs_f64());
    }
}

/// An access provider that counts and times every call of the one it wraps.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn AccessProvider>,
    metrics: Arc<Metrics>,
}

impl Metered {
    /// Wraps `inner`; its `grant` and `revoke` series exist from the start with 0.
    pub fn new(inner: Arc<dyn AccessProvider>, metrics: Arc<Metrics>) -> Self {
        for op in ["grant", "revoke"] {
            for r in ["ok", "retry", "permanent"] {
                metrics.provider_calls.touch(&[inner.name(), op, r]);
            }
        }
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl AccessProvider for Metered {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.inner.check().await
    }

    async fn grant(&self, target: &Target) -> Result<Assigned, ProviderError> {
        let start = std::time::Instant::now();
        let r = self.inner.grant(target).await;
        self.metrics.provider_call(self.name(), "grant", start, &r);
        r
    }

    async fn revoke(&self, target: &Target) -> Result<(), ProviderError> {
        let start = std::time::Instant::now();
        let r = self.inner.revoke(target).await;
        self.metrics.provider_call(self.name(), "revoke", start, &r);
        r
    }

    async fn session_duration(
        &self,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<jit_grants::SessionDuration>, ProviderError> {
        self.inner.session_duration(permission_set_arn).await
    }

    fn revokes_active_sessions(&self) -> bool {
        self.inner.revokes_active_sessions()
    }

    async fn revoke_active_sessions(
        &self,
        target: &Target,
        revoked_at: time::OffsetDateTime,
    ) -> Result<(), ProviderError> {
        let start = std::time::Instant::now();
        let r = self.inner.revoke_active_sessions(target, revoked_at).await;
        self.metrics
            .provider_call(self.name(), "revoke_sessions", start, &r);
        r
    }

    async fn assigned_users(
        &self,
        account_id: &str,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<Vec<String>>, ProviderError> {
        let start = std::time::Instant::now();
        let r = self
            .inner
            .assigned_users(account_id, permission_set_arn)
            .await;
        self.metrics
            .provider_call(self.name(), "list_assignments", start, &r);
        r
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

/// A gauge without labels.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A gauge with one label: every value in `keys`, 0 when `rows` has none for it.
fn gauge_by(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    keys: &[&str],
    rows: &[(String, i64)],
) {
    header(out, name, "gauge", help);
    for k in keys {
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {}", count(rows, k));
    }
}

fn count(rows: &[(String, i64)], k: &str) -> i64 {
    rows.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v)
}

/// Prometheus text for the store's counts. Every known label value is written, with 0 when
/// there are none, so an alert on `> 0` sees a series from the start. `None` (the store did not
/// answer) writes `jit_store_up 0` and nothing else.
pub fn render_gauges(g: Option<&jit_store::Gauges>, now_ms: i64) -> String {
    let mut out = String::new();
    gauge(
        &mut out,
        "jit_store_up",
        "Whether the store answered the metrics query.",
        u8::from(g.is_some()),
    );
    let Some(g) = g else { return out };
    gauge_by(
        &mut out,
        "jit_requests",
        "Requests by status.",
        "status",
        &STATUSES,
        &g.requests_by_status,
    );
    gauge(
        &mut out,
        "jit_grants_active",
        "Requests whose access is granted now.",
        count(&g.requests_by_status, "GRANTED"),
    );
    gauge_by(
        &mut out,
        "jit_jobs_late",
        "Lifecycle jobs more than a minute past due or that have failed at least once.",
        "kind",
        &["grant", "revoke", "timeout"],
        &g.jobs_late_by_kind,
    );
    gauge(
        &mut out,
        "jit_revocations_overdue",
        "Revocations more than a minute past due or failing.",
        count(&g.jobs_late_by_kind, "revoke"),
    );
    gauge_by(
        &mut out,
        "jit_callback_outbox_events",
        "Callback events by delivery status.",
        "status",
        &["PENDING", "DELIVERED", "DEAD"],
        &g.outbox_by_status,
    );
    let age = g
        .outbox_oldest_pending_ms
        .map_or(0.0, |t| ((now_ms - t).max(0) as f64) / 1000.0);
    gauge(
        &mut out,
        "jit_callback_outbox_oldest_pending_age_seconds",
        "Age of the oldest callback not yet delivered (0 when none).",
        age,
    );
    out
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
}
