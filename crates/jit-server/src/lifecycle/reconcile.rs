//! The reconciler: every request that needs work has its job (one lost to a bug or a manual
//! edit is recreated), then what is due runs. At start and every `reconcile_interval_secs`.

use super::{Lifecycle, ms};
use jit_core::request::Status;
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{JobKind, JobOp, StoreError, WriteCtx};
use std::sync::Arc;

impl Lifecycle {
    /// Makes sure every request that needs work has its job (a job lost to a bug or a manual
    /// edit is recreated), then runs what is due.
    pub async fn reconcile(self: &Arc<Self>) -> Result<usize, StoreError> {
        let r = self.recreate_missing_jobs().await;
        self.st
            .metrics
            .reconciler_runs
            .inc(&["jobs", if r.is_ok() { "ok" } else { "error" }]);
        let created = r?;
        let ran = self.run_due().await?;
        Ok(created + ran)
    }

    /// Pages through every live request whose job is missing (an indexed anti-join on the
    /// request's status), so the work is in the live requests and memory in one page, however
    /// many there are.
    pub(super) async fn recreate_missing_jobs(&self) -> Result<usize, StoreError> {
        const PAGE: u32 = 500;
        let now = self.st.clock.now();
        let mut created = 0;
        for (status, kind) in [
            (Status::Approved, JobKind::Grant),
            (Status::Granted, JobKind::Revoke),
            (Status::Pending, JobKind::Timeout),
        ] {
            let mut after = None;
            loop {
                let (page, next) = self
                    .st
                    .store
                    .requests_missing_job(status, kind, after.take(), PAGE)
                    .await?;
                for r in &page {
                    let due = match kind {
                        JobKind::Grant => now,
                        JobKind::Revoke => r.ends_at().unwrap_or(now),
                        JobKind::Timeout => r.pending_deadline,
                    };
                    let mut ctx = WriteCtx::with_audit(vec![], now);
                    ctx.jobs.push(JobOp::Ensure {
                        kind,
                        request_id: r.id.clone(),
                        due_ms: ms(due),
                    });
                    self.st.store.record(ctx).await?;
                    tracing::warn!(request_id = %r.id, job = kind.as_str(), "reconciler recreated a missing job");
                    created += 1;
                }
                match next {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
        }
        Ok(created)
    }
}
