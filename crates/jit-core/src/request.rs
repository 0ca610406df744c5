//! Access requests as a state machine.
//!
//! ```text
//! PENDING ──approve (N distinct)──▶ APPROVED ──grant──▶ GRANTED ──end──▶ EXPIRED
//!    │                                 │                   └──revoke──▶ REVOKED
//!    ├──deny──▶ DENIED                 └──revoke──▶ REVOKED (before it was granted)
//!    ├──cancel──▶ CANCELLED
//!    └──timeout──▶ TIMED_OUT           APPROVED|GRANTED ──fail──▶ ERROR (needs a human)
//! ```
//!
//! Each state is its own type; a transition is a method on the state it leaves that returns
//! the next state or a [`DomainError`]. [`Request`] dispatches on its current state and refuses
//! transitions that do not start there with `invalid_state` (409).

use crate::error::ErrorCode;

use crate::error::DomainError;
use crate::policy::Policy;
use crate::types::{
    AccountId, Actor, ChannelId, DurationMinutes, Email, PermissionSetArn, Reason, RequestId,
    Ticket, UserId,
};
use serde::Serialize;
use time::OffsetDateTime;

/// The stored status names (what the existing plugin reads, and the column's CHECK constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting for approvals.
    Pending,
    /// Approved, grant not yet in place.
    Approved,
    /// Access is in place.
    Granted,
    /// Access ended on time.
    Expired,
    /// Access was ended early (or withdrawn before it was granted).
    Revoked,
    /// An approver said no.
    Denied,
    /// The requester (or an approver) withdrew it.
    Cancelled,
    /// Nobody decided in time.
    TimedOut,
    /// Something needs a human; never a silent dead end.
    Error,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 9] = [
        Self::Pending,
        Self::Approved,
        Self::Granted,
        Self::Expired,
        Self::Revoked,
        Self::Denied,
        Self::Cancelled,
        Self::TimedOut,
        Self::Error,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Granted => "GRANTED",
            Self::Expired => "EXPIRED",
            Self::Revoked => "REVOKED",
            Self::Denied => "DENIED",
            Self::Cancelled => "CANCELLED",
            Self::TimedOut => "TIMED_OUT",
            Self::Error => "ERROR",
        }
    }

    /// Parses a stored or filter name (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                DomainError::bad(
                    ErrorCode::InvalidStatus,
                    "status must be one of PENDING, APPROVED, GRANTED, EXPIRED, REVOKED, DENIED, \
                 CANCELLED, TIMED_OUT, ERROR",
                )
            })
    }

    /// True for states that never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Expired | Self::Revoked | Self::Denied | Self::Cancelled | Self::TimedOut
        )
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// Who approved.
    pub user_id: UserId,
    /// Their email, as proven by the bridge.
    pub email: Option<Email>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Waiting for approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending;

/// Approved; the grant is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// When the last needed approval arrived.
    pub approved_at: OffsetDateTime,
}

/// Access in place until `ends_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// When it was approved.
    pub approved_at: OffsetDateTime,
    /// When the grant took effect.
    pub granted_at: OffsetDateTime,
    /// `granted_at` + approved duration (+ extensions).
    pub ends_at: OffsetDateTime,
}

/// A decision or an end, with who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// When.
    pub at: OffsetDateTime,
    /// Who (`None` for the system).
    pub by: Option<UserId>,
    /// Why, if given.
    pub reason: Option<Reason>,
    /// Grant times, if access was ever in place.
    pub granted: Option<(OffsetDateTime, OffsetDateTime)>,
}

/// A request's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// See [`Pending`].
    Pending(Pending),
    /// See [`Approved`].
    Approved(Approved),
    /// See [`Granted`].
    Granted(Granted),
    /// Ended on time.
    Expired(Closed),
    /// Ended early.
    Revoked(Closed),
    /// Refused.
    Denied(Closed),
    /// Withdrawn.
    Cancelled(Closed),
    /// Not decided in time.
    TimedOut(Closed),
    /// Needs a human: the message says what failed.
    Error {
        /// When.
        at: OffsetDateTime,
        /// What failed (safe to show).
        message: String,
        /// Grant times, if access was in place.
        granted: Option<(OffsetDateTime, OffsetDateTime)>,
    },
}

