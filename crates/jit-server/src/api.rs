//! Routes and handlers. Each write handler parses its input into domain types, checks
//! authorisation against the stored binding, computes the next state with `jit-core`, and hands
//! the change, its audit events and its idempotency record to the store in one transaction.

use crate::auth::{Caller, require_signature};
use crate::error::ApiError;
use crate::idem::Idem;
use crate::state::AppState;
use crate::views;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use jit_core::audit::AuditDraft;
use jit_core::authz;
use jit_core::policy::{Binding, PolicyPatch};
use jit_core::request::{NewRequest, Request, Status};
use jit_core::types::{
    AccountId, Actor, ChannelId, DurationMinutes, Email, PermissionSetArn, Reason, RequestId, Role,
    Ticket, UserId,
};
use jit_store::{AuditFilter, RequestFilter, StoreError, WriteCtx};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The API router with its state. `/healthz` and `/readyz` are open; everything else is signed.
pub fn router(state: AppState) -> Router {
    let signed = Router::new()
        .route("/requests", post(create_request).get(list_requests))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/review", post(review))
        .route("/requests/{id}/post", post(set_post))
        .route("/requests/{id}/extend", post(extend))
        .route("/grants/overdue", get(overdue))
        .route("/callbacks", get(list_callbacks))
        .route("/callbacks/{event_id}/resend", post(resend_callback))
        .route("/config/bind", post(bind))
        .route("/config/unbind", post(unbind))
        .route("/config/approvers", post(set_approvers))
        .route("/config/policy", post(set_policy))
        .route("/config/accounts", get(get_accounts))
        .route("/audit", get(list_audit))
        .route("/audit/verify", get(verify_audit))
        .route("/admin/keys/usage", get(key_usage).post(report_key_usage))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_signature,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(signed)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route")
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Prometheus text (unsigned, like the health probes): key rings and key use, requests by
/// route and status with latency, authentication failures by reason and key id, the lifecycle's
/// and dispatcher's counters, and the store's counts (docs/observability.md lists every series).
async fn metrics(State(st): State<AppState>) -> Response {
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

async fn readyz(State(st): State<AppState>) -> Response {
    let store_ok = st.store.ping().await.is_ok();
    let ring = st.backend_ring.status();
    let ready = store_ok && ring.loaded && ring.key_count > 0;
    let body = json!({
        "ready": ready,
        "store": if store_ok { "ok" } else { "unreachable" },
        "backend_ring": {"loaded": ring.loaded, "keys": ring.key_count},
        "callback_ring": {"loaded": st.callback_ring.status().loaded},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Input parsing

/// One path parameter (`{id}`, `{event_id}`). A segment that does not decode (bad
/// percent-encoding, not UTF-8) is 400 `invalid_path` in the API's error shape, not axum's
/// plain-text rejection (found by the `api_bodies` fuzz target).
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_| {
                ApiError::bad(
                    "invalid_path",
                    "the path does not decode (bad percent-encoding or not UTF-8)",
                )
            })
    }
}

/// The parts of a write request every handler needs.
#[derive(Debug)]
pub struct Incoming {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Incoming {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let body = Bytes::from_request(
            axum::extract::Request::from_parts(parts.clone(), body),
            state,
        )
        .await
        .map_err(|_| ApiError::too_large(crate::auth::MAX_BODY_BYTES))?;
        Ok(Self {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }
}

/// The JSON object of a POST body. Refuses other content types (415) and non-objects (400).
fn body_object(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad(
            "invalid_json",
            format!("the body is not valid JSON ({e})"),
        )),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, names: &[&str]) -> Result<Option<&'a str>, ApiError> {
    for n in names {
        match m.get(*n) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s)),
            Some(_) => {
                return Err(ApiError::bad(
                    "invalid_field",
                    format!("{n} must be a string"),
                ));
            }
        }
    }
    Ok(None)
}

fn req_str<'a>(m: &'a Map<String, Value>, names: &[&str]) -> Result<&'a str, ApiError> {
    opt_str(m, names)?.ok_or_else(|| {
        ApiError::bad(
            "missing_field",
            format!("{} is required", names.first().copied().unwrap_or("field")),
        )
    })
}

fn opt_bool(m: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad(
            "invalid_field",
            format!("{name} must be true or false"),
        )),
    }
}

