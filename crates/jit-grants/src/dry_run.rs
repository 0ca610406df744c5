//! The embedded default: records what it would do and keeps the resulting assignments in
//! memory, so the whole lifecycle runs without a cloud account.

use crate::{AccessProvider, Assigned, ProviderError, SessionDuration, Target};
use async_trait::async_trait;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRunCall {
    /// A grant.
    Grant(String),
    /// A revoke.
    Revoke(String),
    /// Open sessions of a principal revoked (only with [`DryRunProvider::with_sessions`]).
    RevokeSessions(String),
}

/// Records calls; optionally fails the next calls (for tests of retries).
#[derive(Debug, Default)]
pub struct DryRunProvider {
    inner: Mutex<Inner>,
    /// The session duration it pretends permission sets have, when it plays sessions.
    sessions: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    assigned: BTreeSet<String>,
    calls: Vec<DryRunCall>,
    failures: VecDeque<ProviderError>,
    after: VecDeque<ProviderError>,
}

impl DryRunProvider {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plays a provider whose access lives on in role sessions (for tests of what surrounds
    /// them): every permission set's session lasts `duration` (ISO 8601; the default one is
    /// called `default`), and revoking active sessions is on and recorded as
    /// [`DryRunCall::RevokeSessions`].
    pub fn with_sessions(mut self, duration: &str) -> Self {
        self.sessions = Some(duration.to_owned());
        self
    }

    /// Marks a principal as already assigned (a standing assignment made outside this system).
    pub fn preassign(&self, principal: &str) {
        if let Ok(mut i) = self.inner.lock() {
            i.assigned.insert(principal.to_owned());
        }
    }

    /// Makes the next calls fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = ProviderError>) {
        if let Ok(mut i) = self.inner.lock() {
            i.failures.extend(errors);
        }
    }

    /// Makes the next calls do their work and then fail anyway (a provider that timed out
    /// after acting), in order.
    pub fn succeed_then_fail_next(&self, errors: impl IntoIterator<Item = ProviderError>) {
        if let Ok(mut i) = self.inner.lock() {
            i.after.extend(errors);
        }
    }

    /// Whether a principal is assigned now.
    pub fn is_assigned(&self, principal: &str) -> bool {
        self.inner
            .lock()
            .map(|i| i.assigned.contains(principal))
            .unwrap_or(false)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<DryRunCall> {
        self.inner
            .lock()
            .map(|i| i.calls.clone())
            .unwrap_or_default()
    }

    /// The state, for one provider call: an injected failure, when one is queued, is that
    /// call's answer.
    fn next_call(&self) -> Result<std::sync::MutexGuard<'_, Inner>, ProviderError> {
        let mut i = self
            .inner
            .lock()
            .map_err(|_| ProviderError::Retry("lock poisoned".into()))?;
        match i.failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(i),
        }
    }

    fn call(&self, target: &Target, grant: bool) -> Result<bool, ProviderError> {
        let mut i = self.next_call()?;
        let p = target.principal();
        let out = if grant {
            i.calls.push(DryRunCall::Grant(p.clone()));
            let pre = !i.assigned.insert(p);
            tracing::info!(request_id = %target.request_id, account_id = %target.account_id, pre_existing = pre, "dry-run: would grant");
            pre
        } else {
            i.calls.push(DryRunCall::Revoke(p.clone()));
            i.assigned.remove(&p);
            tracing::info!(request_id = %target.request_id, account_id = %target.account_id, "dry-run: would revoke");
            false
        };
        match i.after.pop_front() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[async_trait]
impl AccessProvider for DryRunProvider {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    async fn grant(&self, target: &Target) -> Result<Assigned, ProviderError> {
        self.call(target, true)
            .map(|pre_existing| Assigned { pre_existing })
    }

    async fn revoke(&self, target: &Target) -> Result<(), ProviderError> {
        self.call(target, false).map(|_| ())
    }

    async fn session_duration(
        &self,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<SessionDuration>, ProviderError> {
        Ok(self.sessions.as_ref().map(|d| SessionDuration {
            permission_set_arn: permission_set_arn.unwrap_or("default").to_owned(),
            duration: d.clone(),
        }))
    }

    fn revokes_active_sessions(&self) -> bool {
        self.sessions.is_some()
    }

    async fn revoke_active_sessions(
        &self,
        target: &Target,
        _revoked_at: time::OffsetDateTime,
    ) -> Result<(), ProviderError> {
        if self.sessions.is_none() {
            return Ok(());
        }
        let mut i = self.next_call()?;
        i.calls.push(DryRunCall::RevokeSessions(target.principal()));
        tracing::info!(request_id = %target.request_id, account_id = %target.account_id, "dry-run: would revoke open sessions");
        Ok(())
    }

    async fn assigned_users(
        &self,
        account_id: &str,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<Vec<String>>, ProviderError> {
        let i = self
            .inner
            .lock()
            .map_err(|_| ProviderError::Retry("lock poisoned".into()))?;
        let suffix = format!("|{account_id}|{}", permission_set_arn.unwrap_or(""));
        Ok(Some(
            i.assigned
                .iter()
                .filter_map(|p| p.strip_suffix(&suffix).map(str::to_owned))
                .collect(),
        ))
    }
}
