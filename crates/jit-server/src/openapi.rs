//! The OpenAPI document, generated from the wire types (`jit_proto::wire`) and the handlers'
//! `#[utoipa::path]` annotations. `docs/openapi.json` is this document; a test fails when the
//! two differ (`jit openapi > docs/openapi.json` rewrites it).

pub use jit_proto::wire::*;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

/// `Idempotency-Key`: a retry with the same key and body answers the first answer.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// 1-128 visible ASCII characters; the same key with another body is 422.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// A request id in the path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RequestIdParam {
    /// The request id (a UUID), or a unique prefix of 8 or more characters.
    id: String,
}

/// `channel_id`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ChannelParam {
    /// Mattermost channel id.
    channel_id: String,
}

/// Filters of `GET /requests`. Any other parameter is 400 `unknown_parameter`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RequestFilters {
    /// One request by id or unique prefix (the plugin's `/jit status <id>`).
    request_id: Option<String>,
    /// Channel.
    channel_id: Option<String>,
    /// Account.
    account_id: Option<String>,
    /// Requester's email.
    requester_email: Option<String>,
    /// Requester's Mattermost user id.
    requester_mm_user_id: Option<String>,
    /// Statuses, comma-separated.
    status: Option<String>,
    /// Created on or after (`YYYY-MM-DD` or RFC 3339).
    start_date: Option<String>,
    /// Created on or before.
    end_date: Option<String>,
    /// Page size, 1-200 (50).
    limit: Option<u32>,
    /// The previous page's `next_token`.
    next_token: Option<String>,
}

/// Filters of `GET /audit`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditFilters {
    /// Request.
    request_id: Option<String>,
    /// Account.
    account_id: Option<String>,
    /// Channel.
    channel_id: Option<String>,
    /// Actor's user id or email.
    actor: Option<String>,
    /// Event type, e.g. `request.approved`.
    #[param(rename = "type")]
    kind: Option<String>,
    /// On or after.
    since: Option<String>,
    /// On or before.
    until: Option<String>,
    /// Page size, 1-1000 (500).
    limit: Option<u32>,
    /// The previous page's token.
    next_token: Option<String>,
    /// `json` (default), `jsonl` or `csv`.
    format: Option<String>,
}

/// Parameters of `GET /audit/verify`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct VerifyParams {
    /// `true`: from the first event, ignoring checkpoints (default `false`: from the newest
    /// verified checkpoint).
    full: Option<bool>,
    /// Seconds to wait for the result before answering 202 (0-20, default 5).
    wait: Option<u64>,
    /// Report this earlier run instead of starting one.
    job: Option<String>,
}

/// Filters of `GET /callbacks`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CallbackFilters {
    /// `PENDING`, `DELIVERED` or `DEAD` (default).
    status: Option<String>,
    /// 1-1000 (100).
    limit: Option<u32>,
}

/// The errors any signed read may answer.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// Bad input: the code says which (`invalid_*`, `missing_*`, `unknown_parameter`, …).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The signature was refused (`missing_header`, `bad_signature`, `unknown_key`,
    /// `stale_timestamp`, `replayed_nonce`, `no_keys`, …).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not found (`request_not_found`, `route_not_found`, …).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The route does not take this method (`method_not_allowed`).
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// Too many failed signatures from this address (`too_many_auth_failures`); wait a minute.
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// Unexpected fault (`internal`); the cause is in the server log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The store or the nonce store is unavailable, or the request took too long
    /// (`store_unavailable`, `nonce_store_unavailable`, `timeout`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The errors any signed write may answer.
#[derive(Debug, IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    /// Bad input: the code says which (`invalid_json`, `missing_field`, `invalid_field`,
    /// `missing_actor`, `invalid_*`, …).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The signature was refused.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The actor may not do this (`not_an_approver`, `admin_required`, …).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Not found (`request_not_found`, `account_not_bound`, `callback_not_found`, `verification_not_found`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The route does not take this method (`method_not_allowed`).
    #[response(status = 405)]
    MethodNotAllowed(ErrorBody),
    /// The state does not allow it, or a concurrent change won (`invalid_state`,
    /// `conflict`, `grant_ended`, …).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is larger than 64 KiB (`body_too_large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not `application/json` (`unsupported_media_type`).
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// A rule of the channel's policy (`duration_exceeds_policy`, `ticket_required`,
    /// `channel_not_bound`, `idempotency_key_reused`, …).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Too many failed signatures from this address (`too_many_auth_failures`).
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// Unexpected fault (`internal`).
    #[response(status = 500)]
    Internal(ErrorBody),
    /// The store or the nonce store is unavailable, or the request took too long.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The X-JIT signature (docs/protocol.md) as a security scheme.
struct Signature;

impl Modify for Signature {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "x_jit",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-JIT-Signature",
                "HMAC-SHA256 over the canonical request (docs/protocol.md), with X-JIT-KeyID, \
                 X-JIT-Timestamp and X-JIT-Nonce (and X-JIT-Version: 2 for v2)",
            ))),
        );
    }
}

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "jit-access backend API",
        version = "1",
        description = "Every route but /healthz, /readyz and /metrics needs an X-JIT signature \
            (docs/protocol.md). Bodies are JSON objects of at most 64 KiB; unknown fields are \
            ignored. Timestamps are RFC 3339, UTC, milliseconds. Every error is {code, message} \
            with a stable code. The existing Go plugin's shapes (JitConfig, JitRequest, \
            ReportingResponse, its webhook payload) are these shapes, extended only additively."
    ),
    paths(
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics,
        crate::api::requests::create_request,
        crate::api::requests::list_requests,
        crate::api::requests::get_request,
        crate::api::requests::approve,
        crate::api::requests::deny,
        crate::api::requests::revoke,
        crate::api::requests::cancel,
        crate::api::requests::review,
        crate::api::requests::extend,
        crate::api::requests::set_post,
        crate::api::requests::overdue,
        crate::api::config::bind,
        crate::api::config::unbind,
        crate::api::config::set_approvers,
        crate::api::config::set_policy,
        crate::api::config::get_accounts,
        crate::api::audit::list_audit,
        crate::api::audit::verify_audit,
        crate::api::admin::list_callbacks,
        crate::api::admin::resend_callback,
        crate::api::admin::key_usage,
        crate::api::admin::report_key_usage,
        crate::api::admin::switch_callback_key,
    ),
    components(schemas(CallbackPayload, CallbackAck, ErrorCode)),
    modifiers(&Signature),
    security(("x_jit" = []))
)]
pub struct ApiDoc;

/// The document as pretty JSON, with a final newline (what `docs/openapi.json` holds).
pub fn json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_openapi_json_is_what_the_types_generate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == super::json(),
            "docs/openapi.json differs from the generated document; run \
             `cargo run --bin jit -- openapi > docs/openapi.json` and commit it"
        );
    }

    #[test]
    fn every_signed_route_documents_405_and_429() {
        let doc: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"]["405"].is_object(),
                    "{method} {path}: no 405"
                );
                if !matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
                    assert!(
                        op["responses"]["429"].is_object(),
                        "{method} {path}: no 429"
                    );
                }
            }
        }
    }
}