fn opt_u32(m: &Map<String, Value>, name: &str) -> Result<Option<u32>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
            n.and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad("invalid_field", format!("{name} must be a whole number"))
                })
        }
    }
}

fn str_list(m: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad("invalid_field", format!("{name} must be a list of strings"))
            }),
        Some(Value::String(s)) => Ok(Some(
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect(),
        )),
        Some(_) => Err(ApiError::bad(
            "invalid_field",
            format!("{name} must be a list of strings"),
        )),
    }
}

/// The acting user: an `actor` object `{user_id, email, roles}`, or the existing plugin's
/// `<role>_mm_user_id` / `<role>_email` fields for the roles this route accepts.
fn actor(m: &Map<String, Value>, legacy_roles: &[&str]) -> Result<Actor, ApiError> {
    if let Some(a) = m.get("actor") {
        let Value::Object(a) = a else {
            return Err(ApiError::bad("invalid_field", "actor must be an object"));
        };
        let user_id = UserId::parse(req_str(a, &["user_id", "mm_user_id"])?)?;
        let email = opt_str(a, &["email"])?.map(Email::parse).transpose()?;
        let roles = str_list(a, "roles")?
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect();
        return Ok(Actor {
            user_id,
            email,
            roles,
        });
    }
    for role in legacy_roles.iter().chain(["actor"].iter()) {
        let id_field = format!("{role}_mm_user_id");
        if let Some(id) = opt_str(m, &[id_field.as_str()])? {
            let email_field = format!("{role}_email");
            let roles_field = format!("{role}_roles");
            return Ok(Actor {
                user_id: UserId::parse(id)?,
                email: opt_str(m, &[email_field.as_str()])?
                    .map(Email::parse)
                    .transpose()?,
                roles: str_list(m, &roles_field)?
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| Role::parse(r))
                    .collect(),
            });
        }
    }
    Err(ApiError::bad(
        "missing_actor",
        format!(
            "say who is acting: an \"actor\" object or {}",
            legacy_roles
                .iter()
                .map(|r| format!("{r}_mm_user_id"))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    ))
}

fn draft(kind: &str, actor: Option<&Actor>, req: Option<&Request>, data: Value) -> AuditDraft {
    let mut d = AuditDraft::new(kind);
    if let Some(a) = actor {
        d.actor_id = Some(a.user_id.as_str().to_owned());
        d.actor_email = a.email.as_ref().map(|e| e.as_str().to_owned());
    }
    if let Some(r) = req {
        d.request_id = Some(r.id.as_str().to_owned());
        d.channel_id = Some(r.channel_id.as_str().to_owned());
        d.account_id = Some(r.account_id.as_str().to_owned());
    }
    d.data = data;
    d
}

// ---------------------------------------------------------------------------------------------
// Committing a change

enum Change {
    Create(Box<Request>, Option<Actor>),
    Update(Box<Request>, Box<Request>, Option<Actor>),
    SaveBinding(Binding, i64),
}

/// A write handler's request context: idempotency and time.
struct Call {
    idem: Idem,
    now: OffsetDateTime,
}

impl Call {
    fn new(st: &AppState, inc: &Incoming) -> Result<Self, ApiError> {
        Ok(Self {
            idem: Idem::from_request(&inc.method, &inc.uri, &inc.headers, &inc.body)?,
            now: st.clock.now(),
        })
    }

    /// The stored answer for a repeated `Idempotency-Key`, if there is one.
    async fn replay(&self, st: &AppState) -> Result<Option<Response>, ApiError> {
        let Some(key) = &self.idem.key else {
            return Ok(None);
        };
        match st.store.idempotency_get(&self.idem.scope, key).await? {
            None => Ok(None),
            Some(rec) if rec.request_hash == self.idem.body_hash => {
                let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
                let body: Value = serde_json::from_str(&rec.response).unwrap_or(Value::Null);
                let mut resp = (status, Json(body)).into_response();
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(Some(resp))
            }
            Some(_) => Err(StoreError::IdempotencyMismatch.into()),
        }
    }

