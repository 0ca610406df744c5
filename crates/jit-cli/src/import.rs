//! `jit import --from-go-backend`: the Go/Lambda backend's bindings, approvers and request
//! history, read from its DynamoDB tables and written into any of our stores (SQLite,
//! PostgreSQL, DynamoDB) through the store traits. What it reads and writes, and what happens to
//! grants still running, is in `docs/migrating-from-the-go-backend.md` ("Importing the old
//! backend's data").
//!
//! The old tables (`<env>-jit-config`, `<env>-jit-requests`, `<env>-jit-audit`) are only read;
//! `<env>-jit-nonces` is not read at all. Re-running writes nothing new: a request whose id is
//! already in the store is skipped (with its events), and a binding already there with the same
//! content is skipped; one that differs is a conflict, left alone unless `--overwrite-bindings`.
//!
//! Mapping and planning are pure functions of the old items (unit-tested below); `run` reads,
//! compares with the store and writes.

use crate::error::CliError;
use anyhow::Context as _;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::AttributeValue;
use jit_core::audit::AuditDraft;
use jit_core::policy::{Binding, Policy};
use jit_core::request::{Approval, Approved, Closed, Granted, Pending, Request, State, Status};
use jit_core::types::{
    AccountId, ChannelId, DurationMinutes, Email, PermissionSetArn, Reason, RequestId, Ticket,
    UserId,
};
use jit_store::prelude::*;
use jit_store::{JobKind, JobOp, WriteCtx};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `jit import`: bring another system's data into a store.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Read the Go/Lambda backend's DynamoDB tables (the one source there is; required, so that
    /// the command line says what it imports).
    #[arg(long, required = true)]
    pub from_go_backend: bool,
    /// The old deployment's environment name: reads the tables `<env>-jit-config`,
    /// `<env>-jit-requests` and `<env>-jit-audit`.
    #[arg(long, value_name = "ENV", required_unless_present = "table_prefix")]
    pub env: Option<String>,
    /// Table name prefix in place of `<env>-` (reads `<PREFIX>jit-config`, …), for tables that
    /// were renamed or copied.
    #[arg(long, value_name = "PREFIX", conflicts_with = "env")]
    pub table_prefix: Option<String>,
    /// The store to write into, as the server's `database_url`: sqlite://PATH, postgres://… or
    /// dynamodb://TABLE?nonces=TABLE. Created and migrated if it is new (except with --dry-run).
    #[arg(long, value_name = "DATABASE_URL")]
    pub to: String,
    /// AWS region of the old tables (and of a dynamodb:// store); default: AWS_REGION or the
    /// profile's.
    #[arg(long, value_name = "REGION")]
    pub aws_region: Option<String>,
    /// DynamoDB endpoint for the old tables and a dynamodb:// store (a VPC endpoint; DynamoDB
    /// Local or moto in tests).
    #[arg(long, value_name = "URL")]
    pub aws_endpoint_url: Option<String>,
    /// Read everything and compare it with the store, write nothing: the report counts what a
    /// real run would write. A missing SQLite file is not created.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace a binding that differs from the old configuration (by default such a binding is
    /// reported as a conflict and left as it is).
    #[arg(long)]
    pub overwrite_bindings: bool,
    /// Print the report as JSON on stdout (counts, conflicts, invalid records, warnings).
    #[arg(long)]
    pub json: bool,
}

/// Where the audit data says an imported record came from.
const SOURCE: &str = "go-backend";

// ------------------------------------------------------------------------------------------
// The report
// ------------------------------------------------------------------------------------------

/// The old tables read.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Tables {
    /// `<env>-jit-config`.
    pub config: String,
    /// `<env>-jit-requests`.
    pub requests: String,
    /// `<env>-jit-audit`.
    pub audit: String,
}

impl Tables {
    fn with_prefix(prefix: &str) -> Self {
        Self {
            config: format!("{prefix}jit-config"),
            requests: format!("{prefix}jit-requests"),
            audit: format!("{prefix}jit-audit"),
        }
    }
}

/// What happened to the channels' bindings.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BindingCounts {
    /// Old configuration items read (one per channel and account).
    pub configs_read: u64,
    /// Channels written as new bindings.
    pub imported: u64,
    /// Channels whose differing binding was replaced (`--overwrite-bindings`).
    pub overwritten: u64,
    /// Channels already bound with the same content.
    pub skipped: u64,
    /// Channels already bound differently, left alone.
    pub conflicting: u64,
    /// Channels whose old items do not parse (listed under `invalid`).
    pub invalid: u64,
}

/// Requests still running, and what this system now does about them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LiveCounts {
    /// GRANTED: a revoke job at the old end time (at once when it has passed).
    pub granted_revoke_scheduled: u64,
    /// APPROVED: a grant job, due at once.
    pub approved_grant_scheduled: u64,
    /// PENDING: a timeout job at the pending deadline (at once when it has passed).
    pub pending_timeout_scheduled: u64,
    /// ERROR after a grant: access may still be in place, and nothing removes it (listed
    /// under `warnings`).
    pub error_after_grant: u64,
}

/// What happened to the requests.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// Items read from the requests table.
    pub read: u64,
    /// Written, each with its audit events in one transaction.
    pub imported: u64,
    /// Already in the store (nothing written for them).
    pub skipped: u64,
    /// Skipped requests the old backend granted after they were imported here, which this
    /// system does not revoke (listed under `warnings`).
    pub granted_after_import: u64,
    /// Not importable (listed under `invalid`).
    pub invalid: u64,
    /// Imported with an id derived from an old id that is not a UUID.
    pub derived_ids: u64,
    /// Imported requests by status.
    pub by_status: BTreeMap<String, u64>,
    /// Imported requests that are still running.
    pub live: LiveCounts,
}

/// A binding as compared.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BindingView {
    /// Bound accounts.
    pub accounts: Vec<String>,
    /// The policy (approvers included).
    pub policy: Policy,
}

impl BindingView {
    fn of(b: &Binding) -> Self {
        Self {
            accounts: b.accounts.keys().map(|a| a.as_str().to_owned()).collect(),
            policy: b.policy.clone(),
        }
    }
}

/// A channel already bound here differently from the old configuration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BindingConflict {
    /// The channel.
    pub channel_id: String,
    /// What differs: `accounts`, `approvers`, `policy`.
    pub differs: Vec<String>,
    /// The binding in the store.
    pub existing: BindingView,
    /// The binding the old configuration makes.
    pub imported: BindingView,
    /// Whether it was replaced (`--overwrite-bindings`).
    pub overwritten: bool,
}

/// An old record that could not be imported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvalidRecord {
    /// The old table.
    pub table: String,
    /// Its key (`channel_id` for configuration, `request_id` for requests).
    pub key: String,
    /// Why.
    pub reason: String,
}

