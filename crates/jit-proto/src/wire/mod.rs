//! The API's wire contract: every request body, answer, list page, error and callback payload,
//! as Rust types. The server, the bridge, `jit-client` and the CLI use these and nothing else,
//! and `docs/openapi.json` is generated from them (`jit-server`'s `openapi` module).
//!
//! The existing plugin's shapes (`JitConfig`, `JitRequest`, `ReportingResponse`, its webhook
//! payload) are these shapes: every field it reads is here with its name and JSON type, and our
//! own fields sit beside them. Changes are additive only. Unknown fields in a body are ignored,
//! as the old backend ignored them, so a newer plugin keeps working.
//!
//! Timestamps are RFC 3339 strings in UTC with millisecond precision everywhere ([`timestamp`]).

mod error;
mod policy;

pub use error::{ErrorBody, ErrorCode};
pub use policy::{POLICY_SETTINGS, PolicySetting, PolicySettingError};

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The one timestamp format of the API: RFC 3339, UTC, milliseconds
/// (`2026-12-02T06:11:30.123Z`). The store keeps milliseconds, so a value reads the same in the
/// answer to a POST and in every later GET.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

/// A whole number of minutes as sent: a JSON number or a numeric string (the form fields of
/// chat dialogs arrive as text). The domain's `DurationMinutes::parse` decides whether it is
/// valid, so every bad form gets the same `invalid_duration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MinutesInput(pub String);

impl MinutesInput {
    /// A value from a number.
    pub fn from_u32(n: u32) -> Self {
        Self(n.to_string())
    }
}

impl<'de> Deserialize<'de> for MinutesInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            U(u64),
            I(i64),
            F(f64),
            S(String),
            B(bool),
        }
        Ok(Self(match Raw::deserialize(d)? {
            Raw::U(n) => n.to_string(),
            Raw::I(n) => n.to_string(),
            Raw::F(f) => f.to_string(),
            Raw::S(s) => s,
            Raw::B(b) => b.to_string(),
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Who is acting

/// The acting Mattermost user, as proven by the bridge (slash token, signed button or dialog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActorBody {
    /// Mattermost user id.
    #[serde(alias = "mm_user_id")]
    pub user_id: String,
    /// Their email, when the bot may read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `system_admin`, `channel_admin`; unknown roles are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

macro_rules! actor_fields {
    ($( $prefix:ident : $id:ident, $email:ident, $roles:ident );+ $(;)?) => {
        /// Who is acting: an `actor` object (our bridge), or the existing plugin's
        /// `<role>_mm_user_id` / `<role>_email` fields. Each route says which roles it reads
        /// ([`ActorFields::pick`]).
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub struct ActorFields {
            /// The acting user (takes precedence over the `<role>_*` fields).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub actor: Option<ActorBody>,
            $(
                #[allow(missing_docs)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $id: Option<String>,
                #[allow(missing_docs)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $email: Option<String>,
                #[allow(missing_docs)]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $roles: Option<Vec<String>>,
            )+
        }

        impl ActorFields {
            /// The actor: the `actor` object, else the first of `roles` (`"approver"`,
            /// `"denier"`, …, then `"actor"`) whose `<role>_mm_user_id` is present.
            pub fn pick(&self, roles: &[&str]) -> Option<ActorBody> {
                if let Some(a) = &self.actor {
                    return Some(a.clone());
                }
                for role in roles.iter().chain(["actor"].iter()) {
                    let found = match *role {
                        $(stringify!($prefix) => self.$id.as_ref().map(|id| ActorBody {
                            user_id: id.clone(),
                            email: self.$email.clone(),
                            roles: self.$roles.clone().unwrap_or_default(),
                        }),)+
                        _ => None,
                    };
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }

            /// An `actor` object.
            pub fn of(actor: ActorBody) -> Self {
                Self { actor: Some(actor), ..Self::default() }
            }
        }
    };
}

actor_fields! {
    requester: requester_mm_user_id, requester_email, requester_roles;
    approver: approver_mm_user_id, approver_email, approver_roles;
    denier: denier_mm_user_id, denier_email, denier_roles;
    revoker: revoker_mm_user_id, revoker_email, revoker_roles;
    reviewer: reviewer_mm_user_id, reviewer_email, reviewer_roles;
    admin: admin_mm_user_id, admin_email, admin_roles;
    actor: actor_mm_user_id, actor_email, actor_roles;
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// `POST /requests`: the existing plugin's dialog submission, plus our fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateRequestBody {
    /// Who asks (`actor`, or `requester_mm_user_id` + `requester_email`).
    #[serde(flatten)]
    pub who: ActorFields,
    /// Channel the request is made in.
    pub channel_id: String,
    /// AWS account.
    pub account_id: String,
    /// Permission set; the binding's only one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_set_arn: Option<String>,
    /// Ticket reference (`ticket` is accepted too).
    #[serde(default, alias = "ticket", skip_serializing_if = "Option::is_none")]
    pub jira: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Minutes of access, counted from the grant (`duration_minutes` is accepted too).
    #[serde(alias = "duration_minutes")]
    #[schema(value_type = u32)]
    pub requested_duration_minutes: MinutesInput,
    /// Self-granted under the channel's break-glass policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<bool>,
}

/// `POST /requests/{id}/approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApproveBody {
    /// Who approves (`actor`, or `approver_mm_user_id` + `approver_email`).
    #[serde(flatten)]
    pub who: ActorFields,
}

/// `POST /requests/{id}/deny`, `/revoke`, `/cancel`, `/review`: an actor and an optional
/// reason (`denial_reason` and, for a review, `note` are accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecisionBody {
    /// Who decides (`actor`, or the plugin's `denier_*` / `actor_*` fields).
    #[serde(flatten)]
    pub who: ActorFields,
    /// Why (shown on the card and kept in the audit trail).
    #[serde(
        default,
        alias = "denial_reason",
        alias = "note",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
}

/// `POST /requests/{id}/extend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExtendBody {
    /// Who approves the extension.
    #[serde(flatten)]
    pub who: ActorFields,
    /// Minutes to add (`duration_minutes` is accepted too).
    #[serde(alias = "duration_minutes")]
    #[schema(value_type = u32)]
    pub minutes: MinutesInput,
}

/// `POST /requests/{id}/post`: the approval card's post id (the bridge keeps no database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetPostBody {
    /// Mattermost post id.
    pub post_id: String,
}

