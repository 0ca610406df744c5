//! JSON shapes of the API's answers. Field names follow the existing plugin's (`request_id`,
//! `requester_mm_user_id`, `jira`, `requested_duration_minutes`, …) so it reads our answers as
//! it read the old backend's; newer fields sit beside them.

use jit_core::audit::AuditEvent;
use jit_core::policy::{Binding, Policy};
use jit_core::request::{Request, State};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339, UTC.
pub fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn opt_ts(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts(t)))
}

/// A request.
pub fn request(r: &Request) -> Value {
    let closed = r.closed();
    let error_message = match &r.state {
        State::Error { message, .. } => Value::String(message.clone()),
        _ => Value::Null,
    };
    json!({
        "request_id": r.id,
        "status": r.status(),
        "channel_id": r.channel_id,
        "account_id": r.account_id,
        "permission_set_arn": r.permission_set_arn,
        "requester_mm_user_id": r.requester_id,
        "requester_email": r.requester_email,
        "jira": r.ticket,
        "reason": r.reason,
        "requested_duration_minutes": r.duration,
        "created_at": ts(r.created_at),
        "pending_deadline": ts(r.pending_deadline),
        "required_approvals": r.required_approvals,
        "approvals": r.approvals,
        "approved_at": opt_ts(r.approved_at()),
        "granted_at": opt_ts(r.granted_at()),
        "end_time": opt_ts(r.ends_at()),
        "closed_at": opt_ts(closed.map(|c| c.at)),
        "closed_by": closed.and_then(|c| c.by.clone()),
        "close_reason": closed.and_then(|c| c.reason.clone()),
        "error_message": error_message,
        "break_glass": r.break_glass,
        "review_pending": r.review_pending,
        "post_id": r.post_id,
        "version": r.version,
    })
}

/// A policy.
pub fn policy(p: &Policy) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

/// A channel's binding, in the shape of `GET /config/accounts`.
pub fn binding(b: &Binding) -> Value {
    let bindings: Vec<Value> = b
        .accounts
        .iter()
        .map(|(a, sets)| json!({"account_id": a, "permission_set_arns": sets}))
        .collect();
    json!({
        "channel_id": b.channel_id,
        "accounts": b.accounts.keys().collect::<Vec<_>>(),
        "bindings": bindings,
        "approvers": b.policy.approvers,
        "policy": policy(&b.policy),
        "version": b.version,
    })
}

/// An audit event.
pub fn audit(e: &AuditEvent) -> Value {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.at_ms) * 1_000_000).ok();
    json!({
        "seq": e.seq,
        "at": opt_ts(at),
        "type": e.draft.kind,
        "actor_id": e.draft.actor_id,
        "actor_email": e.draft.actor_email,
        "request_id": e.draft.request_id,
        "channel_id": e.draft.channel_id,
        "account_id": e.draft.account_id,
        "data": e.draft.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}
