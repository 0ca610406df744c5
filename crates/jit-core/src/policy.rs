//! Channel bindings and their policy. A channel is bound to one or more AWS accounts, each with
//! the permission sets that may be requested there; the channel's policy says who approves and
//! within which limits.

use crate::error::ErrorCode;

use crate::error::DomainError;
use crate::types::{AccountId, DurationMinutes, PermissionSetArn, UserId};
use serde::Serialize;
use std::collections::BTreeMap;

/// The approval policy of a channel binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Mattermost user ids who may approve or deny.
    pub approvers: Vec<UserId>,
    /// Distinct approvals needed (the requester never counts unless self-approval is allowed).
    pub required_approvals: u32,
    /// Whether a requester who is also an approver may approve their own request.
    pub allow_self_approval: bool,
    /// Longest grant, in hours.
    pub max_request_hours: u32,
    /// A pending request times out after this many minutes.
    pub pending_timeout_minutes: u32,
    /// Whether a ticket reference is mandatory.
    pub require_ticket: bool,
    /// Whether a ticket or a reason (either one) is mandatory: the old backend's rule, which
    /// bindings made through the existing plugin get.
    pub require_ticket_or_reason: bool,
    /// Whether requesters may grant themselves short access without approval (reviewed later).
    pub break_glass_enabled: bool,
    /// Longest break-glass grant, in minutes.
    pub break_glass_max_minutes: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            approvers: Vec::new(),
            required_approvals: 1,
            allow_self_approval: false,
            max_request_hours: 4,
            pending_timeout_minutes: 8 * 60,
            require_ticket: true,
            require_ticket_or_reason: false,
            break_glass_enabled: false,
            break_glass_max_minutes: 60,
        }
    }
}

/// A partial policy update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyPatch {
    /// New approver list.
    pub approvers: Option<Vec<UserId>>,
    /// New N.
    pub required_approvals: Option<u32>,
    /// New self-approval switch.
    pub allow_self_approval: Option<bool>,
    /// New maximum hours.
    pub max_request_hours: Option<u32>,
    /// New pending timeout.
    pub pending_timeout_minutes: Option<u32>,
    /// New ticket rule.
    pub require_ticket: Option<bool>,
    /// New ticket-or-reason rule.
    pub require_ticket_or_reason: Option<bool>,
    /// New break-glass switch.
    pub break_glass_enabled: Option<bool>,
    /// New break-glass limit.
    pub break_glass_max_minutes: Option<u32>,
}

impl Policy {
    /// Applies `patch` and validates the result.
    pub fn apply(&self, patch: &PolicyPatch) -> Result<Self, DomainError> {
        let mut p = self.clone();
        if let Some(a) = &patch.approvers {
            let mut a = a.clone();
            a.sort();
            a.dedup();
            p.approvers = a;
        }
        if let Some(v) = patch.required_approvals {
            p.required_approvals = v;
        }
        if let Some(v) = patch.allow_self_approval {
            p.allow_self_approval = v;
        }
        if let Some(v) = patch.max_request_hours {
            p.max_request_hours = v;
        }
        if let Some(v) = patch.pending_timeout_minutes {
            p.pending_timeout_minutes = v;
        }
        if let Some(v) = patch.require_ticket {
            p.require_ticket = v;
        }
        if let Some(v) = patch.require_ticket_or_reason {
            p.require_ticket_or_reason = v;
        }
        if let Some(v) = patch.break_glass_enabled {
            p.break_glass_enabled = v;
        }
        if let Some(v) = patch.break_glass_max_minutes {
            p.break_glass_max_minutes = v;
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks the limits every policy must respect.
    pub fn validate(&self) -> Result<(), DomainError> {
        if !(1..=20).contains(&self.required_approvals) {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                "required approvals must be 1 to 20",
            ));
        }
        if !self.approvers.is_empty() && self.required_approvals as usize > self.approvers.len() {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                format!(
                    "{} approvals required but only {} approvers",
                    self.required_approvals,
                    self.approvers.len()
                ),
            ));
        }
        if self.approvers.len() > 100 {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                "at most 100 approvers",
            ));
        }
        if !(1..=168).contains(&self.max_request_hours) {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                "max request hours must be 1 to 168",
            ));
        }
        if !(1..=DurationMinutes::MAX).contains(&self.pending_timeout_minutes) {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                "pending timeout must be 1 minute to 7 days",
            ));
        }
        if !(1..=24 * 60).contains(&self.break_glass_max_minutes) {
            return Err(DomainError::rule(
                ErrorCode::InvalidPolicy,
                "break-glass maximum must be 1 to 1,440 minutes",
            ));
        }
        Ok(())
    }

    /// Whether `user` is an approver.
    pub fn is_approver(&self, user: &UserId) -> bool {
        self.approvers.contains(user)
    }

    /// Longest normal grant.
    pub fn max_minutes(&self) -> u32 {
        self.max_request_hours.saturating_mul(60)
    }
}

