//! The signature check in front of every API route but the health probes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jit_proto::sign::{HEADER_KEY_ID, RequestParts};
use jit_proto::wire::ErrorCode;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The verified caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id that verified the request.
    pub key_id: String,
    /// The key is the existing plugin's and the profile is on: the call vouches for the admin
    /// checks the plugin made itself.
    pub vouched_by_plugin: bool,
}

/// Reads the body (refusing more than [`MAX_BODY_BYTES`] with 413), verifies the X-JIT
/// signature against the bridge-to-backend ring, and passes the request on with a [`Caller`].
/// Refusals are a plain 401 `{"code": reason}` (503 if the nonce store is down); the reason and
/// the claimed key id are logged, never the secret.
pub async fn require_signature(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let source = jit_http::source_ip(&parts.extensions);
    let now = st.clock.unix();
    if let Some(ip) = source
        && st.auth_failures.blocked(ip, now)
    {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyAuthFailures,
            "too many failed signatures from this address; wait a minute",
        )
        .into_response();
    }
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return ApiError::too_large(MAX_BODY_BYTES).into_response();
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large(MAX_BODY_BYTES).into_response(),
    };
    let pq = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let rp = RequestParts {
        method: parts.method.as_str(),
        path_and_query: &pq,
        body: &bytes,
    };
    match st
        .backend_ring
        .verify(&st.verifier, &parts.headers, &rp, st.nonces.as_ref())
        .await
    {
        Ok(jit_keys::VerifiedUse {
            verified: v,
            first_use,
        }) => {
            // A key's first use here is recorded before the call proceeds, so `jit keys
            // retire` never sees a key in use as unused (later uses: the periodic flush).
            if first_use
                && let Err(e) = st
                    .store
                    .record_key_usage(
                        "backend",
                        &st.verifier_name,
                        &[
                            (v.key_id.as_str().to_owned(), st.clock.unix()),
                            (jit_keys::USAGE_HEARTBEAT_KEY.to_owned(), st.clock.unix()),
                        ],
                    )
                    .await
            {
                tracing::warn!(error = %e, key_id = v.key_id.as_str(), "recording a key's first use failed");
            }
            let vouched_by_plugin = st.existing_plugin.is_some_and(|p| {
                st.backend_ring
                    .current()
                    .get(v.key_id.as_str())
                    .is_some_and(|k| p.vouches(k))
            });
            parts.extensions.insert(Caller {
                key_id: v.key_id.as_str().to_owned(),
                vouched_by_plugin,
            });
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(rejection) => {
            let claimed = parts
                .headers
                .get(HEADER_KEY_ID)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(64).collect::<String>())
                .unwrap_or_default();
            tracing::warn!(
                reason = rejection.code(),
                key_id = %claimed,
                method = %parts.method,
                path = %parts.uri.path(),
                "signature rejected"
            );
            let known = if st.backend_ring.current().get(&claimed).is_some() {
                claimed.as_str()
            } else {
                "unknown"
            };
            st.http_metrics.auth_failure(rejection.code(), known);
            if let Some(ip) = source {
                st.auth_failures.failed(ip, now);
            }
            let status =
                StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            (
                status,
                axum::Json(jit_proto::wire::ErrorBody {
                    code: rejection.into(),
                    message: rejection_message(rejection).to_owned(),
                }),
            )
                .into_response()
        }
    }
}

/// What a refused signature means, for a person (the plugin shows `message`).
pub fn rejection_message(r: jit_proto::Rejection) -> &'static str {
    use jit_proto::Rejection::*;
    match r {
        MissingHeader => "the request is not signed: an X-JIT header is missing",
        MalformedHeader => "an X-JIT header is malformed or repeated",
        UnsupportedVersion => "this signature version is not accepted here",
        StaleTimestamp => "the signature's timestamp is too far from the server's clock",
        UnknownKey => "the signing key id is not in the backend's key ring",
        BadSignature => "the signature does not match (wrong secret, path or body)",
        ReplayedNonce => "this request was already received (replayed nonce)",
        NoKeys => "the backend has no keys loaded; it refuses every request",
        NonceStoreUnavailable => "replay protection is unavailable; retry later",
    }
}
