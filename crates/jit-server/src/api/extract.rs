//! Turning a request into typed input: path ids (full or prefix), JSON bodies into the wire
//! types, the acting user, query parameters; and the idempotent commit every write ends with.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idem::Idem;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jit_core::audit::AuditDraft;
use jit_core::policy::Binding;
use jit_core::request::Request;
use jit_core::types::{Actor, ChannelId, Email, RequestId, RequestRef, Role, UserId};
use jit_proto::wire::{ActorFields, ErrorCode};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{StoreError, WriteCtx};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

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
                    ErrorCode::InvalidPath,
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
    /// The verified caller (set by the signature check).
    pub caller: Caller,
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Incoming {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal(&"signed route without a verified caller"))?;
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
            caller,
        })
    }
}

impl Incoming {
    /// The body as `T`: 415 for another content type, 400 `invalid_json` for what is not a
    /// JSON object, `missing_field` / `invalid_field` naming the field otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let ct = self
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as application/json",
            ));
        }
        parse_body(&self.body)
    }
}

/// A JSON body as `T`, with the API's error codes.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        // Valid JSON of another kind, or not JSON at all.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::bad(ErrorCode::InvalidJson, "the body must be a JSON object"),
                Err(e) => ApiError::bad(
                    ErrorCode::InvalidJson,
                    format!("the body is not valid JSON ({e})"),
                ),
            },
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::bad(
                    ErrorCode::InvalidJson,
                    format!("the body is not valid JSON ({inner})"),
                )
            }
            _ => {
                let msg = inner.to_string();
                if let Some(rest) = msg.strip_prefix("missing field `") {
                    let name = rest.split('`').next().unwrap_or("field");
                    ApiError::bad(ErrorCode::MissingField, format!("{name} is required"))
                } else {
                    let field = if path == "." {
                        "a field".to_owned()
                    } else {
                        path
                    };
                    let what = msg.split(" at line ").next().unwrap_or(&msg);
                    ApiError::bad(ErrorCode::InvalidField, format!("{field}: {what}"))
                }
            }
        }
    })
}

/// The acting user from a body's [`ActorFields`], reading the `<role>_*` fields of `roles`;
/// `None` when the body names nobody.
pub fn actor_of(who: &ActorFields, roles: &[&str]) -> Result<Option<Actor>, ApiError> {
    let Some(a) = who.pick(roles) else {
        return Ok(None);
    };
    Ok(Some(Actor {
        user_id: UserId::parse(&a.user_id)?,
        email: a.email.as_deref().map(Email::parse).transpose()?,
        roles: a.roles.iter().filter_map(|r| Role::parse(r)).collect(),
    }))
}

