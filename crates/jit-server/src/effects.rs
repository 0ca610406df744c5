//! What a state change sets in motion, decided in one place for the API and the workers alike:
//! the jobs to schedule or remove and the callback event to queue. Both are written in the same
//! transaction as the change itself.

use jit_core::request::{Request, Status};
use jit_core::types::Actor;
use jit_proto::wire::{CallbackPayload, timestamp};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{JobKind, JobOp, OutboxDraft};
use std::collections::BTreeMap;
use time::OffsetDateTime;

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn schedule(kind: JobKind, r: &Request, at: OffsetDateTime) -> JobOp {
    JobOp::Schedule {
        kind,
        request_id: r.id.clone(),
        due_ms: ms(at),
    }
}

fn remove(kind: JobKind, r: &Request) -> JobOp {
    JobOp::Remove {
        kind,
        request_id: r.id.clone(),
    }
}

/// Who receives callbacks, which decides what is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallbackStyle {
    /// Our bridge: every status change, with full details.
    #[default]
    Bridge,
    /// The existing plugin (existing-plugin profile): only the statuses it acts on (`GRANTED`,
    /// `REVOKED`, `EXPIRED`, `ERROR`; it redraws the card itself on a denial, and logs anything
    /// else as unknown), with the short details the old backend sent (the plugin prints every
    /// entry).
    ExistingPlugin,
}

impl CallbackStyle {
    /// Whether an event of `status` is sent at all.
    pub fn sends(self, status: &str) -> bool {
        match self {
            Self::Bridge => true,
            Self::ExistingPlugin => matches!(status, "GRANTED" | "REVOKED" | "EXPIRED" | "ERROR"),
        }
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
    style: CallbackStyle,
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
        .filter(|status| style.sends(status))
        .map(|status| OutboxDraft {
            event_id: event_id.clone(),
            request_id: next.id.clone(),
            payload: serde_json::to_string(&callback_payload(
                next, status, actor, now, &event_id, style,
            ))
            .unwrap_or_default(),
        })
        .into_iter()
        .collect();
    (jobs, outbox)
}

/// The callback for `r` reaching `status`: the existing plugin's webhook shape
/// ([`CallbackPayload`]).
pub fn callback_payload(
    r: &Request,
    status: &str,
    actor: Option<&Actor>,
    now: OffsetDateTime,
    event_id: &str,
    style: CallbackStyle,
) -> CallbackPayload {
    let mut details = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        details.insert(k.to_owned(), v);
    };
    let reason = r.closed().and_then(|c| c.reason.as_ref());
    let error = match &r.state {
        jit_core::request::State::Error { message, .. } => Some(message.clone()),
        _ => None,
    };
    match style {
        CallbackStyle::ExistingPlugin => match status {
            "GRANTED" => {
                put("requester_email", r.requester_email.as_str().to_owned());
                put("duration_minutes", r.duration.get().to_string());
            }
            "REVOKED" => {
                if let Some(reason) = reason {
                    put("reason", reason.as_str().to_owned());
                }
            }
            "ERROR" => {
                if let Some(e) = error {
                    put("error", e);
                }
            }
            _ => {}
        },
        CallbackStyle::Bridge => {
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
                put("granted_at", timestamp(t));
            }
            if let Some(t) = r.ends_at() {
                put("end_time", timestamp(t));
            }
            if let Some(reason) = reason {
                put("reason", reason.as_str().to_owned());
            }
            if let Some(e) = error {
                put("error", e);
            }
            if r.break_glass {
                put("break_glass", "true".into());
            }
            if let Some(p) = &r.post_id {
                put("post_id", p.clone());
            }
        }
    }
    let actor = actor
        .map(|a| {
            a.email
                .as_ref()
                .map_or_else(|| a.user_id.as_str().to_owned(), |e| e.as_str().to_owned())
        })
        .unwrap_or_else(|| "system".to_owned());
    CallbackPayload {
        event_id: Some(event_id.to_owned()),
        occurred_at: Some(timestamp(now)),
        request_id: r.id.as_str().to_owned(),
        status: status.to_owned(),
        account_id: r.account_id.as_str().to_owned(),
        channel_id: r.channel_id.as_str().to_owned(),
        actor: Some(actor),
        details,
    }
}
