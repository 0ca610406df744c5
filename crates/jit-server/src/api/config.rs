//! Channel configuration: bind and unbind accounts, approvers, policy, and the channel's
//! bound accounts in the existing plugin's `[]JitConfig` shape.

use super::extract::{
    Call, Change, Incoming, actor_of, check_params, draft, require_actor, vouched,
};
use crate::error::ApiError;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jit_core::authz;
use jit_core::policy::{Binding, Policy, PolicyPatch};
use jit_core::types::{AccountId, ChannelId, PermissionSetArn, UserId};
use jit_proto::wire::{
    AccountConfig, ActorFields, ApproversBody, BindBody, ErrorCode, PolicyBody,
    RoleSessionDuration, UnbindBody,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The policy a channel's first binding gets. Through the existing plugin: the old backend's
/// rules (a ticket or a reason; at most 4 hours). Otherwise the project's defaults.
pub fn new_binding_policy(vouched_by_plugin: bool) -> Policy {
    if vouched_by_plugin {
        Policy {
            require_ticket: false,
            require_ticket_or_reason: true,
            max_request_hours: 4,
            ..Policy::default()
        }
    } else {
        Policy::default()
    }
}

/// What a config answer shows: the bound account, or the channel's accounts.
enum Answer {
    Account(AccountId),
    Channel,
}

/// Authorises, edits and saves a binding; the answer is `answer` of the saved binding.
#[allow(clippy::too_many_arguments)]
async fn config_change(
    st: &AppState,
    call: &Call,
    inc: &Incoming,
    who: &ActorFields,
    channel: ChannelId,
    kind: &str,
    data: Value,
    answer: Answer,
    edit: impl FnOnce(&mut Binding) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    // The existing plugin checked that the user is a system admin and sends no actor; its key
    // vouches for that, and the audit event names the key. Everyone else must be an admin.
    let actor = if inc.caller.vouched_by_plugin {
        actor_of(who, &["admin", "requester"])?
    } else {
        let actor = require_actor(who, &["admin", "requester"])?;
        authz::may_configure(&actor, &st.admins)?;
        Some(actor)
    };
    let existing = st.store.get_binding(&channel).await?;
    let expected = existing.as_ref().map_or(0, |b| b.version);
    let mut b = existing.unwrap_or_else(|| Binding {
        channel_id: channel.clone(),
        accounts: BTreeMap::new(),
        policy: new_binding_policy(inc.caller.vouched_by_plugin),
        updated_at: None,
        version: 0,
    });
    edit(&mut b)?;
    let mut d = draft(kind, actor.as_ref(), None, data);
    d.channel_id = Some(channel.as_str().to_owned());
    if inc.caller.vouched_by_plugin {
        d = vouched(d, &inc.caller);
    }
    let mut stored = b.clone();
    stored.version = expected + 1;
    stored.updated_at = Some(call.now);
    let code = StatusCode::OK;
    match answer {
        Answer::Account(a) => {
            let view = views::account(&stored, &a);
            call.commit(st, Change::SaveBinding(b, expected), vec![d], code, view)
                .await
        }
        Answer::Channel => {
            let view = views::accounts(Some(&stored));
            call.commit(st, Change::SaveBinding(b, expected), vec![d], code, view)
                .await
        }
    }
}

/// `POST /config/bind`: answers the bound account's `JitConfig`.
#[utoipa::path(post, path = "/config/bind", tag = "config", params(IdempotencyKey), request_body = BindBody, responses((status = 200, description = "The bound account", body = AccountConfig), WriteErrors))]
pub async fn bind(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let body: BindBody = inc.json()?;
    let channel = ChannelId::parse(&body.channel_id)?;
    let account = AccountId::parse(&body.account_id)?;
    let mut sets: Vec<PermissionSetArn> = Vec::new();
    for s in body
        .permission_set_arn
        .iter()
        .chain(body.permission_set_arns.iter())
    {
        let s = PermissionSetArn::parse(s)?;
        if !sets.contains(&s) {
            sets.push(s);
        }
    }
    let data = json!({"account_id": account, "permission_set_arns": sets});
    let answer = Answer::Account(account.clone());
    config_change(
        &st,
        &call,
        &inc,
        &body.who,
        channel,
        "config.bound",
        data,
        answer,
        |b| {
            let entry = b.accounts.entry(account).or_default();
            for s in sets {
                if !entry.contains(&s) {
                    entry.push(s);
                }
            }
            Ok(())
        },
    )
    .await
}

/// `POST /config/unbind`: answers the channel's remaining accounts.
#[utoipa::path(post, path = "/config/unbind", tag = "config", params(IdempotencyKey), request_body = UnbindBody, responses((status = 200, description = "The channel's remaining accounts", body = Vec<AccountConfig>), WriteErrors))]
pub async fn unbind(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let body: UnbindBody = inc.json()?;
    let channel = ChannelId::parse(&body.channel_id)?;
    let account = AccountId::parse(&body.account_id)?;
    let data = json!({"account_id": account});
    config_change(
        &st,
        &call,
        &inc,
        &body.who,
        channel,
        "config.unbound",
        data,
        Answer::Channel,
        |b| {
            if b.accounts.remove(&account).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::AccountNotBound,
                    format!("account {account} is not bound to this channel"),
                ));
            }
            Ok(())
        },
    )
    .await
}

