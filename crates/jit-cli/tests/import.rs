//! `jit import --from-go-backend`: the old Go/Lambda backend's four DynamoDB tables, made in
//! their old shape on moto and seeded, imported by the built `jit` binary into our stores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use jit_core::request::{State, Status};
use jit_core::types::{ChannelId, RequestId, UserId};
use jit_store::prelude::*;
use jit_store::{AuditFilter, JobKind};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const ENV: &str = "legacy";
const CHAN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
const CHAN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbb";
const BOB: &str = "bobbobbobbobbobbobbobbobbo";
const CAROL: &str = "carolcarolcarolcarolcarolc";
const DAVE: &str = "davedavedavedavedavedavedd";
const ALICE: &str = "alicealicealicealicealicea";

const R_EXPIRED: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b01";
const R_DENIED: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b02";
const R_REVOKED: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b03";
const R_LIVE: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b04";
const R_PENDING: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b05";
const R_ERROR: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b06";
const R_ODD_ID: &str = "legacy-request-7";
const R_APPROVED: &str = "0b1f6c1e-3c55-4a8e-9d0c-6f3a2e1d5b08";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A time as the Go backend wrote it (`time.RFC3339`, whole seconds, UTC).
fn go_time(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap()
}

fn parse(t: &str) -> OffsetDateTime {
    OffsetDateTime::parse(t, &Rfc3339).unwrap()
}

async fn create_table(
    c: &Client,
    name: &str,
    hash: &str,
    range: Option<&str>,
    indexes: &[(&str, &str, Option<&str>)],
) {
    let attr = |a: &str| {
        AttributeDefinition::builder()
            .attribute_name(a)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |a: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(a)
            .key_type(t)
            .build()
            .unwrap()
    };
    let mut attrs: Vec<&str> = vec![hash];
    attrs.extend(range);
    let mut req = c
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(hash, KeyType::Hash));
    if let Some(r) = range {
        req = req.key_schema(key(r, KeyType::Range));
    }
    for (index, h, r) in indexes {
        attrs.push(h);
        attrs.extend(r);
        let mut g = GlobalSecondaryIndex::builder()
            .index_name(*index)
            .key_schema(key(h, KeyType::Hash))
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            );
        if let Some(r) = r {
            g = g.key_schema(key(r, KeyType::Range));
        }
        req = req.global_secondary_indexes(g.build().unwrap());
    }
    attrs.sort();
    attrs.dedup();
    for a in attrs {
        req = req.attribute_definitions(attr(a));
    }
    req.send().await.unwrap();
}

/// The old backend's four tables, as its Terraform module makes them.
async fn create_old_tables(c: &Client) {
    create_table(
        c,
        &format!("{ENV}-jit-config"),
        "channel_id",
        Some("account_id"),
        &[("gsi_account", "account_id", None)],
    )
    .await;
    create_table(
        c,
        &format!("{ENV}-jit-requests"),
        "request_id",
        None,
        &[
            ("gsi_channel_created", "channel_id", Some("created_at")),
            ("gsi_account_created", "account_id", Some("created_at")),
            (
                "gsi_requester_created",
                "requester_email",
                Some("created_at"),
            ),
            ("gsi_status_endtime", "status", Some("end_time")),
        ],
    )
    .await;
    create_table(
        c,
        &format!("{ENV}-jit-audit"),
        "request_id",
        Some("event_time_event_id"),
        &[
            (
                "gsi_account_event",
                "account_id",
                Some("event_time_event_id"),
            ),
            (
                "gsi_channel_event",
                "channel_id",
                Some("event_time_event_id"),
            ),
        ],
    )
    .await;
    create_table(
        c,
        &format!("{ENV}-jit-nonces"),
        "key_id",
        Some("nonce"),
        &[],
    )
    .await;
}

async fn put(c: &Client, table: &str, item: HashMap<String, AttributeValue>) {
    c.put_item()
        .table_name(format!("{ENV}-{table}"))
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
}

fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn config(
    c: &Client,
    channel: &str,
    account: &str,
    approvers: &[&str],
    self_ok: bool,
    hours: i64,
) {
    let mut it = item(&[
        ("channel_id", s(channel)),
        ("account_id", s(account)),
        ("approval_policy", s("one_of_n")),
        ("allow_self_approval", AttributeValue::Bool(self_ok)),
        ("max_request_hours", n(hours)),
        ("session_duration_minutes", n(0)),
        ("updated_at", s("2026-01-05T09:00:00Z")),
    ]);
    it.insert(
        "approver_mm_user_ids".into(),
        if approvers.is_empty() {
            AttributeValue::Null(true)
        } else {
            AttributeValue::Ss(approvers.iter().map(|a| (*a).to_owned()).collect())
        },
    );
    put(c, "jit-config", it).await;
}

/// An old audit event: type, time, actor (empty: the system), details.
type OldEvent<'a> = (&'a str, OffsetDateTime, &'a str, Vec<(&'a str, &'a str)>);

/// One old request: its item and its audit events.
struct Old<'a> {
    id: &'a str,
    channel: &'a str,
    account: &'a str,
    status: &'a str,
    created: OffsetDateTime,
    minutes: i64,
    fields: Vec<(&'a str, String)>,
    events: Vec<OldEvent<'a>>,
}

async fn seed_request(c: &Client, r: &Old<'_>) {
    let mut it = item(&[
        ("request_id", s(r.id)),
        ("account_id", s(r.account)),
        ("channel_id", s(r.channel)),
        ("requester_mm_user_id", s(ALICE)),
        ("requester_email", s("Alice@Example.com")),
        ("jira", s("OPS-42")),
        ("reason", s("deploy the fix")),
        ("requested_duration_minutes", n(r.minutes)),
        ("status", s(r.status)),
        ("created_at", s(&go_time(r.created))),
        (
            "end_time",
            s(&go_time(r.created + time::Duration::minutes(r.minutes))),
        ),
        ("identity_store_user_id", s("idstore-alice")),
    ]);
    for (k, v) in &r.fields {
        it.insert((*k).to_owned(), s(v));
    }
    put(c, "jit-requests", it).await;
    for (i, (ty, at, actor, details)) in r.events.iter().enumerate() {
        let event_id = format!("{}-e{i}", &r.id[..8]);
        let at = go_time(*at);
        let mut ev = item(&[
            ("request_id", s(r.id)),
            ("event_time_event_id", s(&format!("{at}#{event_id}"))),
            ("event_id", s(&event_id)),
            ("event_time", s(&at)),
            ("event_type", s(ty)),
            ("account_id", s(r.account)),
            ("channel_id", s(r.channel)),
        ]);
        if actor.is_empty() {
            ev.insert("actor_email".into(), s("system"));
        } else {
            ev.insert("actor_mm_user_id".into(), s(actor));
            ev.insert("actor_email".into(), s(&format!("{actor}@example.com")));
        }
        if !details.is_empty() {
            ev.insert(
                "details".into(),
                AttributeValue::M(
                    details
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), s(v)))
                        .collect(),
                ),
            );
        }
        put(c, "jit-audit", ev).await;
    }
}

/// What was seeded, for the assertions.
struct Seeded {
    now: OffsetDateTime,
    live_end: OffsetDateTime,
    events: usize,
}

