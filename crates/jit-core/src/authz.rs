//! Who may do what. The backend decides this itself from the proven actor; the chat side's
//! checks are a courtesy, not the control (the existing backend trusted any signed caller to
//! reconfigure approvers).

use crate::error::ErrorCode;

use crate::error::DomainError;
use crate::policy::Policy;
use crate::request::Request;
use crate::types::{Actor, Role};
use std::collections::BTreeSet;

/// The backend's configured administrators, by Mattermost user id or email.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admins {
    entries: BTreeSet<String>,
}

impl Admins {
    /// Admins from configuration entries (user ids or emails; emails compare case-insensitively).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| {
                    let e = e.as_ref().trim();
                    if e.contains('@') {
                        e.to_ascii_lowercase()
                    } else {
                        e.to_owned()
                    }
                })
                .filter(|e| !e.is_empty())
                .collect(),
        }
    }

    /// True when `actor` is a Mattermost system admin or listed here.
    pub fn is_admin(&self, actor: &Actor) -> bool {
        actor.has_role(Role::SystemAdmin)
            || self.entries.contains(actor.user_id.as_str())
            || actor
                .email
                .as_ref()
                .is_some_and(|e| self.entries.contains(e.as_str()))
    }
}

/// Changing bindings, approvers or policy.
pub fn may_configure(actor: &Actor, admins: &Admins) -> Result<(), DomainError> {
    if admins.is_admin(actor) {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            ErrorCode::AdminRequired,
            "only a system admin or a configured jit-access admin may change bindings, approvers or policy",
        ))
    }
}

/// Approving or denying.
pub fn may_decide(actor: &Actor, policy: &Policy) -> Result<(), DomainError> {
    if policy.is_approver(&actor.user_id) {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            ErrorCode::NotAnApprover,
            "only this channel's approvers may approve or deny",
        ))
    }
}

/// Revoking: an approver, an admin, or the requester ending their own grant early.
pub fn may_revoke(
    actor: &Actor,
    policy: &Policy,
    req: &Request,
    admins: &Admins,
) -> Result<(), DomainError> {
    if policy.is_approver(&actor.user_id)
        || admins.is_admin(actor)
        || actor.user_id == req.requester_id
    {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            ErrorCode::NotAllowedToRevoke,
            "only an approver, an admin or the requester may revoke this access",
        ))
    }
}

/// Cancelling a pending request: its requester or an approver.
pub fn may_cancel(actor: &Actor, policy: &Policy, req: &Request) -> Result<(), DomainError> {
    if actor.user_id == req.requester_id || policy.is_approver(&actor.user_id) {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            ErrorCode::NotAllowedToCancel,
            "only the requester or an approver may cancel this request",
        ))
    }
}

/// Reviewing a break-glass request: an approver.
pub fn may_review(actor: &Actor, policy: &Policy) -> Result<(), DomainError> {
    if policy.is_approver(&actor.user_id) {
        Ok(())
    } else {
        Err(DomainError::forbidden(
            ErrorCode::NotAnApprover,
            "only this channel's approvers may review break-glass access",
        ))
    }
}

/// A break-glass grant is reviewed by someone other than its requester.
pub fn not_own_review(actor: &Actor, req: &Request) -> Result<(), DomainError> {
    if actor.user_id == req.requester_id {
        Err(DomainError::forbidden(
            ErrorCode::SelfReviewForbidden,
            "another approver must review your break-glass access",
        ))
    } else {
        Ok(())
    }
}

/// Extending a grant: approved like a request, by an approver of the channel; the requester
/// only when self-approval is allowed.
pub fn may_extend(actor: &Actor, policy: &Policy, req: &Request) -> Result<(), DomainError> {
    may_decide(actor, policy)?;
    if actor.user_id == req.requester_id && !policy.allow_self_approval {
        return Err(DomainError::forbidden(
            ErrorCode::SelfApprovalForbidden,
            "an extension needs another approver in this channel",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Email, UserId};

    fn actor(id: &str, roles: Vec<Role>) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            email: Some(Email::parse(&format!("{id}@Example.com")).unwrap()),
            roles,
        }
    }

    #[test]
    fn admins_by_role_id_or_email() {
        let admins = Admins::new(["u-admin", "Boss@Example.com", " "]);
        assert!(admins.is_admin(&actor("u-admin", vec![])));
        assert!(admins.is_admin(&actor("boss", vec![])));
        assert!(admins.is_admin(&actor("x", vec![Role::SystemAdmin])));
        assert!(!admins.is_admin(&actor("x", vec![Role::ChannelAdmin])));
        assert_eq!(
            may_configure(&actor("x", vec![]), &admins)
                .unwrap_err()
                .code,
            "admin_required"
        );
    }

    #[test]
    fn deciding_needs_an_approver() {
        let p = Policy {
            approvers: vec![UserId::parse("bob").unwrap()],
            ..Policy::default()
        };
        assert!(may_decide(&actor("bob", vec![]), &p).is_ok());
        let e = may_decide(&actor("root", vec![Role::SystemAdmin]), &p).unwrap_err();
        assert_eq!(e.code, "not_an_approver");
        assert_eq!(e.kind, crate::error::ErrorKind::Forbidden);
    }
}