/// `POST /config/bind`: bind an account (and permission sets) to a channel. The existing
/// plugin sends only `channel_id` and `account_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BindBody {
    /// Who binds (absent from the existing plugin, whose key vouches instead).
    #[serde(flatten)]
    pub who: ActorFields,
    /// Channel.
    pub channel_id: String,
    /// AWS account.
    pub account_id: String,
    /// One permission set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_set_arn: Option<String>,
    /// Several permission sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permission_set_arns: Vec<String>,
}

/// `POST /config/unbind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnbindBody {
    /// Who unbinds.
    #[serde(flatten)]
    pub who: ActorFields,
    /// Channel.
    pub channel_id: String,
    /// AWS account.
    pub account_id: String,
}

/// `POST /config/approvers`: the channel's approvers (the plugin sends `approver_ids`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApproversBody {
    /// Who changes them.
    #[serde(flatten)]
    pub who: ActorFields,
    /// Channel.
    pub channel_id: String,
    /// Mattermost user ids.
    #[serde(alias = "approver_ids")]
    pub approvers: Vec<String>,
    /// N of N-of-M; unchanged when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<u32>,
}

/// `POST /config/policy`: change any of the channel's policy fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyBody {
    /// Who changes it.
    #[serde(flatten)]
    pub who: ActorFields,
    /// Channel.
    pub channel_id: String,
    /// N of N-of-M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<u32>,
    /// Requesters may approve themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
    /// Longest grant, in hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_hours: Option<u32>,
    /// Minutes a request may wait for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout_minutes: Option<u32>,
    /// A ticket is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_ticket: Option<bool>,
    /// A ticket or a reason is required (the old backend's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_ticket_or_reason: Option<bool>,
    /// Break-glass (self-granted, reviewed later) is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_enabled: Option<bool>,
    /// Longest break-glass grant, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_max_minutes: Option<u32>,
}

/// One key's last use, as a verifier reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUse {
    /// Key id.
    pub key_id: String,
    /// Unix seconds of the last verified use.
    pub last_used_unix: i64,
}

/// `POST /admin/keys/usage`: a verifier elsewhere (the bridge, for the callback ring) reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageReport {
    /// `backend` or `callback`.
    pub ring: String,
    /// The verifier's name.
    pub verifier: String,
    /// At most 100 keys.
    pub keys: Vec<KeyUse>,
}

// ---------------------------------------------------------------------------------------------
// Answers

