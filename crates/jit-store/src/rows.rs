//! Mapping between domain values and rows. Times are unix milliseconds (BIGINT), structured
//! fields are JSON text: the same column types on SQLite and PostgreSQL.

use crate::StoreError;
use jit_core::policy::{Binding, Policy};
use jit_core::request::{Approval, Approved, Closed, Granted, Pending, Request, State, Status};
use jit_core::types::{
    AccountId, ChannelId, DurationMinutes, Email, PermissionSetArn, Reason, RequestId, Ticket,
    UserId,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Unix milliseconds, as the store keeps times.
pub fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {v}: {e}")))
}

fn corrupt(what: &str) -> impl Fn(jit_core::DomainError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {}", e.message))
}

#[derive(Serialize, Deserialize)]
struct ApprovalRow {
    user_id: String,
    email: Option<String>,
    at_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct PolicyRow {
    approvers: Vec<String>,
    required_approvals: u32,
    allow_self_approval: bool,
    max_request_hours: u32,
    pending_timeout_minutes: u32,
    require_ticket: bool,
    #[serde(default)]
    require_ticket_or_reason: bool,
    break_glass_enabled: bool,
    break_glass_max_minutes: u32,
}

pub(crate) fn policy_json(p: &Policy) -> String {
    let row = PolicyRow {
        approvers: p.approvers.iter().map(|a| a.as_str().to_owned()).collect(),
        required_approvals: p.required_approvals,
        allow_self_approval: p.allow_self_approval,
        max_request_hours: p.max_request_hours,
        pending_timeout_minutes: p.pending_timeout_minutes,
        require_ticket: p.require_ticket,
        require_ticket_or_reason: p.require_ticket_or_reason,
        break_glass_enabled: p.break_glass_enabled,
        break_glass_max_minutes: p.break_glass_max_minutes,
    };
    serde_json::to_string(&row).unwrap_or_default()
}

pub(crate) fn accounts_json(b: &Binding) -> String {
    let m: BTreeMap<&str, Vec<&str>> = b
        .accounts
        .iter()
        .map(|(a, sets)| {
            (
                a.as_str(),
                sets.iter().map(PermissionSetArn::as_str).collect(),
            )
        })
        .collect();
    serde_json::to_string(&m).unwrap_or_default()
}

pub(crate) fn binding_from_row(row: &AnyRow) -> Result<Binding, StoreError> {
    let channel: String = row.try_get("channel_id")?;
    let accounts: String = row.try_get("accounts")?;
    let policy: String = row.try_get("policy")?;
    let mut b = binding_from_parts(&channel, &accounts, &policy, row.try_get("version")?)?;
    b.updated_at = row.try_get::<i64, _>("updated_at").ok().and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    });
    Ok(b)
}

pub(crate) fn binding_from_parts(
    channel: &str,
    accounts: &str,
    policy: &str,
    version: i64,
) -> Result<Binding, StoreError> {
    let accounts: BTreeMap<String, Vec<String>> = serde_json::from_str(accounts)
        .map_err(|e| StoreError::Corrupt(format!("accounts: {e}")))?;
    let p: PolicyRow =
        serde_json::from_str(policy).map_err(|e| StoreError::Corrupt(format!("policy: {e}")))?;
    let mut out = BTreeMap::new();
    for (a, sets) in accounts {
        let a = AccountId::parse(&a).map_err(corrupt("account"))?;
        let sets = sets
            .iter()
            .map(|s| PermissionSetArn::parse(s).map_err(corrupt("permission set")))
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(a, sets);
    }
    Ok(Binding {
        channel_id: ChannelId::parse(channel).map_err(corrupt("channel"))?,
        accounts: out,
        policy: Policy {
            approvers: p
                .approvers
                .iter()
                .map(|a| UserId::parse(a).map_err(corrupt("approver")))
                .collect::<Result<_, _>>()?,
            required_approvals: p.required_approvals,
            allow_self_approval: p.allow_self_approval,
            max_request_hours: p.max_request_hours,
            pending_timeout_minutes: p.pending_timeout_minutes,
            require_ticket: p.require_ticket,
            require_ticket_or_reason: p.require_ticket_or_reason,
            break_glass_enabled: p.break_glass_enabled,
            break_glass_max_minutes: p.break_glass_max_minutes,
        },
        updated_at: None,
        version,
    })
}