impl State {
    /// The status name of this state.
    pub fn status(&self) -> Status {
        match self {
            Self::Pending(_) => Status::Pending,
            Self::Approved(_) => Status::Approved,
            Self::Granted(_) => Status::Granted,
            Self::Expired(_) => Status::Expired,
            Self::Revoked(_) => Status::Revoked,
            Self::Denied(_) => Status::Denied,
            Self::Cancelled(_) => Status::Cancelled,
            Self::TimedOut(_) => Status::TimedOut,
            Self::Error { .. } => Status::Error,
        }
    }
}

/// Everything about a request except its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Id.
    pub id: RequestId,
    /// Channel it was made in.
    pub channel_id: ChannelId,
    /// Account asked for.
    pub account_id: AccountId,
    /// Permission set asked for (`None`: the provider's default).
    pub permission_set_arn: Option<PermissionSetArn>,
    /// Who asked.
    pub requester_id: UserId,
    /// Their email.
    pub requester_email: Email,
    /// Ticket reference.
    pub ticket: Option<Ticket>,
    /// Why.
    pub reason: Option<Reason>,
    /// Approved length of the grant (counted from the grant, not the request).
    pub duration: DurationMinutes,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When a pending request times out.
    pub pending_deadline: OffsetDateTime,
    /// Approvals needed (the policy's N when the request was made).
    pub required_approvals: u32,
    /// Approvals so far.
    pub approvals: Vec<Approval>,
    /// Self-granted under the break-glass policy.
    pub break_glass: bool,
    /// Break-glass request awaiting an approver's review.
    pub review_pending: bool,
    /// The approval card's post id (stored for the bridge, which keeps no database).
    pub post_id: Option<String>,
    /// Increments on every change; stores update with compare-and-set on it.
    pub version: i64,
    /// The state.
    pub state: State,
}

/// What a request asks for, already parsed.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Channel.
    pub channel_id: ChannelId,
    /// Account.
    pub account_id: AccountId,
    /// Permission set as asked (resolved against the binding by [`Request::create`]).
    pub permission_set_arn: Option<PermissionSetArn>,
    /// Ticket.
    pub ticket: Option<Ticket>,
    /// Reason.
    pub reason: Option<Reason>,
    /// Duration.
    pub duration: DurationMinutes,
    /// Break-glass.
    pub break_glass: bool,
}

fn invalid_state(action: &str, from: Status, allowed: &str) -> DomainError {
    DomainError::conflict(
        ErrorCode::InvalidState,
        format!(
            "cannot {action} a request that is {}; only {allowed} requests",
            from.as_str()
        ),
    )
}

impl Pending {
    /// Adds `actor`'s approval. Returns `Ok(Err(Pending))` while approvals are short of N and
    /// `Ok(Ok(Approved))` on the last one. The caller has checked that the actor is an approver.
    pub fn approve(
        self,
        req: &Request,
        actor: &Actor,
        policy: &Policy,
        now: OffsetDateTime,
    ) -> Result<(Approval, Result<Approved, Pending>), DomainError> {
        if now >= req.pending_deadline {
            return Err(DomainError::conflict(
                ErrorCode::RequestTimedOut,
                "this request waited longer than the pending timeout; ask again",
            ));
        }
        if actor.user_id == req.requester_id && !policy.allow_self_approval {
            return Err(DomainError::forbidden(
                ErrorCode::SelfApprovalForbidden,
                "you cannot approve your own request in this channel",
            ));
        }
        if req.approvals.iter().any(|a| a.user_id == actor.user_id) {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyApproved,
                "you already approved this request",
            ));
        }
        let approval = Approval {
            user_id: actor.user_id.clone(),
            email: actor.email.clone(),
            at: now,
        };
        let count = u32::try_from(req.approvals.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if count >= req.required_approvals {
            Ok((approval, Ok(Approved { approved_at: now })))
        } else {
            Ok((approval, Err(self)))
        }
    }

    /// An approver says no.
    pub fn deny(self, actor: &Actor, reason: Option<Reason>, now: OffsetDateTime) -> Closed {
        Closed {
            at: now,
            by: Some(actor.user_id.clone()),
            reason,
            granted: None,
        }
    }

    /// The requester or an approver withdraws it.
    pub fn cancel(self, actor: &Actor, now: OffsetDateTime) -> Closed {
        Closed {
            at: now,
            by: Some(actor.user_id.clone()),
            reason: None,
            granted: None,
        }
    }

    /// Nobody decided before the deadline.
    pub fn time_out(self, req: &Request, now: OffsetDateTime) -> Result<Closed, DomainError> {
        if now < req.pending_deadline {
            return Err(DomainError::conflict(
                ErrorCode::NotDue,
                "the pending timeout has not passed",
            ));
        }
        Ok(Closed {
            at: now,
            by: None,
            reason: None,
            granted: None,
        })
    }
}