/// Two channels (three accounts, approvers as string sets) and eight requests in every old
/// status, one GRANTED with its end in the future, one APPROVED whose grant has not been made,
/// and one whose id is not a UUID.
async fn seed(c: &Client) -> Seeded {
    create_old_tables(c).await;
    config(c, CHAN_A, "111111111111", &[BOB, CAROL], false, 4).await;
    config(c, CHAN_A, "222222222222", &[CAROL, BOB], false, 4).await;
    config(c, CHAN_B, "333333333333", &[DAVE], true, 2).await;
    put(
        c,
        "jit-nonces",
        item(&[
            ("key_id", s("key-v1")),
            ("nonce", s("5d1d7e0e-0000-4000-8000-000000000000")),
            ("created_at", s("2026-01-05T09:00:00Z")),
            ("expires_at", n(1_767_600_000)),
        ]),
    )
    .await;

    let now = jit_proto::Clock::now(&jit_proto::SystemClock)
        .replace_nanosecond(0)
        .unwrap();
    let m = time::Duration::minutes;
    let days_ago = now - time::Duration::days(3);
    let live_created = now - m(30);
    let live_end = live_created + m(90);
    let requests = vec![
        Old {
            id: R_EXPIRED,
            channel: CHAN_A,
            account: "111111111111",
            status: "EXPIRED",
            created: days_ago,
            minutes: 60,
            fields: vec![
                ("approved_at", go_time(days_ago + m(2))),
                (
                    "grant_time",
                    go_time(days_ago + m(2) + time::Duration::seconds(4)),
                ),
                ("expired_at", go_time(days_ago + m(61))),
                ("approver_mm_user_id", BOB.into()),
                ("approver_email", "bob@example.com".into()),
                ("assignment_status", "PROVISIONED".into()),
            ],
            events: vec![
                // Stored out of order on purpose: the import puts them in time order.
                ("EXPIRED", days_ago + m(61), "", vec![]),
                (
                    "REQUESTED",
                    days_ago,
                    ALICE,
                    vec![("jira", "OPS-42"), ("requested_duration_minutes", "60")],
                ),
                (
                    "GRANTED",
                    days_ago + m(2) + time::Duration::seconds(4),
                    "",
                    vec![],
                ),
                ("APPROVED", days_ago + m(2), BOB, vec![]),
            ],
        },
        Old {
            id: R_DENIED,
            channel: CHAN_A,
            account: "222222222222",
            status: "DENIED",
            created: days_ago + m(10),
            minutes: 30,
            fields: vec![
                ("denied_at", go_time(days_ago + m(15))),
                ("approver_mm_user_id", CAROL.into()),
                ("approver_email", "carol@example.com".into()),
            ],
            events: vec![
                ("REQUESTED", days_ago + m(10), ALICE, vec![]),
                (
                    "DENIED",
                    days_ago + m(15),
                    CAROL,
                    vec![("reason", "not during the freeze")],
                ),
            ],
        },
        Old {
            id: R_REVOKED,
            channel: CHAN_B,
            account: "333333333333",
            status: "REVOKED",
            created: days_ago + m(20),
            minutes: 120,
            fields: vec![
                ("approved_at", go_time(days_ago + m(21))),
                ("grant_time", go_time(days_ago + m(22))),
                ("revoked_at", go_time(days_ago + m(50))),
                ("approver_mm_user_id", DAVE.into()),
                ("approver_email", "dave@example.com".into()),
            ],
            events: vec![
                ("REQUESTED", days_ago + m(20), ALICE, vec![]),
                ("APPROVED", days_ago + m(21), DAVE, vec![]),
                ("GRANTED", days_ago + m(22), "", vec![]),
                ("REVOKED", days_ago + m(50), DAVE, vec![]),
            ],
        },
        Old {
            id: R_LIVE,
            channel: CHAN_A,
            account: "111111111111",
            status: "GRANTED",
            created: live_created,
            minutes: 90,
            fields: vec![
                ("approved_at", go_time(live_created + m(1))),
                ("grant_time", go_time(live_created + m(2))),
                ("approver_mm_user_id", CAROL.into()),
                ("approver_email", "carol@example.com".into()),
            ],
            events: vec![
                ("REQUESTED", live_created, ALICE, vec![]),
                ("APPROVED", live_created + m(1), CAROL, vec![]),
                ("GRANTED", live_created + m(2), "", vec![]),
            ],
        },
        Old {
            id: R_PENDING,
            channel: CHAN_B,
            account: "333333333333",
            status: "PENDING",
            created: now - m(5),
            minutes: 60,
            fields: vec![],
            events: vec![("REQUESTED", now - m(5), ALICE, vec![])],
        },
        Old {
            id: R_ERROR,
            channel: CHAN_A,
            account: "222222222222",
            status: "ERROR",
            created: days_ago + m(100),
            minutes: 60,
            fields: vec![
                ("approved_at", go_time(days_ago + m(101))),
                ("approver_mm_user_id", BOB.into()),
                ("approver_email", "bob@example.com".into()),
                ("error_details", "grant access: AccessDenied".into()),
            ],
            events: vec![
                ("REQUESTED", days_ago + m(100), ALICE, vec![]),
                ("APPROVED", days_ago + m(101), BOB, vec![]),
                (
                    "ERROR",
                    days_ago + m(102),
                    "",
                    vec![("error", "grant access: AccessDenied"), ("phase", "grant")],
                ),
            ],
        },
        Old {
            id: R_ODD_ID,
            channel: CHAN_B,
            account: "333333333333",
            status: "EXPIRED",
            created: days_ago + m(200),
            minutes: 30,
            fields: vec![
                ("approved_at", go_time(days_ago + m(201))),
                ("grant_time", go_time(days_ago + m(202))),
                ("expired_at", go_time(days_ago + m(230))),
                ("approver_mm_user_id", DAVE.into()),
                ("approver_email", "dave@example.com".into()),
            ],
            events: vec![
                ("REQUESTED", days_ago + m(200), ALICE, vec![]),
                ("APPROVED", days_ago + m(201), DAVE, vec![]),
            ],
        },
        Old {
            id: R_APPROVED,
            channel: CHAN_A,
            account: "222222222222",
            status: "APPROVED",
            created: now - m(3),
            minutes: 60,
            fields: vec![
                ("approved_at", go_time(now - m(2))),
                ("approver_mm_user_id", BOB.into()),
                ("approver_email", "bob@example.com".into()),
            ],
            events: vec![
                ("REQUESTED", now - m(3), ALICE, vec![]),
                ("APPROVED", now - m(2), BOB, vec![]),
            ],
        },
    ];
    let mut events = 0;
    for r in &requests {
        seed_request(c, r).await;
        events += r.events.len();
    }
    Seeded {
        now,
        live_end,
        events,
    }
}