/// One approval of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    /// Approver's Mattermost user id.
    pub user_id: String,
    /// Their email.
    pub email: Option<String>,
    /// When.
    pub at: String,
}

/// Request statuses. The existing plugin knows the first seven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    /// Waiting for approval.
    Pending,
    /// Approved; the grant is being made.
    Approved,
    /// Denied.
    Denied,
    /// Access is in place.
    Granted,
    /// Ended early.
    Revoked,
    /// Ended on time.
    Expired,
    /// The grant failed for good.
    Error,
    /// Withdrawn before a decision.
    Cancelled,
    /// Not decided in time.
    TimedOut,
}

/// A request: the existing plugin's `JitRequest` and our fields beside it. Times not yet
/// reached are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    /// Request id (a UUID); a unique prefix of 8 or more characters is accepted wherever an
    /// id is taken.
    pub request_id: String,
    /// Status.
    pub status: RequestStatus,
    /// Channel.
    pub channel_id: String,
    /// AWS account.
    pub account_id: String,
    /// Permission set (`null`: the provider's default).
    pub permission_set_arn: Option<String>,
    /// Requester's Mattermost user id.
    pub requester_mm_user_id: String,
    /// Requester's email.
    pub requester_email: String,
    /// Ticket.
    pub jira: Option<String>,
    /// Reason.
    pub reason: Option<String>,
    /// Minutes of access, counted from the grant.
    pub requested_duration_minutes: u32,
    /// When the request was made.
    pub created_at: String,
    /// When a pending request times out.
    pub pending_deadline: String,
    /// Approvals needed.
    pub required_approvals: u32,
    /// Approvals so far.
    pub approvals: Vec<ApprovalView>,
    /// When the last required approval came.
    pub approved_at: Option<String>,
    /// The approver whose approval completed it (the plugin's "Approved by").
    pub approver_mm_user_id: Option<String>,
    /// Their email.
    pub approver_email: Option<String>,
    /// When access was granted (old name).
    pub grant_time: Option<String>,
    /// When access was granted.
    pub granted_at: Option<String>,
    /// The end of access: projected (creation + duration) until the grant, then grant +
    /// duration.
    pub end_time: Option<String>,
    /// When it was denied.
    pub denied_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// When it expired.
    pub expired_at: Option<String>,
    /// When it closed, whatever the way.
    pub closed_at: Option<String>,
    /// Who closed it (`null`: the system).
    pub closed_by: Option<String>,
    /// The closing reason.
    pub close_reason: Option<String>,
    /// Why the grant failed.
    pub error_message: Option<String>,
    /// Why the grant failed (old name; the plugin's "Error").
    pub error_details: Option<String>,
    /// Break-glass request.
    pub break_glass: bool,
    /// Break-glass awaiting review.
    pub review_pending: bool,
    /// The approval card's post id.
    pub post_id: Option<String>,
    /// Changes with every update.
    pub version: i64,
}

/// `GET /requests`: the existing plugin's `ReportingResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestList {
    /// One page of requests, newest first.
    pub items: Vec<RequestView>,
    /// Pass as `next_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// The filters applied, as given.
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
    /// Items on this page.
    pub count: usize,
}

/// A channel's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// Approvers' Mattermost user ids.
    pub approvers: Vec<String>,
    /// N of N-of-M.
    pub required_approvals: u32,
    /// Requesters may approve themselves.
    pub allow_self_approval: bool,
    /// Longest grant, in hours.
    pub max_request_hours: u32,
    /// Minutes a request may wait for approval.
    pub pending_timeout_minutes: u32,
    /// A ticket is required.
    pub require_ticket: bool,
    /// A ticket or a reason is required.
    pub require_ticket_or_reason: bool,
    /// Break-glass allowed.
    pub break_glass_enabled: bool,
    /// Longest break-glass grant, in minutes.
    pub break_glass_max_minutes: u32,
}