/// The result of one import run (`--json` prints it).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// The old tables read.
    pub tables: Tables,
    /// Bindings.
    pub bindings: BindingCounts,
    /// Requests.
    pub requests: RequestCounts,
    /// Old audit events written as `imported.*` events.
    pub audit_events_imported: u64,
    /// Whether the `import.completed` event was written (only when something was).
    pub completed_event: bool,
    /// Bindings that differ.
    pub conflicts: Vec<BindingConflict>,
    /// Records left out.
    pub invalid: Vec<InvalidRecord>,
    /// What an operator should look at.
    pub warnings: Vec<String>,
}

impl ImportReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let b = &self.bindings;
        let r = &self.requests;
        let l = &r.live;
        let mut out = String::new();
        if self.dry_run {
            out.push_str("dry run: nothing was written; a real run would write what follows\n");
        }
        out.push_str(&format!(
            "read {} ({} items), {} ({} items), and from {} the events of the requests \
             imported\n",
            self.tables.config, b.configs_read, self.tables.requests, r.read, self.tables.audit
        ));
        out.push_str(&format!(
            "bindings: {} imported, {} skipped (already there, same content), {} conflicting{}{}\n",
            b.imported,
            b.skipped,
            b.conflicting,
            if b.overwritten > 0 {
                format!(" ({} overwritten)", b.overwritten)
            } else {
                String::new()
            },
            if b.invalid > 0 {
                format!(", {} invalid", b.invalid)
            } else {
                String::new()
            },
        ));
        let mut extra = String::new();
        for (n, what) in [
            (r.invalid, "invalid"),
            (r.derived_ids, "with a derived id"),
            (
                r.granted_after_import,
                "granted by the old backend after their import (see the warnings)",
            ),
        ] {
            if n > 0 {
                extra.push_str(&format!(", {n} {what}"));
            }
        }
        out.push_str(&format!(
            "requests: {} imported, {} skipped (already there){extra}\n",
            r.imported, r.skipped,
        ));
        if !r.by_status.is_empty() {
            let parts: Vec<String> = r
                .by_status
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            out.push_str(&format!("  imported by status: {}\n", parts.join(", ")));
        }
        out.push_str(&format!(
            "audit events: {} imported\n",
            self.audit_events_imported
        ));
        if l != &LiveCounts::default() {
            out.push_str(&format!(
                "still running, now this system's: {} GRANTED (revoked at their end), {} \
                 APPROVED (granted at once), {} PENDING (time out at their deadline)\n",
                l.granted_revoke_scheduled, l.approved_grant_scheduled, l.pending_timeout_scheduled,
            ));
        }
        if l.error_after_grant > 0 {
            out.push_str(&format!(
                "{} ERROR after a grant: access may still be in place (see the warnings)\n",
                l.error_after_grant
            ));
        }
        for c in &self.conflicts {
            out.push_str(&format!(
                "conflict: channel {}: the binding here differs from the old configuration ({}); {}\n",
                c.channel_id,
                c.differs.join(", "),
                if c.overwritten {
                    "replaced (--overwrite-bindings)"
                } else {
                    "left alone (--overwrite-bindings replaces it)"
                }
            ));
        }
        for i in &self.invalid {
            out.push_str(&format!("invalid: {} {}: {}\n", i.table, i.key, i.reason));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// The old items
// ------------------------------------------------------------------------------------------

type Item = HashMap<String, AttributeValue>;

/// A `JitConfig` item: one channel and account.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
struct OldConfig {
    channel_id: String,
    account_id: String,
    approver_mm_user_ids: Vec<String>,
    approval_policy: String,
    allow_self_approval: bool,
    max_request_hours: i64,
    session_duration_minutes: i64,
    updated_at: String,
}

/// A `JitRequest` item (strings as stored; empty when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OldRequest {
    request_id: String,
    account_id: String,
    channel_id: String,
    requester_mm_user_id: String,
    requester_email: String,
    jira: String,
    reason: String,
    requested_duration_minutes: i64,
    status: String,
    created_at: String,
    approved_at: String,
    denied_at: String,
    grant_time: String,
    revoked_at: String,
    expired_at: String,
    end_time: String,
    approver_mm_user_id: String,
    approver_email: String,
    identity_store_user_id: String,
    assignment_status: String,
    error_details: String,
}

/// An `AuditEvent` item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OldEvent {
    event_time_event_id: String,
    event_id: String,
    event_time: String,
    event_type: String,
    account_id: String,
    channel_id: String,
    actor_mm_user_id: String,
    actor_email: String,
    details: BTreeMap<String, String>,
}

fn scalar(v: &AttributeValue) -> Option<String> {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => Some(s.clone()),
        AttributeValue::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string attribute; empty when absent or NULL.
fn attr_s(item: &Item, name: &str) -> String {
    item.get(name).and_then(scalar).unwrap_or_default()
}

/// A whole number (stored as N by the Go SDK; a numeric string is accepted); 0 when absent.
fn attr_n(item: &Item, name: &str) -> Result<i64, String> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(0),
        Some(AttributeValue::N(n) | AttributeValue::S(n)) => n
            .trim()
            .parse()
            .map_err(|_| format!("{name} is not a whole number: {n:?}")),
        Some(_) => Err(format!("{name} is not a number")),
    }
}

