//! Domain values as the wire types of `jit_proto::wire`: the one place where a request, a
//! binding or an audit event becomes what the API answers.

use jit_core::audit::AuditEvent;
use jit_core::policy::{Binding, Policy};
use jit_core::request::{Request, State, Status};
use jit_core::types::AccountId;
use jit_proto::wire::{
    AccountConfig, ApprovalView, AuditEventView, PolicyView, RequestStatus, RequestView, timestamp,
};
use time::OffsetDateTime;

/// RFC 3339, UTC, milliseconds (the API's one timestamp format).
pub fn ts(t: OffsetDateTime) -> String {
    timestamp(t)
}

fn opt_ts(t: Option<OffsetDateTime>) -> Option<String> {
    t.map(ts)
}

/// A status on the wire.
pub fn status(s: Status) -> RequestStatus {
    match s {
        Status::Pending => RequestStatus::Pending,
        Status::Approved => RequestStatus::Approved,
        Status::Granted => RequestStatus::Granted,
        Status::Expired => RequestStatus::Expired,
        Status::Revoked => RequestStatus::Revoked,
        Status::Denied => RequestStatus::Denied,
        Status::Cancelled => RequestStatus::Cancelled,
        Status::TimedOut => RequestStatus::TimedOut,
        Status::Error => RequestStatus::Error,
    }
}

/// A request, with the existing plugin's field names beside ours.
pub fn request(r: &Request) -> RequestView {
    let closed = r.closed();
    let error_message = match &r.state {
        State::Error { message, .. } => Some(message.clone()),
        _ => None,
    };
    let closed_at_if = |want: Status| closed.filter(|_| r.status() == want).map(|c| ts(c.at));
    // Until the grant, the projected end (creation + duration), so the plugin can show it;
    // from the grant on, grant + duration (+ extensions).
    let end_time = r.ends_at().or_else(|| {
        (r.granted_at().is_none())
            .then(|| r.created_at + time::Duration::minutes(i64::from(r.duration.get())))
    });
    let approved = r.approved_at().is_some();
    let decider = r.approvals.last().filter(|_| approved);
    RequestView {
        request_id: r.id.as_str().to_owned(),
        status: status(r.status()),
        channel_id: r.channel_id.as_str().to_owned(),
        account_id: r.account_id.as_str().to_owned(),
        permission_set_arn: r.permission_set_arn.as_ref().map(|p| p.as_str().to_owned()),
        requester_mm_user_id: r.requester_id.as_str().to_owned(),
        requester_email: r.requester_email.as_str().to_owned(),
        jira: r.ticket.as_ref().map(|t| t.as_str().to_owned()),
        reason: r.reason.as_ref().map(|t| t.as_str().to_owned()),
        requested_duration_minutes: r.duration.get(),
        created_at: ts(r.created_at),
        pending_deadline: ts(r.pending_deadline),
        required_approvals: r.required_approvals,
        approvals: r
            .approvals
            .iter()
            .map(|a| ApprovalView {
                user_id: a.user_id.as_str().to_owned(),
                email: a.email.as_ref().map(|e| e.as_str().to_owned()),
                at: ts(a.at),
            })
            .collect(),
        approved_at: opt_ts(r.approved_at()),
        approver_mm_user_id: decider.map(|a| a.user_id.as_str().to_owned()),
        approver_email: decider.and_then(|a| a.email.as_ref().map(|e| e.as_str().to_owned())),
        grant_time: opt_ts(r.granted_at()),
        granted_at: opt_ts(r.granted_at()),
        end_time: opt_ts(end_time),
        denied_at: closed_at_if(Status::Denied),
        revoked_at: closed_at_if(Status::Revoked),
        expired_at: closed_at_if(Status::Expired),
        closed_at: opt_ts(closed.map(|c| c.at)),
        closed_by: closed.and_then(|c| c.by.as_ref().map(|u| u.as_str().to_owned())),
        close_reason: closed.and_then(|c| c.reason.as_ref().map(|x| x.as_str().to_owned())),
        error_details: error_message.clone(),
        error_message,
        break_glass: r.break_glass,
        review_pending: r.review_pending,
        post_id: r.post_id.clone(),
        version: r.version,
    }
}

/// A policy.
pub fn policy(p: &Policy) -> PolicyView {
    PolicyView {
        approvers: p.approvers.iter().map(|a| a.as_str().to_owned()).collect(),
        required_approvals: p.required_approvals,
        allow_self_approval: p.allow_self_approval,
        max_request_hours: p.max_request_hours,
        pending_timeout_minutes: p.pending_timeout_minutes,
        require_ticket: p.require_ticket,
        require_ticket_or_reason: p.require_ticket_or_reason,
        break_glass_enabled: p.break_glass_enabled,
        break_glass_max_minutes: p.break_glass_max_minutes,
    }
}

/// One bound account of a channel, as the existing plugin's `JitConfig` and more.
pub fn account(b: &Binding, account: &AccountId) -> AccountConfig {
    let p = &b.policy;
    AccountConfig {
        channel_id: b.channel_id.as_str().to_owned(),
        account_id: account.as_str().to_owned(),
        approver_mm_user_ids: p.approvers.iter().map(|a| a.as_str().to_owned()).collect(),
        approval_policy: if p.required_approvals <= 1 {
            "any".to_owned()
        } else {
            format!("{}-of-{}", p.required_approvals, p.approvers.len())
        },
        allow_self_approval: p.allow_self_approval,
        max_request_hours: p.max_request_hours,
        session_duration_minutes: p.max_minutes(),
        updated_at: b.updated_at.map(ts).unwrap_or_default(),
        permission_set_arns: b
            .accounts
            .get(account)
            .map(|sets| sets.iter().map(|s| s.as_str().to_owned()).collect())
            .unwrap_or_default(),
        policy: policy(p),
        version: b.version,
        // Filled by `GET /config/accounts` from the provider.
        role_session_durations: None,
    }
}

/// Every bound account of a channel (`GET /config/accounts`): `[]` when unbound.
pub fn accounts(b: Option<&Binding>) -> Vec<AccountConfig> {
    b.map(|b| b.accounts.keys().map(|a| account(b, a)).collect())
        .unwrap_or_default()
}

/// An audit event.
pub fn audit(e: &AuditEvent) -> AuditEventView {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000).ok();
    AuditEventView {
        seq: e.seq,
        at: opt_ts(at),
        kind: e.draft.kind.clone(),
        actor_id: e.draft.actor_id.clone(),
        actor_email: e.draft.actor_email.clone(),
        request_id: e.draft.request_id.clone(),
        channel_id: e.draft.channel_id.clone(),
        account_id: e.draft.account_id.clone(),
        data: e.draft.data.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}