/// `POST /config/approvers`: answers the channel's `[]JitConfig`.
#[utoipa::path(post, path = "/config/approvers", tag = "config", params(IdempotencyKey), request_body = ApproversBody, responses((status = 200, description = "The channel's accounts", body = Vec<AccountConfig>), WriteErrors))]
pub async fn set_approvers(
    State(st): State<AppState>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let body: ApproversBody = inc.json()?;
    let channel = ChannelId::parse(&body.channel_id)?;
    let approvers = body
        .approvers
        .iter()
        .map(|a| UserId::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let patch = PolicyPatch {
        approvers: Some(approvers.clone()),
        required_approvals: body.required_approvals,
        ..Default::default()
    };
    let data = json!({"approvers": approvers, "required_approvals": patch.required_approvals});
    config_change(
        &st,
        &call,
        &inc,
        &body.who,
        channel,
        "config.approvers_changed",
        data,
        Answer::Channel,
        |b| {
            b.policy = b.policy.apply(&patch)?;
            Ok(())
        },
    )
    .await
}

/// `POST /config/policy`: answers the channel's `[]JitConfig`.
#[utoipa::path(post, path = "/config/policy", tag = "config", params(IdempotencyKey), request_body = PolicyBody, responses((status = 200, description = "The channel's accounts", body = Vec<AccountConfig>), WriteErrors))]
pub async fn set_policy(State(st): State<AppState>, inc: Incoming) -> Result<Response, ApiError> {
    let call = Call::new(&st, &inc)?;
    if let Some(r) = call.replay(&st).await? {
        return Ok(r);
    }
    let body: PolicyBody = inc.json()?;
    let channel = ChannelId::parse(&body.channel_id)?;
    let patch = PolicyPatch {
        approvers: None,
        required_approvals: body.required_approvals,
        allow_self_approval: body.allow_self_approval,
        max_request_hours: body.max_request_hours,
        pending_timeout_minutes: body.pending_timeout_minutes,
        require_ticket: body.require_ticket,
        require_ticket_or_reason: body.require_ticket_or_reason,
        break_glass_enabled: body.break_glass_enabled,
        break_glass_max_minutes: body.break_glass_max_minutes,
    };
    if patch == PolicyPatch::default() {
        return Err(ApiError::bad(
            ErrorCode::MissingField,
            "name at least one policy field to change",
        ));
    }
    let mut changed = body.clone();
    changed.who = ActorFields::default();
    let mut data = serde_json::to_value(&changed).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut data {
        m.remove("channel_id");
    }
    config_change(
        &st,
        &call,
        &inc,
        &body.who,
        channel,
        "config.policy_changed",
        data,
        Answer::Channel,
        |b| {
            b.policy = b.policy.apply(&patch)?;
            Ok(())
        },
    )
    .await
}

/// `GET /config/accounts?channel_id=C`: one `JitConfig` per bound account; `[]` when the
/// channel has no binding.
#[utoipa::path(get, path = "/config/accounts", tag = "config", params(ChannelParam), responses((status = 200, description = "One JitConfig per bound account; [] when the channel is unbound", body = Vec<AccountConfig>), ReadErrors))]
pub async fn get_accounts(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<AccountConfig>>, ApiError> {
    check_params(&params, &["channel_id"])?;
    let channel = params
        .iter()
        .find(|(k, _)| k == "channel_id")
        .map(|(_, v)| ChannelId::parse(v))
        .transpose()?
        .ok_or_else(|| ApiError::bad(ErrorCode::MissingParameter, "channel_id is required"))?;
    let b = st.store.get_binding(&channel).await?;
    let mut accounts = views::accounts(b.as_ref());
    add_session_durations(&st, &mut accounts).await;
    Ok(Json(accounts))
}

/// Longest wait for the provider's session durations in `GET /config/accounts`, which the
/// existing plugin calls on every click: past it the answer goes without them.
const SESSION_DURATIONS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Fills `role_session_durations` from the provider (which caches them): one question per
/// distinct permission set, the provider's default standing for accounts that name none. A
/// provider that cannot tell, fails or is slow leaves the field out; the answer never fails for
/// it.
async fn add_session_durations(st: &AppState, accounts: &mut [AccountConfig]) {
    let Some(provider) = st.provider_health.provider() else {
        return;
    };
    let mut asked: BTreeMap<Option<String>, Option<RoleSessionDuration>> = BTreeMap::new();
    for a in accounts.iter() {
        let sets: Vec<Option<String>> = if a.permission_set_arns.is_empty() {
            vec![None]
        } else {
            a.permission_set_arns.iter().cloned().map(Some).collect()
        };
        for ps in sets {
            asked.entry(ps).or_default();
        }
    }
    let lookups = async {
        for (ps, answer) in asked.iter_mut() {
            match provider.session_duration(ps.as_deref()).await {
                Ok(d) => {
                    *answer = d.map(|d| RoleSessionDuration {
                        permission_set_arn: d.permission_set_arn,
                        session_duration: d.duration,
                    })
                }
                Err(e) => {
                    tracing::debug!(permission_set = ?ps, error = %e, "no session duration from the provider");
                }
            }
        }
    };
    if tokio::time::timeout(SESSION_DURATIONS_WAIT, lookups)
        .await
        .is_err()
    {
        tracing::debug!("the provider's session durations took too long; answered without them");
    }
    for a in accounts.iter_mut() {
        let found: Vec<RoleSessionDuration> = if a.permission_set_arns.is_empty() {
            asked.get(&None).cloned().flatten().into_iter().collect()
        } else {
            a.permission_set_arns
                .iter()
                .filter_map(|ps| asked.get(&Some(ps.clone())).cloned().flatten())
                .collect()
        };
        a.role_session_durations = (!found.is_empty()).then_some(found);
    }
}