/// A channel's bindings: accounts and their permission sets, plus the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The bound channel.
    pub channel_id: crate::types::ChannelId,
    /// Account → permission sets that may be requested (may be empty: the server's default
    /// permission set, or the provider's, applies).
    pub accounts: BTreeMap<AccountId, Vec<PermissionSetArn>>,
    /// The approval policy.
    pub policy: Policy,
    /// When it was last saved (`None` before the first save).
    pub updated_at: Option<time::OffsetDateTime>,
    /// Increments on every change; updates are compare-and-set on it.
    pub version: i64,
}

impl Binding {
    /// Picks the permission set for a request: the one asked for (which must be bound), or the
    /// only one bound. With several bound and none asked for, the requester must choose.
    pub fn resolve_permission_set(
        &self,
        account: &AccountId,
        asked: Option<&PermissionSetArn>,
    ) -> Result<Option<PermissionSetArn>, DomainError> {
        let sets = self.accounts.get(account).ok_or_else(|| {
            DomainError::rule(
                ErrorCode::AccountNotBound,
                format!("account {account} is not bound to this channel"),
            )
        })?;
        match (asked, sets.as_slice()) {
            (Some(a), sets) if sets.contains(a) => Ok(Some(a.clone())),
            (Some(_), []) => Ok(asked.cloned()),
            (Some(a), _) => Err(DomainError::rule(
                ErrorCode::PermissionSetNotBound,
                format!("permission set {a} is not bound to account {account} in this channel"),
            )),
            (None, []) => Ok(None),
            (None, [one]) => Ok(Some(one.clone())),
            (None, _) => Err(DomainError::rule(
                ErrorCode::PermissionSetRequired,
                "this account has several permission sets; choose one",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChannelId;

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let p = Policy::default();
        assert_eq!(
            (
                p.required_approvals,
                p.allow_self_approval,
                p.max_request_hours,
                p.pending_timeout_minutes
            ),
            (1, false, 4, 480)
        );
        assert!(p.require_ticket && !p.break_glass_enabled);
        p.validate().unwrap();
    }

    #[test]
    fn patch_validates_n_against_approvers() {
        let p = Policy::default();
        let patch = PolicyPatch {
            approvers: Some(vec![uid("b"), uid("a"), uid("a")]),
            required_approvals: Some(2),
            ..Default::default()
        };
        let q = p.apply(&patch).unwrap();
        assert_eq!(q.approvers, vec![uid("a"), uid("b")]);
        let too_many = PolicyPatch {
            required_approvals: Some(3),
            ..Default::default()
        };
        assert_eq!(q.apply(&too_many).unwrap_err().code, "invalid_policy");
        let zero_hours = PolicyPatch {
            max_request_hours: Some(0),
            ..Default::default()
        };
        assert!(q.apply(&zero_hours).is_err());
    }

    #[test]
    fn permission_set_resolution() {
        let a = AccountId::parse("123456789012").unwrap();
        let ps1 = PermissionSetArn::parse("arn:aws:sso:::permissionSet/ssoins-1/ps-1").unwrap();
        let ps2 = PermissionSetArn::parse("arn:aws:sso:::permissionSet/ssoins-1/ps-2").unwrap();
        let mut b = Binding {
            channel_id: ChannelId::parse("ch1").unwrap(),
            accounts: BTreeMap::from([(a.clone(), vec![ps1.clone()])]),
            policy: Policy::default(),
            updated_at: None,
            version: 1,
        };
        assert_eq!(
            b.resolve_permission_set(&a, None).unwrap(),
            Some(ps1.clone())
        );
        assert_eq!(
            b.resolve_permission_set(&a, Some(&ps2)).unwrap_err().code,
            "permission_set_not_bound"
        );
        b.accounts.insert(a.clone(), vec![ps1.clone(), ps2.clone()]);
        assert_eq!(
            b.resolve_permission_set(&a, None).unwrap_err().code,
            "permission_set_required"
        );
        assert_eq!(b.resolve_permission_set(&a, Some(&ps2)).unwrap(), Some(ps2));
        let other = AccountId::parse("210987654321").unwrap();
        assert_eq!(
            b.resolve_permission_set(&other, None).unwrap_err().code,
            "account_not_bound"
        );
    }
}
