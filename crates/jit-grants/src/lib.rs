//! Access providers: what actually grants and removes access. Every call is idempotent: granting
//! what is already granted and removing what is already gone both succeed, so the lifecycle can
//! retry after any failure or crash without harm.
//!
//! - [`DryRunProvider`]: records what it would do (the embedded default).
//! - [`CommandProvider`]: any executable, with the target as JSON on stdin.
//! - [`IdentityCenterProvider`]: AWS IAM Identity Center account assignments.

mod aws;
mod command;
mod dry_run;

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
}
