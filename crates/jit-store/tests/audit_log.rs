//! The audit log target, in a test binary of its own: tracing caches whether a call site is
//! enabled per process, so a capturing subscriber set for one test thread is unreliable while
//! other tests run in parallel in the same process.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jit_core::audit::AuditDraft;
use jit_core::policy::{Binding, Policy};
use jit_core::types::{AccountId, ChannelId, UserId};
#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{SqlStore, WriteCtx};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

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

fn audit(kind: &str) -> AuditDraft {
    let mut d = AuditDraft::new(kind);
    d.actor_id = Some("alice".into());
    d
}

#[tokio::test]
async fn committed_audit_events_are_logged_on_their_own_target_and_refused_writes_are_not() {
    let logs = jit_testkit::Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .json()
        .flatten_event(true)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&format!("sqlite://{}", dir.path().join("jit.db").display()))
        .await
        .unwrap();
    store
        .save_binding(&binding("ch1"), 0, WriteCtx::new(audit("config.bound"), T0))
        .await
        .unwrap();
    // A compare-and-set on a stale version is refused: its audit event must not be logged.
    assert!(
        store
            .save_binding(
                &binding("ch1"),
                0,
                WriteCtx::new(audit("config.refused_write"), T0),
            )
            .await
            .is_err()
    );
    let text = logs.text();
    let audit_lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "jit_audit")
        .collect();
    assert_eq!(audit_lines.len(), 1, "{text}");
    assert_eq!(audit_lines[0]["kind"], "config.bound");
    assert_eq!(audit_lines[0]["actor_id"], "alice");
    assert!(!text.contains("config.refused_write"), "{text}");
}