    async fn commit(
        &self,
        st: &AppState,
        change: Change,
        audit: Vec<AuditDraft>,
        status: StatusCode,
        body: Value,
    ) -> Result<Response, ApiError> {
        let mut ctx = WriteCtx::with_audit(audit, self.now);
        ctx.idem = self.idem.record(status.as_u16(), &body);
        let with_effects = |ctx: &mut WriteCtx,
                            prev: Option<&Request>,
                            next: &Request,
                            actor: Option<&Actor>| {
            let (jobs, outbox) =
                crate::effects::effects(prev, next, actor, self.now, hex::encode(st.random_id()));
            ctx.jobs = jobs;
            ctx.outbox = outbox;
        };
        let r = match change {
            Change::Create(req, actor) => {
                with_effects(&mut ctx, None, &req, actor.as_ref());
                st.store.create_request(&req, ctx).await
            }
            Change::Update(prev, next, actor) => {
                with_effects(&mut ctx, Some(&prev), &next, actor.as_ref());
                st.store.update_request(&next, ctx).await
            }
            Change::SaveBinding(b, expected) => {
                st.store.save_binding(&b, expected, ctx).await.map(|_| ())
            }
        };
        match r {
            Ok(()) => {
                st.wake.notify_one();
                Ok((status, Json(body)).into_response())
            }
            // A concurrent retry with the same key won the race: answer as it was answered.
            Err(StoreError::Conflict) if self.idem.key.is_some() => match self.replay(st).await? {
                Some(resp) => Ok(resp),
                None => Err(StoreError::Conflict.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

async fn load_request(st: &AppState, id: &str) -> Result<Request, ApiError> {
    let id = RequestId::parse(id)?;
    st.store
        .get_request(&id)
        .await?
        .ok_or_else(ApiError::request_not_found)
}

fn channel_not_bound() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "channel_not_bound",
        "this channel has no bound accounts; an admin runs /jit bind first",
    )
}

async fn load_binding(st: &AppState, channel: &ChannelId) -> Result<Binding, ApiError> {
    st.store
        .get_binding(channel)
        .await?
        .ok_or_else(channel_not_bound)
}

// ---------------------------------------------------------------------------------------------
// Requests

async fn create_request(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, &["requester"])?;
    let duration = match m
        .get("requested_duration_minutes")
        .or_else(|| m.get("duration_minutes"))
    {
        Some(v) => DurationMinutes::from_json(v)?,
        None => {
            return Err(ApiError::bad(
                "missing_field",
                "requested_duration_minutes is required",
            ));
        }
    };
    let new = NewRequest {
        channel_id: ChannelId::parse(req_str(&m, &["channel_id"])?)?,
        account_id: AccountId::parse(req_str(&m, &["account_id"])?)?,
        permission_set_arn: opt_str(&m, &["permission_set_arn"])?
            .map(PermissionSetArn::parse)
            .transpose()?,
        ticket: Ticket::parse(opt_str(&m, &["jira", "ticket"])?.unwrap_or(""))?,
        reason: Reason::parse(opt_str(&m, &["reason"])?.unwrap_or(""))?,
        duration,
        break_glass: opt_bool(&m, "break_glass")?.unwrap_or(false),
    };
    let binding = load_binding(&st, &new.channel_id).await?;
    let req = Request::create(
        RequestId::from_random(st.random_id()),
        new,
        &actor,
        &binding,
        call.now,
    )?;
    let mut audit = vec![draft(
        "request.created",
        Some(&actor),
        Some(&req),
        json!({"duration_minutes": req.duration, "ticket": req.ticket, "reason": req.reason,
               "permission_set_arn": req.permission_set_arn, "break_glass": req.break_glass}),
    )];
    if req.break_glass {
        audit.push(draft(
            "request.break_glass",
            Some(&actor),
            Some(&req),
            json!({"review_pending": true}),
        ));
    }
    let view = views::request(&req);
    call.commit(
        &st,
        Change::Create(Box::new(req), Some(actor)),
        audit,
        StatusCode::CREATED,
        view,
    )
    .await
}

async fn get_request(
    State(st): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(views::request(&load_request(&st, &id).await?)))
}

/// Shared shape of the transition handlers.
async fn transition(
    st: AppState,
    id: String,
    inc: Incoming,
    roles: &[&str],
    apply: impl FnOnce(
        &Request,
        &Binding,
        &Actor,
        &Map<String, Value>,
        OffsetDateTime,
    ) -> Result<(Request, Vec<AuditDraft>), ApiError>,
) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, roles)?;
    let id = RequestId::parse(&id)?;
    let (req, binding) = st
        .store
        .get_request_with_binding(&id)
        .await?
        .ok_or_else(ApiError::request_not_found)?;
    let binding = binding.ok_or_else(channel_not_bound)?;
    let (next, audit) = apply(&req, &binding, &actor, &m, call.now)?;
    let view = views::request(&next);
    call.commit(
        &st,
        Change::Update(Box::new(req), Box::new(next), Some(actor)),
        audit,
        StatusCode::OK,
        view,
    )
    .await
}

