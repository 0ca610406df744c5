//! Operations: the callback outbox (list, re-send) and key use per verifier.

use super::extract::{Incoming, PathParam, check_params, limit_param};
use crate::error::ApiError;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use jit_proto::wire::{
    CallbackKeySwitch, CallbackKeySwitched, CallbackList, CallbackRecord, CallbackState, ErrorCode,
    KeyUsageList, KeyUsageRecorded, KeyUsageReport, KeyUsageRow, ResendAnswer, VerifierReport,
};
use jit_store::StoreError;
#[allow(unused_imports)]
use jit_store::prelude::*;
use time::OffsetDateTime;

/// `GET /callbacks?status=PENDING|DELIVERED|DEAD`.
#[utoipa::path(get, path = "/callbacks", tag = "callbacks", params(CallbackFilters), responses((status = 200, description = "Queued, delivered or dead callbacks", body = CallbackList), ReadErrors))]
pub async fn list_callbacks(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<CallbackList>, ApiError> {
    check_params(&params, &["status", "limit"])?;
    let mut status = "DEAD".to_owned();
    let mut limit = 100;
    for (k, v) in &params {
        match k.as_str() {
            "status" => {
                let v = v.to_ascii_uppercase();
                if !["PENDING", "DELIVERED", "DEAD"].contains(&v.as_str()) {
                    return Err(ApiError::bad(
                        ErrorCode::InvalidStatus,
                        "status must be PENDING, DELIVERED or DEAD",
                    ));
                }
                status = v;
            }
            "limit" => limit = limit_param(v, 1000)?,
            _ => {}
        }
    }
    let events = st.store.list_callbacks(&status, limit).await?;
    let callbacks: Vec<CallbackRecord> = events
        .iter()
        .map(|e| CallbackRecord {
            event_id: e.event_id.clone(),
            request_id: e.request_id.as_str().to_owned(),
            status: e.status.clone(),
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            payload: serde_json::from_str(&e.payload).ok(),
        })
        .collect();
    let count = callbacks.len();
    Ok(Json(CallbackList { callbacks, count }))
}

/// `POST /callbacks/{event_id}/resend`: a dead letter goes back to the queue.
#[utoipa::path(post, path = "/callbacks/{event_id}/resend", tag = "callbacks", params(("event_id" = String, Path, description = "Event id")), responses((status = 200, description = "Queued again", body = ResendAnswer), WriteErrors))]
pub async fn resend_callback(
    State(st): State<AppState>,
    PathParam(event_id): PathParam,
) -> Result<Json<ResendAnswer>, ApiError> {
    if event_id.is_empty()
        || event_id.len() > 64
        || !event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::bad(ErrorCode::InvalidEventId, "not an event id"));
    }
    match st
        .store
        .resend_callback(&event_id, crate::effects_ms(st.clock.now()))
        .await
    {
        Ok(()) => {
            st.wake.notify_one();
            Ok(Json(ResendAnswer {
                event_id,
                status: CallbackState::Pending,
            }))
        }
        Err(StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::CallbackNotFound,
            "no dead callback has this id",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /admin/keys/usage`: when each key last verified a request, per ring and verifier:
/// what makes "is the old key still in use?" a fact.
#[utoipa::path(get, path = "/admin/keys/usage", tag = "keys", responses((status = 200, description = "Last verified use per key and verifier", body = KeyUsageList), ReadErrors))]
pub async fn key_usage(State(st): State<AppState>) -> Result<Json<KeyUsageList>, ApiError> {
    let rows = st.store.key_usage().await?;
    let (beats, rows): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|u| u.key_id == jit_keys::USAGE_HEARTBEAT_KEY);
    let verifiers = beats
        .iter()
        .map(|u| VerifierReport {
            ring: u.ring.clone(),
            verifier: u.verifier.clone(),
            last_report_unix: u.last_used_unix,
        })
        .collect();
    let usage: Vec<KeyUsageRow> = rows
        .iter()
        .map(|u| KeyUsageRow {
            ring: u.ring.clone(),
            verifier: u.verifier.clone(),
            key_id: u.key_id.clone(),
            last_used_unix: u.last_used_unix,
            last_used_at: OffsetDateTime::from_unix_timestamp(u.last_used_unix)
                .ok()
                .map(views::ts),
        })
        .collect();
    let count = usage.len();
    Ok(Json(KeyUsageList {
        usage,
        count,
        verifiers,
        flush_secs: jit_keys::USAGE_FLUSH_SECS,
    }))
}

/// `POST /admin/keys/usage`: a verifier elsewhere (the bridge, for the callback ring)
/// reports its key use.
#[utoipa::path(post, path = "/admin/keys/usage", tag = "keys", request_body = KeyUsageReport, responses((status = 200, description = "Recorded", body = KeyUsageRecorded), WriteErrors))]
pub async fn report_key_usage(
    State(st): State<AppState>,
    inc: Incoming,
) -> Result<Json<KeyUsageRecorded>, ApiError> {
    let r: KeyUsageReport = inc.json()?;
    if !matches!(r.ring.as_str(), "backend" | "callback") {
        return Err(ApiError::bad(
            ErrorCode::InvalidField,
            "ring must be backend or callback",
        ));
    }
    let v = &r.verifier;
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad(
            ErrorCode::InvalidField,
            "verifier must be 1-64 visible characters",
        ));
    }
    if r.keys.len() > 100 {
        return Err(ApiError::bad(
            ErrorCode::InvalidField,
            "keys must be a list of at most 100 entries",
        ));
    }
    let mut entries = Vec::with_capacity(r.keys.len());
    for k in &r.keys {
        if jit_proto::keyring::KeyId::parse(&k.key_id).is_err() {
            return Err(ApiError::bad(
                ErrorCode::InvalidField,
                "each key needs a valid key_id and last_used_unix",
            ));
        }
        entries.push((k.key_id.clone(), k.last_used_unix));
    }
    // Every report is also the verifier's heartbeat.
    let recorded = entries.len();
    entries.push((jit_keys::USAGE_HEARTBEAT_KEY.to_owned(), st.clock.unix()));
    st.store.record_key_usage(&r.ring, v, &entries).await?;
    Ok(Json(KeyUsageRecorded { recorded }))
}

/// `POST /admin/keys/callback-signing`: callbacks are signed with this key of the callback ring
/// from now on, until the receiver refuses it (then the ring's other keys are tried). For the
/// existing plugin, which holds one secret: run it at the moment its secret is edited. Audited.
#[utoipa::path(post, path = "/admin/keys/callback-signing", tag = "keys", request_body = CallbackKeySwitch, responses((status = 200, description = "Switched", body = CallbackKeySwitched), WriteErrors))]
pub async fn switch_callback_key(
    State(st): State<AppState>,
    inc: Incoming,
) -> Result<Json<CallbackKeySwitched>, ApiError> {
    let b: CallbackKeySwitch = inc.json()?;
    let id = jit_proto::KeyId::parse(&b.key_id)
        .map_err(|_| ApiError::bad(ErrorCode::InvalidField, "key_id is not a key id"))?;
    let ring = st.callback_ring.current();
    if ring.get(id.as_str()).is_none_or(|k| k.is_verify_only()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!(
                "the callback ring has no key {} that may sign (add it first; the ring reloads by itself)",
                id.as_str()
            ),
        ));
    }
    let previous = {
        let mut k = st
            .callback_key
            .lock()
            .map_err(|_| ApiError::internal(&"callback key state poisoned"))?;
        k.key.replace(id.clone())
    };
    let mut d = jit_core::audit::AuditDraft::new("keys.callback_signing_switched");
    d.data = serde_json::json!({"key_id": id.as_str(), "previous": previous.as_ref().map(|p| p.as_str()),
                                "by_key": inc.caller.key_id});
    st.store
        .record(jit_store::WriteCtx::with_audit(vec![d], st.clock.now()))
        .await?;
    tracing::info!(
        key_id = id.as_str(),
        "callbacks are signed with this key from now on"
    );
    Ok(Json(CallbackKeySwitched {
        key_id: id.as_str().to_owned(),
        previous: previous.map(|p| p.as_str().to_owned()),
    }))
}
