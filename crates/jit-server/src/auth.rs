//! The signature check in front of every API route but the health probes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jit_proto::sign::{HEADER_KEY_ID, RequestParts};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Counts authentication failures per source address in one-minute windows; past `burst`
/// failures a source gets 429 for the rest of the window, valid signature or not, so a key or
/// nonce cannot be guessed at speed. The table is bounded (the oldest windows are dropped).
#[derive(Debug)]
pub struct FailureLimiter {
    burst: u32,
    table: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (i64, u32)>>,
}

impl FailureLimiter {
    /// At most `burst` failures per source per minute.
    pub fn new(burst: u32) -> Self {
        Self {
            burst,
            table: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn window(now: i64) -> i64 {
        now.div_euclid(60)
    }

    /// True when `ip` has used up its failures in this window.
    pub fn blocked(&self, ip: std::net::IpAddr, now: i64) -> bool {
        self.table
            .lock()
            .map(|t| {
                t.get(&ip)
                    .is_some_and(|(w, n)| *w == Self::window(now) && *n >= self.burst)
            })
            .unwrap_or(false)
    }

    /// Records a failure from `ip`.
    pub fn failed(&self, ip: std::net::IpAddr, now: i64) {
        if let Ok(mut t) = self.table.lock() {
            let w = Self::window(now);
            if t.len() > 100_000 {
                t.retain(|_, (tw, _)| *tw == w);
            }
            let e = t.entry(ip).or_insert((w, 0));
            if e.0 != w {
                *e = (w, 0);
            }
            e.1 = e.1.saturating_add(1);
        }
    }
}

/// The verified caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id that verified the request.
    pub key_id: String,
}

/// Reads the body (refusing more than [`MAX_BODY_BYTES`] with 413), verifies the X-JIT
/// signature against the bridge-to-backend ring, and passes the request on with a [`Caller`].
/// Refusals are a plain 401 `{"code": reason}` (503 if the nonce store is down); the reason and
/// the claimed key id are logged, never the secret.
pub async fn require_signature(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let source = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = st.clock.unix();
    if let Some(ip) = source
        && st.auth_failures.blocked(ip, now)
    {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_auth_failures",
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
        Ok(v) => {
            parts.extensions.insert(Caller {
                key_id: v.key_id.as_str().to_owned(),
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
                axum::Json(serde_json::json!({"code": rejection.code()})),
            )
                .into_response()
        }
    }
}