async fn approve(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(st, id, inc, &["approver"], |req, b, actor, _m, now| {
        authz::may_decide(actor, &b.policy)?;
        let next = req.approve(actor, &b.policy, now)?;
        let mut audit = vec![draft(
            "request.approval_added",
            Some(actor),
            Some(&next),
            json!({"approvals": next.approvals.len(), "required": next.required_approvals}),
        )];
        if next.status() == Status::Approved {
            audit.push(draft(
                "request.approved",
                Some(actor),
                Some(&next),
                json!({}),
            ));
        }
        Ok((next, audit))
    })
    .await
}

async fn deny(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["approver", "denier"],
        |req, b, actor, m, now| {
            authz::may_decide(actor, &b.policy)?;
            let reason = Reason::parse(opt_str(m, &["reason", "denial_reason"])?.unwrap_or(""))?;
            let next = req.deny(actor, reason.clone(), now)?;
            Ok((
                next.clone(),
                vec![draft(
                    "request.denied",
                    Some(actor),
                    Some(&next),
                    json!({"reason": reason}),
                )],
            ))
        },
    )
    .await
}

async fn revoke(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let admins = st.admins.clone();
    transition(
        st,
        id,
        inc,
        &["revoker", "approver", "requester"],
        move |req, b, actor, m, now| {
            authz::may_revoke(actor, &b.policy, req, &admins)?;
            let reason = Reason::parse(opt_str(m, &["reason"])?.unwrap_or(""))?;
            let next = req.revoke(actor, reason.clone(), now)?;
            Ok((
                next.clone(),
                vec![draft(
                    "request.revoked",
                    Some(actor),
                    Some(&next),
                    json!({"reason": reason}),
                )],
            ))
        },
    )
    .await
}

async fn cancel(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["requester", "approver"],
        |req, b, actor, _m, now| {
            authz::may_cancel(actor, &b.policy, req)?;
            let next = req.cancel(actor, now)?;
            Ok((
                next.clone(),
                vec![draft(
                    "request.cancelled",
                    Some(actor),
                    Some(&next),
                    json!({}),
                )],
            ))
        },
    )
    .await
}

async fn review(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["reviewer", "approver"],
        |req, b, actor, m, _now| {
            authz::may_review(actor, &b.policy)?;
            if actor.user_id == req.requester_id {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "self_review_forbidden",
                    "another approver must review your break-glass access",
                ));
            }
            let note = Reason::parse(opt_str(m, &["note", "reason"])?.unwrap_or(""))?;
            let next = req.review()?;
            Ok((
                next.clone(),
                vec![draft(
                    "request.reviewed",
                    Some(actor),
                    Some(&next),
                    json!({"note": note}),
                )],
            ))
        },
    )
    .await
}

/// Lengthens a grant, approved like a request: by an approver of the channel (the requester
/// only when self-approval is allowed), within the policy's maximum counted from the grant.
async fn extend(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["approver", "requester"],
        |req, b, actor, m, now| {
            authz::may_decide(actor, &b.policy)?;
            if actor.user_id == req.requester_id && !b.policy.allow_self_approval {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "self_approval_forbidden",
                    "an extension needs another approver in this channel",
                ));
            }
            let minutes = match m.get("minutes").or_else(|| m.get("duration_minutes")) {
                Some(v) => DurationMinutes::from_json(v)?,
                None => return Err(ApiError::bad("missing_field", "minutes is required")),
            };
            if req.ends_at().is_some_and(|end| end <= now) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "grant_ended",
                    "this grant has reached its end; ask for access again",
                ));
            }
            let next = req.extend(minutes, &b.policy)?;
            let data = json!({"minutes": minutes, "end_time": next.ends_at().map(views::ts)});
            Ok((
                next.clone(),
                vec![draft("request.extended", Some(actor), Some(&next), data)],
            ))
        },
    )
    .await
}

