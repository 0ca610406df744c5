//! Access providers: what actually grants and removes access. Every call is idempotent: granting
//! what is already granted and removing what is already gone both succeed, so the lifecycle can
//! retry after any failure or crash without harm.
//!
//! - [`DryRunProvider`]: records what it would do (the embedded default).
//! - [`CommandProvider`]: any executable, with the target as JSON on stdin.
//! - [`IdentityCenterProvider`]: AWS IAM Identity Center account assignments (and, opt-in,
//!   ending the sessions an early revoke leaves open: [`sessions`]).

mod aws;
mod command;
mod dry_run;
pub mod sessions;

pub use aws::{IdentityCenterProvider, Polling};
pub use command::CommandProvider;
pub use dry_run::{DryRunCall, DryRunProvider};

use async_trait::async_trait;
use serde::Serialize;

/// Who gets access to what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    /// The request this is for (for logs and the command provider's input).
    pub request_id: String,
    /// The user, by email (IAM Identity Center looks users up by it).
    pub user_email: String,
    /// The AWS account.
    pub account_id: String,
    /// The permission set, when the binding names one.
    pub permission_set_arn: Option<String>,
}

impl Target {
    /// The key under which overlapping grants share one assignment.
    pub fn principal(&self) -> String {
        format!(
            "{}|{}|{}",
            self.user_email,
            self.account_id,
            self.permission_set_arn.as_deref().unwrap_or("")
        )
    }
}

/// What a grant found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The assignment existed before this call (a standing assignment): never remove it.
    pub pre_existing: bool,
}

/// How long a role session opened through a permission set lasts: what access outlives a
/// revoke by, since removing an assignment does not end sessions already open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDuration {
    /// The permission set (the provider's default when the binding names none).
    pub permission_set_arn: String,
    /// ISO 8601, as IAM Identity Center writes it (`PT1H` by default, at most `PT12H`).
    pub duration: String,
}

/// A provider failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later (throttling, timeouts, exit code 75).
    #[error("temporary failure: {0}")]
    Retry(String),
    /// Will not succeed without a human (unknown user, bad permission set, exit code ≠ 0/75).
    #[error("failed: {0}")]
    Permanent(String),
}

/// Grants and removes access.
#[async_trait]
pub trait AccessProvider: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Puts the assignment in place (success if it already is).
    async fn grant(&self, target: &Target) -> Result<Assigned, ProviderError>;

    /// Removes the assignment (success if it is already gone).
    async fn revoke(&self, target: &Target) -> Result<(), ProviderError>;

    /// Whether the provider can work now (reachable, configured instance found), checked at
    /// start and by `/readyz` until it passes. The default has nothing to check.
    async fn check(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Emails (lowercase) of the users who hold the assignment of `permission_set_arn` on
    /// `account_id` now, for the drift check; `None` when the provider cannot list them.
    async fn assigned_users(
        &self,
        _account_id: &str,
        _permission_set_arn: Option<&str>,
    ) -> Result<Option<Vec<String>>, ProviderError> {
        Ok(None)
    }

    /// How long a role session of `permission_set_arn` (or of the provider's default) lasts,
    /// for operators to see what a revoke leaves running; `None` when the provider has no such
    /// notion.
    async fn session_duration(
        &self,
        _permission_set_arn: Option<&str>,
    ) -> Result<Option<SessionDuration>, ProviderError> {
        Ok(None)
    }

    /// Whether [`AccessProvider::revoke_active_sessions`] does anything (it is opt-in); the
    /// lifecycle then runs those calls one at a time per permission set.
    fn revokes_active_sessions(&self) -> bool {
        false
    }

    /// After an early revoke removed `target`'s assignment: makes the user's sessions opened
    /// before `revoked_at` useless, since removing the assignment leaves them running until
    /// their session duration ends. Idempotent (a retried revoke calls it again). The default
    /// does nothing.
    async fn revoke_active_sessions(
        &self,
        _target: &Target,
        _revoked_at: time::OffsetDateTime,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}