/// One bound account of a channel: the existing plugin's `JitConfig`, plus our fields.
/// `GET /config/accounts` answers an array of these (`[]` when unbound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountConfig {
    /// Channel.
    pub channel_id: String,
    /// AWS account.
    pub account_id: String,
    /// Approvers' Mattermost user ids (the plugin decides who sees Approve from this).
    pub approver_mm_user_ids: Vec<String>,
    /// `any` (one approval) or `N-of-M`.
    pub approval_policy: String,
    /// Requesters may approve themselves.
    pub allow_self_approval: bool,
    /// Longest grant, in hours.
    pub max_request_hours: u32,
    /// Longest grant, in minutes.
    pub session_duration_minutes: u32,
    /// When the binding last changed.
    pub updated_at: String,
    /// Permission sets bound to this account (empty: the provider's default).
    pub permission_set_arns: Vec<String>,
    /// The channel's whole policy.
    pub policy: PolicyView,
    /// The binding's version.
    pub version: i64,
    /// How long a role session of each bound permission set (or of the provider's default)
    /// lasts, as the access provider reports it: removing an assignment does not end sessions
    /// already open, so this is how long access can outlive a revoke. Absent when the provider
    /// cannot tell (dry-run, command) or did not answer, and in answers other than
    /// `GET /config/accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_session_durations: Option<Vec<RoleSessionDuration>>,
}

/// A permission set's role session duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleSessionDuration {
    /// The permission set.
    pub permission_set_arn: String,
    /// ISO 8601, as IAM Identity Center gives it: `PT1H` by default, at most `PT12H`.
    pub session_duration: String,
}

/// An audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    /// Position in the chain.
    pub seq: i64,
    /// When.
    pub at: Option<String>,
    /// Event type, e.g. `request.approved`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Acting user.
    pub actor_id: Option<String>,
    /// Their email.
    pub actor_email: Option<String>,
    /// Request.
    pub request_id: Option<String>,
    /// Channel.
    pub channel_id: Option<String>,
    /// Account.
    pub account_id: Option<String>,
    /// Event data (its fields depend on the type).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// `GET /audit` (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Events, oldest first.
    pub events: Vec<AuditEventView>,
    /// Events on this page.
    pub count: usize,
    /// The next page's token.
    pub next_token: Option<String>,
}

/// `GET /audit/verify`: the chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerified {
    /// Always true in a 200 (a broken chain is 409 `audit_chain_broken`).
    pub ok: bool,
    /// Events in the verified chain (its head).
    pub events: u64,
    /// Events this run hashed: those after `from_checkpoint`.
    #[serde(default)]
    pub checked: u64,
    /// The verified checkpoint this run started after (0: a full verification).
    #[serde(default)]
    pub from_checkpoint: u64,
    /// The run's id.
    #[serde(default)]
    pub job: String,
}

/// `GET /audit/verify` (202): the run outlived the wait and goes on in the background; ask
/// again with `job` for its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifying {
    /// Always `running`.
    pub state: String,
    /// The run's id: `GET /audit/verify?job=<id>` reports it.
    pub job: String,
    /// Whether it verifies from the first event.
    pub full: bool,
    /// The first event this run checks.
    pub from_seq: u64,
    /// The last event checked so far.
    pub verified_seq: u64,
    /// The head it verifies up to.
    pub head_seq: u64,
}

/// A grant whose removal is late.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverdueGrant {
    /// Request.
    pub request_id: String,
    /// Its status.
    pub status: RequestStatus,
    /// When access should have gone.
    pub should_have_ended_at: String,
    /// Seconds since.
    pub overdue_seconds: i64,
    /// Removal attempts so far.
    pub attempts: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Unix milliseconds of the next attempt.
    pub next_attempt_ms: i64,
}

/// `GET /grants/overdue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverdueList {
    /// Overdue grants.
    pub overdue: Vec<OverdueGrant>,
    /// How many.
    pub count: usize,
}

/// Callback delivery states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallbackState {
    /// Waiting or retrying.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up on; can be re-sent.
    Dead,
}

/// A queued callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackRecord {
    /// Event id (`X-JIT-Event-ID`).
    pub event_id: String,
    /// Request.
    pub request_id: String,
    /// Delivery state.
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// What is (or was) sent.
    pub payload: Option<CallbackPayload>,
}

/// `GET /callbacks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackList {
    /// Callbacks.
    pub callbacks: Vec<CallbackRecord>,
    /// How many.
    pub count: usize,
}

/// `POST /callbacks/{event_id}/resend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResendAnswer {
    /// Event id.
    pub event_id: String,
    /// `PENDING` again.
    pub status: CallbackState,
}

/// One key's last use by one verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageRow {
    /// `backend` or `callback`.
    pub ring: String,
    /// Verifier name.
    pub verifier: String,
    /// Key id.
    pub key_id: String,
    /// Unix seconds.
    pub last_used_unix: i64,
    /// The same, RFC 3339.
    pub last_used_at: Option<String>,
}