/// Grants past their end (or revoked) whose removal has not succeeded yet.
async fn overdue(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = st.clock.now();
    let mut items = Vec::new();
    for j in st.store.list_jobs(Some(jit_store::JobKind::Revoke)).await? {
        let Ok(id) = RequestId::parse(&j.request_id) else {
            continue;
        };
        let Some(r) = st.store.get_request(&id).await? else {
            continue;
        };
        // Access should have gone at the grant's end, or when it was revoked.
        let since = match r.status() {
            Status::Granted => r.ends_at(),
            _ => r.closed().map(|c| c.at).or_else(|| r.ends_at()),
        };
        if let Some(since) = since.filter(|t| *t < now) {
            items.push(json!({"request_id": j.request_id, "status": r.status(), "should_have_ended_at": views::ts(since),
                              "overdue_seconds": (now - since).whole_seconds(), "attempts": j.attempts, "last_error": j.last_error,
                              "next_attempt_ms": j.due_ms}));
        }
    }
    Ok(Json(json!({"overdue": items, "count": items.len()})))
}

async fn list_callbacks(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["status", "limit"])?;
    let mut status = "DEAD".to_owned();
    let mut limit = 100;
    for (k, v) in &params {
        match k.as_str() {
            "status" => {
                let v = v.to_ascii_uppercase();
                if !["PENDING", "DELIVERED", "DEAD"].contains(&v.as_str()) {
                    return Err(ApiError::bad(
                        "invalid_status",
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
    let items: Vec<Value> = events
        .iter()
        .map(|e| json!({"event_id": e.event_id, "request_id": e.request_id, "status": e.status, "attempts": e.attempts,
                        "last_error": e.last_error, "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null)}))
        .collect();
    Ok(Json(json!({"callbacks": items, "count": items.len()})))
}

async fn resend_callback(
    State(st): State<AppState>,
    PathParam(event_id): PathParam,
) -> Result<Json<Value>, ApiError> {
    if event_id.is_empty()
        || event_id.len() > 64
        || !event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::bad("invalid_event_id", "not an event id"));
    }
    match st
        .store
        .resend_callback(&event_id, crate::effects_ms(st.clock.now()))
        .await
    {
        Ok(()) => {
            st.wake.notify_one();
            Ok(Json(json!({"event_id": event_id, "status": "PENDING"})))
        }
        Err(StoreError::NotFound) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "callback_not_found",
            "no dead callback has this id",
        )),
        Err(e) => Err(e.into()),
    }
}

/// When each key last verified a request, per ring and verifier: what makes "is the old key
/// still in use?" a fact.
async fn key_usage(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = st.store.key_usage().await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|u| {
            let at = OffsetDateTime::from_unix_timestamp(u.last_used_unix).ok().map(views::ts);
            json!({"ring": u.ring, "verifier": u.verifier, "key_id": u.key_id, "last_used_unix": u.last_used_unix, "last_used_at": at})
        })
        .collect();
    Ok(Json(json!({"usage": items, "count": items.len()})))
}

/// A verifier elsewhere (the bridge, for the callback ring) reports its key use.
async fn report_key_usage(
    State(st): State<AppState>,
    inc: Incoming,
) -> Result<Json<Value>, ApiError> {
    let m = body_object(&inc.headers, &inc.body)?;
    let ring = req_str(&m, &["ring"])?;
    if !matches!(ring, "backend" | "callback") {
        return Err(ApiError::bad(
            "invalid_field",
            "ring must be backend or callback",
        ));
    }
    let verifier = req_str(&m, &["verifier"])?;
    if verifier.is_empty() || verifier.len() > 64 || !verifier.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad(
            "invalid_field",
            "verifier must be 1-64 visible characters",
        ));
    }
    let keys = match m.get("keys") {
        Some(Value::Array(a)) if a.len() <= 100 => a,
        _ => {
            return Err(ApiError::bad(
                "invalid_field",
                "keys must be a list of at most 100 entries",
            ));
        }
    };
    let mut entries = Vec::new();
    for k in keys {
        let id = k
            .get("key_id")
            .and_then(Value::as_str)
            .filter(|i| jit_proto::keyring::KeyId::parse(i).is_ok());
        let at = k.get("last_used_unix").and_then(Value::as_i64);
        match (id, at) {
            (Some(id), Some(at)) => entries.push((id.to_owned(), at)),
            _ => {
                return Err(ApiError::bad(
                    "invalid_field",
                    "each key needs key_id and last_used_unix",
                ));
            }
        }
    }
    st.store.record_key_usage(ring, verifier, &entries).await?;
    Ok(Json(json!({"recorded": entries.len()})))
}

/// Records the approval card's post id on the request (the bridge keeps no database).
async fn set_post(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    Extension(_caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let m = body_object(&headers, &body)?;
    let post_id = req_str(&m, &["post_id"])?;
    if post_id.is_empty()
        || post_id.len() > 64
        || !post_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::bad(
            "invalid_post_id",
            "post_id must be 1-64 letters or digits",
        ));
    }
    let id = RequestId::parse(&id)?;
    match st.store.set_post_id(&id, post_id).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::request_not_found()),
        Err(e) => return Err(e.into()),
    }
    let req = st
        .store
        .get_request(&id)
        .await?
        .ok_or_else(ApiError::request_not_found)?;
    Ok(Json(views::request(&req)).into_response())
}

