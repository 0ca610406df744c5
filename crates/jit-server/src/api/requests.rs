//! Access requests: create, read, list, and every transition (approve, deny, revoke, cancel,
//! review, extend), plus the card's post id and the overdue list.

use super::extract::{
    Call, Change, Incoming, PathParam, check_params, draft, limit_param, load_binding,
    load_request, parse_time_param, require_actor, resolve_id, vouched,
};
use crate::error::ApiError;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jit_core::audit::AuditDraft;
use jit_core::authz;
use jit_core::policy::Binding;
use jit_core::request::{NewRequest, Request, Status};
use jit_core::types::{
    AccountId, Actor, ChannelId, DurationMinutes, Email, PermissionSetArn, Reason, RequestId,
    Ticket, UserId,
};
use jit_proto::wire::{
    ApproveBody, CreateRequestBody, DecisionBody, ErrorCode, ExtendBody, OverdueGrant, OverdueList,
    RequestList, RequestView, SetPostBody,
};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{RequestFilter, StoreError};
use serde_json::json;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `POST /requests`.
#[utoipa::path(post, path = "/requests", tag = "requests", request_body = CreateRequestBody, params(IdempotencyKey), responses((status = 201, description = "Created (a replay of the same Idempotency-Key answers the request as it is now, with the first answer's status)", body = RequestView), WriteErrors))]
pub async fn create_request(
    State(st): State<AppState>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        // A repeated submission answers the request as it is now, with the status and headers
        // of the first answer: its `post_id` tells a client whose card is already posted.
        let (mut parts, body) = r.into_parts();
        let first: Option<RequestView> = axum::body::to_bytes(body, 1 << 20)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let current = match &first {
            Some(v) => match RequestId::parse(&v.request_id) {
                Ok(id) => st.store.get_request(&id).await?,
                Err(_) => None,
            },
            None => None,
        };
        let body = match (current, first) {
            (Some(req), _) => serde_json::to_vec(&views::request(&req)),
            (None, first) => serde_json::to_vec(&first),
        }
        .map_err(|e| ApiError::internal(&e))?;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, axum::body::Body::from(body)));
    }
    let b: CreateRequestBody = inc.json()?;
    let actor = require_actor(&b.who, &["requester"])?;
    let new = NewRequest {
        channel_id: ChannelId::parse(&b.channel_id)?,
        account_id: AccountId::parse(&b.account_id)?,
        permission_set_arn: b
            .permission_set_arn
            .as_deref()
            .map(PermissionSetArn::parse)
            .transpose()?,
        ticket: Ticket::parse(b.jira.as_deref().unwrap_or(""))?,
        reason: Reason::parse(b.reason.as_deref().unwrap_or(""))?,
        duration: DurationMinutes::parse_text(&b.requested_duration_minutes.0)?,
        break_glass: b.break_glass.unwrap_or(false),
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

/// `GET /requests/{id}` (the id or a unique prefix of 8 or more characters).
#[utoipa::path(get, path = "/requests/{id}", tag = "requests", params(RequestIdParam), responses((status = 200, description = "The request", body = RequestView), ReadErrors))]
pub async fn get_request(
    State(st): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Json<RequestView>, ApiError> {
    Ok(Json(views::request(&load_request(&st, &id).await?)))
}

/// What a transition decides: the next state and its audit events.
type Decided = Result<(Request, Vec<AuditDraft>), ApiError>;

/// Shared shape of the transition handlers: `body` parsed as `B`, the actor read from the
/// `<role>_*` fields of `roles`.
async fn transition<B: serde::de::DeserializeOwned>(
    st: AppState,
    id: String,
    inc: Incoming,
    roles: &[&str],
    actor_of_body: impl FnOnce(&B) -> &jit_proto::wire::ActorFields,
    apply: impl FnOnce(&Request, &Binding, &Actor, &B, OffsetDateTime) -> Decided,
) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let body: B = inc.json()?;
    let actor = require_actor(actor_of_body(&body), roles)?;
    let id = resolve_id(&st, &id).await?;
    let (req, binding) = st
        .store
        .get_request_with_binding(&id)
        .await?
        .ok_or_else(ApiError::request_not_found)?;
    let binding = binding.ok_or_else(super::extract::channel_not_bound)?;
    let (next, mut audit) = apply(&req, &binding, &actor, &body, call.now)?;
    if inc.caller.vouched_by_plugin {
        audit = audit.into_iter().map(|d| vouched(d, &inc.caller)).collect();
    }
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

/// `POST /requests/{id}/approve`.
#[utoipa::path(post, path = "/requests/{id}/approve", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = ApproveBody, responses((status = 200, description = "The request after the approval", body = RequestView), WriteErrors))]
pub async fn approve(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["approver"],
        |b: &ApproveBody| &b.who,
        |req, b, actor, _body, now| {
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
        },
    )
    .await
}

/// `POST /requests/{id}/deny`.
#[utoipa::path(post, path = "/requests/{id}/deny", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = DecisionBody, responses((status = 200, description = "The denied request", body = RequestView), WriteErrors))]
pub async fn deny(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["approver", "denier"],
        |b: &DecisionBody| &b.who,
        |req, b, actor, body, now| {
            authz::may_decide(actor, &b.policy)?;
            let reason = Reason::parse(body.reason.as_deref().unwrap_or(""))?;
            let next = req.deny(actor, reason.clone(), now)?;
            let audit = vec![draft(
                "request.denied",
                Some(actor),
                Some(&next),
                json!({"reason": reason}),
            )];
            Ok((next, audit))
        },
    )
    .await
}