fn attr_bool(item: &Item, name: &str) -> bool {
    match item.get(name) {
        Some(AttributeValue::Bool(b)) => *b,
        Some(AttributeValue::N(n)) => n.trim() == "1",
        Some(AttributeValue::S(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// A string set (a list of strings, or one string, is accepted too); empty when absent or NULL
/// (the Go SDK stores an empty set as NULL).
fn attr_set(item: &Item, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(v)) => v.clone(),
        Some(AttributeValue::L(v)) => v.iter().filter_map(scalar).collect(),
        Some(AttributeValue::S(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A map of strings.
fn attr_map(item: &Item, name: &str) -> BTreeMap<String, String> {
    match item.get(name) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn old_config(item: &Item) -> Result<OldConfig, String> {
    Ok(OldConfig {
        channel_id: attr_s(item, "channel_id"),
        account_id: attr_s(item, "account_id"),
        approver_mm_user_ids: attr_set(item, "approver_mm_user_ids"),
        approval_policy: attr_s(item, "approval_policy"),
        allow_self_approval: attr_bool(item, "allow_self_approval"),
        max_request_hours: attr_n(item, "max_request_hours")?,
        session_duration_minutes: attr_n(item, "session_duration_minutes")?,
        updated_at: attr_s(item, "updated_at"),
    })
}

fn old_request(item: &Item) -> Result<OldRequest, String> {
    let s = |n: &str| attr_s(item, n);
    Ok(OldRequest {
        request_id: s("request_id"),
        account_id: s("account_id"),
        channel_id: s("channel_id"),
        requester_mm_user_id: s("requester_mm_user_id"),
        requester_email: s("requester_email"),
        jira: s("jira"),
        reason: s("reason"),
        requested_duration_minutes: attr_n(item, "requested_duration_minutes")?,
        status: s("status"),
        created_at: s("created_at"),
        approved_at: s("approved_at"),
        denied_at: s("denied_at"),
        grant_time: s("grant_time"),
        revoked_at: s("revoked_at"),
        expired_at: s("expired_at"),
        end_time: s("end_time"),
        approver_mm_user_id: s("approver_mm_user_id"),
        approver_email: s("approver_email"),
        identity_store_user_id: s("identity_store_user_id"),
        assignment_status: s("assignment_status"),
        error_details: s("error_details"),
    })
}

fn old_event(item: &Item) -> OldEvent {
    let s = |n: &str| attr_s(item, n);
    OldEvent {
        event_time_event_id: s("event_time_event_id"),
        event_id: s("event_id"),
        event_time: s("event_time"),
        event_type: s("event_type"),
        account_id: s("account_id"),
        channel_id: s("channel_id"),
        actor_mm_user_id: s("actor_mm_user_id"),
        actor_email: s("actor_email"),
        details: attr_map(item, "details"),
    }
}

// ------------------------------------------------------------------------------------------
// Planning (pure)
// ------------------------------------------------------------------------------------------

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// An old time field: `None` when empty, an error naming the field when it does not parse.
fn when(field: &str, v: &str) -> Result<Option<OffsetDateTime>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    OffsetDateTime::parse(v, &Rfc3339)
        .map(Some)
        .map_err(|_| format!("{field} is not an RFC 3339 time: {v:?}"))
}

/// The id a request gets here: the old id when it is a UUID (the old backend's always were),
/// else one derived from it (the same every run, so a re-run finds it), with `true`.
fn request_id_for(old_id: &str) -> (RequestId, bool) {
    if let Ok(id) = RequestId::parse(old_id.trim()) {
        return (id, false);
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("jit-access import go-backend request_id\n{old_id}"));
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    (RequestId::from_random(bytes), true)
}

/// A channel's binding made from its old configuration items (one per account), with what an
/// operator should know about the merge.
#[derive(Debug, Clone, PartialEq)]
struct PlannedBinding {
    binding: Binding,
    warnings: Vec<String>,
}

/// Our binding holds one policy per channel; the old backend kept one item per channel and
/// account. They are merged: every account is bound (with no permission set of its own: the
/// server's `default_permission_set_arn`, the old `PERMISSION_SET_ARN`, applies), the approvers
/// are those of every item (the old `/jit approvers` set them on all of a channel's items, and
/// an account bound after that had none), self-approval only if every item allowed it, the
/// smallest maximum duration, one approval (the old backend's only policy), and the old rules
/// for new requests (a ticket or a reason), as `/jit bind` through the plugin makes them.
fn plan_binding(channel: &str, configs: &[OldConfig]) -> Result<PlannedBinding, String> {
    let channel_id = ChannelId::parse(channel).map_err(|e| e.message)?;
    let mut warnings = Vec::new();
    let mut accounts = BTreeMap::new();
    let mut approvers = BTreeSet::new();
    let mut approver_sets = BTreeSet::new();
    let mut without_approvers = Vec::new();
    let mut max_hours = BTreeSet::new();
    let mut self_approval = BTreeSet::new();
    for c in configs {
        let account = AccountId::parse(&c.account_id)
            .map_err(|e| format!("account {:?}: {}", c.account_id, e.message))?;
        accounts.insert(account, Vec::<PermissionSetArn>::new());
        let set: BTreeSet<String> = c
            .approver_mm_user_ids
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if set.is_empty() {
            without_approvers.push(c.account_id.clone());
        } else {
            approver_sets.insert(set.clone());
        }
        approvers.extend(set);
        let hours = match u32::try_from(c.max_request_hours) {
            Ok(h) if (1..=168).contains(&h) => h,
            _ => {
                warnings.push(format!(
                    "channel {channel}, account {}: max_request_hours {} is outside 1-168 (0 meant \
                     no limit in the old backend); imported as 168",
                    c.account_id, c.max_request_hours
                ));
                168
            }
        };
        max_hours.insert(hours);
        self_approval.insert(c.allow_self_approval);
        let policy = c.approval_policy.trim();
        if !policy.is_empty() && policy != "one_of_n" {
            warnings.push(format!(
                "channel {channel}, account {}: approval_policy {policy:?} is imported as one \
                 approval (the only policy the old backend enforced)",
                c.account_id
            ));
        }
    }
    if approver_sets.len() > 1 {
        warnings.push(format!(
            "channel {channel}: the accounts had different approvers; the binding gets all of \
             them ({})",
            approvers.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if approvers.is_empty() {
        warnings.push(format!(
            "channel {channel}: no approvers in the old configuration; nobody can approve until \
             `/jit approvers` is run"
        ));
    } else if !without_approvers.is_empty() {
        warnings.push(format!(
            "channel {channel}: account(s) {} had no approvers in the old backend (nobody could \
             approve there); they get the channel's approvers",
            without_approvers.join(", ")
        ));
    }
    if max_hours.len() > 1 {
        warnings.push(format!(
            "channel {channel}: the accounts had different max_request_hours; the binding gets \
             the smallest, {}",
            max_hours.first().copied().unwrap_or(4)
        ));
    }
    if self_approval.len() > 1 {
        warnings.push(format!(
            "channel {channel}: self-approval was allowed for some accounts only; the binding \
             does not allow it"
        ));
    }
    let policy = Policy {
        approvers: approvers
            .iter()
            .map(|a| UserId::parse(a).map_err(|e| format!("approver {a:?}: {}", e.message)))
            .collect::<Result<Vec<_>, _>>()?,
        required_approvals: 1,
        allow_self_approval: self_approval.len() == 1 && self_approval.contains(&true),
        max_request_hours: max_hours.first().copied().unwrap_or(4),
        ..jit_server::api::config::new_binding_policy(true)
    };
    policy.validate().map_err(|e| e.message)?;
    Ok(PlannedBinding {
        binding: Binding {
            channel_id,
            accounts,
            policy,
            updated_at: None,
            version: 0,
        },
        warnings,
    })
}

/// What differs between a stored binding and an imported one (approvers compared as sets).
fn binding_differences(existing: &Binding, imported: &Binding) -> Vec<String> {
    let mut out = Vec::new();
    if existing.accounts != imported.accounts {
        out.push("accounts".to_owned());
    }
    let sorted = |p: &Policy| {
        let mut a = p.approvers.clone();
        a.sort();
        a.dedup();
        a
    };
    if sorted(&existing.policy) != sorted(&imported.policy) {
        out.push("approvers".to_owned());
    }
    let rest = |p: &Policy| Policy {
        approvers: Vec::new(),
        ..p.clone()
    };
    if rest(&existing.policy) != rest(&imported.policy) {
        out.push("policy".to_owned());
    }
    out
}

/// One old request as it is written here: the request in its real state, its old events as
/// `imported.*` audit events in time order followed by one `import.request` event, and the
/// jobs that let this system take over what is still running.
#[derive(Debug, Clone)]
struct PlannedRequest {
    request: Request,
    drafts: Vec<AuditDraft>,
    jobs: Vec<JobOp>,
    derived_id: bool,
    events: u64,
    error_after_grant: bool,
}

/// `imported.<event type>`, lowercase, `[a-z0-9_]` only.
fn imported_kind(event_type: &str) -> String {
    let t: String = event_type
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "imported.unknown".to_owned()
    } else {
        format!("imported.{t}")
    }
}

/// The old events in time order (`event_time`, then the table's sort key; an event whose time
/// does not parse goes last, by its sort key).
fn in_time_order(events: &[OldEvent]) -> Vec<&OldEvent> {
    let mut v: Vec<&OldEvent> = events.iter().collect();
    v.sort_by_key(|e| {
        let at = when("event_time", &e.event_time)
            .ok()
            .flatten()
            .map_or(i64::MAX, jit_store::unix_ms);
        (at, e.event_time_event_id.clone(), e.event_id.clone())
    });
    v
}

/// When the last event of `event_type` happened, if one did.
fn event_time(events: &[&OldEvent], event_type: &str) -> Option<OffsetDateTime> {
    events
        .iter()
        .rev()
        .filter(|e| e.event_type.eq_ignore_ascii_case(event_type))
        .find_map(|e| when("event_time", &e.event_time).ok().flatten())
}

fn last_event<'a>(events: &[&'a OldEvent], event_type: &str) -> Option<&'a OldEvent> {
    events
        .iter()
        .rev()
        .find(|e| e.event_type.eq_ignore_ascii_case(event_type))
        .copied()
}

/// A parsed field, or why it does not parse, naming the old attribute.
fn field<T>(name: &str, r: Result<T, jit_core::DomainError>) -> Result<T, String> {
    r.map_err(|e| format!("{name}: {}", e.message))
}

/// Whether the old backend granted a request (it has a `grant_time`) that, as imported here,
/// was never granted: a re-run skips the request, so that grant is the old backend's to
/// revoke.
fn granted_after_import(old: &OldRequest, here: &Request) -> bool {
    !old.grant_time.trim().is_empty() && here.granted_at().is_none()
}

/// A request of the old backend as a [`Request`] here, in the state it had there, with the jobs
/// that make this system take over what still runs (the table in
/// `docs/migrating-from-the-go-backend.md`, "Importing the old backend's data").
fn plan_request(
    old: &OldRequest,
    events: &[OldEvent],
    pending_timeout_minutes: u32,
    tables: &Tables,
    now: OffsetDateTime,
) -> Result<PlannedRequest, String> {
    let (id, derived_id) = request_id_for(&old.request_id);
    let ordered = in_time_order(events);
    let channel_id = field("channel_id", ChannelId::parse(&old.channel_id))?;
    let account_id = field("account_id", AccountId::parse(&old.account_id))?;
    let requester_id = field(
        "requester_mm_user_id",
        UserId::parse(&old.requester_mm_user_id),
    )?;
    let requester_email = field("requester_email", Email::parse(&old.requester_email))?;
    let ticket = field("jira", Ticket::parse(&old.jira))?;
    let reason = field("reason", Reason::parse(&old.reason))?;
    let duration = field(
        "requested_duration_minutes",
        DurationMinutes::new(old.requested_duration_minutes),
    )?;
    let created_at = when("created_at", &old.created_at)?
        .or_else(|| event_time(&ordered, "REQUESTED"))
        .ok_or("created_at is missing")?;
    let approved_at =
        when("approved_at", &old.approved_at)?.or_else(|| event_time(&ordered, "APPROVED"));
    let grant_time =
        when("grant_time", &old.grant_time)?.or_else(|| event_time(&ordered, "GRANTED"));
    // The old backend set end_time at creation (created_at + duration) and its reconciler
    // revoked at it: the end the old system enforced, and the one users were shown.
    let end_time = when("end_time", &old.end_time)?;
    let granted = grant_time.map(|g| (g, end_time.unwrap_or(g + duration.as_duration())));
    let status = old.status.trim().to_ascii_uppercase();
    let need = |name: &str, v: Option<OffsetDateTime>| {
        v.ok_or_else(|| format!("status {status} needs {name}"))
    };
    let user = |name: &str, v: &str| -> Result<Option<UserId>, String> {
        nonempty(v)
            .map(|u| UserId::parse(&u).map_err(|e| format!("{name}: {}", e.message)))
            .transpose()
    };
    let mut approvals = Vec::new();
    if !matches!(status.as_str(), "PENDING" | "DENIED")
        && let (Some(by), Some(at)) = (
            user("approver_mm_user_id", &old.approver_mm_user_id)?,
            approved_at,
        )
    {
        let email = nonempty(&old.approver_email)
            .map(|e| Email::parse(&e).map_err(|e| format!("approver_email: {}", e.message)))
            .transpose()?;
        approvals.push(Approval {
            user_id: by,
            email,
            at,
        });
    }
    let state = match status.as_str() {
        "PENDING" => State::Pending(Pending),
        "APPROVED" => State::Approved(Approved {
            approved_at: need("approved_at", approved_at)?,
        }),
        "GRANTED" => {
            let (granted_at, ends_at) = need("grant_time", grant_time)
                .and_then(|_| granted.ok_or_else(|| "status GRANTED needs grant_time".into()))?;
            State::Granted(Granted {
                approved_at: approved_at.unwrap_or(granted_at),
                granted_at,
                ends_at,
            })
        }
        "EXPIRED" => State::Expired(Closed {
            at: need(
                "expired_at",
                when("expired_at", &old.expired_at)?.or_else(|| event_time(&ordered, "EXPIRED")),
            )?,
            by: None,
            reason: None,
            granted,
        }),
        "REVOKED" => State::Revoked(Closed {
            at: need(
                "revoked_at",
                when("revoked_at", &old.revoked_at)?.or_else(|| event_time(&ordered, "REVOKED")),
            )?,
            by: match last_event(&ordered, "REVOKED") {
                Some(e) => user("the REVOKED event's actor_mm_user_id", &e.actor_mm_user_id)?,
                None => None,
            },
            reason: None,
            granted,
        }),
        "DENIED" => State::Denied(Closed {
            at: need(
                "denied_at",
                when("denied_at", &old.denied_at)?.or_else(|| event_time(&ordered, "DENIED")),
            )?,
            // The old backend kept the denier in the approver fields.
            by: user("approver_mm_user_id", &old.approver_mm_user_id)?,
            reason: match last_event(&ordered, "DENIED").and_then(|e| e.details.get("reason")) {
                Some(r) => field("the DENIED event's reason", Reason::parse(r))?,
                None => None,
            },
            granted: None,
        }),
        "ERROR" => State::Error {
            // The old backend kept no time for an error; its ERROR event has one.
            at: event_time(&ordered, "ERROR")
                .or(grant_time)
                .or(approved_at)
                .unwrap_or(created_at),
            message: nonempty(&old.error_details).unwrap_or_else(|| {
                "the old backend marked this request ERROR without details".to_owned()
            }),
            granted,
        },
        other => return Err(format!("unknown status {other:?}")),
    };
    let request = Request {
        id: id.clone(),
        channel_id,
        account_id,
        permission_set_arn: None,
        requester_id,
        requester_email,
        ticket,
        reason,
        duration,
        created_at,
        pending_deadline: created_at
            + time::Duration::minutes(i64::from(pending_timeout_minutes.max(1))),
        required_approvals: 1,
        approvals,
        break_glass: false,
        review_pending: false,
        post_id: None,
        version: 1,
        state,
    };
    // What this system's own effects would have scheduled for a request in this state.
    let job = |kind, due: OffsetDateTime| JobOp::Schedule {
        kind,
        request_id: id.clone(),
        due_ms: jit_store::unix_ms(due),
    };
    let jobs: Vec<JobOp> = match &request.state {
        State::Pending(_) => vec![job(JobKind::Timeout, request.pending_deadline)],
        State::Approved(_) => vec![job(JobKind::Grant, now)],
        State::Granted(g) => vec![job(JobKind::Revoke, g.ends_at)],
        _ => Vec::new(),
    };
    let error_after_grant = matches!(
        request.state,
        State::Error {
            granted: Some(_),
            ..
        }
    );
    let mut drafts = Vec::with_capacity(ordered.len() + 1);
    for e in &ordered {
        let mut d = AuditDraft::new(imported_kind(&e.event_type));
        d.actor_id = nonempty(&e.actor_mm_user_id);
        d.actor_email = nonempty(&e.actor_email);
        d.request_id = Some(id.as_str().to_owned());
        d.channel_id = nonempty(&e.channel_id).or_else(|| nonempty(&old.channel_id));
        d.account_id = nonempty(&e.account_id).or_else(|| nonempty(&old.account_id));
        d.data = json!({
            "imported": true,
            "source": SOURCE,
            "old_request_id": old.request_id,
            "event_id": e.event_id,
            "event_time": e.event_time,
            "event_type": e.event_type,
            "details": e.details,
        });
        drafts.push(d);
    }
    let mut d = AuditDraft::new("import.request");
    d.request_id = Some(id.as_str().to_owned());
    d.channel_id = Some(request.channel_id.as_str().to_owned());
    d.account_id = Some(request.account_id.as_str().to_owned());
    d.data = json!({
        "imported": true,
        "source": SOURCE,
        "table": tables.requests,
        "old_request_id": old.request_id,
        "id_derived": derived_id,
        "status": request.status().as_str(),
        "old_status": old.status,
        "old_end_time": old.end_time,
        "identity_store_user_id": old.identity_store_user_id,
        "assignment_status": old.assignment_status,
        "events_imported": ordered.len(),
        "jobs": jobs.iter().map(|j| match j {
            JobOp::Schedule { kind, due_ms, .. } => json!({"kind": kind.as_str(), "due_ms": due_ms}),
            _ => json!(null),
        }).collect::<Vec<_>>(),
    });
    drafts.push(d);
    Ok(PlannedRequest {
        request,
        drafts,
        jobs,
        derived_id,
        events: ordered.len() as u64,
        error_after_grant,
    })
}

// ------------------------------------------------------------------------------------------
// Reading the old tables
// ------------------------------------------------------------------------------------------

/// A failed read of an old table, as the CLI shows it.
fn source_error<E>(table: &str, e: &E) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if e.code() == Some("ResourceNotFoundException") {
        return CliError::new(
            "go_table_missing",
            format!("the old backend's table {table} does not exist"),
        )
        .hint(
            "check --env (or --table-prefix) and --aws-region: the old tables are named \
             <env>-jit-config, <env>-jit-requests and <env>-jit-audit",
        )
        .into();
    }
    CliError::new(
        "go_table_unreadable",
        format!("reading {table}: {}", DisplayErrorContext(e)),
    )
    .hint(
        "check the AWS credentials (they need dynamodb:Scan and dynamodb:Query on the old \
         tables), --aws-region and --aws-endpoint-url",
    )
    .into()
}

/// Progress on stderr when it is a terminal, as `jit audit verify` shows it.
struct Progress {
    tty: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn reading(&self, table: &str, items: usize) {
        if self.tty {
            eprint!("\rreading {table}: {items} items");
        }
    }

    fn importing(&self, done: usize, total: usize) {
        if self.tty {
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\rrequests: {done} of {total} ({}%, {rate:.0}/s)",
                done * 100 / total.max(1)
            );
        }
    }

    fn end_line(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

async fn scan_all(client: &Client, table: &str, progress: &Progress) -> anyhow::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| source_error(table, &e))?;
        out.extend(page.items.unwrap_or_default());
        progress.reading(table, out.len());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    progress.end_line();
    Ok(out)
}

async fn events_of(
    client: &Client,
    table: &str,
    request_id: &str,
) -> anyhow::Result<Vec<OldEvent>> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("request_id = :r")
            .expression_attribute_values(":r", AttributeValue::S(request_id.to_owned()))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| source_error(table, &e))?;
        out.extend(page.items.unwrap_or_default().iter().map(old_event));
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    Ok(out)
}

/// Checks that an old table is there before anything is opened or written.
async fn check_table(client: &Client, table: &str) -> anyhow::Result<()> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| source_error(table, &e))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Running
// ------------------------------------------------------------------------------------------