/// Runs `jit import --from-go-backend` against moto; returns (success, stdout, stderr).
fn import(moto: &jit_testkit::Moto, to: &str, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args([
            "import",
            "--from-go-backend",
            "--env",
            ENV,
            "--to",
            to,
            "--aws-region",
            "us-east-1",
            "--aws-endpoint-url",
            &moto.endpoint,
        ])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("JIT_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn import_json(moto: &jit_testkit::Moto, to: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let (ok, out, err) = import(moto, to, &args);
    assert!(ok, "import failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn rid(s: &str) -> RequestId {
    RequestId::parse(s).unwrap()
}

async fn events_of(store: &Arc<dyn Store>, id: &str) -> Vec<jit_core::audit::AuditEvent> {
    let (events, _) = store
        .list_audit(&AuditFilter {
            request_id: Some(id.to_owned()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    events
}

/// Everything the first import must have written, on any store.
async fn check_imported(store: &Arc<dyn Store>, seeded: &Seeded, report: &Value) {
    // The report.
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["bindings"]["configs_read"], 3);
    assert_eq!(report["bindings"]["imported"], 2);
    assert_eq!(report["requests"]["read"], 8);
    assert_eq!(report["requests"]["imported"], 8, "{report:#}");
    assert_eq!(report["requests"]["derived_ids"], 1);
    assert_eq!(report["audit_events_imported"], seeded.events as u64);
    assert_eq!(report["requests"]["live"]["granted_revoke_scheduled"], 1);
    assert_eq!(report["requests"]["live"]["pending_timeout_scheduled"], 1);
    assert_eq!(report["requests"]["live"]["approved_grant_scheduled"], 1);
    assert_eq!(report["requests"]["by_status"]["EXPIRED"], 2);
    assert_eq!(report["completed_event"], true);
    assert!(
        report["invalid"].as_array().unwrap().is_empty(),
        "{report:#}"
    );

    // Bindings: one per channel, every account, the approver set, the old rules.
    let a = store
        .get_binding(&ChannelId::parse(CHAN_A).unwrap())
        .await
        .unwrap()
        .unwrap();
    let accounts: Vec<&str> = a.accounts.keys().map(|k| k.as_str()).collect();
    assert_eq!(accounts, ["111111111111", "222222222222"]);
    let approvers: Vec<&str> = a.policy.approvers.iter().map(UserId::as_str).collect();
    assert_eq!(approvers, [BOB, CAROL]);
    assert_eq!(a.policy.required_approvals, 1);
    assert!(a.policy.require_ticket_or_reason && !a.policy.require_ticket);
    assert!(!a.policy.allow_self_approval);
    assert_eq!(a.policy.max_request_hours, 4);
    let b = store
        .get_binding(&ChannelId::parse(CHAN_B).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(b.policy.allow_self_approval);
    assert_eq!(b.policy.max_request_hours, 2);
    assert_eq!(
        b.policy
            .approvers
            .iter()
            .map(UserId::as_str)
            .collect::<Vec<_>>(),
        [DAVE]
    );

    // Requests, each in its real state with its times and approvals.
    let get = |id: RequestId| {
        let store = store.clone();
        async move { store.get_request(&id).await.unwrap().unwrap() }
    };
    let expired = get(rid(R_EXPIRED)).await;
    assert_eq!(expired.status(), Status::Expired);
    assert_eq!(expired.requester_email.as_str(), "alice@example.com");
    assert_eq!(expired.requester_id.as_str(), ALICE);
    assert_eq!(expired.ticket.as_ref().unwrap().as_str(), "OPS-42");
    assert_eq!(expired.reason.as_ref().unwrap().as_str(), "deploy the fix");
    assert_eq!(expired.duration.get(), 60);
    assert_eq!(expired.approvals.len(), 1);
    assert_eq!(expired.approvals[0].user_id.as_str(), BOB);
    assert_eq!(
        expired.approvals[0].email.as_ref().unwrap().as_str(),
        "bob@example.com"
    );
    assert!(expired.granted_at().is_some());
    assert_eq!(
        expired.ends_at().unwrap(),
        expired.created_at + time::Duration::minutes(60)
    );

    let denied = get(rid(R_DENIED)).await;
    assert_eq!(denied.status(), Status::Denied);
    let closed = denied.closed().unwrap();
    assert_eq!(closed.by.as_ref().unwrap().as_str(), CAROL);
    assert_eq!(
        closed.reason.as_ref().unwrap().as_str(),
        "not during the freeze"
    );
    assert!(denied.approvals.is_empty());

    let revoked = get(rid(R_REVOKED)).await;
    assert_eq!(revoked.status(), Status::Revoked);
    assert_eq!(
        revoked.closed().unwrap().by.as_ref().unwrap().as_str(),
        DAVE
    );
    assert!(revoked.granted_at().is_some());

    let live = get(rid(R_LIVE)).await;
    assert_eq!(live.status(), Status::Granted);
    assert_eq!(live.ends_at(), Some(seeded.live_end));
    assert!(matches!(live.state, State::Granted(_)));

    let pending = get(rid(R_PENDING)).await;
    assert_eq!(pending.status(), Status::Pending);
    assert_eq!(
        pending.pending_deadline,
        pending.created_at + time::Duration::minutes(i64::from(b.policy.pending_timeout_minutes))
    );

    let error = get(rid(R_ERROR)).await;
    assert!(
        matches!(&error.state, State::Error { message, granted: None, .. } if message == "grant access: AccessDenied"),
        "{:?}",
        error.state
    );

    // The id that is not a UUID: a stable derived one, the old id kept in the audit data.
    let odd: Vec<_> = store
        .list_audit(&AuditFilter {
            kind: Some("import.request".into()),
            limit: 1000,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.draft.data["old_request_id"] == R_ODD_ID)
        .collect();
    assert_eq!(odd.len(), 1);
    assert_eq!(odd[0].draft.data["id_derived"], true);
    let odd_id = odd[0].draft.request_id.clone().unwrap();
    assert_eq!(get(rid(&odd_id)).await.status(), Status::Expired);

    // Jobs: the live grant's revoke at its end, the pending request's timeout.
    let revokes = store.list_jobs(Some(JobKind::Revoke)).await.unwrap();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0].request_id.as_str(), R_LIVE);
    assert_eq!(revokes[0].due_ms, jit_store::unix_ms(seeded.live_end));
    let timeouts = store.list_jobs(Some(JobKind::Timeout)).await.unwrap();
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].request_id.as_str(), R_PENDING);
    let grants = store.list_jobs(Some(JobKind::Grant)).await.unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].request_id.as_str(), R_APPROVED);
    let approved = get(rid(R_APPROVED)).await;
    assert_eq!(approved.status(), Status::Approved);
    assert_eq!(
        approved.approved_at(),
        Some(seeded.now - time::Duration::minutes(2))
    );

    // The audit chain holds: the old events, in time order, in the request's transaction.
    let total = store.verify_audit().await.unwrap();
    assert_eq!(total, (seeded.events + 8 + 2 + 1) as i64);
    let kinds: Vec<String> = events_of(store, R_EXPIRED)
        .await
        .into_iter()
        .map(|e| e.draft.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "imported.requested",
            "imported.approved",
            "imported.granted",
            "imported.expired",
            "import.request"
        ]
    );
    let ev = events_of(store, R_DENIED).await;
    assert_eq!(ev[1].draft.kind, "imported.denied");
    assert_eq!(ev[1].draft.data["imported"], true);
    assert_eq!(ev[1].draft.data["event_id"], "0b1f6c1e-e1");
    assert!(
        ev[1].draft.data["event_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        ev[1].draft.data["details"]["reason"],
        "not during the freeze"
    );
    assert_eq!(ev[1].draft.actor_id.as_deref(), Some(CAROL));
    let times: Vec<OffsetDateTime> = events_of(store, R_REVOKED)
        .await
        .iter()
        .filter_map(|e| e.draft.data["event_time"].as_str().map(parse))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let (done, _) = store
        .list_audit(&AuditFilter {
            kind: Some("import.completed".into()),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].draft.data["requests"]["imported"], 8);
}