/// `GET /admin/keys/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageList {
    /// Rows.
    pub usage: Vec<KeyUsageRow>,
    /// How many.
    pub count: usize,
    /// Every verifier that has reported, with its last report (a heartbeat).
    #[serde(default)]
    pub verifiers: Vec<VerifierReport>,
    /// How often a running verifier records its key use (its first use of a key at once):
    /// the most a recorded last use can lag the truth.
    #[serde(default)]
    pub flush_secs: i64,
}

/// A verifier's last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifierReport {
    /// `backend` or `callback`.
    pub ring: String,
    /// Verifier name.
    pub verifier: String,
    /// Unix seconds of its last report.
    pub last_report_unix: i64,
}

/// `POST /admin/keys/callback-signing`: sign callbacks with this key from now on (the
/// existing-plugin profile's switch, made at the moment the plugin's secret is edited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackKeySwitch {
    /// A key of the callback ring.
    pub key_id: String,
}

/// The answer to a [`CallbackKeySwitch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackKeySwitched {
    /// The key that signs callbacks now.
    pub key_id: String,
    /// The key that signed them before (`null`: the ring's signing key).
    pub previous: Option<String>,
}

/// `POST /admin/keys/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyUsageRecorded {
    /// Entries recorded.
    pub recorded: usize,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// A key ring's state in `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RingReadiness {
    /// A load has succeeded.
    pub loaded: bool,
    /// Keys in the ring.
    pub keys: usize,
}

/// `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Ready to serve.
    pub ready: bool,
    /// `ok` or `unreachable`.
    pub store: String,
    /// The bridge-to-backend ring.
    pub backend_ring: RingReadiness,
    /// The callback ring.
    pub callback_ring: RingReadiness,
    /// The access provider.
    pub provider: ProviderReadiness,
}

/// The access provider's part of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProviderReadiness {
    /// `dry-run`, `command` or `aws-identity-center`.
    pub name: String,
    /// Its last check passed (checked at start, then again by `/readyz` while it fails).
    pub ready: bool,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Callbacks

/// What the backend POSTs to the bridge (or the existing plugin's `/webhook`): the plugin's
/// shape (`request_id, status, account_id, channel_id, actor, details` with string values),
/// plus `event_id` and `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackPayload {
    /// Event id, also in `X-JIT-Event-ID`; receivers dedupe by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// When the change happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Request.
    pub request_id: String,
    /// The status the request moved to, or `EXTENDED`.
    pub status: String,
    /// Account.
    pub account_id: String,
    /// Channel.
    pub channel_id: String,
    /// Who caused it (email or user id; `system` for the workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Key/value details, printed by the plugin as `key: value`.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

/// What a receiver answers to a callback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallbackAck {
    /// Accepted.
    pub ok: bool,
    /// Already seen (same event id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Why it was accepted but not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let t = time::macros::datetime!(2026-12-02 06:11:30.123456789 +02:00);
        assert_eq!(timestamp(t), "2026-12-02T04:11:30.123Z");
        let t = time::macros::datetime!(2026-12-02 06:11:30 UTC);
        assert_eq!(timestamp(t), "2026-12-02T06:11:30.000Z");
    }

    #[test]
    fn minutes_accept_numbers_and_numeric_text() {
        for (json, text) in [("60", "60"), ("\"60\"", "60"), ("-5", "-5"), ("1.5", "1.5")] {
            let m: MinutesInput = serde_json::from_str(json).unwrap();
            assert_eq!(m.0, text);
        }
    }

    #[test]
    fn the_plugin_actor_fields_are_read_for_the_roles_a_route_names() {
        let b: DecisionBody = serde_json::from_str(
            r#"{"denier_mm_user_id":"u1","denier_email":"a@x.io","reason":"no"}"#,
        )
        .unwrap();
        assert_eq!(b.who.pick(&["approver"]), None);
        let a = b.who.pick(&["approver", "denier"]).unwrap();
        assert_eq!(
            (a.user_id.as_str(), a.email.as_deref()),
            ("u1", Some("a@x.io"))
        );
        assert_eq!(b.reason.as_deref(), Some("no"));
        let r: DecisionBody =
            serde_json::from_str(r#"{"actor_mm_user_id":"u2","actor_email":"b@x.io"}"#).unwrap();
        assert_eq!(r.who.pick(&["revoker"]).unwrap().user_id, "u2");
    }
}