/// [`actor_of`], refusing a body without one (400 `missing_actor`).
pub fn require_actor(who: &ActorFields, roles: &[&str]) -> Result<Actor, ApiError> {
    actor_of(who, roles)?.ok_or_else(|| {
        ApiError::bad(
            ErrorCode::MissingActor,
            format!(
                "say who is acting: an \"actor\" object or {}",
                roles
                    .iter()
                    .map(|r| format!("{r}_mm_user_id"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        )
    })
}

/// An audit draft about `req` by `actor`.
pub fn draft(
    kind: &str,
    actor: Option<&Actor>,
    req: Option<&Request>,
    data: serde_json::Value,
) -> AuditDraft {
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

/// Marks an audit draft as authorised by the existing plugin's key (invariant 7's explicit
/// exception): the key id is in the trail.
pub fn vouched(mut d: AuditDraft, caller: &Caller) -> AuditDraft {
    if let serde_json::Value::Object(m) = &mut d.data {
        m.insert(
            "authorised_by_plugin_key".into(),
            serde_json::Value::String(caller.key_id.clone()),
        );
    }
    d
}

/// A request id from a path or query: the whole id, or a unique prefix of 8 or more
/// characters (the plugin's status table shows 8).
pub async fn resolve_id(st: &AppState, s: &str) -> Result<RequestId, ApiError> {
    match RequestId::parse_ref(s)? {
        RequestRef::Id(id) => Ok(id),
        RequestRef::Prefix(p) => {
            let ids = st.store.request_ids_with_prefix(&p, 2).await?;
            match ids.as_slice() {
                [] => Err(ApiError::request_not_found()),
                [one] => Ok(RequestId::parse(one)?),
                _ => Err(ApiError::bad(
                    ErrorCode::AmbiguousRequestId,
                    format!("more than one request id starts with {p}; give more characters"),
                )),
            }
        }
    }
}

/// One request by id or prefix (404 `request_not_found`).
pub async fn load_request(st: &AppState, id: &str) -> Result<Request, ApiError> {
    let id = resolve_id(st, id).await?;
    st.store
        .get_request(&id)
        .await?
        .ok_or_else(ApiError::request_not_found)
}

/// 422 `channel_not_bound`.
pub fn channel_not_bound() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ChannelNotBound,
        "this channel has no bound accounts; an admin runs /jit bind first",
    )
}

/// A channel's binding (422 `channel_not_bound` when there is none).
pub async fn load_binding(st: &AppState, channel: &ChannelId) -> Result<Binding, ApiError> {
    st.store
        .get_binding(channel)
        .await?
        .ok_or_else(channel_not_bound)
}

/// Refuses query parameters a route does not take (400 `unknown_parameter`).
pub fn check_params(params: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    for (k, _) in params {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(
                ErrorCode::UnknownParameter,
                format!(
                    "unknown query parameter {k:?}; allowed: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// `limit`, 1 to `max`.
pub fn limit_param(v: &str, max: u32) -> Result<u32, ApiError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad(ErrorCode::InvalidLimit, format!("limit must be 1 to {max}")))
}

/// A date (`YYYY-MM-DD`) or RFC 3339 time as unix milliseconds; a date used as an end means
/// the end of that day.
pub fn parse_time_param(name: &str, v: &str, end_of_day: bool) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::bad(
            ErrorCode::InvalidParameter,
            format!("{name} must be a date (YYYY-MM-DD) or an RFC 3339 time"),
        )
    };
    if let Ok(t) = OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad());
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

/// What a write changes.
#[derive(Debug)]
pub enum Change {
    /// A new request.
    Create(Box<Request>, Option<Actor>),
    /// A request's transition.
    Update(Box<Request>, Box<Request>, Option<Actor>),
    /// A binding saved over `version`.
    SaveBinding(Binding, i64),
}

/// A write handler's request context: idempotency and time.
#[derive(Debug)]
pub struct Call {
    idem: Idem,
    /// The time of the call.
    pub now: OffsetDateTime,
}

impl Call {
    /// The context of `inc`.
    pub fn new(st: &AppState, inc: &Incoming) -> Result<Self, ApiError> {
        Ok(Self {
            idem: Idem::from_request(&inc.method, &inc.uri, &inc.headers, &inc.body)?,
            now: st.clock.now(),
        })
    }

    /// The stored answer for a repeated `Idempotency-Key`, if there is one.
    pub async fn replay(&self, st: &AppState) -> Result<Option<Response>, ApiError> {
        let Some(key) = &self.idem.key else {
            return Ok(None);
        };
        match st.store.idempotency_get(&self.idem.scope, key).await? {
            None => Ok(None),
            Some(rec) if rec.request_hash == self.idem.body_hash => {
                let status = StatusCode::from_u16(rec.status).unwrap_or(StatusCode::OK);
                let mut resp = (
                    status,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    rec.response,
                )
                    .into_response();
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                Ok(Some(resp))
            }
            Some(_) => Err(StoreError::IdempotencyMismatch.into()),
        }
    }

    /// Commits `change` with its audit events, jobs, callback and idempotency record in one
    /// transaction, and answers `status` with `body`.
    pub async fn commit<B: Serialize>(
        &self,
        st: &AppState,
        change: Change,
        audit: Vec<AuditDraft>,
        status: StatusCode,
        body: B,
    ) -> Result<Response, ApiError> {
        let value = serde_json::to_value(&body).map_err(|e| ApiError::internal(&e))?;
        let mut ctx = WriteCtx::with_audit(audit, self.now);
        ctx.idem = self.idem.record(status.as_u16(), &value);
        let with_effects =
            |ctx: &mut WriteCtx, prev: Option<&Request>, next: &Request, actor: Option<&Actor>| {
                let (jobs, outbox) = crate::effects::effects(
                    prev,
                    next,
                    actor,
                    self.now,
                    hex::encode(st.random_id()),
                    st.callback_style,
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use jit_proto::wire::CreateRequestBody;

    #[test]
    fn body_errors_name_the_field_and_have_codes() {
        let e = parse_body::<CreateRequestBody>(br#"{"account_id":"1"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingField);
        assert!(e.message.contains("channel_id"), "{}", e.message);
        let e = parse_body::<CreateRequestBody>(
            br#"{"channel_id":5,"account_id":"1","requested_duration_minutes":5}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        assert!(e.message.contains("channel_id"), "{}", e.message);
        for bad in [&b"[1]"[..], b"\"x\"", b"{", b"nope"] {
            assert_eq!(
                parse_body::<CreateRequestBody>(bad).unwrap_err().code,
                ErrorCode::InvalidJson
            );
        }
    }
}