/// A second run writes nothing and says everything was skipped.
async fn check_rerun_is_a_no_op(moto: &jit_testkit::Moto, to: &str, store: &Arc<dyn Store>) {
    let before = store.verify_audit().await.unwrap();
    let report = import_json(moto, to, &[]);
    assert_eq!(report["bindings"]["imported"], 0);
    assert_eq!(report["bindings"]["skipped"], 2);
    assert_eq!(report["bindings"]["conflicting"], 0);
    assert_eq!(report["requests"]["imported"], 0);
    assert_eq!(report["requests"]["skipped"], 8);
    assert_eq!(report["audit_events_imported"], 0);
    assert_eq!(report["completed_event"], false);
    assert_eq!(store.verify_audit().await.unwrap(), before);
    assert_eq!(store.list_jobs(None).await.unwrap().len(), 3);
}

#[tokio::test]
async fn go_backend_history_lands_in_sqlite_once() {
    let moto = jit_testkit::Moto::start().unwrap();
    let sdk = moto.sdk_config().await;
    let seeded = seed(&Client::new(&sdk)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jit.db");
    let to = format!("sqlite://{}", db.display());

    // A dry run creates nothing and counts what a real run writes.
    let dry = import_json(&moto, &to, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["requests"]["imported"], 8);
    assert_eq!(dry["bindings"]["imported"], 2);
    assert_eq!(dry["audit_events_imported"], seeded.events as u64);
    assert_eq!(dry["completed_event"], false);
    assert!(!db.exists(), "a dry run created the database");

    let report = import_json(&moto, &to, &[]);
    let store = jit_store::open(&to, &jit_store::AwsOptions::default())
        .await
        .unwrap();
    check_imported(&store, &seeded, &report).await;

    // The text report of a re-run says skipped, and nothing new is written.
    let before = store.verify_audit().await.unwrap();
    let (ok, text, err) = import(&moto, &to, &[]);
    assert!(ok, "{text}\n{err}");
    assert!(
        text.contains("bindings: 0 imported, 2 skipped")
            && text.contains("requests: 0 imported, 8 skipped")
            && text.contains("audit events: 0 imported"),
        "{text}"
    );
    assert_eq!(store.verify_audit().await.unwrap(), before);
    check_rerun_is_a_no_op(&moto, &to, &store).await;

    // A binding changed here since is a conflict, left alone unless --overwrite-bindings.
    let chan_b = ChannelId::parse(CHAN_B).unwrap();
    let mut b = store.get_binding(&chan_b).await.unwrap().unwrap();
    b.policy.approvers = vec![UserId::parse(BOB).unwrap()];
    let version = b.version;
    let edit = jit_store::WriteCtx::new(
        jit_core::audit::AuditDraft::new("config.approvers_changed"),
        jit_proto::Clock::now(&jit_proto::SystemClock),
    );
    store.save_binding(&b, version, edit).await.unwrap();
    let report = import_json(&moto, &to, &[]);
    assert_eq!(report["bindings"]["conflicting"], 1);
    assert_eq!(report["bindings"]["skipped"], 1);
    assert_eq!(report["conflicts"][0]["channel_id"], CHAN_B);
    assert_eq!(
        report["conflicts"][0]["differs"],
        serde_json::json!(["approvers"])
    );
    assert_eq!(report["conflicts"][0]["overwritten"], false);
    assert_eq!(report["completed_event"], false);
    let kept = store.get_binding(&chan_b).await.unwrap().unwrap();
    assert_eq!(kept.policy.approvers[0].as_str(), BOB);
    let report = import_json(&moto, &to, &["--overwrite-bindings"]);
    assert_eq!(report["bindings"]["overwritten"], 1);
    assert_eq!(report["completed_event"], true);
    let back = store.get_binding(&chan_b).await.unwrap().unwrap();
    assert_eq!(back.policy.approvers[0].as_str(), DAVE);
    assert_eq!(back.version, version + 2);
    let report = import_json(&moto, &to, &["--overwrite-bindings"]);
    assert_eq!(report["bindings"]["skipped"], 2);
    assert_eq!(report["bindings"]["overwritten"], 0);
    assert_eq!(report["requests"]["granted_after_import"], 0);

    // The old backend granted a request after it was imported: a re-run skips it, and says so.
    let granted = go_time(seeded.now);
    Client::new(&sdk)
        .update_item()
        .table_name(format!("{ENV}-jit-requests"))
        .key("request_id", s(R_PENDING))
        .update_expression("SET #s = :s, approved_at = :t, grant_time = :t")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", s("GRANTED"))
        .expression_attribute_values(":t", s(&granted))
        .send()
        .await
        .unwrap();
    let before = store.verify_audit().await.unwrap();
    let report = import_json(&moto, &to, &[]);
    assert_eq!(report["requests"]["skipped"], 8);
    assert_eq!(report["requests"]["granted_after_import"], 1);
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains(R_PENDING)),
        "{warnings:?}"
    );
    assert_eq!(store.verify_audit().await.unwrap(), before);
}