/// `POST /requests/{id}/revoke`. With the existing plugin's key, the plugin has checked that
/// the user is the requester or a system admin (it sends no role), so the backend's own check
/// is skipped and the audit event names the key.
#[utoipa::path(post, path = "/requests/{id}/revoke", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = DecisionBody, responses((status = 200, description = "The revoked request (access is removed at once by the revoke job)", body = RequestView), WriteErrors))]
pub async fn revoke(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let admins = st.admins.clone();
    let vouched_by_plugin = inc.caller.vouched_by_plugin;
    transition(
        st,
        id,
        inc,
        &["revoker", "approver", "requester"],
        |b: &DecisionBody| &b.who,
        move |req, b, actor, body, now| {
            if !vouched_by_plugin {
                authz::may_revoke(actor, &b.policy, req, &admins)?;
            }
            let reason = Reason::parse(body.reason.as_deref().unwrap_or(""))?;
            let next = req.revoke(actor, reason.clone(), now)?;
            let audit = vec![draft(
                "request.revoked",
                Some(actor),
                Some(&next),
                json!({"reason": reason}),
            )];
            Ok((next, audit))
        },
    )
    .await
}

/// `POST /requests/{id}/cancel`.
#[utoipa::path(post, path = "/requests/{id}/cancel", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = DecisionBody, responses((status = 200, description = "The cancelled request", body = RequestView), WriteErrors))]
pub async fn cancel(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["requester", "approver"],
        |b: &DecisionBody| &b.who,
        |req, b, actor, _body, now| {
            authz::may_cancel(actor, &b.policy, req)?;
            let next = req.cancel(actor, now)?;
            let audit = vec![draft(
                "request.cancelled",
                Some(actor),
                Some(&next),
                json!({}),
            )];
            Ok((next, audit))
        },
    )
    .await
}

/// `POST /requests/{id}/review`: an approver reviews a break-glass grant.
#[utoipa::path(post, path = "/requests/{id}/review", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = DecisionBody, responses((status = 200, description = "The reviewed break-glass request", body = RequestView), WriteErrors))]
pub async fn review(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["reviewer", "approver"],
        |b: &DecisionBody| &b.who,
        |req, b, actor, body, _now| {
            authz::may_review(actor, &b.policy)?;
            authz::not_own_review(actor, req)?;
            let note = Reason::parse(body.reason.as_deref().unwrap_or(""))?;
            let next = req.review()?;
            let audit = vec![draft(
                "request.reviewed",
                Some(actor),
                Some(&next),
                json!({"note": note}),
            )];
            Ok((next, audit))
        },
    )
    .await
}

/// `POST /requests/{id}/extend`: lengthens a grant, approved like a request: by an approver
/// of the channel (the requester only when self-approval is allowed), within the policy's
/// maximum counted from the grant.
#[utoipa::path(post, path = "/requests/{id}/extend", tag = "requests", params(RequestIdParam, IdempotencyKey), request_body = ExtendBody, responses((status = 200, description = "The extended grant", body = RequestView), WriteErrors))]
pub async fn extend(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    transition(
        st,
        id,
        inc,
        &["approver", "requester"],
        |b: &ExtendBody| &b.who,
        |req, b, actor, body, now| {
            authz::may_extend(actor, &b.policy, req)?;
            let minutes = DurationMinutes::parse_text(&body.minutes.0)?;
            let next = req.extend(minutes, &b.policy, now)?;
            let data = json!({"minutes": minutes, "end_time": next.ends_at().map(views::ts)});
            Ok((
                next.clone(),
                vec![draft("request.extended", Some(actor), Some(&next), data)],
            ))
        },
    )
    .await
}