/// The columns of a request row, in the order of [`REQUEST_COLUMNS`]; also the document a
/// DynamoDB request item carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRow {
    pub id: String,
    pub channel_id: String,
    pub account_id: String,
    pub permission_set_arn: Option<String>,
    pub requester_id: String,
    pub requester_email: String,
    pub ticket: Option<String>,
    pub reason: Option<String>,
    pub duration_minutes: i64,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub pending_deadline: i64,
    pub required_approvals: i64,
    pub approvals: String,
    pub break_glass: i64,
    pub review_pending: i64,
    pub approved_at: Option<i64>,
    pub granted_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub closed_by: Option<String>,
    pub close_reason: Option<String>,
    pub error_message: Option<String>,
    pub post_id: Option<String>,
    pub version: i64,
}

pub(crate) const REQUEST_COLUMNS: &str = "id, channel_id, account_id, permission_set_arn, requester_id, \
    requester_email, ticket, reason, duration_minutes, status, created_at, updated_at, pending_deadline, \
    required_approvals, approvals, break_glass, review_pending, approved_at, granted_at, ends_at, \
    closed_at, closed_by, close_reason, error_message, post_id, version";

pub(crate) fn request_to_row(r: &Request, now: OffsetDateTime) -> RequestRow {
    let approvals: Vec<ApprovalRow> = r
        .approvals
        .iter()
        .map(|a| ApprovalRow {
            user_id: a.user_id.as_str().to_owned(),
            email: a.email.as_ref().map(|e| e.as_str().to_owned()),
            at_ms: ms(a.at),
        })
        .collect();
    let (closed_at, closed_by, close_reason, error_message) = match &r.state {
        State::Expired(c)
        | State::Revoked(c)
        | State::Denied(c)
        | State::Cancelled(c)
        | State::TimedOut(c) => (
            Some(ms(c.at)),
            c.by.as_ref().map(|u| u.as_str().to_owned()),
            c.reason.as_ref().map(|x| x.as_str().to_owned()),
            None,
        ),
        State::Error { at, message, .. } => (Some(ms(*at)), None, None, Some(message.clone())),
        _ => (None, None, None, None),
    };
    let approved_at = match &r.state {
        State::Approved(a) => Some(a.approved_at),
        State::Granted(g) => Some(g.approved_at),
        _ => None,
    };
    RequestRow {
        id: r.id.as_str().to_owned(),
        channel_id: r.channel_id.as_str().to_owned(),
        account_id: r.account_id.as_str().to_owned(),
        permission_set_arn: r.permission_set_arn.as_ref().map(|p| p.as_str().to_owned()),
        requester_id: r.requester_id.as_str().to_owned(),
        requester_email: r.requester_email.as_str().to_owned(),
        ticket: r.ticket.as_ref().map(|t| t.as_str().to_owned()),
        reason: r.reason.as_ref().map(|t| t.as_str().to_owned()),
        duration_minutes: i64::from(r.duration.get()),
        status: r.status().as_str().to_owned(),
        created_at: ms(r.created_at),
        updated_at: ms(now),
        pending_deadline: ms(r.pending_deadline),
        required_approvals: i64::from(r.required_approvals),
        approvals: serde_json::to_string(&approvals).unwrap_or_else(|_| "[]".into()),
        break_glass: i64::from(r.break_glass),
        review_pending: i64::from(r.review_pending),
        approved_at: approved_at.map(ms),
        granted_at: r.granted_at().map(ms),
        ends_at: r.ends_at().map(ms),
        closed_at,
        closed_by,
        close_reason,
        error_message,
        post_id: r.post_id.clone(),
        version: r.version,
    }
}

pub(crate) fn request_from_row(row: &AnyRow) -> Result<Request, StoreError> {
    request_from_parts(RequestRow {
        id: row.try_get("id")?,
        channel_id: row.try_get("channel_id")?,
        account_id: row.try_get("account_id")?,
        permission_set_arn: row.try_get("permission_set_arn")?,
        requester_id: row.try_get("requester_id")?,
        requester_email: row.try_get("requester_email")?,
        ticket: row.try_get("ticket")?,
        reason: row.try_get("reason")?,
        duration_minutes: row.try_get("duration_minutes")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        pending_deadline: row.try_get("pending_deadline")?,
        required_approvals: row.try_get("required_approvals")?,
        approvals: row.try_get("approvals")?,
        break_glass: row.try_get("break_glass")?,
        review_pending: row.try_get("review_pending")?,
        approved_at: row.try_get("approved_at")?,
        granted_at: row.try_get("granted_at")?,
        ends_at: row.try_get("ends_at")?,
        closed_at: row.try_get("closed_at")?,
        closed_by: row.try_get("closed_by")?,
        close_reason: row.try_get("close_reason")?,
        error_message: row.try_get("error_message")?,
        post_id: row.try_get("post_id")?,
        version: row.try_get("version")?,
    })
}