#[tokio::test]
async fn go_backend_history_lands_in_a_dynamodb_store_once() {
    let moto = jit_testkit::Moto::start().unwrap();
    let sdk = moto.sdk_config().await;
    let seeded = seed(&Client::new(&sdk)).await;
    jit_store::DynamoStore::create_tables(&sdk, "new-state", "new-nonces")
        .await
        .unwrap();
    let to = "dynamodb://new-state?nonces=new-nonces";
    let report = import_json(&moto, to, &[]);
    let store: Arc<dyn Store> = Arc::new(jit_store::DynamoStore::open(to, &sdk).await.unwrap());
    check_imported(&store, &seeded, &report).await;
    check_rerun_is_a_no_op(&moto, to, &store).await;
    // The offline check reads a DynamoDB store as it reads a SQL one.
    let out = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args(["audit", "verify", "--database-url", to])
        .args([
            "--aws-region",
            "us-east-1",
            "--aws-endpoint-url",
            &moto.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("audit chain intact: "), "{text}");
}

#[test]
fn a_missing_old_table_is_a_coded_error() {
    let moto = jit_testkit::Moto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = format!("sqlite://{}", dir.path().join("jit.db").display());
    let (ok, out, err) = import(&moto, &to, &[]);
    assert!(!ok, "{out}");
    assert!(err.starts_with("error[go_table_missing]: "), "{err}");
    assert!(
        err.contains("legacy-jit-config") && err.contains("hint: "),
        "{err}"
    );
    assert!(
        !dir.path().join("jit.db").exists(),
        "a failed import created the store"
    );
}

#[test]
fn a_missing_env_is_a_usage_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_jit"))
        .args([
            "import",
            "--from-go-backend",
            "--to",
            "sqlite:///nonexistent/jit.db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error[usage]: the following required arguments were not provided: --env"),
        "{err}"
    );
}