impl Approved {
    /// The grant took effect at `now`; it ends `duration` later, whatever the approval delay.
    pub fn grant(self, duration: DurationMinutes, now: OffsetDateTime) -> Granted {
        Granted {
            approved_at: self.approved_at,
            granted_at: now,
            ends_at: now + duration.as_duration(),
        }
    }

    /// Withdrawn before the grant took effect.
    pub fn revoke(self, actor: &Actor, reason: Option<Reason>, now: OffsetDateTime) -> Closed {
        Closed {
            at: now,
            by: Some(actor.user_id.clone()),
            reason,
            granted: None,
        }
    }
}

impl Granted {
    /// The grant reached its end.
    pub fn expire(self, now: OffsetDateTime) -> Result<Closed, DomainError> {
        if now < self.ends_at {
            return Err(DomainError::conflict(
                ErrorCode::NotDue,
                "the grant has not reached its end",
            ));
        }
        Ok(Closed {
            at: now,
            by: None,
            reason: None,
            granted: Some((self.granted_at, self.ends_at)),
        })
    }

    /// Ended early by an approver, an admin or the requester.
    pub fn revoke(self, actor: &Actor, reason: Option<Reason>, now: OffsetDateTime) -> Closed {
        Closed {
            at: now,
            by: Some(actor.user_id.clone()),
            reason,
            granted: Some((self.granted_at, self.ends_at)),
        }
    }

    /// Lengthens the grant; the total (from `granted_at`) may not exceed `max_minutes`.
    pub fn extend(
        self,
        minutes: DurationMinutes,
        max_minutes: u32,
    ) -> Result<Granted, DomainError> {
        let ends_at = self.ends_at + minutes.as_duration();
        let total = (ends_at - self.granted_at).whole_minutes();
        if total > i64::from(max_minutes) {
            return Err(DomainError::rule(
                ErrorCode::DurationExceedsPolicy,
                format!(
                    "the extended grant would last {total} minutes; the policy allows {max_minutes}"
                ),
            ));
        }
        Ok(Granted { ends_at, ..self })
    }
}