/// A request from its stored fields (either backend), checking every field parses.
pub(crate) fn request_from_parts(row: RequestRow) -> Result<Request, StoreError> {
    let need = |name: &str, v: Option<OffsetDateTime>| {
        v.ok_or_else(|| StoreError::Corrupt(format!("request row lacks {name}")))
    };
    let opt_ms = |v: Option<i64>| v.map(from_ms).transpose();
    let status = Status::parse(&row.status).map_err(corrupt("status"))?;
    let approved_at = opt_ms(row.approved_at)?;
    let granted_at = opt_ms(row.granted_at)?;
    let ends_at = opt_ms(row.ends_at)?;
    let closed_at = opt_ms(row.closed_at)?;
    let granted = granted_at.zip(ends_at);
    let closed = || -> Result<Closed, StoreError> {
        Ok(Closed {
            at: need("closed_at", closed_at)?,
            by: row
                .closed_by
                .as_deref()
                .map(|u| UserId::parse(u).map_err(corrupt("closed_by")))
                .transpose()?,
            reason: row
                .close_reason
                .as_deref()
                .map(|r| Reason::parse(r).map_err(corrupt("close_reason")))
                .transpose()?
                .flatten(),
            granted,
        })
    };
    let state = match status {
        Status::Pending => State::Pending(Pending),
        Status::Approved => State::Approved(Approved {
            approved_at: need("approved_at", approved_at)?,
        }),
        Status::Granted => State::Granted(Granted {
            approved_at: need("approved_at", approved_at)?,
            granted_at: need("granted_at", granted_at)?,
            ends_at: need("ends_at", ends_at)?,
        }),
        Status::Expired => State::Expired(closed()?),
        Status::Revoked => State::Revoked(closed()?),
        Status::Denied => State::Denied(closed()?),
        Status::Cancelled => State::Cancelled(closed()?),
        Status::TimedOut => State::TimedOut(closed()?),
        Status::Error => State::Error {
            at: need("closed_at", closed_at)?,
            message: row.error_message.clone().unwrap_or_default(),
            granted,
        },
    };
    let approvals: Vec<ApprovalRow> = serde_json::from_str(&row.approvals)
        .map_err(|e| StoreError::Corrupt(format!("approvals: {e}")))?;
    let approvals = approvals
        .into_iter()
        .map(|a| {
            Ok(Approval {
                user_id: UserId::parse(&a.user_id).map_err(corrupt("approval"))?,
                email: a
                    .email
                    .map(|e| Email::parse(&e).map_err(corrupt("approval email")))
                    .transpose()?,
                at: from_ms(a.at_ms)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Request {
        id: RequestId::parse(&row.id).map_err(corrupt("id"))?,
        channel_id: ChannelId::parse(&row.channel_id).map_err(corrupt("channel_id"))?,
        account_id: AccountId::parse(&row.account_id).map_err(corrupt("account_id"))?,
        permission_set_arn: row
            .permission_set_arn
            .as_deref()
            .map(|p| PermissionSetArn::parse(p).map_err(corrupt("permission_set_arn")))
            .transpose()?,
        requester_id: UserId::parse(&row.requester_id).map_err(corrupt("requester_id"))?,
        requester_email: Email::parse(&row.requester_email).map_err(corrupt("requester_email"))?,
        ticket: row
            .ticket
            .as_deref()
            .map(|t| Ticket::parse(t).map_err(corrupt("ticket")))
            .transpose()?
            .flatten(),
        reason: row
            .reason
            .as_deref()
            .map(|t| Reason::parse(t).map_err(corrupt("reason")))
            .transpose()?
            .flatten(),
        duration: DurationMinutes::new(row.duration_minutes).map_err(corrupt("duration"))?,
        created_at: from_ms(row.created_at)?,
        pending_deadline: from_ms(row.pending_deadline)?,
        required_approvals: u32::try_from(row.required_approvals)
            .map_err(|_| StoreError::Corrupt("required_approvals".into()))?,
        approvals,
        break_glass: row.break_glass != 0,
        review_pending: row.review_pending != 0,
        post_id: row.post_id,
        version: row.version,
        state,
    })
}

pub(crate) fn audit_from_row(row: &AnyRow) -> Result<jit_core::audit::AuditEvent, StoreError> {
    let data: String = row.try_get("data")?;
    Ok(jit_core::audit::AuditEvent {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        draft: jit_core::audit::AuditDraft {
            kind: row.try_get("type")?,
            actor_id: row.try_get("actor_id")?,
            actor_email: row.try_get("actor_email")?,
            request_id: row.try_get("request_id")?,
            channel_id: row.try_get("channel_id")?,
            account_id: row.try_get("account_id")?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("audit data: {e}")))?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
