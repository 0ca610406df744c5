//! Routes and handlers, cut along the contract: [`requests`], [`config`], [`audit`] and
//! [`admin`], with [`extract`] holding what every handler shares (typed bodies, the acting
//! user, ids, the idempotent commit). Each write handler parses its body into a wire type of
//! `jit_proto::wire`, turns it into domain types, lets `jit-core` decide, and hands the change,
//! its audit events, jobs, callback and idempotency record to the store in one transaction.

pub mod admin;
pub mod audit;
pub mod config;
pub mod extract;
pub mod requests;

pub use extract::{Incoming, PathParam};

use crate::auth::require_signature;
use crate::error::ApiError;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router, middleware};
use jit_proto::wire::{ErrorCode, Health, Readiness, RingReadiness};

/// A route's methods, answering any other method with 405 `method_not_allowed` in the API's
/// error shape (axum's default 405 has an empty body).
fn methods(r: MethodRouter<AppState>) -> MethodRouter<AppState> {
    r.fallback(method_not_allowed)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

/// The API router with its state. `/healthz`, `/readyz` and `/metrics` are open; everything
/// else is signed.
pub fn router(state: AppState) -> Router {
    use requests as rq;
    let signed = Router::new()
        .route(
            "/requests",
            methods(post(rq::create_request).get(rq::list_requests)),
        )
        .route("/requests/{id}", methods(get(rq::get_request)))
        .route("/requests/{id}/approve", methods(post(rq::approve)))
        .route("/requests/{id}/deny", methods(post(rq::deny)))
        .route("/requests/{id}/revoke", methods(post(rq::revoke)))
        .route("/requests/{id}/cancel", methods(post(rq::cancel)))
        .route("/requests/{id}/review", methods(post(rq::review)))
        .route("/requests/{id}/post", methods(post(rq::set_post)))
        .route("/requests/{id}/extend", methods(post(rq::extend)))
        .route("/grants/overdue", methods(get(rq::overdue)))
        .route("/callbacks", methods(get(admin::list_callbacks)))
        .route(
            "/callbacks/{event_id}/resend",
            methods(post(admin::resend_callback)),
        )
        .route("/config/bind", methods(post(config::bind)))
        .route("/config/unbind", methods(post(config::unbind)))
        .route("/config/approvers", methods(post(config::set_approvers)))
        .route("/config/policy", methods(post(config::set_policy)))
        .route("/config/accounts", methods(get(config::get_accounts)))
        .route("/audit", methods(get(audit::list_audit)))
        .route("/audit/verify", methods(get(audit::verify_audit)))
        .route(
            "/admin/keys/usage",
            methods(get(admin::key_usage).post(admin::report_key_usage)),
        )
        .route(
            "/admin/keys/callback-signing",
            methods(post(admin::switch_callback_key)),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_signature,
        ));
    Router::new()
        .route("/healthz", methods(get(healthz)))
        .route("/readyz", methods(get(readyz)))
        .route("/metrics", methods(get(metrics)))
        .merge(signed)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::RouteNotFound,
        "no such route",
    )
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()), responses((status = 200, description = "Alive (no signature)", body = Health), (status = 405, description = "method_not_allowed", body = ErrorBody)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /metrics`: Prometheus text (unsigned, like the health probes): key rings and key use,
/// requests by route and status with latency, authentication failures by reason and key id,
/// the lifecycle's and dispatcher's counters, and the store's counts (docs/observability.md
/// lists every series).
#[utoipa::path(get, path = "/metrics", tag = "probes", security(()), responses((status = 200, description = "Prometheus text (no signature)", body = String, content_type = "text/plain"), (status = 405, description = "method_not_allowed", body = ErrorBody)))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = jit_keys::prometheus(&[&st.backend_ring, &st.callback_ring], st.clock.unix());
    text.push_str(&st.http_metrics.render());
    text.push_str(&st.metrics.render());
    let now_ms = crate::effects_ms(st.clock.now());
    let gauges = st
        .store
        .gauges(now_ms - crate::metrics::LATE_AFTER_MS)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "metrics: store query failed"))
        .ok();
    text.push_str(&crate::metrics::render_gauges(gauges.as_ref(), now_ms));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            jit_http::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// `GET /readyz`: the store answers and the backend ring has keys.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()), responses((status = 200, description = "Ready: the store answers and the backend ring has keys (no signature)", body = Readiness), (status = 503, description = "Not ready", body = Readiness), (status = 405, description = "method_not_allowed", body = ErrorBody)))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let store_ok = st.store.ping().await.is_ok();
    let ring = st.backend_ring.status();
    let cring = st.callback_ring.status();
    let provider = st.provider_health.readiness(st.clock.now_ms()).await;
    let ready = store_ok && ring.loaded && ring.key_count > 0 && provider.ready;
    let body = Readiness {
        provider,
        ready,
        store: if store_ok { "ok" } else { "unreachable" }.into(),
        backend_ring: RingReadiness {
            loaded: ring.loaded,
            keys: ring.key_count,
        },
        callback_ring: RingReadiness {
            loaded: cring.loaded,
            keys: cring.key_count,
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