impl Request {
    /// Validates a new request against the binding's policy and builds it in PENDING, or in
    /// APPROVED for a break-glass request (which is then marked for review).
    pub fn create(
        id: RequestId,
        new: NewRequest,
        requester: &Actor,
        binding: &crate::policy::Binding,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let policy = &binding.policy;
        let requester_email = requester.email.clone().ok_or_else(|| {
            DomainError::bad(ErrorCode::MissingField, "requester_email is required")
        })?;
        let permission_set_arn =
            binding.resolve_permission_set(&new.account_id, new.permission_set_arn.as_ref())?;
        if policy.require_ticket && new.ticket.is_none() {
            return Err(DomainError::rule(
                ErrorCode::TicketRequired,
                "this channel requires a ticket reference",
            ));
        }
        if policy.require_ticket_or_reason && new.ticket.is_none() && new.reason.is_none() {
            return Err(DomainError::rule(
                ErrorCode::TicketOrReasonRequired,
                "give a ticket reference or a reason",
            ));
        }
        let minutes = new.duration.get();
        if new.break_glass {
            if !policy.break_glass_enabled {
                return Err(DomainError::forbidden(
                    ErrorCode::BreakGlassDisabled,
                    "break-glass access is not enabled for this channel",
                ));
            }
            if new.reason.is_none() {
                return Err(DomainError::rule(
                    ErrorCode::ReasonRequired,
                    "break-glass access needs a reason",
                ));
            }
            if minutes > policy.break_glass_max_minutes {
                return Err(DomainError::rule(
                    ErrorCode::DurationExceedsPolicy,
                    format!(
                        "break-glass access is limited to {} minutes",
                        policy.break_glass_max_minutes
                    ),
                ));
            }
        } else {
            if minutes > policy.max_minutes() {
                return Err(DomainError::rule(
                    ErrorCode::DurationExceedsPolicy,
                    format!(
                        "requests in this channel are limited to {} hours",
                        policy.max_request_hours
                    ),
                ));
            }
            let eligible = policy
                .approvers
                .iter()
                .filter(|a| policy.allow_self_approval || **a != requester.user_id)
                .count();
            if eligible < policy.required_approvals as usize {
                return Err(DomainError::rule(
                    ErrorCode::NotEnoughApprovers,
                    format!(
                        "this channel needs {} approval(s) but has {} approver(s) other than you; \
                         ask an admin to run /jit approvers",
                        policy.required_approvals, eligible
                    ),
                ));
            }
        }
        let state = if new.break_glass {
            State::Approved(Approved { approved_at: now })
        } else {
            State::Pending(Pending)
        };
        Ok(Self {
            id,
            channel_id: new.channel_id,
            account_id: new.account_id,
            permission_set_arn,
            requester_id: requester.user_id.clone(),
            requester_email,
            ticket: new.ticket,
            reason: new.reason,
            duration: new.duration,
            created_at: now,
            pending_deadline: now
                + time::Duration::minutes(i64::from(policy.pending_timeout_minutes)),
            required_approvals: policy.required_approvals,
            approvals: Vec::new(),
            break_glass: new.break_glass,
            review_pending: new.break_glass,
            post_id: None,
            version: 1,
            state,
        })
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.state.status()
    }

