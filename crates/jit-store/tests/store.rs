//! One behavioural suite, run unchanged against SQLite, PostgreSQL and DynamoDB (on moto)
//! through `dyn Store`; the SQL-only checks (migrations, query plans, raw counters) follow it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_core::audit::{AuditDraft, ChainError};
use jit_core::policy::{Binding, Policy};
use jit_core::request::{NewRequest, Request, Status};
use jit_core::types::{
    AccountId, Actor, ChannelId, DurationMinutes, Email, Reason, RequestId, Ticket, UserId,
};
use jit_proto::nonce::NonceError;
use jit_store::prelude::*;
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{
    AuditFilter, DynamoStore, IdemRecord, RequestFilter, SqlStore, StoreError, VerifyError,
    WriteCtx,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

/// A store under test, with what it takes to reach under it (to tamper with the trail).
struct Db {
    store: Arc<dyn Store>,
    under: Under,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

enum Under {
    Sql(SqlStore),
    /// The store, and the moto server it lives on (stopped on drop).
    Dynamo(DynamoStore, #[allow(dead_code)] jit_testkit::Moto),
}

impl Db {
    /// The SQL store (SQL-only tests).
    fn sql(&self) -> &SqlStore {
        match &self.under {
            Under::Sql(s) => s,
            Under::Dynamo(..) => unreachable!("a SQL-only test ran on DynamoDB"),
        }
    }

    /// Whether the database itself expires rows (DynamoDB's time-to-live), so purges find none.
    fn expires_rows_itself(&self) -> bool {
        matches!(self.under, Under::Dynamo(..))
    }

    /// Changes the actor of audit event `seq` behind the store's back.
    async fn set_event_actor(&self, seq: i64, actor: &str) {
        match &self.under {
            Under::Sql(s) => {
                let sql: &'static str = Box::leak(
                    format!("UPDATE audit_events SET actor_id = '{actor}' WHERE seq = {seq}")
                        .into_boxed_str(),
                );
                s.raw_execute(sql).await.unwrap();
            }
            Under::Dynamo(d, _) => {
                d.client()
                    .update_item()
                    .table_name(d.table())
                    .key("pk", av(format!("A#{:012}", seq / 1000)))
                    .key("sk", av(format!("{seq:020}")))
                    .update_expression("SET actor_id = :a")
                    .expression_attribute_values(":a", av(actor.to_owned()))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Deletes audit event `seq` behind the store's back.
    async fn delete_event(&self, seq: i64) {
        match &self.under {
            Under::Sql(s) => {
                let sql: &'static str = Box::leak(
                    format!("DELETE FROM audit_events WHERE seq = {seq}").into_boxed_str(),
                );
                s.raw_execute(sql).await.unwrap();
            }
            Under::Dynamo(d, _) => {
                d.client()
                    .delete_item()
                    .table_name(d.table())
                    .key("pk", av(format!("A#{:012}", seq / 1000)))
                    .key("sk", av(format!("{seq:020}")))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn av(s: String) -> aws_sdk_dynamodb::types::AttributeValue {
    aws_sdk_dynamodb::types::AttributeValue::S(s)
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("jit.db").display());
    let store = SqlStore::open(&url).await.unwrap();
    Db {
        store: Arc::new(store.clone()),
        under: Under::Sql(store),
        url,
        _dir: Some(dir),
    }
}

async fn postgres() -> Db {
    let url = jit_testkit::fresh_pg_database().unwrap();
    let store = SqlStore::open(&url).await.unwrap();
    Db {
        store: Arc::new(store.clone()),
        under: Under::Sql(store),
        url,
        _dir: None,
    }
}

/// A DynamoDB store on a moto server of its own, its tables made as the template makes them,
/// opened by URL as the server opens it.
async fn dynamodb() -> Db {
    let moto = jit_testkit::Moto::start().unwrap();
    let sdk = moto.sdk_config().await;
    DynamoStore::create_tables(&sdk, "jit-state", "jit-nonces")
        .await
        .unwrap();
    let url = "dynamodb://jit-state?nonces=jit-nonces".to_owned();
    let store = DynamoStore::open(&url, &sdk).await.unwrap();
    Db {
        store: Arc::new(store.clone()),
        under: Under::Dynamo(store, moto),
        url,
        _dir: None,
    }
}

fn actor(id: &str) -> Actor {
    Actor {
        user_id: UserId::parse(id).unwrap(),
        email: Some(Email::parse(&format!("{id}@example.com")).unwrap()),
        roles: vec![],
    }
}

fn binding(channel: &str) -> Binding {
    Binding {
        channel_id: ChannelId::parse(channel).unwrap(),
        accounts: BTreeMap::from([(AccountId::parse("123456789012").unwrap(), vec![])]),
        policy: Policy {
            approvers: vec![UserId::parse("bob").unwrap()],
            ..Policy::default()
        },
        updated_at: None,
        version: 0,
    }
}

fn audit(kind: &str, req: Option<&Request>) -> AuditDraft {
    let mut d = AuditDraft::new(kind);
    d.request_id = req.map(|r| r.id.as_str().to_owned());
    d.channel_id = req.map(|r| r.channel_id.as_str().to_owned());
    d.account_id = req.map(|r| r.account_id.as_str().to_owned());
    d.actor_id = Some("alice".into());
    d
}

fn new_request(b: &Binding, n: u8, at: OffsetDateTime) -> Request {
    let mut id = [0u8; 16];
    id[0] = n;
    id[15] = 0xaa;
    Request::create(
        RequestId::from_random(id),
        NewRequest {
            channel_id: b.channel_id.clone(),
            account_id: AccountId::parse("123456789012").unwrap(),
            permission_set_arn: None,
            ticket: Ticket::parse("OPS-1").unwrap(),
            reason: Reason::parse("deploy").unwrap(),
            duration: DurationMinutes::new(60).unwrap(),
            break_glass: false,
        },
        &actor("alice"),
        b,
        at,
    )
    .unwrap()
}

async fn bound(db: &Db) -> Binding {
    db.store
        .save_binding(
            &binding("ch1"),
            0,
            WriteCtx::new(AuditDraft::new("config.bound"), T0),
        )
        .await
        .unwrap()
}

async fn binding_compare_and_set(db: Db) {
    let b = bound(&db).await;
    assert_eq!(b.version, 1);
    let again = db
        .store
        .save_binding(
            &binding("ch1"),
            0,
            WriteCtx::new(AuditDraft::new("config.bound"), T0),
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    let mut changed = b.clone();
    changed.policy.required_approvals = 1;
    changed.policy.max_request_hours = 2;
    let b2 = db
        .store
        .save_binding(
            &changed,
            1,
            WriteCtx::new(AuditDraft::new("config.policy_changed"), T0),
        )
        .await
        .unwrap();
    assert_eq!(b2.version, 2);
    let stale = db
        .store
        .save_binding(
            &changed,
            1,
            WriteCtx::new(AuditDraft::new("config.policy_changed"), T0),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)));
    let got = db.store.get_binding(&b.channel_id).await.unwrap().unwrap();
    assert_eq!(got.policy.max_request_hours, 2);
    assert_eq!(got, b2);
    // The failed writes left no audit events behind.
    assert_eq!(db.store.verify_audit().await.unwrap(), 2);
    db.store
        .delete_binding(
            &b.channel_id,
            2,
            WriteCtx::new(AuditDraft::new("config.unbound"), T0),
        )
        .await
        .unwrap();
    assert!(db.store.get_binding(&b.channel_id).await.unwrap().is_none());
}

async fn request_round_trips_through_every_state(db: Db) {
    let b = bound(&db).await;
    let r = new_request(&b, 1, T0);
    db.store
        .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
        .await
        .unwrap();
    assert_eq!(db.store.get_request(&r.id).await.unwrap().unwrap(), r);
    let t1 = T0 + time::Duration::minutes(5);
    let a = r.approve(&actor("bob"), &b.policy, t1).unwrap();
    db.store
        .update_request(&a, WriteCtx::new(audit("request.approved", Some(&a)), t1))
        .await
        .unwrap();
    assert_eq!(db.store.get_request(&r.id).await.unwrap().unwrap(), a);
    let g = a.grant(t1 + time::Duration::seconds(2)).unwrap();
    db.store
        .update_request(&g, WriteCtx::new(audit("request.granted", Some(&g)), t1))
        .await
        .unwrap();
    assert_eq!(db.store.get_request(&r.id).await.unwrap().unwrap(), g);
    let e = g.expire(g.ends_at().unwrap()).unwrap();
    db.store
        .update_request(&e, WriteCtx::new(audit("request.expired", Some(&e)), t1))
        .await
        .unwrap();
    let got = db.store.get_request(&r.id).await.unwrap().unwrap();
    assert_eq!(got, e);
    assert_eq!(got.status(), Status::Expired);
    // Denied with a reason, cancelled, error: all survive a round trip.
    let d = new_request(&b, 2, T0);
    db.store
        .create_request(&d, WriteCtx::new(audit("request.created", Some(&d)), T0))
        .await
        .unwrap();
    let d2 = d
        .deny(&actor("bob"), Reason::parse("not now").unwrap(), t1)
        .unwrap();
    db.store
        .update_request(&d2, WriteCtx::new(audit("request.denied", Some(&d2)), t1))
        .await
        .unwrap();
    assert_eq!(db.store.get_request(&d.id).await.unwrap().unwrap(), d2);
    assert!(
        db.store
            .get_request(&RequestId::from_random([9; 16]))
            .await
            .unwrap()
            .is_none()
    );
}

async fn concurrent_transitions_apply_once(db: Db) {
    let b = bound(&db).await;
    let r = new_request(&b, 1, T0);
    db.store
        .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
        .await
        .unwrap();
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let r = r.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let next = if i % 2 == 0 {
                r.approve(&actor("bob"), &b.policy, T0).unwrap()
            } else {
                r.deny(&actor("bob"), None, T0).unwrap()
            };
            store
                .update_request(
                    &next,
                    WriteCtx::new(audit("request.decided", Some(&next)), T0),
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one transition wins");
    // One creation event + one decision event: the losers wrote nothing.
    assert_eq!(store.verify_audit().await.unwrap(), 3);
}

async fn audit_chain_detects_edit_and_deletion(db: Db) {
    let b = bound(&db).await;
    for n in 1..=4 {
        let r = new_request(&b, n, T0);
        db.store
            .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
            .await
            .unwrap();
    }
    assert_eq!(db.store.verify_audit().await.unwrap(), 5);
    let (page, next) = db
        .store
        .list_audit(&AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(next, Some(2));
    let (page, next) = db
        .store
        .list_audit(&AuditFilter {
            limit: 10,
            after_seq: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(next, None);
    let (only, _) = db
        .store
        .list_audit(&AuditFilter {
            limit: 10,
            kind: Some("config.bound".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    let (by_actor, _) = db
        .store
        .list_audit(&AuditFilter {
            limit: 10,
            actor: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 4);

    db.set_event_actor(3, "mallory").await;
    assert!(matches!(
        db.store.verify_audit().await,
        Err(VerifyError::Chain(ChainError::Tampered(3)))
    ));
    db.set_event_actor(3, "alice").await;
    assert_eq!(db.store.verify_audit().await.unwrap(), 5);
    db.delete_event(2).await;
    assert!(matches!(
        db.store.verify_audit().await,
        Err(VerifyError::Chain(ChainError::Gap {
            expected: 2,
            found: 3
        }))
    ));
}

async fn audit_tail_deletion_is_detected(db: Db) {
    let _ = bound(&db).await;
    let _ = db
        .store
        .save_binding(
            &binding("ch2"),
            0,
            WriteCtx::new(AuditDraft::new("config.bound"), T0),
        )
        .await
        .unwrap();
    db.delete_event(2).await;
    assert!(matches!(
        db.store.verify_audit().await,
        Err(VerifyError::Chain(ChainError::Truncated {
            expected: 2,
            found: 1
        }))
    ));
}

async fn list_filters_and_pages(db: Db) {
    let b = bound(&db).await;
    let mut ids = Vec::new();
    for n in 0..7u8 {
        let r = new_request(&b, n + 1, T0 + time::Duration::minutes(i64::from(n)));
        db.store
            .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
            .await
            .unwrap();
        ids.push(r.id.as_str().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (items, next) = db
            .store
            .list_requests(&RequestFilter {
                limit: 3,
                after: after.clone(),
                channel_id: Some("ch1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(items.iter().map(|r| r.id.as_str().to_owned()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, every request exactly once");
    let f = RequestFilter {
        limit: 50,
        statuses: vec![Status::Pending],
        requester_email: Some("ALICE@example.com".into()),
        start_ms: Some((T0 + time::Duration::minutes(2)).unix_timestamp() * 1000),
        end_ms: Some((T0 + time::Duration::minutes(4)).unix_timestamp() * 1000),
        ..Default::default()
    };
    assert_eq!(db.store.list_requests(&f).await.unwrap().0.len(), 2);
    let none = RequestFilter {
        limit: 50,
        channel_id: Some("x' OR '1'='1".into()),
        ..Default::default()
    };
    assert!(db.store.list_requests(&none).await.unwrap().0.is_empty());
    let granted = RequestFilter {
        limit: 50,
        statuses: vec![Status::Granted],
        ..Default::default()
    };
    assert!(db.store.list_requests(&granted).await.unwrap().0.is_empty());
}

async fn idempotency_record_commits_with_the_change(db: Db) {
    let b = bound(&db).await;
    let r = new_request(&b, 1, T0);
    let idem = IdemRecord {
        scope: "POST /requests u1".into(),
        key: "k1".into(),
        request_hash: "h".into(),
        status: 201,
        response: "{\"x\":1}".into(),
    };
    let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
    ctx.idem = Some(idem.clone());
    db.store.create_request(&r, ctx.clone()).await.unwrap();
    assert_eq!(
        db.store
            .idempotency_get("POST /requests u1", "k1")
            .await
            .unwrap(),
        Some(idem)
    );
    // A second create under the same key fails as a whole: no second request, no event.
    let r2 = new_request(&b, 2, T0);
    assert!(matches!(
        db.store.create_request(&r2, ctx).await,
        Err(StoreError::Conflict)
    ));
    assert!(db.store.get_request(&r2.id).await.unwrap().is_none());
    assert_eq!(db.store.verify_audit().await.unwrap(), 2);
}

async fn durable_nonces(db: Db) {
    let s = &db.store;
    assert_eq!(s.check_and_insert("n1", 1000, 1600).await, Ok(()));
    assert_eq!(
        s.check_and_insert("n1", 1599, 2199).await,
        Err(NonceError::Replayed)
    );
    assert_eq!(
        s.check_and_insert("n1", 1600, 2200).await,
        Ok(()),
        "expired nonce may be reused"
    );
    assert_eq!(s.check_and_insert("n2", 1000, 1600).await, Ok(()));
    let purged = s.purge_nonces(1700).await.unwrap();
    assert!(purged == 1 || db.expires_rows_itself(), "{purged} purged");
    assert_eq!(
        s.check_and_insert("n2", 1700, 2300).await,
        Ok(()),
        "a purged or expired nonce is no replay"
    );
}

async fn migrations_are_idempotent(db: Db) {
    let _ = bound(&db).await;
    // A second server starting on the same database: migrations already applied, data kept.
    let second = SqlStore::open(&db.url).await.unwrap();
    let _ = db.sql();
    assert!(
        second
            .get_binding(&ChannelId::parse("ch1").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(second.verify_audit().await.unwrap(), 1);
}

async fn batched_writes_fail_alone(db: Db) {
    let b = bound(&db).await;
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for n in 0..50u8 {
        let store = store.clone();
        let r = new_request(&b, n + 1, T0);
        tasks.push(tokio::spawn(async move {
            let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
            if n % 5 == 0 {
                // Ten writes race for one idempotency key: one wins, nine fail, others unharmed.
                ctx.idem = Some(IdemRecord {
                    scope: "s".into(),
                    key: "same".into(),
                    request_hash: "h".into(),
                    status: 201,
                    response: "{}".into(),
                });
            }
            (n, store.create_request(&r, ctx).await)
        }));
    }
    let mut ok = 0;
    let mut idem_ok = 0;
    for t in tasks {
        let (n, r) = t.await.unwrap();
        match r {
            Ok(()) => {
                ok += 1;
                if n % 5 == 0 {
                    idem_ok += 1;
                }
            }
            Err(StoreError::Conflict) => {
                assert_eq!(n % 5, 0, "only the idempotency racers may fail")
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, idem_ok), (41, 1));
    let (all, _) = store
        .list_requests(&RequestFilter {
            limit: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 41, "failed writes left no request behind");
    assert_eq!(
        store.verify_audit().await.unwrap(),
        42,
        "and no audit event"
    );
}

/// Delivered and dead rows past the retention go; newer ones and pending ones stay, unless the
/// deployment has no callback URL; the audit trail is untouched.
async fn old_callback_rows_are_pruned_and_the_audit_trail_is_not(db: Db) {
    use jit_store::OutboxDraft;
    let b = bound(&db).await;
    let t0_ms = T0.unix_timestamp() * 1000;
    for (i, at) in [(0u8, T0), (1, T0 + time::Duration::days(10))] {
        let r = new_request(&b, 1 + i, at);
        let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), at);
        for n in 0..3 {
            ctx.outbox.push(OutboxDraft {
                event_id: format!("e{i}-{n}"),
                request_id: r.id.clone(),
                payload: "{}".into(),
            });
        }
        db.store.create_request(&r, ctx).await.unwrap();
    }
    // Old request: one delivered, one dead, one pending; the new one: one delivered.
    db.store.callback_delivered("e0-0", t0_ms).await.unwrap();
    db.store
        .callback_failed("e0-1", t0_ms, "gone", true)
        .await
        .unwrap();
    db.store.callback_delivered("e1-0", t0_ms).await.unwrap();
    let events = db.store.verify_audit().await.unwrap();
    let cutoff = t0_ms + 7 * 86_400_000;
    assert_eq!(db.store.prune_callbacks(cutoff, false).await.unwrap(), 2);
    let left = |status: &'static str| {
        let store = &db.store;
        async move {
            let mut ids: Vec<String> = store
                .list_callbacks(status, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(left("DELIVERED").await, vec!["e1-0"]);
    assert!(left("DEAD").await.is_empty());
    assert_eq!(left("PENDING").await, vec!["e0-2", "e1-1", "e1-2"]);
    // With no callback URL, old undelivered rows go too.
    assert_eq!(db.store.prune_callbacks(cutoff, true).await.unwrap(), 1);
    assert_eq!(left("PENDING").await, vec!["e1-1", "e1-2"]);
    assert_eq!(
        db.store.verify_audit().await.unwrap(),
        events,
        "the trail is kept"
    );
}

/// The behavioural suite: every test on every backend.
macro_rules! every_backend {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite { use super::*; $( #[tokio::test] async fn $name() { super::$name(sqlite().await).await } )* }
        mod on_postgres { use super::*; $( #[tokio::test] async fn $name() { super::$name(postgres().await).await } )* }
        mod on_dynamodb { use super::*; $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(dynamodb().await).await } )* }
    };
}

/// What only the SQL store has: migrations, query plans, its counter table.
macro_rules! sql_backends {
    ($($name:ident),* $(,)?) => {
        mod sql_on_sqlite { use super::*; $( #[tokio::test] async fn $name() { super::$name(sqlite().await).await } )* }
        mod sql_on_postgres { use super::*; $( #[tokio::test] async fn $name() { super::$name(postgres().await).await } )* }
    };
}

every_backend!(
    binding_compare_and_set,
    request_round_trips_through_every_state,
    concurrent_transitions_apply_once,
    audit_chain_detects_edit_and_deletion,
    audit_tail_deletion_is_detected,
    list_filters_and_pages,
    idempotency_record_commits_with_the_change,
    durable_nonces,
    old_callback_rows_are_pruned_and_the_audit_trail_is_not,
    batched_writes_fail_alone,
    jobs_assignments_and_outbox_commit_with_the_change,
    gauges_follow_every_change,
    checkpoints_let_a_routine_verification_start_late,
    principal_locks_are_exclusive_until_they_expire,
    callbacks_are_delivered_in_order_per_request,
    reconciler_pages_see_every_request_missing_a_job,
);

sql_backends!(
    migrations_are_idempotent,
    read_queries_use_their_indexes,
    gauges_come_from_counters_that_match_the_tables,
);

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/jit.db");
    let p = path.to_str().unwrap();
    let s = SqlStore::open(&format!("sqlite://{p}")).await.unwrap();
    s.save_binding(
        &binding("ch1"),
        0,
        WriteCtx::new(AuditDraft::new("config.bound"), T0),
    )
    .await
    .unwrap();
    drop(s);
    let s = SqlStore::open(&format!("sqlite://{p}")).await.unwrap();
    assert!(
        s.get_binding(&ChannelId::parse("ch1").unwrap())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(s.verify_audit().await.unwrap(), 1);
}

async fn jobs_assignments_and_outbox_commit_with_the_change(db: Db) {
    use jit_store::{AssignmentOp, JobKind, JobOp, OutboxDraft};
    let b = bound(&db).await;
    let r = new_request(&b, 1, T0);
    let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
    ctx.jobs.push(JobOp::Schedule {
        kind: JobKind::Timeout,
        request_id: r.id.clone(),
        due_ms: 5,
    });
    ctx.assignments.push(AssignmentOp::Add {
        principal: "p".into(),
        standing: true,
    });
    ctx.outbox.push(OutboxDraft {
        event_id: "e1".into(),
        request_id: r.id.clone(),
        payload: "{}".into(),
    });
    db.store.create_request(&r, ctx).await.unwrap();
    assert_eq!(db.store.next_job_due().await.unwrap(), Some(5));
    assert_eq!(db.store.get_assignment("p").await.unwrap(), Some(true));
    let jobs = db.store.claim_jobs("me", 10, 1000, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(
        db.store
            .claim_jobs("other", 10, 1000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert_eq!(
        db.store
            .claim_jobs("other", 2000, 1000, 10)
            .await
            .unwrap()
            .len(),
        1,
        "lease expired"
    );
    let now_ms = T0.unix_timestamp() * 1000;
    assert!(
        db.store
            .due_callbacks(now_ms - 1, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due before it was queued"
    );
    assert_eq!(db.store.due_callbacks(now_ms, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_mistyped_database_url_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let here = std::env::current_dir().unwrap();
    for url in [
        "postgres//host/jit".to_owned(),
        "mysql://u:pw@host/jit".to_owned(),
        "sqlite:jit.db".to_owned(),
        dir.path().join("bare.db").display().to_string(),
        "sqlite://".to_owned(),
    ] {
        let e = SqlStore::open(&url).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidUrl(_)), "{url}: {e}");
        let text = e.to_string();
        assert!(!text.contains("pw"), "no credential in {text}");
    }
    assert!(!here.join("postgres").exists());
    assert!(!here.join("mysql:").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(matches!(
        jit_store::DatabaseUrl::parse("postgresql://h/db").unwrap(),
        jit_store::DatabaseUrl::Postgres(_)
    ));
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_database_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("jit.db");
    let s = SqlStore::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    s.save_binding(
        &binding("ch1"),
        0,
        WriteCtx::new(AuditDraft::new("config.bound"), T0),
    )
    .await
    .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["jit.db", "jit.db-wal", "jit.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

#[tokio::test]
async fn a_read_only_open_creates_nothing_and_migrates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo/jit.db");
    let e = SqlStore::open_read_only(&format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no database at"), "{e}");
    assert!(!dir.path().join("typo").exists());

    let db = dir.path().join("jit.db");
    let url = format!("sqlite://{}", db.display());
    let s = SqlStore::open(&url).await.unwrap();
    s.save_binding(
        &binding("ch1"),
        0,
        WriteCtx::new(AuditDraft::new("config.bound"), T0),
    )
    .await
    .unwrap();
    // Forget the last migration: a read-write open would apply it again.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let last: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM schema_migrations WHERE version = $1")
        .bind(last)
        .execute(&pool)
        .await
        .unwrap();
    drop(s);

    let ro = SqlStore::open_read_only(&url).await.unwrap();
    assert_eq!(ro.verify_audit().await.unwrap(), 1);
    let again: i64 = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(again < last, "the read-only open applied a migration");
    let write = ro
        .save_binding(
            &binding("ch2"),
            0,
            WriteCtx::new(AuditDraft::new("config.bound"), T0),
        )
        .await;
    assert!(write.is_err(), "a read-only store refuses writes");
}

/// Every paged read and periodic query is served by an index matching its filter and order:
/// no query walks a whole table, and none sorts more than a page. A later change that brings
/// back a scan fails here, on both databases.
async fn read_queries_use_their_indexes(db: Db) {
    let plans = db.sql().query_plans().await.unwrap();
    assert!(plans.len() > 25, "{} plans", plans.len());
    let tables = [
        "requests",
        "audit_events",
        "jobs",
        "outbox",
        "nonces",
        "status_counts",
        "audit_checkpoints",
    ];
    let mut bad = Vec::new();
    let show = std::env::var_os("JIT_SHOW_PLANS").is_some();
    for p in &plans {
        if show {
            eprintln!("{}:\n  {}", p.name, p.lines.join("\n  "));
        }
        for line in &p.lines {
            let allowed = p.allow.iter().any(|a| line.contains(a));
            let scan = tables.iter().any(|t| {
                line.starts_with(&format!("SCAN {t}")) && !line.starts_with(&format!("SCAN {t}_"))
            }) || line.contains("Seq Scan");
            let sort = line.contains("TEMP B-TREE") || line.trim_start().starts_with("Sort");
            if (scan || sort) && !allowed {
                bad.push(format!("{}: {line}\n  plan: {:?}", p.name, p.lines));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "queries that scan or sort:\n{}",
        bad.join("\n")
    );
    // A next page starts where the last ended: the cursor bounds the index range, so a deep
    // page costs what the first does.
    for (name, col) in [
        ("requests: status, next page", "created_at"),
        ("audit: type, next page", "seq"),
        ("reconciler: requests missing a job", "created_at"),
    ] {
        let p = plans.iter().find(|p| p.name == name).unwrap();
        assert!(
            p.lines
                .iter()
                .any(|l| (l.contains("SEARCH") || l.contains("Index Cond")) && l.contains(col)),
            "{name}: the cursor is not part of the index range: {:?}",
            p.lines
        );
    }
}

/// The status counters the metrics read agree with the tables after inserts, transitions and
/// deletions.
async fn gauges_come_from_counters_that_match_the_tables(db: Db) {
    use jit_store::OutboxDraft;
    let b = bound(&db).await;
    let mut reqs = Vec::new();
    for n in 0..4u8 {
        let r = new_request(&b, 1 + n, T0);
        let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
        ctx.outbox.push(OutboxDraft {
            event_id: format!("e{n}"),
            request_id: r.id.clone(),
            payload: "{}".into(),
        });
        db.store.create_request(&r, ctx).await.unwrap();
        reqs.push(r);
    }
    let bob = actor("bob");
    let denied = reqs[0].deny(&bob, None, T0).unwrap();
    db.store
        .update_request(
            &denied,
            WriteCtx::new(audit("request.denied", Some(&denied)), T0),
        )
        .await
        .unwrap();
    db.store.callback_delivered("e0", 1).await.unwrap();
    db.store.callback_failed("e1", 1, "x", true).await.unwrap();
    assert_eq!(db.store.prune_callbacks(i64::MAX, false).await.unwrap(), 2);
    let g = db.store.gauges(0).await.unwrap();
    let pairs = |v: &[(String, i64)]| -> Vec<(String, i64)> { v.to_vec() };
    assert_eq!(
        pairs(&g.requests_by_status),
        vec![("DENIED".to_owned(), 1), ("PENDING".to_owned(), 3)]
    );
    assert_eq!(pairs(&g.outbox_by_status), vec![("PENDING".to_owned(), 2)]);
    assert_eq!(g.outbox_oldest_pending_ms, Some(T0.unix_timestamp() * 1000));
}

/// The counts behind `/metrics` follow creates, transitions, deliveries, failures and prunes,
/// and late jobs are those due before the cut-off or failed once.
async fn gauges_follow_every_change(db: Db) {
    use jit_store::{JobKind, JobOp, OutboxDraft};
    let b = bound(&db).await;
    let mut reqs = Vec::new();
    for n in 0..3u8 {
        let r = new_request(&b, 1 + n, T0);
        let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
        ctx.outbox.push(OutboxDraft {
            event_id: format!("g{n}"),
            request_id: r.id.clone(),
            payload: "{}".into(),
        });
        ctx.jobs.push(JobOp::Schedule {
            kind: JobKind::Timeout,
            request_id: r.id.clone(),
            due_ms: 100 * i64::from(n + 1),
        });
        db.store.create_request(&r, ctx).await.unwrap();
        reqs.push(r);
    }
    let denied = reqs[0].deny(&actor("bob"), None, T0).unwrap();
    db.store
        .update_request(
            &denied,
            WriteCtx::new(audit("request.denied", Some(&denied)), T0),
        )
        .await
        .unwrap();
    db.store.callback_delivered("g0", 1).await.unwrap();
    db.store.callback_failed("g1", 1, "x", true).await.unwrap();
    // The third timeout failed once: late although its retry is not due yet.
    db.store
        .retry_job(JobKind::Timeout, &reqs[2].id, 10_000, "provider down")
        .await
        .unwrap();
    let g = db.store.gauges(150).await.unwrap();
    assert_eq!(
        g.requests_by_status,
        vec![("DENIED".to_owned(), 1), ("PENDING".to_owned(), 2)]
    );
    assert_eq!(
        g.outbox_by_status,
        vec![
            ("DEAD".to_owned(), 1),
            ("DELIVERED".to_owned(), 1),
            ("PENDING".to_owned(), 1)
        ]
    );
    assert_eq!(g.outbox_oldest_pending_ms, Some(T0.unix_timestamp() * 1000));
    assert_eq!(g.jobs_late_by_kind, vec![("timeout".to_owned(), 2)]);
    db.store.resend_callback("g1", 5).await.unwrap();
    assert!(matches!(
        db.store.resend_callback("g1", 5).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(db.store.prune_callbacks(i64::MAX, false).await.unwrap(), 1);
    let g = db.store.gauges(0).await.unwrap();
    assert_eq!(g.outbox_by_status, vec![("PENDING".to_owned(), 2)]);
    assert_eq!(g.jobs_late_by_kind, vec![("timeout".to_owned(), 1)]);
}

/// A recorded checkpoint lets a routine verification check only what came after it; an edit
/// of the checkpoint's own event is still caught, and a full run starts from the first event.
async fn checkpoints_let_a_routine_verification_start_late(db: Db) {
    use jit_store::VerifyOptions;
    let b = bound(&db).await;
    for n in 1..=3 {
        let r = new_request(&b, n, T0);
        db.store
            .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
            .await
            .unwrap();
    }
    let routine = VerifyOptions {
        full: false,
        record_checkpoint: true,
        now_ms: 1,
    };
    let first = db.store.verify_audit_with(routine, &|_| {}).await.unwrap();
    assert_eq!(
        (first.head_seq, first.from_checkpoint, first.checked),
        (4, 0, 4)
    );
    let r = new_request(&b, 9, T0);
    db.store
        .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
        .await
        .unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let second = db
        .store
        .verify_audit_with(routine, &|p| seen.lock().unwrap().push(p.verified_seq))
        .await
        .unwrap();
    assert_eq!(
        (second.head_seq, second.from_checkpoint, second.checked),
        (5, 4, 1)
    );
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&5),
        "progress reaches the head"
    );
    // An event after the checkpoint is checked by the routine run; one before it is trusted
    // (it was verified), and only a full run sees it changed.
    let r = new_request(&b, 10, T0);
    db.store
        .create_request(&r, WriteCtx::new(audit("request.created", Some(&r)), T0))
        .await
        .unwrap();
    db.set_event_actor(6, "mallory").await;
    assert!(matches!(
        db.store.verify_audit_with(routine, &|_| {}).await,
        Err(VerifyError::Chain(ChainError::Tampered(6)))
    ));
    db.set_event_actor(6, "alice").await;
    db.set_event_actor(3, "mallory").await;
    assert_eq!(
        db.store
            .verify_audit_with(routine, &|_| {})
            .await
            .unwrap()
            .checked,
        1
    );
    assert!(matches!(
        db.store.verify_audit().await,
        Err(VerifyError::Chain(ChainError::Tampered(3)))
    ));
}

/// One owner at a time per principal; a lock that ran out may be taken; only the owner renews
/// or frees it.
async fn principal_locks_are_exclusive_until_they_expire(db: Db) {
    let s = &db.store;
    assert!(s.lock_principal("p", "a", 100, 0).await.unwrap());
    assert!(!s.lock_principal("p", "b", 150, 50).await.unwrap(), "held");
    assert!(
        s.lock_principal("q", "b", 150, 50).await.unwrap(),
        "another principal"
    );
    assert!(s.renew_principal_lock("p", "a", 300).await.unwrap());
    assert!(!s.renew_principal_lock("p", "b", 300).await.unwrap());
    assert!(
        !s.lock_principal("p", "b", 400, 200).await.unwrap(),
        "renewed"
    );
    assert!(
        s.lock_principal("p", "b", 500, 301).await.unwrap(),
        "expired"
    );
    assert!(
        !s.renew_principal_lock("p", "a", 900).await.unwrap(),
        "lost"
    );
    s.unlock_principal("p", "a").await.unwrap();
    assert!(
        !s.lock_principal("p", "c", 600, 302).await.unwrap(),
        "a cannot free b's"
    );
    s.unlock_principal("p", "b").await.unwrap();
    assert!(s.lock_principal("p", "c", 600, 302).await.unwrap());
}

/// A request's callbacks go out in order: the second is not due while the first is pending,
/// even when the first is retried later; a claimed one is not claimed by another dispatcher.
async fn callbacks_are_delivered_in_order_per_request(db: Db) {
    use jit_store::OutboxDraft;
    let b = bound(&db).await;
    let r = new_request(&b, 1, T0);
    let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
    for n in 0..2 {
        ctx.outbox.push(OutboxDraft {
            event_id: format!("o{n}"),
            request_id: r.id.clone(),
            payload: format!("{{\"n\":{n}}}"),
        });
    }
    db.store.create_request(&r, ctx).await.unwrap();
    let now = T0.unix_timestamp() * 1000;
    let due = db.store.due_callbacks(now, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        vec!["o0"]
    );
    assert!(
        db.store
            .claim_callback("o0", "d1", now + 120_000, now)
            .await
            .unwrap()
    );
    assert!(
        !db.store
            .claim_callback("o0", "d2", now + 120_000, now)
            .await
            .unwrap()
    );
    db.store
        .callback_failed("o0", now + 60_000, "503", false)
        .await
        .unwrap();
    assert!(
        db.store
            .due_callbacks(now + 1000, 10)
            .await
            .unwrap()
            .is_empty(),
        "o1 waits behind o0's retry"
    );
    let due = db.store.due_callbacks(now + 60_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_id.as_str(), due[0].attempts), ("o0", 1));
    db.store
        .callback_delivered("o0", now + 60_000)
        .await
        .unwrap();
    let due = db.store.due_callbacks(now + 60_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>(),
        vec!["o1"]
    );
    assert!(due[0].seq > 0);
}

/// The reconciler's pages walk every request in a status that lacks its job, however the
/// pages fall, and skip those that have one.
async fn reconciler_pages_see_every_request_missing_a_job(db: Db) {
    use jit_store::{JobKind, JobOp};
    let b = bound(&db).await;
    let mut without = Vec::new();
    for n in 0..7u8 {
        let r = new_request(&b, 1 + n, T0 + time::Duration::seconds(i64::from(n)));
        let mut ctx = WriteCtx::new(audit("request.created", Some(&r)), T0);
        if n % 3 == 0 {
            ctx.jobs.push(JobOp::Ensure {
                kind: JobKind::Timeout,
                request_id: r.id.clone(),
                due_ms: 1,
            });
        } else {
            without.push(r.id.as_str().to_owned());
        }
        db.store.create_request(&r, ctx).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = db
            .store
            .requests_missing_job(Status::Pending, JobKind::Timeout, after.take(), 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| r.id.as_str().to_owned()));
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, without, "oldest first, each once");
    // Ensure never moves a job that exists.
    let mut ctx = WriteCtx::with_audit(vec![], T0);
    let first = db.store.list_jobs(Some(JobKind::Timeout)).await.unwrap();
    ctx.jobs.push(JobOp::Ensure {
        kind: JobKind::Timeout,
        request_id: first[0].request_id.clone(),
        due_ms: 999,
    });
    db.store.record(ctx).await.unwrap();
    let again = db.store.list_jobs(Some(JobKind::Timeout)).await.unwrap();
    assert_eq!(again, first);
}