/// `GET /grants/overdue`: grants past their end (or revoked) whose removal has not succeeded
/// yet.
#[utoipa::path(get, path = "/grants/overdue", tag = "grants", responses((status = 200, description = "Grants whose removal is late", body = OverdueList), ReadErrors))]
pub async fn overdue(State(st): State<AppState>) -> Result<Json<OverdueList>, ApiError> {
    let now = st.clock.now();
    let mut items = Vec::new();
    // One indexed query for the revoke jobs that can be overdue (due before now, or failed):
    // the cost is in the number overdue, not in the number of live grants.
    for (j, r) in st.store.overdue_revokes(jit_store::unix_ms(now)).await? {
        // Access should have gone at the grant's end, or when it was revoked.
        let since = match r.status() {
            Status::Granted => r.ends_at(),
            _ => r.closed().map(|c| c.at).or_else(|| r.ends_at()),
        };
        if let Some(since) = since.filter(|t| *t < now) {
            items.push(OverdueGrant {
                request_id: j.request_id.as_str().to_owned(),
                status: views::status(r.status()),
                should_have_ended_at: views::ts(since),
                overdue_seconds: (now - since).whole_seconds(),
                attempts: j.attempts,
                last_error: j.last_error.clone(),
                next_attempt_ms: j.due_ms,
            });
        }
    }
    let count = items.len();
    Ok(Json(OverdueList {
        overdue: items,
        count,
    }))
}

/// `POST /requests/{id}/post`: records the approval card's post id on the request (the
/// bridge keeps no database).
#[utoipa::path(post, path = "/requests/{id}/post", tag = "requests", params(RequestIdParam), request_body = SetPostBody, responses((status = 200, description = "The request with its card's post id", body = RequestView), WriteErrors))]
pub async fn set_post(
    State(st): State<AppState>,
    PathParam(id): PathParam,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let b: SetPostBody = inc.json()?;
    let post_id = b.post_id.as_str();
    if post_id.is_empty()
        || post_id.len() > 64
        || !post_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::bad(
            ErrorCode::InvalidPostId,
            "post_id must be 1-64 letters or digits",
        ));
    }
    let id = resolve_id(&st, &id).await?;
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

/// The query parameters `GET /requests` takes.
pub const LIST_PARAMS: [&str; 10] = [
    "request_id",
    "channel_id",
    "account_id",
    "requester_email",
    "requester_mm_user_id",
    "status",
    "start_date",
    "end_date",
    "limit",
    "next_token",
];

/// `GET /requests`: the existing plugin's `ReportingResponse` (`items`, `next_token`,
/// `filters`). `request_id` (an id or a unique prefix) answers that one request.
#[utoipa::path(get, path = "/requests", tag = "requests", params(RequestFilters), responses((status = 200, description = "One page, newest first (the existing plugin's ReportingResponse)", body = RequestList), ReadErrors))]
pub async fn list_requests(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<RequestList>, ApiError> {
    check_params(&params, &LIST_PARAMS)?;
    let filters: BTreeMap<String, String> = params
        .iter()
        .filter(|(k, _)| k != "next_token" && k != "limit")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some((_, id)) = params.iter().find(|(k, _)| k == "request_id") {
        let items = match super::extract::load_request(&st, id).await {
            Ok(r) => vec![views::request(&r)],
            Err(e) if e.code == ErrorCode::RequestNotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let count = items.len();
        return Ok(Json(RequestList {
            items,
            next_token: None,
            filters,
            count,
        }));
    }
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
    let count = items.len();
    Ok(Json(RequestList {
        items: items.iter().map(views::request).collect(),
        next_token: next.map(|c| c.token()),
        filters,
        count,
    }))
}

fn decode_token(v: &str) -> Result<jit_store::Cursor, ApiError> {
    jit_store::Cursor::parse(v).map_err(|_| {
        ApiError::bad(
            ErrorCode::InvalidNextToken,
            "next_token is not one this server issued",
        )
    })
}
