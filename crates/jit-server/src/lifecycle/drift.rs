//! The drift check: who really holds the bound accounts' permission sets, against what this
//! system granted. Assignments it made that no grant and no standing assignment explain any
//! more are reported (or, with `drift.remove`, removed); users it never granted are left alone.

use super::Lifecycle;
use jit_core::audit::AuditDraft;
use jit_grants::Target;
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{StoreError, WriteCtx};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// An assignment found by the drift check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Account.
    pub account_id: String,
    /// Permission set.
    pub permission_set_arn: Option<String>,
    /// Who holds it.
    pub user_email: String,
    /// Whether it was removed.
    pub removed: bool,
}

impl Lifecycle {
    /// The drift check: lists who really holds each bound account's permission sets, and
    /// reports (or with `remove`, removes) assignments this system made that no grant, and no
    /// standing assignment, explains any more. Users this system never granted are left alone.
    pub async fn check_drift(&self, remove: bool) -> Result<Vec<Drift>, StoreError> {
        let mut complete = true;
        let r = self.check_drift_inner(remove, &mut complete).await;
        let ok = r.is_ok() && complete;
        self.st
            .metrics
            .reconciler_runs
            .inc(&["drift", if ok { "ok" } else { "error" }]);
        r
    }

    async fn check_drift_inner(
        &self,
        remove: bool,
        complete: &mut bool,
    ) -> Result<Vec<Drift>, StoreError> {
        let mut found = Vec::new();
        for b in self.st.store.list_bindings().await? {
            for (account, sets) in &b.accounts {
                let sets: Vec<Option<&str>> = if sets.is_empty() {
                    vec![None]
                } else {
                    sets.iter().map(|s| Some(s.as_str())).collect()
                };
                for ps in sets {
                    let real = match self.provider.assigned_users(account.as_str(), ps).await {
                        Ok(Some(u)) => u,
                        Ok(None) => continue,
                        Err(e) => {
                            *complete = false;
                            tracing::error!(account_id = %account, error = %e, "drift check could not list assignments");
                            continue;
                        }
                    };
                    for email in &real {
                        // Ours if we ever granted it, and not a grant being applied right now.
                        let h = self
                            .st
                            .store
                            .grant_history(email, account.as_str(), ps)
                            .await?;
                        if !h.ever_granted || h.in_flight {
                            continue;
                        }
                        let t = Target {
                            request_id: String::new(),
                            user_email: email.clone(),
                            account_id: account.as_str().to_owned(),
                            permission_set_arn: ps.map(str::to_owned),
                        };
                        if self
                            .st
                            .store
                            .get_assignment(&t.principal())
                            .await?
                            .is_some()
                        {
                            continue; // held by a running grant, or standing
                        }
                        let removed = remove && self.provider.revoke(&t).await.is_ok();
                        if remove && !removed {
                            *complete = false; // asked to remove and could not
                        }
                        let mut d = AuditDraft::new(if removed {
                            "drift.removed"
                        } else {
                            "drift.detected"
                        });
                        d.actor_id = Some("system".into());
                        d.account_id = Some(account.as_str().to_owned());
                        d.channel_id = Some(b.channel_id.as_str().to_owned());
                        d.data = json!({"user_email": email, "permission_set_arn": ps});
                        self.st
                            .store
                            .record(WriteCtx::with_audit(vec![d], self.st.clock.now()))
                            .await?;
                        self.st.metrics.drift_assignments.inc(&[if removed {
                            "removed"
                        } else {
                            "detected"
                        }]);
                        tracing::error!(target: "audit", account_id = %account, user_email = %email, removed,
                            "drift: an assignment this system made is still in place with no grant behind it");
                        found.push(Drift {
                            account_id: account.as_str().to_owned(),
                            permission_set_arn: ps.map(str::to_owned),
                            user_email: email.clone(),
                            removed,
                        });
                    }
                }
            }
        }
        Ok(found)
    }

    /// Runs the drift check every `interval` until `shutdown`.
    pub fn spawn_drift(
        self: &Arc<Self>,
        interval: Duration,
        remove: bool,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        crate::serve::every(interval, shutdown, false, move || {
            let this = Arc::clone(&this);
            async move {
                if let Err(e) = this.check_drift(remove).await {
                    tracing::error!(error = %e, "drift check failed");
                }
            }
        })
    }
}
