//! What a state change sets in motion, decided in one place for the API and the workers alike:
//! the jobs to schedule or remove and the callback event to queue. Both are written in the same
//! transaction as the change itself.

use jit_core::request::{Request, Status};
use jit_core::types::Actor;
use jit_store::{JobKind, JobOp, OutboxDraft};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn schedule(kind: JobKind, r: &Request, at: OffsetDateTime) -> JobOp {
    JobOp::Schedule {
        kind,
        request_id: r.id.as_str().to_owned(),
        due_ms: ms(at),
    }
}

fn remove(kind: JobKind, r: &Request) -> JobOp {
    JobOp::Remove {
        kind,
        request_id: r.id.as_str().to_owned(),
    }
}

/// Jobs and the callback for the change `prev` → `next` (`prev` is `None` for a new request).
/// `event_id` names the callback event, if one is due.
pub fn effects(
    prev: Option<&Request>,
    next: &Request,
    actor: Option<&Actor>,
    now: OffsetDateTime,
    event_id: String,
) -> (Vec<JobOp>, Vec<OutboxDraft>) {
    use Status::*;
    let from = prev.map(Request::status);
    let to = next.status();
    let mut jobs = Vec::new();
    let mut event: Option<&str> = None;
    match (from, to) {
        (None, Pending) => jobs.push(schedule(JobKind::Timeout, next, next.pending_deadline)),
        (None, Approved) => {
            jobs.push(schedule(JobKind::Grant, next, now));
            event = Some("APPROVED");
        }
        (Some(Pending), Approved) => {
            jobs.push(remove(JobKind::Timeout, next));
            jobs.push(schedule(JobKind::Grant, next, now));
            event = Some("APPROVED");
        }
        (Some(Pending), Denied | Cancelled | TimedOut) => {
            jobs.push(remove(JobKind::Timeout, next));
            event = Some(to.as_str());
        }
        (Some(Approved), Granted) => {
            jobs.push(remove(JobKind::Grant, next));
            if let Some(end) = next.ends_at() {
                jobs.push(schedule(JobKind::Revoke, next, end));
            }
            event = Some("GRANTED");
        }
        (Some(Approved), Revoked) => {
            // The grant job runs at once and removes whatever an interrupted attempt put in
            // place.
            jobs.push(schedule(JobKind::Grant, next, now));
            event = Some("REVOKED");
        }
        (Some(Granted), Granted) if prev.and_then(Request::ends_at) != next.ends_at() => {
            if let Some(end) = next.ends_at() {
                jobs.push(schedule(JobKind::Revoke, next, end));
            }
            event = Some("EXTENDED");
        }
        (Some(Granted), Revoked) => {
            // The decision is recorded now; the revoke job removes the access at once.
            jobs.push(schedule(JobKind::Revoke, next, now));
            event = Some("REVOKED");
        }
        (Some(Granted), Expired) => {
            jobs.push(remove(JobKind::Revoke, next));
            event = Some("EXPIRED");
        }
        (Some(Approved), Error) => {
            jobs.push(schedule(JobKind::Grant, next, now));
            event = Some("ERROR");
        }
        (Some(Granted), Error) => event = Some("ERROR"),
        _ => {}
    }
    let outbox = event
        .map(|status| OutboxDraft {
            event_id: event_id.clone(),
            request_id: next.id.as_str().to_owned(),
            payload: callback_payload(next, status, actor, now, &event_id).to_string(),
        })
        .into_iter()
        .collect();
    (jobs, outbox)
}

/// The existing plugin's webhook shape (`request_id, status, account_id, channel_id, actor,
/// details` with string values) plus `event_id` and `occurred_at`.
pub fn callback_payload(
    r: &Request,
    status: &str,
    actor: Option<&Actor>,
    now: OffsetDateTime,
    event_id: &str,
) -> Value {
    let mut details = Map::new();
    let mut put = |k: &str, v: String| {
        details.insert(k.to_owned(), Value::String(v));
    };
    put("duration_minutes", r.duration.get().to_string());
    put("requester_email", r.requester_email.as_str().to_owned());
    put("requester_mm_user_id", r.requester_id.as_str().to_owned());
    put(
        "approvals",
        format!("{}/{}", r.approvals.len(), r.required_approvals),
    );
    if let Some(t) = &r.ticket {
        put("jira", t.as_str().to_owned());
    }
    if let Some(p) = &r.permission_set_arn {
        put("permission_set_arn", p.as_str().to_owned());
    }
    if let Some(t) = r.granted_at() {
        put("granted_at", crate::views::ts(t));
    }
    if let Some(t) = r.ends_at() {
        put("end_time", crate::views::ts(t));
    }
    if let Some(reason) = r.closed().and_then(|c| c.reason.as_ref()) {
        put("reason", reason.as_str().to_owned());
    }
    if let jit_core::request::State::Error { message, .. } = &r.state {
        put("error", message.clone());
    }
    if r.break_glass {
        put("break_glass", "true".into());
    }
    if let Some(p) = &r.post_id {
        put("post_id", p.clone());
    }
    let actor = actor
        .map(|a| {
            a.email
                .as_ref()
                .map_or_else(|| a.user_id.as_str().to_owned(), |e| e.as_str().to_owned())
        })
        .unwrap_or_else(|| "system".to_owned());
    json!({
        "event_id": event_id,
        "occurred_at": crate::views::ts(now),
        "request_id": r.id,
        "status": status,
        "account_id": r.account_id,
        "channel_id": r.channel_id,
        "actor": actor,
        "details": details,
    })
}