fn parse_time_param(name: &str, v: &str, end_of_day: bool) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad(
            "invalid_parameter",
            format!("{name} must be RFC 3339 or YYYY-MM-DD"),
        )
    };
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX));
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(v, &fmt).map_err(|_| bad())?;
    let d = if end_of_day {
        d.next_day().ok_or_else(bad)?
    } else {
        d
    };
    Ok(d.midnight().assume_utc().unix_timestamp() * 1000)
}

fn check_params(params: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    for (k, _) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(
                "unknown_parameter",
                format!(
                    "unknown query parameter {k:?}; allowed: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn limit_param(v: &str, max: u32) -> Result<u32, ApiError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad("invalid_limit", format!("limit must be 1 to {max}")))
}

async fn list_requests(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    check_params(
        &params,
        &[
            "channel_id",
            "account_id",
            "requester_email",
            "requester_mm_user_id",
            "status",
            "start_date",
            "end_date",
            "limit",
            "next_token",
        ],
    )?;
    let mut f = RequestFilter {
        limit: 50,
        ..Default::default()
    };
    for (k, v) in &params {
        match k.as_str() {
            "channel_id" => f.channel_id = Some(ChannelId::parse(v)?.as_str().to_owned()),
            "account_id" => f.account_id = Some(AccountId::parse(v)?.as_str().to_owned()),
            "requester_email" => f.requester_email = Some(Email::parse(v)?.as_str().to_owned()),
            "requester_mm_user_id" => f.requester_id = Some(UserId::parse(v)?.as_str().to_owned()),
            "status" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    f.statuses.push(Status::parse(s.trim())?);
                }
            }
            "start_date" => f.start_ms = Some(parse_time_param(k, v, false)?),
            "end_date" => f.end_ms = Some(parse_time_param(k, v, true)?),
            "limit" => f.limit = limit_param(v, 200)?,
            "next_token" => f.after = Some(decode_token(v)?),
            _ => {}
        }
    }
    let (items, next) = st.store.list_requests(&f).await?;
    Ok(Json(json!({
        "requests": items.iter().map(views::request).collect::<Vec<_>>(),
        "count": items.len(),
        "next_token": next.map(|(ms, id)| format!("{ms}_{id}")),
    })))
}

