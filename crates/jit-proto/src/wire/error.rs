//! Every error code the backend and the bridge answer with, as one enum. Codes are stable: a
//! caller may match on them, so a code is never renamed, only added.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal ),+ $(,)?) => {
        /// A stable, machine-readable error code (`snake_case` on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[$doc])* #[serde(rename = $text)] $variant, )+
            /// A code this build does not know (a newer server's); clients treat it as an error
            /// without a specific meaning.
            #[serde(other, rename = "unknown_code")]
            UnknownCode,
        }

        impl ErrorCode {
            /// Every code but [`ErrorCode::UnknownCode`].
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The code as sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                    ErrorCode::UnknownCode => "unknown_code",
                }
            }

            /// The code a text names; [`ErrorCode::UnknownCode`] for any other text.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($text => ErrorCode::$variant,)+
                    _ => ErrorCode::UnknownCode,
                }
            }
        }
    };
}

codes! {
    // Signatures (jit_proto::sign::Rejection) and the front door.
    /// A required X-JIT header is absent.
    MissingHeader = "missing_header",
    /// An X-JIT header is duplicated or malformed.
    MalformedHeader = "malformed_header",
    /// Unknown signature version, or v1 where v2 is required.
    UnsupportedVersion = "unsupported_version",
    /// The timestamp is outside the allowed skew.
    StaleTimestamp = "stale_timestamp",
    /// The key id is not in the ring.
    UnknownKey = "unknown_key",
    /// The signature does not match.
    BadSignature = "bad_signature",
    /// The nonce was used before.
    ReplayedNonce = "replayed_nonce",
    /// The ring has no keys.
    NoKeys = "no_keys",
    /// The nonce store did not answer (503).
    NonceStoreUnavailable = "nonce_store_unavailable",
    /// Too many failed signatures from this address (429).
    TooManyAuthFailures = "too_many_auth_failures",
    /// The body is larger than the limit (413).
    BodyTooLarge = "body_too_large",
    /// The body is not `application/json` (415).
    UnsupportedMediaType = "unsupported_media_type",
    /// The body is not JSON, or not a JSON object.
    InvalidJson = "invalid_json",
    /// A path parameter does not decode.
    InvalidPath = "invalid_path",
    /// No such route (404).
    RouteNotFound = "route_not_found",
    /// The route exists, the method does not (405).
    MethodNotAllowed = "method_not_allowed",
    /// The request took longer than the server's limit (503).
    Timeout = "timeout",
    /// An unexpected fault; the cause is in the server log (500).
    Internal = "internal",
    /// The database did not answer (503).
    StoreUnavailable = "store_unavailable",
    /// Someone else changed the record at the same time (409).
    Conflict = "conflict",
    /// Not found.
    NotFound = "not_found",
    /// An `Idempotency-Key` reused with another body.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// A malformed `Idempotency-Key`.
    InvalidIdempotencyKey = "invalid_idempotency_key",

    // Input.
    /// A required field is absent.
    MissingField = "missing_field",
    /// A field has the wrong type or form.
    InvalidField = "invalid_field",
    /// A required query parameter is absent.
    MissingParameter = "missing_parameter",
    /// A query parameter the route does not take.
    UnknownParameter = "unknown_parameter",
    /// A query parameter has a bad value.
    InvalidParameter = "invalid_parameter",
    /// `limit` out of range.
    InvalidLimit = "invalid_limit",
    /// A paging token this server did not issue.
    InvalidNextToken = "invalid_next_token",
    /// Not a status name.
    InvalidStatus = "invalid_status",
    /// No acting user given.
    MissingActor = "missing_actor",
    /// Not an AWS account id.
    InvalidAccountId = "invalid_account_id",
    /// Not a Mattermost channel id.
    InvalidChannelId = "invalid_channel_id",
    /// Not a Mattermost user id.
    InvalidUserId = "invalid_user_id",
    /// Not an email address.
    InvalidEmail = "invalid_email",
    /// Not a request id (or an id prefix shorter than 8 characters).
    InvalidRequestId = "invalid_request_id",
    /// An id prefix that matches more than one request.
    AmbiguousRequestId = "ambiguous_request_id",
    /// Not a duration in minutes.
    InvalidDuration = "invalid_duration",
    /// Not a ticket reference.
    InvalidTicket = "invalid_ticket",
    /// A reason that is too long or has control characters.
    InvalidReason = "invalid_reason",
    /// Not a permission set ARN.
    InvalidPermissionSetArn = "invalid_permission_set_arn",
    /// A policy value out of range.
    InvalidPolicy = "invalid_policy",
    /// Not a post id.
    InvalidPostId = "invalid_post_id",
    /// Not a callback event id.
    InvalidEventId = "invalid_event_id",

    // Rules.
    /// The channel has no binding.
    ChannelNotBound = "channel_not_bound",
    /// The account is not bound to the channel.
    AccountNotBound = "account_not_bound",
    /// The permission set is not bound to the account.
    PermissionSetNotBound = "permission_set_not_bound",
    /// Several permission sets are bound; name one.
    PermissionSetRequired = "permission_set_required",
    /// Longer than the policy allows.
    DurationExceedsPolicy = "duration_exceeds_policy",
    /// The policy requires a ticket.
    TicketRequired = "ticket_required",
    /// The policy requires a reason.
    ReasonRequired = "reason_required",
    /// The policy requires a ticket or a reason.
    TicketOrReasonRequired = "ticket_or_reason_required",
    /// Break-glass is off for this channel.
    BreakGlassDisabled = "break_glass_disabled",
    /// Fewer approvers than the approvals required.
    NotEnoughApprovers = "not_enough_approvers",
    /// The transition is not allowed from the request's state.
    InvalidState = "invalid_state",
    /// The pending request timed out.
    RequestTimedOut = "request_timed_out",
    /// This approver already approved.
    AlreadyApproved = "already_approved",
    /// The grant has ended.
    GrantEnded = "grant_ended",
    /// No break-glass review is pending.
    NoReviewPending = "no_review_pending",
    /// The job is not due.
    NotDue = "not_due",
    /// The audit chain does not verify (409).
    AuditChainBroken = "audit_chain_broken",

    // Authorisation.
    /// Only an admin may do this.
    AdminRequired = "admin_required",
    /// The user is not an approver of the channel.
    NotAnApprover = "not_an_approver",
    /// Self-approval is off.
    SelfApprovalForbidden = "self_approval_forbidden",
    /// A break-glass grant needs another approver's review.
    SelfReviewForbidden = "self_review_forbidden",
    /// Not the requester, an approver or an admin.
    NotAllowedToRevoke = "not_allowed_to_revoke",
    /// Not the requester or an approver.
    NotAllowedToCancel = "not_allowed_to_cancel",

    // Not found.
    /// No request has this id.
    RequestNotFound = "request_not_found",
    /// No dead callback has this id.
    CallbackNotFound = "callback_not_found",
    /// No audit verification run has this id (only the last few are kept).
    VerificationNotFound = "verification_not_found",

    // The bridge's own front door.
    /// The slash command token is not one of the configured ones.
    BadSlashToken = "bad_slash_token",
    /// A button's signed context does not verify.
    BadActionToken = "bad_action_token",
    /// A button's signed context has expired.
    ExpiredActionToken = "expired_action_token",
    /// A dialog's signed state does not verify.
    BadDialogState = "bad_dialog_state",
    /// A dialog's signed state has expired.
    ExpiredDialogState = "expired_dialog_state",
    /// Not a `/jit` command the bridge knows.
    InvalidCommand = "invalid_command",
    /// A form body that does not parse.
    InvalidForm = "invalid_form",
    /// A button with an unknown action.
    UnknownAction = "unknown_action",
    /// A dialog with an unknown callback id.
    UnknownForm = "unknown_form",
    /// A callback without an event id.
    MissingEventId = "missing_event_id",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl From<crate::sign::Rejection> for ErrorCode {
    fn from(r: crate::sign::Rejection) -> Self {
        Self::parse(r.code())
    }
}

/// Every error answer: a stable code and a human message (the existing plugin shows
/// `message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// What went wrong, for a person; never internals or secrets.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_unknown_codes_decode() {
        for c in ErrorCode::ALL {
            let text = serde_json::to_string(c).unwrap();
            assert_eq!(text, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&text).unwrap(), *c);
            assert_eq!(ErrorCode::parse(c.as_str()), *c);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::UnknownCode
        );
    }

    #[test]
    fn signature_rejections_are_codes() {
        for r in crate::sign::Rejection::ALL {
            assert_eq!(ErrorCode::from(r).as_str(), r.code());
        }
    }
}
