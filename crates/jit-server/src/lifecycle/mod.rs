//! The grant lifecycle: puts approved access in place, removes it exactly at its end, times out
//! pending requests, and retries every failed provider call with exponential backoff (capped at
//! five minutes) until it succeeds. Work lives in the `jobs` table, written with the state
//! change that made it due, so nothing is lost in a crash; servers lease jobs, so two servers
//! on one PostgreSQL never act on the same one at once.
//!
//! [`Lifecycle::run_due`] is the one-step function tests call with an injected clock;
//! [`Lifecycle::spawn`] runs it from a timer armed at the earliest due job (and re-armed on every
//! write), plus a reconciler at start and every `reconcile_interval`.

use crate::effects::effects;
use crate::state::AppState;
use jit_core::audit::AuditDraft;
use jit_core::request::{Request, State, Status};
use jit_core::types::RequestId;
use jit_grants::{AccessProvider, ProviderError, Target};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{AssignmentOp, Job, JobKind, JobOp, StoreError, WriteCtx};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

mod decide;
mod drift;
mod reconcile;

pub use decide::{Decision, Keep, Record, on_end, on_withdrawn};
pub use drift::Drift;

/// Longest wait between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a claimed job stays leased to this server without a heartbeat. The running job
/// renews it every [`HEARTBEAT`], so a server that dies frees its jobs within this time.
const LEASE_MS: i64 = 10_000;
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Jobs run at once. Provider calls are I/O (AWS API calls, a command that may run until its
/// timeout, Identity Center polling for up to two minutes), so the bound is wide: a slow or hung
/// call holds one slot and delays nobody else. Jobs of one principal still run one at a time.
pub const PARALLEL: usize = 256;

/// The lifecycle worker.
#[derive(Debug)]
pub struct Lifecycle {
    st: AppState,
    provider: Arc<dyn AccessProvider>,
    owner: String,
    reconcile_interval: Duration,
    /// Jobs for the same user, account and permission set run one at a time in this process,
    /// so overlapping grants see each other's assignment record.
    principals: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// True on SQLite: this is the only process, so leases left by a crash are void.
    release_leases_at_start: bool,
    /// Free slots of the worker loop ([`PARALLEL`]).
    slots: Arc<tokio::sync::Semaphore>,
}

/// A job's hold on its principal; released when dropped.
struct PrincipalHold {
    local: Option<tokio::sync::OwnedMutexGuard<()>>,
    db: Option<DbHold>,
}

struct DbHold {
    store: Arc<dyn jit_store::Store>,
    principal: String,
    owner: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for PrincipalHold {
    fn drop(&mut self) {
        if let Some(h) = self.db.take() {
            h.renew.abort();
            // Released at once in the background (holding the in-process lock until then, so
            // the next job here does not find its own server's row); should that fail, the
            // lease runs out.
            let local = self.local.take();
            tokio::spawn(async move {
                if let Err(e) = h.store.unlock_principal(&h.principal, &h.owner).await {
                    tracing::warn!(error = %e, "could not release a principal lock; it expires by itself");
                }
                drop(local);
            });
        }
    }
}

/// Delay before retry number `attempts + 1`: 1 s, 2 s, 4 s, … up to five minutes.
pub fn backoff(attempts: i64) -> Duration {
    let secs = 1u64
        .checked_shl(u32::try_from(attempts.clamp(0, 16)).unwrap_or(16))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

fn ms(t: OffsetDateTime) -> i64 {
    crate::effects_ms(t)
}

fn target(r: &Request) -> Target {
    Target {
        request_id: r.id.as_str().to_owned(),
        user_email: r.requester_email.as_str().to_owned(),
        account_id: r.account_id.as_str().to_owned(),
        permission_set_arn: r.permission_set_arn.as_ref().map(|p| p.as_str().to_owned()),
    }
}

fn system_draft(kind: &str, r: &Request, data: serde_json::Value) -> AuditDraft {
    let mut d = AuditDraft::new(kind);
    d.actor_id = Some("system".into());
    d.request_id = Some(r.id.as_str().to_owned());
    d.channel_id = Some(r.channel_id.as_str().to_owned());
    d.account_id = Some(r.account_id.as_str().to_owned());
    d.data = data;
    d
}

impl Lifecycle {
    /// A worker for `st` using `provider`; `owner` names this server in job leases;
    /// `single_process` (SQLite) releases leases left by a crash at start.
    pub fn new(
        st: AppState,
        provider: Arc<dyn AccessProvider>,
        owner: String,
        reconcile_interval: Duration,
        single_process: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            st,
            provider,
            owner,
            reconcile_interval,
            principals: Default::default(),
            release_leases_at_start: single_process,
            slots: Arc::new(tokio::sync::Semaphore::new(PARALLEL)),
        })
    }

    /// The worker loop's step: claims what is due, up to the free slots, and starts each job on
    /// its own task without waiting for it; returns how many it started. A finished job frees
    /// its slot and wakes the loop, so the next due job is claimed at once, while slow calls
    /// are still running.
    pub async fn pump(self: &Arc<Self>) -> Result<usize, StoreError> {
        const BATCH: usize = 64;
        let mut started = 0;
        loop {
            let free = self.slots.available_permits().min(BATCH);
            if free == 0 {
                return Ok(started);
            }
            let now = self.st.clock.now();
            let jobs = self
                .st
                .store
                .claim_jobs(
                    &self.owner,
                    ms(now),
                    LEASE_MS,
                    u32::try_from(free).unwrap_or(1),
                )
                .await?;
            let claimed = jobs.len();
            for job in jobs {
                // Only this loop takes slots, and it claimed no more than were free.
                let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
                    break;
                };
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    this.run_job(job).await;
                    drop(permit);
                    this.st.wake.notify_one();
                });
                started += 1;
            }
            if claimed < free {
                return Ok(started);
            }
        }
    }

    /// Runs every job due now; returns how many ran.
    pub async fn run_due(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let now = self.st.clock.now();
            let jobs = self
                .st
                .store
                .claim_jobs(&self.owner, ms(now), LEASE_MS, 64)
                .await?;
            if jobs.is_empty() {
                return Ok(total);
            }
            total += jobs.len();
            let mut set = tokio::task::JoinSet::new();
            for job in jobs {
                while set.len() >= PARALLEL {
                    let _ = set.join_next().await;
                }
                let this = Arc::clone(self);
                set.spawn(async move { this.run_job(job).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    async fn run_job(&self, job: Job) {
        let heartbeat = {
            let (store, clock, owner, kind, id) = (
                self.st.store.clone(),
                self.st.clock.clone(),
                self.owner.clone(),
                job.kind,
                job.request_id.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    let until = ms(clock.now()) + LEASE_MS;
                    if let Err(e) = store.renew_lease(kind, &id, &owner, until).await {
                        tracing::warn!(request_id = %id, error = %e, "could not renew a job lease");
                    }
                }
            })
        };
        let outcome = match job.kind {
            JobKind::Grant => self.grant(&job).await,
            JobKind::Revoke => self.revoke(&job).await,
            JobKind::Timeout => self.time_out(&job).await,
        };
        heartbeat.abort();
        if let Err(e) = outcome {
            let now = self.st.clock.now();
            // Claims count attempts: the first run has attempts = 1.
            let delay = backoff(job.attempts.saturating_sub(1));
            let retry_at = ms(now) + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            let overdue_s = (ms(now) - job.due_ms) / 1000;
            if job.kind == JobKind::Revoke && overdue_s > 0 {
                tracing::error!(request_id = %job.request_id, overdue_seconds = overdue_s, attempts = job.attempts,
                    error = %e, retry_in_s = delay.as_secs(), "revocation overdue: access is still in place past its end");
            } else {
                tracing::warn!(request_id = %job.request_id, job = job.kind.as_str(), attempts = job.attempts,
                    error = %e, retry_in_s = delay.as_secs(), "job failed; will retry");
            }
            if let Err(e) = self
                .st
                .store
                .retry_job(job.kind, &job.request_id, retry_at, &e.to_string())
                .await
            {
                tracing::error!(request_id = %job.request_id, error = %e, "could not record the job failure; the lease expiry will retry it");
            }
        }
    }

    /// Holds `principal` for one job: in this process (a mutex), and on PostgreSQL across every
    /// server on the database (a leased row in `principal_locks`, renewed every [`HEARTBEAT`],
    /// free again within [`LEASE_MS`] of a crash). So an overlapping grant and revoke of one
    /// user's access never interleave, on one server or on two.
    async fn hold_principal(
        &self,
        principal: &str,
        request_id: &str,
    ) -> Result<PrincipalHold, JobError> {
        let local = self.principal_lock(principal).lock_owned().await;
        if self.release_leases_at_start {
            // SQLite: this is the only process; the mutex is the whole lock.
            return Ok(PrincipalHold {
                local: Some(local),
                db: None,
            });
        }
        let owner = format!("{}:{request_id}", self.owner);
        let mut wait = Duration::from_millis(20);
        loop {
            let now = ms(self.st.clock.now());
            if self
                .st
                .store
                .lock_principal(principal, &owner, now + LEASE_MS, now)
                .await?
            {
                break;
            }
            self.st.metrics.principal_lock_waits.inc(&[]);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
        let renew = {
            let (store, clock, principal, owner) = (
                self.st.store.clone(),
                self.st.clock.clone(),
                principal.to_owned(),
                owner.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    let until = ms(clock.now()) + LEASE_MS;
                    match store.renew_principal_lock(&principal, &owner, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(%principal, "lost a principal lock (expired); another server may run its jobs now")
                        }
                        Err(e) => tracing::warn!(error = %e, "could not renew a principal lock"),
                    }
                }
            })
        };
        Ok(PrincipalHold {
            local: Some(local),
            db: Some(DbHold {
                store: self.st.store.clone(),
                principal: principal.to_owned(),
                owner,
                renew,
            }),
        })
    }

    fn principal_lock(&self, principal: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.principals.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(principal.to_owned()).or_default().clone()
    }

    async fn load(&self, request_id: &RequestId) -> Result<Option<Request>, JobError> {
        Ok(self.st.store.get_request(request_id).await?)
    }

    async fn done(&self, kind: JobKind, r: &Request) -> Result<(), JobError> {
        // A job whose request moved on: remove it without touching the request.
        let mut ctx = WriteCtx::with_audit(vec![], self.st.clock.now());
        ctx.jobs.push(JobOp::Remove {
            kind,
            request_id: r.id.clone(),
        });
        self.st.store.record(ctx).await?;
        Ok(())
    }

    async fn commit(
        &self,
        prev: &Request,
        next: &Request,
        audit: Vec<AuditDraft>,
        extra: Vec<AssignmentOp>,
    ) -> Result<(), JobError> {
        let now = self.st.clock.now();
        let mut ctx = WriteCtx::with_audit(audit, now);
        let (jobs, outbox) = effects(
            Some(prev),
            next,
            None,
            now,
            hex::encode(self.st.random_id()),
            self.st.callback_style,
        );
        ctx.jobs = jobs;
        ctx.outbox = outbox;
        ctx.assignments = extra;
        self.st.store.update_request(next, ctx).await?;
        self.st.wake.notify_one();
        Ok(())
    }

    /// Whether another grant of ours still needs `t`'s assignment.
    /// Active grants of the same user, account and permission set, other than `except`.
    async fn other_grants(&self, t: &Target, except: &RequestId) -> Result<Vec<Request>, JobError> {
        Ok(self
            .st
            .store
            .active_grants_for(
                &t.user_email,
                &t.account_id,
                t.permission_set_arn.as_deref(),
                except,
            )
            .await?)
    }

    async fn covered_by_others(
        &self,
        t: &Target,
        except: &RequestId,
        now: OffsetDateTime,
    ) -> Result<bool, JobError> {
        let others = self.other_grants(t, except).await?;
        Ok(others.iter().any(|o| o.ends_at().is_some_and(|e| e > now)))
    }

    async fn record_assignment(&self, op: AssignmentOp) -> Result<(), JobError> {
        let mut ctx = WriteCtx::with_audit(vec![], self.st.clock.now());
        ctx.assignments.push(op);
        self.st.store.record(ctx).await?;
        Ok(())
    }

    async fn grant(&self, job: &Job) -> Result<(), JobError> {
        let Some(r) = self.load(&job.request_id).await? else {
            return Ok(());
        };
        let t = target(&r);
        let principal = t.principal();
        let _held = self.hold_principal(&principal, r.id.as_str()).await?;
        let record = self.st.store.get_assignment(&principal).await?;
        if r.status() != Status::Approved {
            // Withdrawn before it was granted. If an earlier attempt put the access in place
            // (its provider call succeeded, its commit did not), take it away again.
            // A failed earlier attempt (attempts > 1) may have made it without recording it (the
            // provider did its part, then timed out): removing is the safe side.
            let covered = self
                .covered_by_others(&t, &r.id, self.st.clock.now())
                .await?;
            if on_withdrawn(Record::from_store(record), covered, job.attempts) == Decision::Remove {
                self.provider.revoke(&t).await.map_err(JobError::Provider)?;
                self.record_assignment(AssignmentOp::Remove { principal })
                    .await?;
                let d = system_draft(
                    "request.access_removed",
                    &r,
                    json!({"assignment_removed": true, "stage": "withdrawn before grant"}),
                );
                self.st
                    .store
                    .record(WriteCtx::with_audit(vec![d], self.st.clock.now()))
                    .await?;
            }
            return self.done(JobKind::Grant, &r).await;
        }
        let standing = match record {
            // Another grant of ours holds it: nothing to call.
            Some(false) => false,
            // Standing: make sure it is (still) there; it stays standing.
            Some(true) => {
                if let Err(e) = self.provider.grant(&t).await {
                    return self.grant_failed(&r, e).await;
                }
                true
            }
            None => match self.provider.grant(&t).await {
                Ok(a) => {
                    // "Already assigned" means standing only on the first attempt, with no grant
                    // of ours covering it: a retry may be finding what an earlier attempt made,
                    // and mistaking our own grant for a standing one would leave access forever.
                    let standing = a.pre_existing
                        && job.attempts <= 1
                        && self.other_grants(&t, &r.id).await?.is_empty();
                    // Recorded at once, before the request moves on: a retry then never calls
                    // the provider again and never misreads its own grant.
                    self.record_assignment(AssignmentOp::Add {
                        principal,
                        standing,
                    })
                    .await?;
                    standing
                }
                Err(e) => return self.grant_failed(&r, e).await,
            },
        };
        let now = self.st.clock.now();
        let next = r.grant(now).map_err(|e| JobError::Store(e.message))?;
        let d = system_draft(
            "request.granted",
            &next,
            json!({"granted_at": crate::views::ts(now), "end_time": next.ends_at().map(crate::views::ts),
                   "provider": self.provider.name(), "standing_assignment": standing}),
        );
        self.commit(&r, &next, vec![d], vec![]).await
    }

    async fn grant_failed(&self, r: &Request, e: ProviderError) -> Result<(), JobError> {
        match e {
            ProviderError::Permanent(m) => {
                let now = self.st.clock.now();
                let next = r
                    .fail(format!("granting access failed: {m}"), now)
                    .map_err(|e| JobError::Store(e.message))?;
                let d = system_draft(
                    "request.error",
                    r,
                    json!({"stage": "grant", "error": m, "provider": self.provider.name()}),
                );
                tracing::error!(request_id = %r.id, error = %m, "grant failed permanently; the request needs a human");
                self.commit(r, &next, vec![d], vec![]).await
            }
            e => Err(JobError::Provider(e)),
        }
    }

    async fn revoke(&self, job: &Job) -> Result<(), JobError> {
        let Some(r) = self.load(&job.request_id).await? else {
            return Ok(());
        };
        let now = self.st.clock.now();
        let ended_early = match (&r.state, r.ends_at()) {
            (State::Granted(_), Some(end)) if end > now => {
                // Extended since the job was scheduled: move it.
                let mut ctx = WriteCtx::with_audit(vec![], now);
                ctx.jobs.push(JobOp::Schedule {
                    kind: JobKind::Revoke,
                    request_id: r.id.clone(),
                    due_ms: ms(end),
                });
                self.st.store.record(ctx).await?;
                return Ok(());
            }
            (State::Granted(_), _) => false,
            (State::Revoked(c), _) if c.granted.is_some() => true,
            (
                State::Error {
                    granted: Some(_), ..
                },
                _,
            ) => true,
            _ => return self.done(JobKind::Revoke, &r).await,
        };
        let t = target(&r);
        let principal = t.principal();
        let _held = self.hold_principal(&principal, r.id.as_str()).await?;
        // Another grant of the same user, account and permission set still running keeps the
        // shared assignment; a standing assignment is never removed (and its record is kept, so
        // the drift check knows it).
        let covered = self.covered_by_others(&t, &r.id, now).await?;
        let record = Record::from_store(self.st.store.get_assignment(&principal).await?);
        let standing = record == Record::Standing;
        let mut ops = Vec::new();
        let removed = on_end(record, covered) == Decision::Remove;
        if removed {
            self.provider.revoke(&t).await.map_err(JobError::Provider)?;
            ops.push(AssignmentOp::Remove { principal });
        }
        // Removing the assignment leaves sessions already open running until their session
        // duration ends. On an early end, and only when the assignment really went (no other
        // grant or standing assignment gives the user this access still), the provider may
        // revoke them (opt-in, `grants.revoke_active_sessions`): it edits the permission set's
        // inline policy, so such edits run one at a time per permission set, across servers.
        // A retry runs it again with a later time, which is safe: nothing of ours gives the user
        // this access any more (`covered` is checked on every attempt).
        let sessions_revoked = ended_early && removed && self.provider.revokes_active_sessions();
        if sessions_revoked {
            let policy = format!(
                "inline-policy|{}",
                t.permission_set_arn.as_deref().unwrap_or("")
            );
            let _one_edit = self.hold_principal(&policy, r.id.as_str()).await?;
            self.provider
                .revoke_active_sessions(&t, self.st.clock.now())
                .await
                .map_err(JobError::Provider)?;
        }
        // Lateness runs to the moment the access is gone (after the provider call): from the
        // grant's end, or for a revocation from the moment it was revoked.
        let removed_at = ms(self.st.clock.now());
        let due = match &r.state {
            State::Revoked(c) => Some(c.at),
            _ => r.ends_at(),
        };
        let late_ms = due.map(|e| removed_at - ms(e)).unwrap_or(0);
        let lateness = |late_ms: i64| {
            self.st
                .metrics
                .revocation_lateness
                .observe(&[], late_ms.max(0) as f64 / 1000.0);
        };
        if ended_early {
            // REVOKED (or ERROR) already; record that the access is gone and drop the job.
            let d = system_draft(
                "request.access_removed",
                &r,
                json!({"assignment_removed": removed, "kept_for_other_grant": covered, "standing_assignment": standing,
                       "active_sessions_revoked": sessions_revoked}),
            );
            let mut ctx = WriteCtx::with_audit(vec![d], now);
            ctx.jobs.push(JobOp::Remove {
                kind: JobKind::Revoke,
                request_id: r.id.clone(),
            });
            ctx.assignments = ops;
            self.st.store.record(ctx).await?;
            lateness(late_ms);
            return Ok(());
        }
        let next = r.expire(now).map_err(|e| JobError::Store(e.message))?;
        let d = system_draft(
            "request.expired",
            &next,
            json!({"late_ms": late_ms, "assignment_removed": removed, "kept_for_other_grant": covered, "standing_assignment": standing}),
        );
        match self.commit(&r, &next, vec![d], ops).await {
            Ok(()) => {
                tracing::info!(request_id = %r.id, late_ms, "grant ended");
                lateness(late_ms);
                Ok(())
            }
            Err(e) => {
                // The request changed while its access was being removed (extended at the last
                // moment): if it still runs, put the access back before retrying.
                if removed
                    && let Ok(Some(fresh)) = self.load(&job.request_id).await
                    && fresh.status() == Status::Granted
                    && fresh.ends_at().is_some_and(|end| end > self.st.clock.now())
                {
                    tracing::warn!(request_id = %r.id, "grant extended while ending; restoring its access");
                    self.provider.grant(&t).await.map_err(JobError::Provider)?;
                }
                Err(e)
            }
        }
    }

    async fn time_out(&self, job: &Job) -> Result<(), JobError> {
        let Some(r) = self.load(&job.request_id).await? else {
            return Ok(());
        };
        if r.status() != Status::Pending {
            return self.done(JobKind::Timeout, &r).await;
        }
        let now = self.st.clock.now();
        let next = r.time_out(now).map_err(|e| JobError::Store(e.message))?;
        let d = system_draft(
            "request.timed_out",
            &next,
            json!({"pending_deadline": crate::views::ts(r.pending_deadline)}),
        );
        self.commit(&r, &next, vec![d], vec![]).await
    }

    /// Runs the timer loop until `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if this.release_leases_at_start
                && let Err(e) = this.st.store.release_all_leases().await
            {
                tracing::error!(error = %e, "could not release old job leases");
            }
            match this.recreate_missing_jobs().await {
                Ok(_) => this.st.metrics.reconciler_runs.inc(&["jobs", "ok"]),
                Err(e) => {
                    this.st.metrics.reconciler_runs.inc(&["jobs", "error"]);
                    tracing::error!(error = %e, "reconciler failed at start");
                }
            }
            let mut last_reconcile = tokio::time::Instant::now();
            loop {
                // Sleep until the earliest due job, at most one second (so jobs written by
                // another server are noticed promptly) and until the next reconcile.
                let now_ms = ms(this.st.clock.now());
                let next = this.st.store.next_job_due().await.ok().flatten();
                let wait_ms = next.map_or(1000, |d| (d - now_ms).clamp(0, 1000));
                let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1000));
                tokio::select! {
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() { break; }
                    }
                    _ = this.st.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                let result = if last_reconcile.elapsed() >= this.reconcile_interval {
                    last_reconcile = tokio::time::Instant::now();
                    let r = this.recreate_missing_jobs().await;
                    this.st
                        .metrics
                        .reconciler_runs
                        .inc(&["jobs", if r.is_ok() { "ok" } else { "error" }]);
                    match r {
                        Ok(_) => this.pump().await,
                        Err(e) => Err(e),
                    }
                } else {
                    this.pump().await
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "lifecycle step failed; retrying");
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Provider(ProviderError),
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes_and_never_stops() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(10_000), MAX_BACKOFF);
    }
}