fn decode_token(v: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::bad(
            "invalid_next_token",
            "next_token is not one this server issued",
        )
    };
    let (ms, id) = v.split_once('_').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let id = RequestId::parse(id).map_err(|_| bad())?;
    Ok((ms, id.as_str().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Configuration

async fn config_change(
    st: &AppState,
    call: &Call,
    actor: &Actor,
    channel: ChannelId,
    kind: &str,
    data: Value,
    edit: impl FnOnce(&mut Binding) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    authz::may_configure(actor, &st.admins)?;
    let existing = st.store.get_binding(&channel).await?;
    let expected = existing.as_ref().map_or(0, |b| b.version);
    let mut b = existing.unwrap_or_else(|| Binding {
        channel_id: channel.clone(),
        accounts: BTreeMap::new(),
        policy: jit_core::policy::Policy::default(),
        version: 0,
    });
    edit(&mut b)?;
    let mut d = draft(kind, Some(actor), None, data);
    d.channel_id = Some(channel.as_str().to_owned());
    let mut stored = b.clone();
    stored.version = expected + 1;
    let view = views::binding(&stored);
    call.commit(
        st,
        Change::SaveBinding(b, expected),
        vec![d],
        StatusCode::OK,
        view,
    )
    .await
}

async fn bind(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, &["admin", "requester"])?;
    let channel = ChannelId::parse(req_str(&m, &["channel_id"])?)?;
    let account = AccountId::parse(req_str(&m, &["account_id"])?)?;
    let mut sets: Vec<PermissionSetArn> = Vec::new();
    if let Some(one) = opt_str(&m, &["permission_set_arn"])? {
        sets.push(PermissionSetArn::parse(one)?);
    }
    for s in str_list(&m, "permission_set_arns")?.unwrap_or_default() {
        sets.push(PermissionSetArn::parse(&s)?);
    }
    let data = json!({"account_id": account, "permission_set_arns": sets});
    config_change(&st, &call, &actor, channel, "config.bound", data, |b| {
        let entry = b.accounts.entry(account).or_default();
        for s in sets {
            if !entry.contains(&s) {
                entry.push(s);
            }
        }
        Ok(())
    })
    .await
}

async fn unbind(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, &["admin"])?;
    let channel = ChannelId::parse(req_str(&m, &["channel_id"])?)?;
    let account = AccountId::parse(req_str(&m, &["account_id"])?)?;
    let data = json!({"account_id": account});
    config_change(&st, &call, &actor, channel, "config.unbound", data, |b| {
        if b.accounts.remove(&account).is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "account_not_bound",
                format!("account {account} is not bound to this channel"),
            ));
        }
        Ok(())
    })
    .await
}

async fn set_approvers(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, &["admin", "requester"])?;
    let channel = ChannelId::parse(req_str(&m, &["channel_id"])?)?;
    let approvers = str_list(&m, "approvers")?
        .or(str_list(&m, "approver_ids")?)
        .ok_or_else(|| ApiError::bad("missing_field", "approvers is required"))?
        .iter()
        .map(|a| UserId::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let patch = PolicyPatch {
        approvers: Some(approvers.clone()),
        required_approvals: opt_u32(&m, "required_approvals")?,
        ..Default::default()
    };
    let data = json!({"approvers": approvers, "required_approvals": patch.required_approvals});
    config_change(
        &st,
        &call,
        &actor,
        channel,
        "config.approvers_changed",
        data,
        |b| {
            b.policy = b.policy.apply(&patch)?;
            Ok(())
        },
    )
    .await
}

