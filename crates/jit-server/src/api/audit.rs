//! The audit trail: pages as JSON, JSON lines or CSV, and verification of the hash chain.

use super::extract::{check_params, limit_param, parse_time_param};
use crate::error::ApiError;
#[allow(unused_imports)]
use crate::openapi::*;
use crate::state::AppState;
use crate::verifications::Outcome;
use crate::views;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use jit_core::types::{AccountId, ChannelId, RequestId};
use jit_proto::wire::{AuditEventView, AuditPage, AuditVerified, AuditVerifying, ErrorCode};
use jit_store::AuditFilter;
#[allow(unused_imports)]
use jit_store::prelude::*;

/// One CSV cell: quoted when needed, and a leading `= + - @` neutralised so a spreadsheet never
/// runs a formula someone typed into a reason.
fn csv_cell(v: Option<String>) -> String {
    let s = v.unwrap_or_default();
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

/// `GET /audit`.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditFilters), responses((status = 200, description = "A page of events (JSON; with format=jsonl or csv, text with the next page's token in X-Next-Token)", content((AuditPage = "application/json"), (String = "application/x-ndjson"), (String = "text/csv"))), ReadErrors))]
pub async fn list_audit(
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
                        ErrorCode::InvalidParameter,
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
                        ErrorCode::InvalidParameter,
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
                            ErrorCode::InvalidParameter,
                            "format must be json, jsonl or csv",
                        ));
                    }
                }
            }
            "next_token" => {
                f.after_seq = Some(v.parse().map_err(|_| {
                    ApiError::bad(
                        ErrorCode::InvalidNextToken,
                        "next_token is not one this server issued",
                    )
                })?);
            }
            _ => {}
        }
    }
    let (items, next) = st.store.list_audit(&f).await?;
    let next = next.map(|s| s.to_string());
    let views: Vec<AuditEventView> = items.iter().map(views::audit).collect();
    let text = match format {
        "json" => {
            let count = views.len();
            return Ok(Json(AuditPage {
                events: views,
                count,
                next_token: next,
            })
            .into_response());
        }
        "jsonl" => {
            let mut out = String::new();
            for v in &views {
                out.push_str(&serde_json::to_string(v).map_err(|e| ApiError::internal(&e))?);
                out.push('\n');
            }
            out
        }
        _ => {
            let mut out = CSV_COLUMNS.join(",");
            out.push('\n');
            for v in &views {
                let row: Vec<String> = csv_row(v).into_iter().map(csv_cell).collect();
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

/// `GET /audit/verify[?full=true][&wait=SECS]`, or `?job=ID`: verifies the chain from the
/// newest verified checkpoint (or from the first event with `full=true`) as a background run.
/// Answers the result when the run ends within `wait` seconds (default 5, at most 20), else
/// 202 with the run's id and progress; `?job=ID` reports that run.
#[utoipa::path(get, path = "/audit/verify", tag = "audit", params(VerifyParams), responses((status = 200, description = "The chain verifies", body = AuditVerified), (status = 202, description = "Still verifying: ask again with ?job=", body = AuditVerifying), (status = 409, description = "audit_chain_broken", body = ErrorBody), ReadErrors))]
pub async fn verify_audit(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    check_params(&params, &["full", "job", "wait"])?;
    let mut full = false;
    let mut job = None;
    let mut wait = 5_u64;
    for (k, v) in &params {
        match k.as_str() {
            "full" => {
                full = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad(
                            ErrorCode::InvalidParameter,
                            "full must be true or false",
                        ));
                    }
                }
            }
            "wait" => {
                wait = v.parse().ok().filter(|w| *w <= 20).ok_or_else(|| {
                    ApiError::bad(
                        ErrorCode::InvalidParameter,
                        "wait must be a number of seconds from 0 to 20",
                    )
                })?;
            }
            "job" => job = Some(v.clone()),
            _ => {}
        }
    }
    let run = match job {
        Some(id) => st.verifications.get(&id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::VerificationNotFound,
                format!("no verification run {id:?} (only the last {} are kept): start one with GET /audit/verify", crate::verifications::KEPT),
            )
        })?,
        None => {
            let now = st.clock.now();
            let id = format!("v-{}", hex::encode(&st.random_id()[..8]));
            st.verifications
                .start_or_join(st.store.clone(), full, jit_store::unix_ms(now), id)
        }
    };
    let to_u = |v: i64| u64::try_from(v).unwrap_or_default();
    match run.wait(std::time::Duration::from_secs(wait)).await {
        Some(Outcome::Intact(rep)) => Ok(Json(AuditVerified {
            ok: true,
            events: to_u(rep.head_seq),
            checked: to_u(rep.checked),
            from_checkpoint: to_u(rep.from_checkpoint),
            job: run.id.clone(),
        })
        .into_response()),
        Some(Outcome::Broken(e)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AuditChainBroken,
            e,
        )),
        Some(Outcome::Failed(e)) => Err(jit_store::StoreError::Backend(e).into()),
        None => {
            let p = run.progress();
            Ok((
                StatusCode::ACCEPTED,
                Json(AuditVerifying {
                    state: "running".into(),
                    job: run.id.clone(),
                    full: run.full,
                    from_seq: to_u(p.from_seq),
                    verified_seq: to_u(p.verified_seq),
                    head_seq: to_u(p.head_seq),
                }),
            )
                .into_response())
        }
    }
}

/// One event's cells, in the order of [`CSV_COLUMNS`].
fn csv_row(v: &AuditEventView) -> [Option<String>; 11] {
    [
        Some(v.seq.to_string()),
        v.at.clone(),
        Some(v.kind.clone()),
        v.actor_id.clone(),
        v.actor_email.clone(),
        v.request_id.clone(),
        v.channel_id.clone(),
        v.account_id.clone(),
        Some(v.data.to_string()),
        Some(v.prev_hash.clone()),
        Some(v.hash.clone()),
    ]
}