#[tokio::test]
async fn records_that_do_not_parse_are_listed_and_the_rest_imported() {
    let moto = jit_testkit::Moto::start().unwrap();
    let c = Client::new(&moto.sdk_config().await);
    create_old_tables(&c).await;
    config(&c, CHAN_A, "111111111111", &[BOB], false, 4).await;
    config(&c, CHAN_B, "not-an-account", &[BOB], false, 4).await;
    let created = jit_proto::Clock::now(&jit_proto::SystemClock) - time::Duration::days(1);
    let mut good = Old {
        id: R_DENIED,
        channel: CHAN_A,
        account: "111111111111",
        status: "DENIED",
        created,
        minutes: 30,
        fields: vec![
            ("denied_at", go_time(created + time::Duration::minutes(1))),
            ("approver_mm_user_id", BOB.into()),
        ],
        events: vec![("REQUESTED", created, ALICE, vec![])],
    };
    seed_request(&c, &good).await;
    good.id = R_EXPIRED;
    good.status = "EXPIRED";
    seed_request(&c, &good).await;
    let dir = tempfile::tempdir().unwrap();
    let to = format!("sqlite://{}", dir.path().join("jit.db").display());
    let (ok, out, err) = import(&moto, &to, &["--json"]);
    assert!(!ok);
    assert!(
        err.starts_with("error[import_incomplete]: 2 old record(s)"),
        "{err}"
    );
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["bindings"]["imported"], 1);
    assert_eq!(report["bindings"]["invalid"], 1);
    assert_eq!(report["requests"]["imported"], 1);
    assert_eq!(report["requests"]["invalid"], 1);
    let invalid = report["invalid"].as_array().unwrap();
    assert_eq!(invalid[0]["key"], CHAN_B);
    assert_eq!(invalid[1]["key"], R_EXPIRED);
    assert!(
        invalid[1]["reason"]
            .as_str()
            .unwrap()
            .contains("expired_at"),
        "{invalid:?}"
    );
    let store = jit_store::open(&to, &jit_store::AwsOptions::default())
        .await
        .unwrap();
    assert!(store.get_request(&rid(R_EXPIRED)).await.unwrap().is_none());
    assert_eq!(
        store
            .get_request(&rid(R_DENIED))
            .await
            .unwrap()
            .unwrap()
            .status(),
        Status::Denied
    );
    store.verify_audit().await.unwrap();
}