/// The store to write into; with `--dry-run`, opened read-only where the backend allows it
/// (`None`: a SQLite file that does not exist yet, so nothing is there).
async fn open_target(
    args: &ImportArgs,
    aws: &jit_store::AwsOptions,
) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let what = "opening the store --to names";
    if !args.dry_run || args.to.starts_with("dynamodb://") {
        return Ok(Some(jit_store::open(&args.to, aws).await.context(what)?));
    }
    if let Ok(jit_store::DatabaseUrl::Sqlite(path)) = jit_store::DatabaseUrl::parse(&args.to)
        && !path.exists()
    {
        return Ok(None);
    }
    let store = jit_store::SqlStore::open_read_only(&args.to)
        .await
        .context(what)?;
    Ok(Some(Arc::new(store)))
}

fn write_failed(what: &str, e: jit_store::StoreError) -> anyhow::Error {
    CliError::new("import_write_failed", format!("{what}: {e}"))
        .hint(
            "nothing of that record was written (one transaction); fix the cause and run the \
             import again: what is already imported is skipped",
        )
        .into()
}

/// Runs the import and prints its report; exit status 1 (`import_incomplete`) when records
/// had to be left out.
pub async fn run(
    args: ImportArgs,
    clock: &dyn jit_proto::Clock,
) -> anyhow::Result<std::process::ExitCode> {
    let prefix = match (&args.table_prefix, &args.env) {
        (Some(p), _) => p.clone(),
        (None, Some(env)) if !env.trim().is_empty() => format!("{}-", env.trim()),
        _ => {
            return Err(CliError::new("usage", "--env must not be empty")
                .hint("the old tables are named <env>-jit-config, …: give that <env>")
                .exit(2)
                .into());
        }
    };
    let tables = Tables::with_prefix(&prefix);
    let aws = jit_store::AwsOptions {
        region: args.aws_region.clone(),
        endpoint_url: args.aws_endpoint_url.clone(),
        ..jit_store::AwsOptions::default()
    };
    let sdk = jit_keys::aws_sdk_config(aws.region.clone(), aws.endpoint_url.clone()).await;
    let client = Client::new(&sdk);
    // The old tables first: a wrong --env creates no store.
    for t in [&tables.config, &tables.requests, &tables.audit] {
        check_table(&client, t).await?;
    }
    let store = open_target(&args, &aws).await?;
    let progress = Progress::new();
    let now = clock.now();
    let mut report = ImportReport {
        dry_run: args.dry_run,
        tables: tables.clone(),
        ..ImportReport::default()
    };

    let config_items = scan_all(&client, &tables.config, &progress).await?;
    let request_items = scan_all(&client, &tables.requests, &progress).await?;

    // Bindings: one per channel.
    report.bindings.configs_read = config_items.len() as u64;
    let mut by_channel: BTreeMap<String, Vec<OldConfig>> = BTreeMap::new();
    for item in &config_items {
        match old_config(item) {
            Ok(c) => by_channel.entry(c.channel_id.clone()).or_default().push(c),
            Err(reason) => report.invalid.push(InvalidRecord {
                table: tables.config.clone(),
                key: format!(
                    "{}/{}",
                    attr_s(item, "channel_id"),
                    attr_s(item, "account_id")
                ),
                reason,
            }),
        }
    }
    // The pending timeout each channel's requests get (the binding that ends up in the store).
    let mut pending_timeouts: BTreeMap<String, u32> = BTreeMap::new();
    for (channel, configs) in &by_channel {
        let planned = match plan_binding(channel, configs) {
            Ok(p) => p,
            Err(reason) => {
                report.bindings.invalid += 1;
                report.invalid.push(InvalidRecord {
                    table: tables.config.clone(),
                    key: channel.clone(),
                    reason,
                });
                continue;
            }
        };
        report.warnings.extend(planned.warnings.iter().cloned());
        let b = &planned.binding;
        let existing = match &store {
            Some(s) => s
                .get_binding(&b.channel_id)
                .await
                .context("reading the store's bindings")?,
            None => None,
        };
        let draft = |kind: &str, previous: Option<&Binding>| {
            let mut d = AuditDraft::new(kind);
            d.channel_id = Some(b.channel_id.as_str().to_owned());
            d.data = json!({
                "imported": true,
                "source": SOURCE,
                "table": tables.config,
                "binding": BindingView::of(b),
                "previous": previous.map(BindingView::of),
                "old_configs": configs,
                "warnings": planned.warnings,
            });
            d
        };
        let expected = match &existing {
            None => {
                report.bindings.imported += 1;
                Some((0, draft("import.binding", None)))
            }
            Some(e) => {
                let differs = binding_differences(e, b);
                if differs.is_empty() {
                    report.bindings.skipped += 1;
                    None
                } else {
                    report.bindings.conflicting += 1;
                    report.conflicts.push(BindingConflict {
                        channel_id: channel.clone(),
                        differs,
                        existing: BindingView::of(e),
                        imported: BindingView::of(b),
                        overwritten: args.overwrite_bindings,
                    });
                    if args.overwrite_bindings {
                        report.bindings.overwritten += 1;
                        Some((e.version, draft("import.binding_overwritten", Some(e))))
                    } else {
                        None
                    }
                }
            }
        };
        let kept = match (&expected, &existing) {
            (None, Some(e)) => e.policy.pending_timeout_minutes,
            _ => b.policy.pending_timeout_minutes,
        };
        pending_timeouts.insert(channel.clone(), kept);
        if let (Some((version, d)), Some(s), false) = (expected, &store, args.dry_run) {
            s.save_binding(b, version, WriteCtx::new(d, now))
                .await
                .map_err(|e| {
                    write_failed(&format!("writing the binding of channel {channel}"), e)
                })?;
        }
    }

    // Requests, oldest first, each with its events in one transaction.
    report.requests.read = request_items.len() as u64;
    let mut old_requests = Vec::with_capacity(request_items.len());
    for item in &request_items {
        match old_request(item) {
            Ok(r) => old_requests.push(r),
            Err(reason) => {
                report.requests.invalid += 1;
                report.invalid.push(InvalidRecord {
                    table: tables.requests.clone(),
                    key: attr_s(item, "request_id"),
                    reason,
                });
            }
        }
    }
    drop(request_items);
    old_requests.sort_by(|a, b| {
        (a.created_at.as_str(), a.request_id.as_str())
            .cmp(&(b.created_at.as_str(), b.request_id.as_str()))
    });
    let default_timeout = Policy::default().pending_timeout_minutes;
    let total = old_requests.len();
    for (i, old) in old_requests.iter().enumerate() {
        progress.importing(i, total);
        let (id, _) = request_id_for(&old.request_id);
        let existing = match &store {
            Some(s) => s
                .get_request(&id)
                .await
                .context("reading the store's requests")?,
            None => None,
        };
        if let Some(here) = existing {
            report.requests.skipped += 1;
            if granted_after_import(old, &here) {
                report.requests.granted_after_import += 1;
                report.warnings.push(format!(
                    "request {} was granted by the old backend after it was imported here (it \
                     is {} there, {} here): this system does not know of that grant and will \
                     not revoke it; let the old backend revoke it (end_time {}) or remove the \
                     access of {} to account {} by hand",
                    old.request_id,
                    old.status.trim(),
                    here.status().as_str(),
                    old.end_time,
                    old.requester_email,
                    old.account_id
                ));
            }
            continue;
        }
        let events = events_of(&client, &tables.audit, &old.request_id).await?;
        let timeout = pending_timeouts
            .get(&old.channel_id)
            .copied()
            .unwrap_or(default_timeout);
        let planned = match plan_request(old, &events, timeout, &tables, now) {
            Ok(p) => p,
            Err(reason) => {
                report.requests.invalid += 1;
                report.invalid.push(InvalidRecord {
                    table: tables.requests.clone(),
                    key: old.request_id.clone(),
                    reason,
                });
                continue;
            }
        };
        if let (Some(s), false) = (&store, args.dry_run) {
            let mut ctx = WriteCtx::with_audit(planned.drafts.clone(), now);
            ctx.jobs = planned.jobs.clone();
            s.create_request(&planned.request, ctx)
                .await
                .map_err(|e| write_failed(&format!("writing request {}", old.request_id), e))?;
        }
        let r = &mut report.requests;
        r.imported += 1;
        *r.by_status
            .entry(planned.request.status().as_str().to_owned())
            .or_default() += 1;
        if planned.derived_id {
            r.derived_ids += 1;
        }
        match planned.request.status() {
            Status::Granted => r.live.granted_revoke_scheduled += 1,
            Status::Approved => r.live.approved_grant_scheduled += 1,
            Status::Pending => r.live.pending_timeout_scheduled += 1,
            _ => {}
        }
        if planned.error_after_grant {
            r.live.error_after_grant += 1;
            report.warnings.push(format!(
                "request {} was ERROR after its grant in the old backend: the access may still \
                 be in place, and nothing removes it; check account {} for {}",
                old.request_id, old.account_id, old.requester_email
            ));
        }
        report.audit_events_imported += planned.events;
    }
    progress.importing(total, total);
    progress.end_line();

    // One summary event, only when something was written (a re-run writes nothing).
    let wrote = report.bindings.imported + report.bindings.overwritten + report.requests.imported;
    if wrote > 0
        && !args.dry_run
        && let Some(s) = &store
    {
        let mut d = AuditDraft::new("import.completed");
        d.data = json!({
            "imported": true,
            "source": SOURCE,
            "tables": report.tables,
            "bindings": report.bindings,
            "requests": report.requests,
            "audit_events_imported": report.audit_events_imported,
            "invalid": report.invalid.len(),
            "at": rfc3339(now),
        });
        s.record(WriteCtx::new(d, now))
            .await
            .map_err(|e| write_failed("writing the import.completed event", e))?;
        report.completed_event = true;
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", report.render());
    }
    if !report.invalid.is_empty() {
        return Err(CliError::new(
            "import_incomplete",
            format!(
                "{} old record(s) could not be imported (listed in the report)",
                report.invalid.len()
            ),
        )
        .hint(
            "fix them in the old tables (or leave them out); running the import again imports \
             only what is missing",
        )
        .into());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn tables() -> Tables {
        Tables::with_prefix("prod-")
    }

    fn config(channel: &str, account: &str, approvers: &[&str]) -> OldConfig {
        OldConfig {
            channel_id: channel.into(),
            account_id: account.into(),
            approver_mm_user_ids: approvers.iter().map(|a| (*a).to_owned()).collect(),
            approval_policy: "one_of_n".into(),
            allow_self_approval: false,
            max_request_hours: 4,
            session_duration_minutes: 0,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn request(status: &str) -> OldRequest {
        OldRequest {
            request_id: "3f1c1c7e-8a4b-4d1e-9a51-0c2f0b7d9e11".into(),
            account_id: "111111111111".into(),
            channel_id: "chan1".into(),
            requester_mm_user_id: "alice".into(),
            requester_email: "Alice@Example.com".into(),
            jira: "OPS-1".into(),
            reason: "deploy".into(),
            requested_duration_minutes: 60,
            status: status.into(),
            created_at: "2026-06-01T10:00:00Z".into(),
            end_time: "2026-06-01T11:00:00Z".into(),
            ..OldRequest::default()
        }
    }

    fn event(ty: &str, at: &str, id: &str) -> OldEvent {
        OldEvent {
            event_time_event_id: format!("{at}#{id}"),
            event_id: id.into(),
            event_time: at.into(),
            event_type: ty.into(),
            account_id: "111111111111".into(),
            channel_id: "chan1".into(),
            actor_mm_user_id: "bob".into(),
            actor_email: "bob@example.com".into(),
            details: BTreeMap::new(),
        }
    }

    #[test]
    fn a_channels_items_become_one_binding_with_every_account_and_approver() {
        let p = plan_binding(
            "chan1",
            &[
                config("chan1", "111111111111", &["bob", "carol"]),
                config("chan1", "222222222222", &[]),
            ],
        )
        .unwrap();
        let b = &p.binding;
        assert_eq!(b.accounts.len(), 2);
        assert!(b.accounts.values().all(Vec::is_empty));
        let approvers: Vec<&str> = b.policy.approvers.iter().map(UserId::as_str).collect();
        assert_eq!(approvers, ["bob", "carol"]);
        assert_eq!(b.policy.required_approvals, 1);
        assert!(b.policy.require_ticket_or_reason && !b.policy.require_ticket);
        assert_eq!(b.policy.max_request_hours, 4);
        assert!(
            p.warnings.iter().any(|w| w.contains("222222222222")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn differing_items_merge_to_the_stricter_policy_with_warnings() {
        let mut a = config("chan1", "111111111111", &["bob"]);
        a.allow_self_approval = true;
        a.max_request_hours = 8;
        let mut b = config("chan1", "222222222222", &["carol"]);
        b.max_request_hours = 0;
        let p = plan_binding("chan1", &[a, b]).unwrap();
        assert!(!p.binding.policy.allow_self_approval);
        assert_eq!(p.binding.policy.max_request_hours, 8);
        assert_eq!(p.warnings.len(), 4, "{:?}", p.warnings);
        assert!(plan_binding("chan1", &[config("chan1", "12", &["bob"])]).is_err());
        assert!(plan_binding("bad channel", &[config("x", "111111111111", &[])]).is_err());
    }

    #[test]
    fn differences_compare_approvers_as_sets() {
        let p = plan_binding(
            "chan1",
            &[config("chan1", "111111111111", &["bob", "carol"])],
        )
        .unwrap()
        .binding;
        let mut same = p.clone();
        same.policy.approvers.reverse();
        assert!(binding_differences(&same, &p).is_empty());
        let mut other = p.clone();
        other.policy.max_request_hours = 2;
        other.accounts.clear();
        assert_eq!(binding_differences(&other, &p), ["accounts", "policy"]);
    }

    #[test]
    fn ids_that_are_not_uuids_get_a_stable_derived_id() {
        let (id, derived) = request_id_for("3F1C1C7E-8A4B-4D1E-9A51-0C2F0B7D9E11");
        assert_eq!(
            (id.as_str(), derived),
            ("3f1c1c7e-8a4b-4d1e-9a51-0c2f0b7d9e11", false)
        );
        let (a, derived) = request_id_for("req-42");
        assert!(derived);
        assert_eq!(a, request_id_for("req-42").0);
        assert_ne!(a, request_id_for("req-43").0);
        assert!(RequestId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn a_live_grant_keeps_its_times_and_gets_its_revoke_job() {
        let mut r = request("GRANTED");
        r.approved_at = "2026-06-01T10:05:00Z".into();
        r.grant_time = "2026-06-01T10:05:03Z".into();
        r.end_time = "2026-06-01T13:00:00Z".into();
        r.approver_mm_user_id = "bob".into();
        r.approver_email = "bob@example.com".into();
        let events = vec![
            event("GRANTED", "2026-06-01T10:05:03Z", "e3"),
            event("REQUESTED", "2026-06-01T10:00:00Z", "e1"),
            event("APPROVED", "2026-06-01T10:05:00Z", "e2"),
        ];
        let p = plan_request(&r, &events, 480, &tables(), NOW).unwrap();
        let q = &p.request;
        assert_eq!(q.status(), Status::Granted);
        assert_eq!(q.requester_email.as_str(), "alice@example.com");
        assert_eq!(q.granted_at(), Some(datetime!(2026-06-01 10:05:03 UTC)));
        assert_eq!(q.ends_at(), Some(datetime!(2026-06-01 13:00 UTC)));
        assert_eq!(q.approved_at(), Some(datetime!(2026-06-01 10:05 UTC)));
        assert_eq!(q.approvals.len(), 1);
        assert_eq!(
            p.jobs,
            [JobOp::Schedule {
                kind: JobKind::Revoke,
                request_id: q.id.clone(),
                due_ms: jit_store::unix_ms(datetime!(2026-06-01 13:00 UTC)),
            }]
        );
        let kinds: Vec<&str> = p.drafts.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "imported.requested",
                "imported.approved",
                "imported.granted",
                "import.request"
            ]
        );
        assert_eq!(p.drafts[0].data["imported"], true);
        assert_eq!(p.drafts[0].data["event_id"], "e1");
        assert_eq!(p.events, 3);
    }

    #[test]
    fn every_old_status_maps_to_its_state() {
        let mut denied = request("DENIED");
        denied.denied_at = "2026-06-01T10:10:00Z".into();
        denied.approver_mm_user_id = "bob".into();
        let mut ev = event("DENIED", "2026-06-01T10:10:00Z", "d1");
        ev.details.insert("reason".into(), "not now".into());
        let p = plan_request(&denied, &[ev], 480, &tables(), NOW).unwrap();
        let c = p.request.closed().unwrap();
        assert_eq!(p.request.status(), Status::Denied);
        assert_eq!(c.by.as_ref().map(UserId::as_str), Some("bob"));
        assert_eq!(c.reason.as_ref().map(Reason::as_str), Some("not now"));
        assert!(p.request.approvals.is_empty() && p.jobs.is_empty());

        let mut expired = request("EXPIRED");
        expired.approved_at = "2026-06-01T10:01:00Z".into();
        expired.grant_time = "2026-06-01T10:01:02Z".into();
        expired.expired_at = "2026-06-01T11:00:05Z".into();
        let p = plan_request(&expired, &[], 480, &tables(), NOW).unwrap();
        assert_eq!(p.request.status(), Status::Expired);
        assert_eq!(
            p.request.closed().unwrap().at,
            datetime!(2026-06-01 11:00:05 UTC)
        );
        assert_eq!(p.request.ends_at(), Some(datetime!(2026-06-01 11:00 UTC)));

        let mut error = request("ERROR");
        error.grant_time = "2026-06-01T10:01:02Z".into();
        error.error_details = "reconciler revoke failed: throttled".into();
        let p = plan_request(&error, &[], 480, &tables(), NOW).unwrap();
        assert!(p.error_after_grant);
        assert!(
            matches!(&p.request.state, State::Error { message, .. } if message.contains("throttled"))
        );

        let pending = plan_request(&request("PENDING"), &[], 480, &tables(), NOW).unwrap();
        assert_eq!(
            pending.request.pending_deadline,
            datetime!(2026-06-01 18:00 UTC)
        );
        assert!(matches!(
            pending.jobs.as_slice(),
            [JobOp::Schedule {
                kind: JobKind::Timeout,
                ..
            }]
        ));

        let mut approved = request("APPROVED");
        approved.approved_at = "2026-06-01T10:01:00Z".into();
        approved.approver_mm_user_id = "bob".into();
        let p = plan_request(&approved, &[], 480, &tables(), NOW).unwrap();
        assert!(matches!(
            p.jobs.as_slice(),
            [JobOp::Schedule { kind: JobKind::Grant, due_ms, .. }] if *due_ms == jit_store::unix_ms(NOW)
        ));

        assert!(plan_request(&request("WEIRD"), &[], 480, &tables(), NOW).is_err());
        assert!(plan_request(&request("APPROVED"), &[], 480, &tables(), NOW).is_err());
        let mut bad = request("PENDING");
        bad.requester_email = "nobody".into();
        let e = plan_request(&bad, &[], 480, &tables(), NOW).unwrap_err();
        assert!(e.starts_with("requester_email"), "{e}");
    }

    #[test]
    fn a_grant_made_by_the_old_backend_after_the_import_is_noticed() {
        let imported = plan_request(&request("PENDING"), &[], 480, &tables(), NOW)
            .unwrap()
            .request;
        let mut later = request("GRANTED");
        later.grant_time = "2026-06-01T10:30:00Z".into();
        assert!(granted_after_import(&later, &imported));
        assert!(!granted_after_import(&request("DENIED"), &imported));
        let mut granted_here = later.clone();
        granted_here.approved_at = "2026-06-01T10:29:00Z".into();
        let here = plan_request(&granted_here, &[], 480, &tables(), NOW)
            .unwrap()
            .request;
        assert!(!granted_after_import(&later, &here));
    }

    #[test]
    fn go_sdk_attribute_shapes_are_read() {
        let item: Item = HashMap::from([
            ("channel_id".to_owned(), AttributeValue::S("chan1".into())),
            (
                "account_id".to_owned(),
                AttributeValue::S("111111111111".into()),
            ),
            (
                "approver_mm_user_ids".to_owned(),
                AttributeValue::Ss(vec!["bob".into()]),
            ),
            ("allow_self_approval".to_owned(), AttributeValue::Bool(true)),
            (
                "max_request_hours".to_owned(),
                AttributeValue::N("4".into()),
            ),
            (
                "session_duration_minutes".to_owned(),
                AttributeValue::Null(true),
            ),
        ]);
        let c = old_config(&item).unwrap();
        assert_eq!(c.approver_mm_user_ids, ["bob"]);
        assert!(c.allow_self_approval);
        assert_eq!((c.max_request_hours, c.session_duration_minutes), (4, 0));
        let bad: Item = HashMap::from([(
            "requested_duration_minutes".to_owned(),
            AttributeValue::S("lots".into()),
        )]);
        assert!(old_request(&bad).is_err());
    }
}