    fn next(&self, state: State) -> Self {
        Self {
            state,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Records an approval; the result is APPROVED once N distinct approvers agreed.
    pub fn approve(
        &self,
        actor: &Actor,
        policy: &Policy,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let State::Pending(p) = self.state.clone() else {
            return Err(invalid_state("approve", self.status(), "PENDING"));
        };
        let (approval, outcome) = p.approve(self, actor, policy, now)?;
        let mut next = match outcome {
            Ok(approved) => self.next(State::Approved(approved)),
            Err(pending) => self.next(State::Pending(pending)),
        };
        next.approvals.push(approval);
        Ok(next)
    }

    /// Denies a pending request.
    pub fn deny(
        &self,
        actor: &Actor,
        reason: Option<Reason>,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let State::Pending(p) = self.state.clone() else {
            return Err(invalid_state("deny", self.status(), "PENDING"));
        };
        Ok(self.next(State::Denied(p.deny(actor, reason, now))))
    }

    /// Cancels a pending request.
    pub fn cancel(&self, actor: &Actor, now: OffsetDateTime) -> Result<Self, DomainError> {
        let State::Pending(p) = self.state.clone() else {
            return Err(invalid_state("cancel", self.status(), "PENDING"));
        };
        Ok(self.next(State::Cancelled(p.cancel(actor, now))))
    }

    /// Times out a pending request past its deadline.
    pub fn time_out(&self, now: OffsetDateTime) -> Result<Self, DomainError> {
        let State::Pending(p) = self.state.clone() else {
            return Err(invalid_state("time out", self.status(), "PENDING"));
        };
        Ok(self.next(State::TimedOut(p.time_out(self, now)?)))
    }

    /// Marks an approved request as granted from `now`.
    pub fn grant(&self, now: OffsetDateTime) -> Result<Self, DomainError> {
        let State::Approved(a) = self.state.clone() else {
            return Err(invalid_state("grant", self.status(), "APPROVED"));
        };
        Ok(self.next(State::Granted(a.grant(self.duration, now))))
    }

    /// Ends a grant early, or withdraws an approval not yet granted.
    pub fn revoke(
        &self,
        actor: &Actor,
        reason: Option<Reason>,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        match self.state.clone() {
            State::Granted(g) => Ok(self.next(State::Revoked(g.revoke(actor, reason, now)))),
            State::Approved(a) => Ok(self.next(State::Revoked(a.revoke(actor, reason, now)))),
            _ => Err(invalid_state(
                "revoke",
                self.status(),
                "APPROVED or GRANTED",
            )),
        }
    }

    /// Ends a grant that reached its end.
    pub fn expire(&self, now: OffsetDateTime) -> Result<Self, DomainError> {
        let State::Granted(g) = self.state.clone() else {
            return Err(invalid_state("expire", self.status(), "GRANTED"));
        };
        Ok(self.next(State::Expired(g.expire(now)?)))
    }

    /// Lengthens a grant within the policy's maximum.
    pub fn extend(
        &self,
        minutes: DurationMinutes,
        policy: &Policy,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let State::Granted(g) = self.state.clone() else {
            return Err(invalid_state("extend", self.status(), "GRANTED"));
        };
        if g.ends_at <= now {
            return Err(DomainError::conflict(
                ErrorCode::GrantEnded,
                "this grant has reached its end; ask for access again",
            ));
        }
        let max = if self.break_glass {
            policy.break_glass_max_minutes
        } else {
            policy.max_minutes()
        };
        let mut next = self.next(State::Granted(g.extend(minutes, max)?));
        next.duration = DurationMinutes::new(
            (next.ends_at().unwrap_or(self.created_at)
                - next.granted_at().unwrap_or(self.created_at))
            .whole_minutes(),
        )?;
        Ok(next)
    }

    /// Something needs a human.
    pub fn fail(
        &self,
        message: impl Into<String>,
        now: OffsetDateTime,
    ) -> Result<Self, DomainError> {
        let granted = match &self.state {
            State::Approved(_) => None,
            State::Granted(g) => Some((g.granted_at, g.ends_at)),
            _ => {
                return Err(invalid_state(
                    "mark as error",
                    self.status(),
                    "APPROVED or GRANTED",
                ));
            }
        };
        Ok(self.next(State::Error {
            at: now,
            message: message.into(),
            granted,
        }))
    }

    /// An approver records the review of a break-glass request.
    pub fn review(&self) -> Result<Self, DomainError> {
        if !self.review_pending {
            return Err(DomainError::conflict(
                ErrorCode::NoReviewPending,
                "this request has no review pending",
            ));
        }
        let mut next = self.next(self.state.clone());
        next.review_pending = false;
        Ok(next)
    }

    /// When the grant took effect, if it did.
    pub fn granted_at(&self) -> Option<OffsetDateTime> {
        match &self.state {
            State::Granted(g) => Some(g.granted_at),
            State::Expired(c) | State::Revoked(c) => c.granted.map(|g| g.0),
            State::Error { granted, .. } => granted.map(|g| g.0),
            _ => None,
        }
    }

    /// When the grant ends (or ended), if it was granted.
    pub fn ends_at(&self) -> Option<OffsetDateTime> {
        match &self.state {
            State::Granted(g) => Some(g.ends_at),
            State::Expired(c) | State::Revoked(c) => c.granted.map(|g| g.1),
            State::Error { granted, .. } => granted.map(|g| g.1),
            _ => None,
        }
    }

    /// When it was approved, if it was.
    pub fn approved_at(&self) -> Option<OffsetDateTime> {
        match &self.state {
            State::Approved(a) => Some(a.approved_at),
            State::Granted(g) => Some(g.approved_at),
            _ if self.break_glass => Some(self.created_at),
            _ => self
                .approvals
                .last()
                .filter(|_| self.approvals.len() as u32 >= self.required_approvals)
                .map(|a| a.at),
        }
    }

    /// The closing details (decision time, actor, reason) for terminal states.
    pub fn closed(&self) -> Option<&Closed> {
        match &self.state {
            State::Expired(c)
            | State::Revoked(c)
            | State::Denied(c)
            | State::Cancelled(c)
            | State::TimedOut(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Binding, Policy};
    use crate::types::Role;
    use std::collections::BTreeMap;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    fn actor(id: &str) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            email: Some(Email::parse(&format!("{id}@example.com")).unwrap()),
            roles: vec![],
        }
    }

    fn binding(approvers: &[&str], n: u32) -> Binding {
        Binding {
            channel_id: ChannelId::parse("ch1").unwrap(),
            accounts: BTreeMap::from([(AccountId::parse("123456789012").unwrap(), vec![])]),
            policy: Policy {
                approvers: approvers
                    .iter()
                    .map(|a| UserId::parse(a).unwrap())
                    .collect(),
                required_approvals: n,
                ..Policy::default()
            },
            updated_at: None,
            version: 1,
        }
    }

    fn new_req(minutes: i64, break_glass: bool) -> NewRequest {
        NewRequest {
            channel_id: ChannelId::parse("ch1").unwrap(),
            account_id: AccountId::parse("123456789012").unwrap(),
            permission_set_arn: None,
            ticket: Ticket::parse("OPS-1").unwrap(),
            reason: Reason::parse("deploy").unwrap(),
            duration: DurationMinutes::new(minutes).unwrap(),
            break_glass,
        }
    }

    fn rid() -> RequestId {
        RequestId::from_random([7; 16])
    }

    #[test]
    fn n_of_m_needs_distinct_approvers_and_the_requester_never_counts() {
        let b = binding(&["alice", "bob", "carol"], 2);
        let r = Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0).unwrap();
        assert_eq!(r.status(), Status::Pending);
        assert_eq!(
            r.approve(&actor("alice"), &b.policy, T0).unwrap_err().code,
            "self_approval_forbidden"
        );
        let r = r.approve(&actor("bob"), &b.policy, T0).unwrap();
        assert_eq!(r.status(), Status::Pending);
        assert_eq!(
            r.approve(&actor("bob"), &b.policy, T0).unwrap_err().code,
            "already_approved"
        );
        let r = r.approve(&actor("carol"), &b.policy, T0).unwrap();
        assert_eq!(r.status(), Status::Approved);
        assert_eq!(r.approvals.len(), 2);
        assert_eq!(r.version, 3);
        assert_eq!(
            r.approve(&actor("carol"), &b.policy, T0).unwrap_err().code,
            "invalid_state"
        );
    }

    #[test]
    fn self_approval_counts_only_when_allowed() {
        let mut b = binding(&["alice"], 1);
        assert_eq!(
            Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "not_enough_approvers"
        );
        b.policy.allow_self_approval = true;
        let r = Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0).unwrap();
        assert_eq!(
            r.approve(&actor("alice"), &b.policy, T0).unwrap().status(),
            Status::Approved
        );
    }