async fn set_policy(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let m = body_object(&inc.headers, &inc.body)?;
    let actor = actor(&m, &["admin"])?;
    let channel = ChannelId::parse(req_str(&m, &["channel_id"])?)?;
    let patch = PolicyPatch {
        approvers: None,
        required_approvals: opt_u32(&m, "required_approvals")?,
        allow_self_approval: opt_bool(&m, "allow_self_approval")?,
        max_request_hours: opt_u32(&m, "max_request_hours")?,
        pending_timeout_minutes: opt_u32(&m, "pending_timeout_minutes")?,
        require_ticket: opt_bool(&m, "require_ticket")?,
        break_glass_enabled: opt_bool(&m, "break_glass_enabled")?,
        break_glass_max_minutes: opt_u32(&m, "break_glass_max_minutes")?,
    };
    if patch == PolicyPatch::default() {
        return Err(ApiError::bad(
            "missing_field",
            "name at least one policy field to change",
        ));
    }
    let data = Value::Object(
        m.iter()
            .filter(|(k, _)| *k != "actor" && *k != "channel_id")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    config_change(
        &st,
        &call,
        &actor,
        channel,
        "config.policy_changed",
        data,
        |b| {
            b.policy = b.policy.apply(&patch)?;
            Ok(())
        },
    )
    .await
}

async fn get_accounts(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    check_params(&params, &["channel_id"])?;
    let channel = params
        .iter()
        .find(|(k, _)| k == "channel_id")
        .map(|(_, v)| ChannelId::parse(v))
        .transpose()?
        .ok_or_else(|| ApiError::bad("missing_parameter", "channel_id is required"))?;
    match st.store.get_binding(&channel).await? {
        Some(b) => Ok(Json(views::binding(&b))),
        None => Ok(Json(
            json!({"channel_id": channel, "accounts": [], "bindings": [], "approvers": [],
                               "policy": views::policy(&jit_core::policy::Policy::default()), "version": 0}),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

/// One CSV cell: quoted when needed, and a leading `= + - @` neutralised so a spreadsheet never
/// runs a formula someone typed into a reason.
fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

const CSV_COLUMNS: [&str; 11] = [
    "seq",
    "at",
    "type",
    "actor_id",
    "actor_email",
    "request_id",
    "channel_id",
    "account_id",
    "data",
    "prev_hash",
    "hash",
];

async fn list_audit(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_params(
        &params,
        &[
            "request_id",
            "account_id",
            "channel_id",
            "actor",
            "type",
            "since",
            "until",
            "limit",
            "next_token",
            "format",
        ],
    )?;
    let mut format = "json";
    let mut f = AuditFilter {
        limit: 500,
        ..Default::default()
    };
    for (k, v) in &params {
        match k.as_str() {
            "request_id" => f.request_id = Some(RequestId::parse(v)?.as_str().to_owned()),
            "account_id" => f.account_id = Some(AccountId::parse(v)?.as_str().to_owned()),
            "channel_id" => f.channel_id = Some(ChannelId::parse(v)?.as_str().to_owned()),
            "actor" => {
                if v.is_empty() || v.len() > 254 || v.chars().any(char::is_control) {
                    return Err(ApiError::bad(
                        "invalid_parameter",
                        "actor must be a user id or email",
                    ));
                }
                f.actor = Some(v.clone());
            }
            "type" => {
                if v.is_empty()
                    || v.len() > 64
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
                {
                    return Err(ApiError::bad(
                        "invalid_parameter",
                        "type must look like request.approved",
                    ));
                }
                f.kind = Some(v.clone());
            }
            "since" => f.since_ms = Some(parse_time_param(k, v, false)?),
            "until" => f.until_ms = Some(parse_time_param(k, v, true)?),
            "limit" => f.limit = limit_param(v, 1000)?,
            "format" => {
                format = match v.as_str() {
                    "json" => "json",
                    "jsonl" => "jsonl",
                    "csv" => "csv",
                    _ => {
                        return Err(ApiError::bad(
                            "invalid_parameter",
                            "format must be json, jsonl or csv",
                        ));
                    }
                }
            }
            "next_token" => {
                f.after_seq = Some(v.parse().map_err(|_| {
                    ApiError::bad(
                        "invalid_next_token",
                        "next_token is not one this server issued",
                    )
                })?);
            }
            _ => {}
        }
    }
    let (items, next) = st.store.list_audit(&f).await?;
    let next = next.map(|s| s.to_string());
    let views: Vec<Value> = items.iter().map(views::audit).collect();
    let text = match format {
        "json" => {
            return Ok(
                Json(json!({"events": views, "count": views.len(), "next_token": next}))
                    .into_response(),
            );
        }
        "jsonl" => views.iter().map(|v| format!("{v}\n")).collect::<String>(),
        _ => {
            let mut out = CSV_COLUMNS.join(",");
            out.push('\n');
            for v in &views {
                let row: Vec<String> = CSV_COLUMNS.iter().map(|c| csv_cell(&v[*c])).collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
            out
        }
    };
    let ct = if format == "jsonl" {
        "application/x-ndjson"
    } else {
        "text/csv; charset=utf-8"
    };
    let mut resp = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, ct)],
        text,
    )
        .into_response();
    if let Some(t) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        resp.headers_mut().insert("x-next-token", t);
    }
    Ok(resp)
}

async fn verify_audit(State(st): State<AppState>) -> Result<Response, ApiError> {
    match st.store.verify_audit().await {
        Ok(n) => Ok(Json(json!({"ok": true, "events": n})).into_response()),
        Err(jit_store::VerifyError::Chain(e)) => {
            tracing::error!(target: "audit", error = %e, "audit chain verification failed");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "audit_chain_broken",
                e.to_string(),
            ))
        }
        Err(jit_store::VerifyError::Store(e)) => Err(e.into()),
    }
}