    #[test]
    fn grant_ends_after_the_approved_duration_from_grant_time_not_creation() {
        let b = binding(&["bob"], 1);
        let r = Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0).unwrap();
        let approved_late = T0 + time::Duration::minutes(50);
        let r = r.approve(&actor("bob"), &b.policy, approved_late).unwrap();
        let granted = approved_late + time::Duration::seconds(3);
        let r = r.grant(granted).unwrap();
        assert_eq!(r.ends_at(), Some(granted + time::Duration::minutes(60)));
        assert_eq!(r.expire(granted).unwrap_err().code, "not_due");
        let r = r.expire(granted + time::Duration::minutes(60)).unwrap();
        assert_eq!(r.status(), Status::Expired);
        assert_eq!(r.granted_at(), Some(granted));
    }

    #[test]
    fn policy_limits_on_creation() {
        let b = binding(&["bob"], 1);
        assert_eq!(
            Request::create(rid(), new_req(241, false), &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "duration_exceeds_policy"
        );
        let mut nt = new_req(60, false);
        nt.ticket = None;
        assert_eq!(
            Request::create(rid(), nt, &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "ticket_required"
        );
        assert_eq!(
            Request::create(rid(), new_req(30, true), &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "break_glass_disabled"
        );
    }

    #[test]
    fn break_glass_is_approved_at_once_and_marked_for_review() {
        let mut b = binding(&["bob"], 1);
        b.policy.break_glass_enabled = true;
        b.policy.break_glass_max_minutes = 30;
        assert_eq!(
            Request::create(rid(), new_req(31, true), &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "duration_exceeds_policy"
        );
        let mut nr = new_req(30, true);
        nr.reason = None;
        assert_eq!(
            Request::create(rid(), nr, &actor("alice"), &b, T0)
                .unwrap_err()
                .code,
            "reason_required"
        );
        let r = Request::create(rid(), new_req(30, true), &actor("alice"), &b, T0).unwrap();
        assert_eq!(r.status(), Status::Approved);
        assert!(r.review_pending);
        let r = r.review().unwrap();
        assert!(!r.review_pending);
        assert_eq!(r.review().unwrap_err().code, "no_review_pending");
    }

    #[test]
    fn pending_requests_time_out_and_cannot_be_approved_late() {
        let b = binding(&["bob"], 1);
        let r = Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0).unwrap();
        let late = T0 + time::Duration::hours(8);
        assert_eq!(
            r.approve(&actor("bob"), &b.policy, late).unwrap_err().code,
            "request_timed_out"
        );
        assert_eq!(
            r.time_out(late - time::Duration::seconds(1))
                .unwrap_err()
                .code,
            "not_due"
        );
        assert_eq!(r.time_out(late).unwrap().status(), Status::TimedOut);
    }

    #[test]
    fn terminal_states_refuse_everything() {
        let b = binding(&["bob"], 1);
        let r = Request::create(rid(), new_req(60, false), &actor("alice"), &b, T0).unwrap();
        let d = r
            .deny(&actor("bob"), Reason::parse("no").unwrap(), T0)
            .unwrap();
        assert_eq!(d.status(), Status::Denied);
        assert_eq!(
            d.cancel(&actor("alice"), T0).unwrap_err().code,
            "invalid_state"
        );
        assert_eq!(
            d.revoke(&actor("bob"), None, T0).unwrap_err().code,
            "invalid_state"
        );
        assert_eq!(d.grant(T0).unwrap_err().code, "invalid_state");
        let c = r.cancel(&actor("alice"), T0).unwrap();
        assert_eq!(
            c.deny(&actor("bob"), None, T0).unwrap_err().code,
            "invalid_state"
        );
        assert!(Status::Denied.is_terminal() && !Status::Granted.is_terminal());
    }

    #[test]
    fn extend_respects_policy_max() {
        let b = binding(&["bob"], 1);
        let r = Request::create(rid(), new_req(200, false), &actor("alice"), &b, T0).unwrap();
        let r = r
            .approve(&actor("bob"), &b.policy, T0)
            .unwrap()
            .grant(T0)
            .unwrap();
        let r2 = r
            .extend(DurationMinutes::new(40).unwrap(), &b.policy, T0)
            .unwrap();
        assert_eq!(r2.ends_at(), Some(T0 + time::Duration::minutes(240)));
        assert_eq!(r2.duration.get(), 240);
        assert_eq!(
            r2.extend(DurationMinutes::new(1).unwrap(), &b.policy, T0)
                .unwrap_err()
                .code,
            "duration_exceeds_policy"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()).unwrap(), s);
        }
        assert_eq!(Status::parse("timed_out").unwrap(), Status::TimedOut);
        assert!(Status::parse("GRANTED'; DROP TABLE requests; --").is_err());
        let _ = Role::SystemAdmin;
    }
}
