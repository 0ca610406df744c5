//! The DynamoDB backend ([`DynamoStore`]): the same traits as [`crate::SqlStore`], for the
//! serverless deployment (`deploy/aws/template.yaml`). Item design: [`keys`] and
//! `docs/architecture.md`.
//!
//! Invariants, as on SQL:
//! - a state change, its audit events, its jobs, its assignment records, its callback events,
//!   its idempotency record and the counters behind `/metrics` commit in one
//!   `TransactWriteItems`, or nothing does;
//! - every update is compare-and-set on `version` (a condition expression);
//! - the audit chain's head is one item, updated on the condition that it is still the head the
//!   writer read: two writers never both append after the same event. The loser re-reads the
//!   head and tries again.
//!
//! Reads of one item are strongly consistent. Index reads (lists, the job queue, the outbox)
//! are eventually consistent, as every DynamoDB index is: a request created a moment ago may be
//! missing from a list for up to about a second. Nothing that decides a state change reads an
//! index without re-reading the item.

mod keys;
mod tables;

use crate::rows::{
    RequestRow, accounts_json, binding_from_parts, policy_json, request_from_parts, request_to_row,
};
use crate::{
    AssignmentOp, AuditFilter, AuditStore, BindingStore, Cursor, Gauges, GrantHistory, IdemRecord,
    Job, JobKind, JobOp, JobStore, KeyUsage, OpsStore, OutboxEvent, OutboxStore, PrincipalStore,
    RequestFilter, RequestStore, StoreError, VerifyError, VerifyOptions, VerifyProgress,
    VerifyReport, WriteCtx, log_audit, unix_ms as ms,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue as Av, Delete, KeysAndAttributes, Put, ReturnValue, Select, TransactWriteItem,
    Update,
};
use jit_core::audit::{AuditDraft, AuditEvent, ChainError, ChainVerifier, RawEvent, event_hash};
use jit_core::policy::Binding;
use jit_core::request::{Request, Status};
use jit_core::types::{ChannelId, RequestId};
use jit_proto::nonce::{NonceError, NonceFuture, NonceStore};
use std::collections::{BTreeMap, HashMap};

type Item = HashMap<String, Av>;

/// Most attempts of one write when another writer moved the chain head first.
const WRITE_ATTEMPTS: u32 = 16;

/// The store on DynamoDB. `dynamodb://STATE_TABLE?nonces=NONCES_TABLE` (the nonces table
/// defaults to `STATE_TABLE` with `-state` replaced by `-nonces`, or `-nonces` appended).
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    nonces: String,
    /// Writes of this process that move the chain head go one at a time: they would only
    /// collide on the head item and retry. Other processes are kept apart by the head's
    /// condition.
    chain_writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Told of committed job changes.
    job_hook: Option<std::sync::Arc<dyn crate::JobHook>>,
}

/// The two table names of a `dynamodb://` URL.
pub fn parse_url(url: &str) -> Result<(String, String), StoreError> {
    let rest = url
        .strip_prefix("dynamodb://")
        .ok_or_else(|| StoreError::InvalidUrl("a DynamoDB URL starts with dynamodb://".into()))?;
    let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
    let table = table.trim_end_matches('/');
    if table.is_empty() {
        return Err(StoreError::InvalidUrl(
            "dynamodb:// needs the state table's name, as in dynamodb://jit-state?nonces=jit-nonces"
                .into(),
        ));
    }
    let mut nonces = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("nonces", v)) if !v.is_empty() => nonces = Some(v.to_owned()),
            _ => {
                return Err(StoreError::InvalidUrl(format!(
                    "dynamodb:// takes only nonces=TABLE, found {:?}",
                    pair.split('=').next().unwrap_or("")
                )));
            }
        }
    }
    let nonces = nonces.unwrap_or_else(|| match table.strip_suffix("-state") {
        Some(base) => format!("{base}-nonces"),
        None => format!("{table}-nonces"),
    });
    Ok((table.to_owned(), nonces))
}

fn backend<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Backend(format!("dynamodb: {}", DisplayErrorContext(&e)))
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend(format!("dynamodb request: {e}"))
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

fn n(v: i64) -> Av {
    Av::N(v.to_string())
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn get_s(item: &Item, name: &str) -> Result<String, StoreError> {
    match item.get(name) {
        Some(Av::S(v)) => Ok(v.clone()),
        _ => Err(StoreError::Corrupt(format!("item lacks string {name}"))),
    }
}

fn opt_s(item: &Item, name: &str) -> Option<String> {
    match item.get(name) {
        Some(Av::S(v)) => Some(v.clone()),
        _ => None,
    }
}

fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    opt_n(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("item lacks number {name}")))
}

fn opt_n(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        Some(Av::N(v)) => v
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{name} is not an integer: {v}"))),
        _ => Ok(None),
    }
}

/// Expression values from pairs.
fn vals<const N: usize>(pairs: [(&str, Av); N]) -> Option<HashMap<String, Av>> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// The index `gN` (keys `gNpk`, `gNsk`) is named `gsiN` in the table: DynamoDB wants index names
/// of three characters or more.
fn index_name(short: &'static str) -> String {
    format!("gsi{}", short.trim_start_matches('g'))
}

/// A sort-key condition for [`DynamoStore::query_page`].
#[derive(Debug, Clone)]
enum Sk {
    Any,
    Lt(String),
    Le(String),
    Gt(String),
    Begins(String),
}

/// One query: the table or an index, a partition, a sort-key range and a direction.
#[derive(Debug, Clone)]
struct Q {
    index: Option<&'static str>,
    pk: String,
    sk: Sk,
    forward: bool,
}

impl Q {
    fn table(pk: impl Into<String>, sk: Sk) -> Self {
        Self {
            index: None,
            pk: pk.into(),
            sk,
            forward: true,
        }
    }

    fn index(index: &'static str, pk: impl Into<String>, sk: Sk) -> Self {
        Self {
            index: Some(index),
            pk: pk.into(),
            sk,
            forward: true,
        }
    }

    fn backwards(mut self) -> Self {
        self.forward = false;
        self
    }

    fn attrs(&self) -> (String, String) {
        match self.index {
            Some(i) => (format!("{i}pk"), format!("{i}sk")),
            None => ("pk".into(), "sk".into()),
        }
    }
}

/// Builds a transaction's items and the counter changes that go with them.
#[derive(Debug, Default)]
struct Tx {
    items: Vec<TransactWriteItem>,
    /// `(table, status)` → change.
    counts: BTreeMap<(String, String), i64>,
}

impl Tx {
    fn put(
        &mut self,
        table: &str,
        item: Item,
        cond: Option<&str>,
        values: Option<HashMap<String, Av>>,
    ) -> Result<(), StoreError> {
        let p = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(cond.map(str::to_owned))
            .set_expression_attribute_values(values)
            .build()
            .map_err(build_err)?;
        self.items.push(TransactWriteItem::builder().put(p).build());
        Ok(())
    }

    fn update(
        &mut self,
        table: &str,
        key: Item,
        expr: &str,
        cond: Option<&str>,
        names: Option<HashMap<String, String>>,
        values: Option<HashMap<String, Av>>,
    ) -> Result<(), StoreError> {
        let u = Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(expr)
            .set_condition_expression(cond.map(str::to_owned))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(build_err)?;
        self.items
            .push(TransactWriteItem::builder().update(u).build());
        Ok(())
    }

    fn delete(
        &mut self,
        table: &str,
        key: Item,
        cond: Option<&str>,
        names: Option<HashMap<String, String>>,
        values: Option<HashMap<String, Av>>,
    ) -> Result<(), StoreError> {
        let d = Delete::builder()
            .table_name(table)
            .set_key(Some(key))
            .set_condition_expression(cond.map(str::to_owned))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .build()
            .map_err(build_err)?;
        self.items
            .push(TransactWriteItem::builder().delete(d).build());
        Ok(())
    }

    fn count(&mut self, table: &str, status: &str, delta: i64) {
        *self
            .counts
            .entry((table.to_owned(), status.to_owned()))
            .or_default() += delta;
    }
}

/// Why a transaction did not commit.
enum TxFailure {
    /// The item at this index failed its condition.
    Condition(usize),
    /// Another transaction touched one of the items at the same moment.
    Conflict,
    /// Anything else.
    Other(StoreError),
}

fn request_item(row: &RequestRow) -> Result<Item, StoreError> {
    let doc = serde_json::to_string(row)
        .map_err(|e| StoreError::Backend(format!("encoding a request: {e}")))?;
    let (pk, sk) = keys::request(&row.id);
    let mut item = key(pk, sk);
    let sort = keys::request_sort(row.created_at, &row.id);
    for (i, p) in [
        ("g1", keys::request_by_channel(&row.channel_id)),
        ("g2", keys::request_by_status(&row.status)),
        ("g3", keys::request_by_email(&row.requester_email)),
        ("g4", keys::request_by_account(&row.account_id)),
        ("g5", keys::request_by_user(&row.requester_id)),
        ("g6", keys::REQUESTS_ALL.to_owned()),
    ] {
        item.insert(format!("{i}pk"), s(p));
        item.insert(format!("{i}sk"), s(sort.clone()));
    }
    item.insert("doc".into(), s(doc));
    item.insert("version".into(), n(row.version));
    item.insert("status".into(), s(row.status.clone()));
    Ok(item)
}

fn request_from_item(item: &Item) -> Result<Request, StoreError> {
    let doc = get_s(item, "doc")?;
    let row: RequestRow = serde_json::from_str(&doc)
        .map_err(|e| StoreError::Corrupt(format!("request document: {e}")))?;
    request_from_parts(row)
}

fn binding_from_item(item: &Item) -> Result<Binding, StoreError> {
    let mut b = binding_from_parts(
        &get_s(item, "channel_id")?,
        &get_s(item, "accounts")?,
        &get_s(item, "policy")?,
        get_n(item, "version")?,
    )?;
    b.updated_at = opt_n(item, "updated_at")?.and_then(|v| crate::rows::from_ms(v).ok());
    Ok(b)
}

fn job_from_item(item: &Item) -> Result<Job, StoreError> {
    let kind = get_s(item, "kind")?;
    Ok(Job {
        kind: JobKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind}")))?,
        request_id: RequestId::parse(&get_s(item, "request_id")?)
            .map_err(|e| StoreError::Corrupt(format!("request id: {}", e.message)))?,
        due_ms: get_n(item, "due")?,
        attempts: get_n(item, "attempts")?,
        last_error: opt_s(item, "last_error"),
    })
}

fn outbox_from_item(item: &Item) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        event_id: get_s(item, "event_id")?,
        request_id: RequestId::parse(&get_s(item, "request_id")?)
            .map_err(|e| StoreError::Corrupt(format!("request id: {}", e.message)))?,
        seq: get_n(item, "seq")?,
        payload: get_s(item, "payload")?,
        status: get_s(item, "status")?,
        attempts: get_n(item, "attempts")?,
        next_attempt_ms: get_n(item, "next_at")?,
        last_error: opt_s(item, "last_error"),
        created_ms: get_n(item, "created")?,
    })
}

fn audit_item(seq: i64, at_ms: i64, d: &AuditDraft, prev: &str, hash: &str) -> Item {
    let (pk, sk) = keys::audit(seq);
    let mut item = key(pk, sk);
    let sort = keys::pad(seq);
    let mut index = |i: &str, p: String| {
        item.insert(format!("{i}pk"), s(p));
        item.insert(format!("{i}sk"), s(sort.clone()));
    };
    if let Some(v) = &d.request_id {
        index("g1", keys::audit_by_request(v));
    }
    index("g2", keys::audit_by_type(&d.kind));
    if let Some(v) = &d.actor_id {
        index("g3", keys::audit_by_actor(v));
    }
    if let Some(v) = &d.account_id {
        index("g4", keys::audit_by_account(v));
    }
    if let Some(v) = &d.channel_id {
        index("g5", keys::audit_by_channel(v));
    }
    if let Some(v) = &d.actor_email {
        index("g6", keys::audit_by_email(v));
    }
    item.insert("seq".into(), n(seq));
    item.insert("at".into(), n(at_ms));
    item.insert("type".into(), s(d.kind.clone()));
    for (name, v) in [
        ("actor_id", &d.actor_id),
        ("actor_email", &d.actor_email),
        ("request_id", &d.request_id),
        ("channel_id", &d.channel_id),
        ("account_id", &d.account_id),
    ] {
        if let Some(v) = v {
            item.insert(name.into(), s(v.clone()));
        }
    }
    item.insert("data".into(), s(d.data.to_string()));
    item.insert("prev".into(), s(prev));
    item.insert("hash".into(), s(hash));
    item
}

fn audit_from_item(item: &Item) -> Result<AuditEvent, StoreError> {
    let data = get_s(item, "data")?;
    Ok(AuditEvent {
        seq: get_n(item, "seq")?,
        at_ms: get_n(item, "at")?,
        draft: AuditDraft {
            kind: get_s(item, "type")?,
            actor_id: opt_s(item, "actor_id"),
            actor_email: opt_s(item, "actor_email"),
            request_id: opt_s(item, "request_id"),
            channel_id: opt_s(item, "channel_id"),
            account_id: opt_s(item, "account_id"),
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Corrupt(format!("audit data: {e}")))?,
        },
        prev_hash: get_s(item, "prev")?,
        hash: get_s(item, "hash")?,
    })
}

impl DynamoStore {
    /// A store on the tables of `url` (`dynamodb://STATE_TABLE?nonces=NONCES_TABLE`), with the
    /// AWS SDK configuration given. Checks that the state table answers.
    pub async fn open(url: &str, sdk: &aws_config::SdkConfig) -> Result<Self, StoreError> {
        let (table, nonces) = parse_url(url)?;
        let store = Self {
            client: Client::new(sdk),
            table,
            nonces,
            chain_writes: std::sync::Arc::default(),
            job_hook: None,
        };
        store.ping().await?;
        Ok(store)
    }

    /// Tells `hook` of every committed job change.
    pub fn with_job_hook(mut self, hook: std::sync::Arc<dyn crate::JobHook>) -> Self {
        self.job_hook = Some(hook);
        self
    }

    /// The state table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The nonce table's name.
    pub fn nonce_table(&self) -> &str {
        &self.nonces
    }

    /// The SDK client (tests and the importer).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get(&self, (pk, sk): (String, String)) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item)
    }

    /// Several items by key (at most 100 per call, as DynamoDB allows), in no particular order.
    async fn batch_get(&self, keys: Vec<(String, String)>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|(p, k)| key(p.clone(), k.clone()))
                .collect();
            let mut rounds = 0;
            while !pending.is_empty() {
                rounds += 1;
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?;
                let r = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .await
                    .map_err(backend)?;
                if let Some(mut got) = r.responses {
                    out.extend(got.remove(&self.table).unwrap_or_default());
                }
                pending = r
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if rounds > 8 && !pending.is_empty() {
                    return Err(StoreError::Backend(
                        "dynamodb: batch read throttled; try again".into(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// One page of a query: up to `limit` items, and where the next page starts.
    async fn query_page(
        &self,
        q: &Q,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let (pk_attr, sk_attr) = q.attrs();
        let mut values = HashMap::from([(":p".to_owned(), s(q.pk.clone()))]);
        let names = HashMap::from([
            ("#p".to_owned(), pk_attr),
            ("#s".to_owned(), sk_attr.clone()),
        ]);
        let cond = match &q.sk {
            Sk::Any => "#p = :p".to_owned(),
            Sk::Lt(v) | Sk::Le(v) | Sk::Gt(v) | Sk::Begins(v) => {
                values.insert(":s".into(), s(v.clone()));
                match &q.sk {
                    Sk::Lt(_) => "#p = :p AND #s < :s".to_owned(),
                    Sk::Le(_) => "#p = :p AND #s <= :s".to_owned(),
                    Sk::Gt(_) => "#p = :p AND #s > :s".to_owned(),
                    _ => "#p = :p AND begins_with(#s, :s)".to_owned(),
                }
            }
        };
        let mut names = names;
        if matches!(q.sk, Sk::Any) {
            names.remove("#s");
        }
        let r = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(q.index.map(index_name))
            .key_condition_expression(cond)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(q.forward)
            .limit(limit.max(1))
            .set_consistent_read(q.index.is_none().then_some(true))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(backend)?;
        Ok((r.items.unwrap_or_default(), r.last_evaluated_key))
    }

    /// Walks a query page by page, handing each item to `take` until it answers false or the
    /// query ends.
    async fn query_each(
        &self,
        q: &Q,
        page: i32,
        mut take: impl FnMut(Item) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let (items, next) = self.query_page(q, page, start).await?;
            for item in items {
                if !take(item)? {
                    return Ok(());
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => return Ok(()),
            }
        }
    }

    async fn query_all(&self, q: &Q) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        self.query_each(q, 500, |i| {
            out.push(i);
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    async fn count(&self, q: &Q) -> Result<i64, StoreError> {
        let (pk_attr, sk_attr) = q.attrs();
        let mut total = 0;
        let mut start = None;
        loop {
            let (cond, values) = match &q.sk {
                Sk::Lt(v) => (
                    "#p = :p AND #s < :s",
                    vals([(":p", s(q.pk.clone())), (":s", s(v.clone()))]),
                ),
                _ => (
                    "#p = :p AND #s > :s",
                    vals([(":p", s(q.pk.clone())), (":s", s(""))]),
                ),
            };
            let r = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(q.index.map(index_name))
                .key_condition_expression(cond)
                .expression_attribute_names("#p", pk_attr.clone())
                .expression_attribute_names("#s", sk_attr.clone())
                .set_expression_attribute_values(values)
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend)?;
            total += i64::from(r.count);
            match r.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(total),
            }
        }
    }

    async fn send_tx(&self, items: Vec<TransactWriteItem>) -> Result<(), TxFailure> {
        if items.is_empty() {
            return Ok(());
        }
        if items.len() > 100 {
            return Err(TxFailure::Other(StoreError::Backend(format!(
                "dynamodb: one write needs {} items, more than a transaction holds (100)",
                items.len()
            ))));
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let reasons = c.cancellation_reasons();
                    if let Some(i) = reasons
                        .iter()
                        .position(|r| r.code() == Some("ConditionalCheckFailed"))
                    {
                        return Err(TxFailure::Condition(i));
                    }
                    if reasons
                        .iter()
                        .any(|r| r.code() == Some("TransactionConflict"))
                        || reasons.is_empty()
                    {
                        return Err(TxFailure::Conflict);
                    }
                }
                if let Some(TransactWriteItemsError::TransactionInProgressException(_)) =
                    e.as_service_error()
                {
                    return Err(TxFailure::Conflict);
                }
                Err(TxFailure::Other(backend(e)))
            }
        }
    }

    /// Commits `main` (the caller's items: their conditions failing is the caller's
    /// [`StoreError::Conflict`]) with everything `ctx` carries, in one transaction. Retries when
    /// the chain head moved or another transaction collided.
    async fn commit(&self, ctx: &WriteCtx, main: Tx) -> Result<(), StoreError> {
        let _one_at_a_time = self.chain_writes.lock().await;
        let now = ms(ctx.now);
        for attempt in 0..WRITE_ATTEMPTS {
            let mut tx = Tx {
                items: main.items.clone(),
                counts: main.counts.clone(),
            };
            let main_len = tx.items.len();
            // Items whose condition failing means "retry": a race on an insert-if-absent, or
            // the head.
            let mut retry_on = Vec::new();
            self.add_jobs(&mut tx, ctx, &mut retry_on).await?;
            self.add_assignments(&mut tx, ctx, &mut retry_on).await?;
            let mut idem_at = None;
            if let Some(idem) = &ctx.idem {
                let (pk, sk) = keys::idempotency(&idem.scope, &idem.key);
                let mut item = key(pk, sk);
                item.insert("scope".into(), s(idem.scope.clone()));
                item.insert("key".into(), s(idem.key.clone()));
                item.insert("request_hash".into(), s(idem.request_hash.clone()));
                item.insert("status".into(), n(i64::from(idem.status)));
                item.insert("response".into(), s(idem.response.clone()));
                item.insert("created".into(), n(now));
                idem_at = Some(tx.items.len());
                tx.put(&self.table, item, Some("attribute_not_exists(pk)"), None)?;
            }
            if !ctx.audit.is_empty() || !ctx.outbox.is_empty() {
                retry_on.push(tx.items.len());
                self.add_chain(&mut tx, ctx).await?;
            }
            self.add_counts(&mut tx)?;
            match self.send_tx(tx.items).await {
                Ok(()) => {
                    log_audit(&ctx.audit);
                    drop(_one_at_a_time);
                    if let Some(h) = &self.job_hook
                        && !ctx.jobs.is_empty()
                    {
                        h.committed(&ctx.jobs).await;
                    }
                    return Ok(());
                }
                Err(TxFailure::Condition(i)) if i < main_len => return Err(StoreError::Conflict),
                Err(TxFailure::Condition(i)) if Some(i) == idem_at => {
                    return Err(StoreError::Conflict);
                }
                Err(TxFailure::Condition(i)) if !retry_on.contains(&i) => {
                    return Err(StoreError::Backend(format!(
                        "dynamodb: write item {i} failed its condition"
                    )));
                }
                Err(TxFailure::Condition(_) | TxFailure::Conflict) => {
                    backoff(attempt).await;
                }
                Err(TxFailure::Other(e)) => return Err(e),
            }
        }
        Err(StoreError::Backend(
            "dynamodb: the write kept colliding with others; try again".into(),
        ))
    }

    async fn add_jobs(
        &self,
        tx: &mut Tx,
        ctx: &WriteCtx,
        retry_on: &mut Vec<usize>,
    ) -> Result<(), StoreError> {
        // One operation per item in a transaction: the last op on a job wins.
        let mut last: BTreeMap<(String, String), &JobOp> = BTreeMap::new();
        for op in &ctx.jobs {
            let (k, r) = match op {
                JobOp::Schedule {
                    kind, request_id, ..
                }
                | JobOp::Ensure {
                    kind, request_id, ..
                }
                | JobOp::Remove { kind, request_id } => (kind, request_id),
            };
            last.insert(keys::job(k.as_str(), r.as_str()), op);
        }
        for ((pk, sk), op) in last {
            match op {
                JobOp::Schedule {
                    kind,
                    request_id,
                    due_ms,
                } => tx.update(
                    &self.table,
                    key(pk, sk),
                    "SET kind = :k, request_id = :r, due = :d, attempts = if_not_exists(attempts, :z), \
                     g1pk = :g1p, g1sk = :g1s REMOVE lease_owner, lease_until",
                    None,
                    None,
                    vals([
                        (":k", s(kind.as_str())),
                        (":r", s(request_id.as_str())),
                        (":d", n(*due_ms)),
                        (":z", n(0)),
                        (":g1p", s(keys::job_due(kind.as_str()))),
                        (":g1s", s(keys::job_due_sort(*due_ms, request_id.as_str()))),
                    ]),
                )?,
                JobOp::Ensure {
                    kind,
                    request_id,
                    due_ms,
                } => {
                    if self.get((pk.clone(), sk.clone())).await?.is_some() {
                        continue;
                    }
                    let mut item = key(pk, sk);
                    item.insert("kind".into(), s(kind.as_str()));
                    item.insert("request_id".into(), s(request_id.as_str()));
                    item.insert("due".into(), n(*due_ms));
                    item.insert("attempts".into(), n(0));
                    item.insert("g1pk".into(), s(keys::job_due(kind.as_str())));
                    item.insert("g1sk".into(), s(keys::job_due_sort(*due_ms, request_id.as_str())));
                    retry_on.push(tx.items.len());
                    tx.put(&self.table, item, Some("attribute_not_exists(pk)"), None)?;
                }
                JobOp::Remove { .. } => tx.delete(&self.table, key(pk, sk), None, None, None)?,
            }
        }
        Ok(())
    }

    async fn add_assignments(
        &self,
        tx: &mut Tx,
        ctx: &WriteCtx,
        retry_on: &mut Vec<usize>,
    ) -> Result<(), StoreError> {
        let mut last: BTreeMap<String, &AssignmentOp> = BTreeMap::new();
        for op in &ctx.assignments {
            let p = match op {
                AssignmentOp::Add { principal, .. } | AssignmentOp::Remove { principal } => {
                    principal
                }
            };
            last.insert(p.clone(), op);
        }
        for (principal, op) in last {
            let (pk, sk) = keys::assignment(&principal);
            match op {
                AssignmentOp::Add { standing, .. } => {
                    if self.get((pk.clone(), sk.clone())).await?.is_some() {
                        continue;
                    }
                    let mut item = key(pk, sk);
                    item.insert("standing".into(), Av::Bool(*standing));
                    item.insert("created".into(), n(ms(ctx.now)));
                    retry_on.push(tx.items.len());
                    tx.put(&self.table, item, Some("attribute_not_exists(pk)"), None)?;
                }
                AssignmentOp::Remove { .. } => {
                    tx.delete(&self.table, key(pk, sk), None, None, None)?;
                }
            }
        }
        Ok(())
    }

    /// The audit events and callback events of a write, after the head read now, and the head
    /// moved on the condition that nobody else moved it first.
    async fn add_chain(&self, tx: &mut Tx, ctx: &WriteCtx) -> Result<(), StoreError> {
        let now = ms(ctx.now);
        let head = self.get((keys::HEAD.0.into(), keys::HEAD.1.into())).await?;
        let (seq0, hash0, oseq0) = match &head {
            Some(h) => (
                get_n(h, "seq")?,
                get_s(h, "hash")?,
                opt_n(h, "oseq")?.unwrap_or(0),
            ),
            None => (0, jit_core::audit::GENESIS_HASH.to_owned(), 0),
        };
        let (mut seq, mut prev) = (seq0, hash0);
        for d in &ctx.audit {
            seq += 1;
            let hash = event_hash(&prev, seq, now, d);
            tx.put(
                &self.table,
                audit_item(seq, now, d, &prev, &hash),
                Some("attribute_not_exists(pk)"),
                None,
            )?;
            prev = hash;
        }
        let mut oseq = oseq0;
        for ev in &ctx.outbox {
            oseq += 1;
            let (pk, sk) = keys::outbox(&ev.event_id);
            let mut item = key(pk, sk);
            item.insert("event_id".into(), s(ev.event_id.clone()));
            item.insert("request_id".into(), s(ev.request_id.as_str()));
            item.insert("seq".into(), n(oseq));
            item.insert("payload".into(), s(ev.payload.clone()));
            item.insert("status".into(), s("PENDING"));
            item.insert("attempts".into(), n(0));
            item.insert("next_at".into(), n(now));
            item.insert("created".into(), n(now));
            item.insert("g1pk".into(), s(keys::outbox_by_status("PENDING")));
            item.insert(
                "g1sk".into(),
                s(keys::outbox_status_sort(now, &ev.event_id)),
            );
            item.insert("g2pk".into(), s(keys::OUTBOX_DUE));
            item.insert("g2sk".into(), s(keys::outbox_due_sort(now, &ev.event_id)));
            item.insert(
                "g3pk".into(),
                s(keys::outbox_by_request(ev.request_id.as_str())),
            );
            item.insert("g3sk".into(), s(keys::pad(oseq)));
            tx.put(&self.table, item, Some("attribute_not_exists(pk)"), None)?;
            tx.count("outbox", "PENDING", 1);
        }
        // The head goes first among the chain's items so a moved head is the failure reported.
        let head_item = {
            let mut item = key(keys::HEAD.0.into(), keys::HEAD.1.into());
            item.insert("seq".into(), n(seq));
            item.insert("hash".into(), s(prev));
            item.insert("oseq".into(), n(oseq));
            item
        };
        let cond = if head.is_some() {
            "seq = :s AND oseq = :o"
        } else {
            "attribute_not_exists(pk)"
        };
        let values = head
            .is_some()
            .then(|| vals([(":s", n(seq0)), (":o", n(oseq0))]))
            .flatten();
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(head_item))
            .condition_expression(cond)
            .set_expression_attribute_values(values)
            .build()
            .map_err(build_err)?;
        // Keep the head at the index the caller marked for retries.
        let at = tx.items.len() - ctx.audit.len() - ctx.outbox.len();
        tx.items
            .insert(at, TransactWriteItem::builder().put(put).build());
        Ok(())
    }

    fn add_counts(&self, tx: &mut Tx) -> Result<(), StoreError> {
        let counts = std::mem::take(&mut tx.counts);
        for ((table, status), delta) in counts {
            if delta == 0 {
                continue;
            }
            tx.update(
                &self.table,
                key(keys::COUNT_PK.into(), keys::count_sk(&table, &status)),
                "ADD n :d",
                None,
                None,
                vals([(":d", n(delta))]),
            )?;
        }
        Ok(())
    }

    async fn head(&self) -> Result<(i64, String), StoreError> {
        match self.get((keys::HEAD.0.into(), keys::HEAD.1.into())).await? {
            Some(h) => Ok((get_n(&h, "seq")?, get_s(&h, "hash")?)),
            None => Ok((0, jit_core::audit::GENESIS_HASH.to_owned())),
        }
    }

    /// Audit events with `after < seq <= until`, in order, page by page through the buckets.
    async fn audit_range(
        &self,
        after: i64,
        until: i64,
        mut take: impl FnMut(Item) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut bucket_seq = after + 1;
        while bucket_seq <= until {
            let q = Q::table(keys::audit_bucket(bucket_seq), Sk::Gt(keys::pad(after)));
            let mut go_on = true;
            self.query_each(&q, 1000, |item| {
                if get_n(&item, "seq")? > until {
                    go_on = false;
                    return Ok(false);
                }
                go_on = take(item)?;
                Ok(go_on)
            })
            .await?;
            if !go_on {
                return Ok(());
            }
            bucket_seq = (bucket_seq / keys::AUDIT_BUCKET + 1) * keys::AUDIT_BUCKET;
        }
        Ok(())
    }

    /// Requests of one index partition, newest first, that match `f`, until `want` are found.
    async fn requests_from(
        &self,
        index: &'static str,
        pk: String,
        f: &RequestFilter,
        want: usize,
    ) -> Result<Vec<Request>, StoreError> {
        let mut upper: Option<String> = f.end_ms.map(keys::pad);
        if let Some(c) = &f.after {
            let (at, id) = c.position();
            let k = keys::request_sort(at, id);
            upper = Some(match upper {
                Some(u) if u < k => u,
                _ => k,
            });
        }
        let sk = upper.map_or(Sk::Any, Sk::Lt);
        let q = Q::index(index, pk, sk).backwards();
        let mut out = Vec::new();
        let lower = f.start_ms;
        self.query_each(&q, (want as i32).clamp(10, 500), |item| {
            let r = request_from_item(&item)?;
            if let Some(lo) = lower
                && ms(r.created_at) < lo
            {
                return Ok(false);
            }
            if matches_filter(&r, f) {
                out.push(r);
            }
            Ok(out.len() < want)
        })
        .await?;
        Ok(out)
    }

    /// Events of one index partition after `after`, in order, that match `f`.
    async fn audit_from_index(
        &self,
        index: &'static str,
        pk: String,
        f: &AuditFilter,
        want: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let q = Q::index(index, pk, Sk::Gt(keys::pad(f.after_seq.unwrap_or(0))));
        let mut out = Vec::new();
        self.query_each(&q, (want as i32).clamp(10, 1000), |item| {
            let e = audit_from_item(&item)?;
            if audit_matches(&e, f) {
                out.push(e);
            }
            Ok(out.len() < want)
        })
        .await?;
        Ok(out)
    }

    /// Changes an outbox item's status with its counters, on the condition that it is still
    /// in the status read.
    async fn move_callback(
        &self,
        event_id: &str,
        to: &str,
        set: &str,
        values: HashMap<String, Av>,
        only_from: Option<&str>,
    ) -> Result<bool, StoreError> {
        for attempt in 0..WRITE_ATTEMPTS {
            let Some(item) = self.get(keys::outbox(event_id)).await? else {
                return Ok(false);
            };
            let from = get_s(&item, "status")?;
            if only_from.is_some_and(|o| o != from) {
                return Ok(false);
            }
            let created = get_n(&item, "created")?;
            let mut values = values.clone();
            values.insert(":from".into(), s(from.clone()));
            values.insert(":to".into(), s(to));
            values.insert(":g1p".into(), s(keys::outbox_by_status(to)));
            values.insert(
                ":g1s".into(),
                s(keys::outbox_status_sort(created, event_id)),
            );
            let (g2, next) = if to == "PENDING" {
                values.insert(":g2p".into(), s(keys::OUTBOX_DUE));
                (", g2pk = :g2p, g2sk = :g2s", true)
            } else {
                ("", false)
            };
            if next {
                let at = match values.get(":next") {
                    Some(Av::N(v)) => v.parse().unwrap_or(0),
                    _ => get_n(&item, "next_at")?,
                };
                values.insert(":g2s".into(), s(keys::outbox_due_sort(at, event_id)));
            }
            let remove = if next {
                " REMOVE lease_owner, lease_until"
            } else {
                " REMOVE lease_owner, lease_until, g2pk, g2sk"
            };
            let expr = format!("SET #st = :to, g1pk = :g1p, g1sk = :g1s{g2}, {set}{remove}");
            let mut tx = Tx::default();
            tx.update(
                &self.table,
                key(keys::outbox(event_id).0, "O".into()),
                &expr,
                Some("#st = :from"),
                Some(HashMap::from([("#st".to_owned(), "status".to_owned())])),
                Some(values),
            )?;
            if from != to {
                tx.count("outbox", &from, -1);
                tx.count("outbox", to, 1);
            }
            self.add_counts(&mut tx)?;
            match self.send_tx(tx.items).await {
                Ok(()) => return Ok(true),
                Err(TxFailure::Condition(_) | TxFailure::Conflict) => backoff(attempt).await,
                Err(TxFailure::Other(e)) => return Err(e),
            }
        }
        Err(StoreError::Backend(
            "dynamodb: the callback kept changing; try again".into(),
        ))
    }

    /// Whether a plain write failed its condition.
    fn is_condition<E, R>(e: &SdkError<E, R>) -> bool
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    {
        e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "ConditionalCheckFailedException")
    }
}

/// Waits a little longer after each collision (with jitter, so colliding writers spread out).
async fn backoff(attempt: u32) {
    let mut b = [0u8; 1];
    let _ = getrandom::fill(&mut b);
    let ms = (5u64 << attempt.min(5)) + u64::from(b[0] % 20);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

fn matches_filter(r: &Request, f: &RequestFilter) -> bool {
    let at = ms(r.created_at);
    f.channel_id
        .as_deref()
        .is_none_or(|c| r.channel_id.as_str() == c)
        && f.account_id
            .as_deref()
            .is_none_or(|a| r.account_id.as_str() == a)
        && f.requester_email
            .as_deref()
            .is_none_or(|e| r.requester_email.as_str().eq_ignore_ascii_case(e))
        && f.requester_id
            .as_deref()
            .is_none_or(|u| r.requester_id.as_str() == u)
        && (f.statuses.is_empty() || f.statuses.contains(&r.status()))
        && f.start_ms.is_none_or(|s| at >= s)
        && f.end_ms.is_none_or(|e| at < e)
        && f.after.as_ref().is_none_or(|c| {
            let (cat, cid) = c.position();
            at < cat || (at == cat && r.id.as_str() < cid)
        })
}

fn audit_matches(e: &AuditEvent, f: &AuditFilter) -> bool {
    let d = &e.draft;
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref() == Some(w.as_str()))
    };
    eq(&f.request_id, &d.request_id)
        && eq(&f.account_id, &d.account_id)
        && eq(&f.channel_id, &d.channel_id)
        && f.kind.as_ref().is_none_or(|k| &d.kind == k)
        && f.actor.as_ref().is_none_or(|a| {
            d.actor_id.as_deref() == Some(a.as_str())
                || d.actor_email
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(a))
        })
        && f.since_ms.is_none_or(|s| e.at_ms >= s)
        && f.until_ms.is_none_or(|u| e.at_ms < u)
        && f.after_seq.is_none_or(|a| e.seq > a)
}

fn sort_key_of(r: &Request) -> String {
    keys::request_sort(ms(r.created_at), r.id.as_str())
}

#[async_trait]
impl OpsStore for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.get((keys::HEAD.0.into(), keys::HEAD.1.into()))
            .await
            .map(|_| ())
    }

    async fn record_key_usage(
        &self,
        ring: &str,
        verifier: &str,
        keys_seen: &[(String, i64)],
    ) -> Result<(), StoreError> {
        for (key_id, at) in keys_seen {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(
                    keys::KEY_USAGE_PK.into(),
                    keys::key_usage_sk(ring, verifier, key_id),
                )))
                .update_expression("SET ring = :r, verifier = :v, key_id = :k, last_used = :t")
                .condition_expression("attribute_not_exists(last_used) OR last_used < :t")
                .set_expression_attribute_values(vals([
                    (":r", s(ring)),
                    (":v", s(verifier)),
                    (":k", s(key_id.clone())),
                    (":t", n(*at)),
                ]))
                .send()
                .await;
            match r {
                Ok(_) => {}
                Err(e) if Self::is_condition(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let items = self
            .query_all(&Q::table(keys::KEY_USAGE_PK, Sk::Any))
            .await?;
        let mut out = items
            .iter()
            .map(|i| {
                Ok(KeyUsage {
                    ring: get_s(i, "ring")?,
                    verifier: get_s(i, "verifier")?,
                    key_id: get_s(i, "key_id")?,
                    last_used_unix: get_n(i, "last_used")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by(|a, b| {
            (&a.ring, &a.key_id, &a.verifier).cmp(&(&b.ring, &b.key_id, &b.verifier))
        });
        Ok(out)
    }

    async fn gauges(&self, late_before_ms: i64) -> Result<Gauges, StoreError> {
        let counts = self.query_all(&Q::table(keys::COUNT_PK, Sk::Any)).await?;
        let mut requests = Vec::new();
        let mut outbox = Vec::new();
        for c in &counts {
            let sk = get_s(c, "sk")?;
            let v = opt_n(c, "n")?.unwrap_or(0);
            if v <= 0 {
                continue;
            }
            match sk.split_once('#') {
                Some(("requests", st)) => requests.push((st.to_owned(), v)),
                Some(("outbox", st)) => outbox.push((st.to_owned(), v)),
                _ => {}
            }
        }
        requests.sort();
        outbox.sort();
        let (oldest, _) = self
            .query_page(
                &Q::index("g1", keys::outbox_by_status("PENDING"), Sk::Any),
                1,
                None,
            )
            .await?;
        let oldest = oldest.first().map(|i| get_n(i, "created")).transpose()?;
        let mut late = Vec::new();
        for kind in [JobKind::Grant, JobKind::Revoke, JobKind::Timeout] {
            let due = self
                .count(&Q::index(
                    "g1",
                    keys::job_due(kind.as_str()),
                    Sk::Lt(keys::pad(late_before_ms)),
                ))
                .await?;
            let failed = self
                .query_all(&Q::index("g2", keys::job_failed(kind.as_str()), Sk::Any))
                .await?;
            let mut later = 0;
            for j in &failed {
                if get_n(j, "due")? >= late_before_ms {
                    later += 1;
                }
            }
            if due + later > 0 {
                late.push((kind.as_str().to_owned(), due + later));
            }
        }
        Ok(Gauges {
            requests_by_status: requests,
            outbox_by_status: outbox,
            outbox_oldest_pending_ms: oldest,
            jobs_late_by_kind: late,
        })
    }

    async fn idempotency_get(
        &self,
        scope: &str,
        key_: &str,
    ) -> Result<Option<IdemRecord>, StoreError> {
        let Some(i) = self.get(keys::idempotency(scope, key_)).await? else {
            return Ok(None);
        };
        Ok(Some(IdemRecord {
            scope: get_s(&i, "scope")?,
            key: get_s(&i, "key")?,
            request_hash: get_s(&i, "request_hash")?,
            status: u16::try_from(get_n(&i, "status")?).unwrap_or(200),
            response: get_s(&i, "response")?,
        }))
    }

    /// Nothing to do: the nonce table's time-to-live deletes expired nonces (DynamoDB removes
    /// them within a few days; until then an expired nonce is reused, as on SQL).
    async fn purge_nonces(&self, _now_unix: i64) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[async_trait]
impl BindingStore for DynamoStore {
    async fn get_binding(&self, channel: &ChannelId) -> Result<Option<Binding>, StoreError> {
        self.get(keys::binding(channel.as_str()))
            .await?
            .as_ref()
            .map(binding_from_item)
            .transpose()
    }

    async fn list_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let items = self
            .query_all(&Q::index("g1", keys::BINDINGS_G1, Sk::Any))
            .await?;
        items.iter().map(binding_from_item).collect()
    }

    async fn save_binding(
        &self,
        b: &Binding,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<Binding, StoreError> {
        let new_version = expected_version + 1;
        let now = ms(ctx.now);
        let (pk, sk) = keys::binding(b.channel_id.as_str());
        let mut item = key(pk, sk);
        item.insert("channel_id".into(), s(b.channel_id.as_str()));
        item.insert("accounts".into(), s(accounts_json(b)));
        item.insert("policy".into(), s(policy_json(&b.policy)));
        item.insert("version".into(), n(new_version));
        item.insert("updated_at".into(), n(now));
        item.insert("g1pk".into(), s(keys::BINDINGS_G1));
        item.insert("g1sk".into(), s(b.channel_id.as_str()));
        let mut tx = Tx::default();
        if expected_version == 0 {
            tx.put(&self.table, item, Some("attribute_not_exists(pk)"), None)?;
        } else {
            tx.put(
                &self.table,
                item,
                Some("version = :e"),
                vals([(":e", n(expected_version))]),
            )?;
        }
        self.commit(&ctx, tx).await?;
        Ok(Binding {
            version: new_version,
            updated_at: crate::rows::from_ms(now).ok(),
            ..b.clone()
        })
    }

    async fn delete_binding(
        &self,
        channel: &ChannelId,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<(), StoreError> {
        let (pk, sk) = keys::binding(channel.as_str());
        let mut tx = Tx::default();
        tx.delete(
            &self.table,
            key(pk, sk),
            Some("version = :e"),
            None,
            vals([(":e", n(expected_version))]),
        )?;
        self.commit(&ctx, tx).await
    }
}

#[async_trait]
impl RequestStore for DynamoStore {
    async fn set_post_id(&self, id: &RequestId, post_id: &str) -> Result<(), StoreError> {
        for attempt in 0..WRITE_ATTEMPTS {
            let Some(item) = self.get(keys::request(id.as_str())).await? else {
                return Err(StoreError::NotFound);
            };
            let doc = get_s(&item, "doc")?;
            let mut row: RequestRow = serde_json::from_str(&doc)
                .map_err(|e| StoreError::Corrupt(format!("request document: {e}")))?;
            row.post_id = Some(post_id.to_owned());
            let doc = serde_json::to_string(&row)
                .map_err(|e| StoreError::Backend(format!("encoding a request: {e}")))?;
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(keys::request(id.as_str()).0, "R".into())))
                .update_expression("SET doc = :d")
                .condition_expression("doc = :old")
                .set_expression_attribute_values(vals([
                    (":d", s(doc)),
                    (":old", s(get_s(&item, "doc")?)),
                ]))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if Self::is_condition(&e) => backoff(attempt).await,
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Conflict)
    }

    async fn create_request(&self, req: &Request, ctx: WriteCtx) -> Result<(), StoreError> {
        let row = request_to_row(req, ctx.now);
        let mut tx = Tx::default();
        tx.put(
            &self.table,
            request_item(&row)?,
            Some("attribute_not_exists(pk)"),
            None,
        )?;
        let (pk, sk) = keys::request_prefix(&row.id);
        tx.put(&self.table, key(pk, sk), None, None)?;
        tx.count("requests", &row.status, 1);
        self.commit(&ctx, tx).await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        self.get(keys::request(id.as_str()))
            .await?
            .as_ref()
            .map(request_from_item)
            .transpose()
    }

    async fn request_ids_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // Ids are lowercase hex and '-': a one-character prefix spans sixteen partitions.
        let partitions: Vec<String> = match prefix.chars().count() {
            0 => return Ok(Vec::new()),
            1 => "0123456789abcdef"
                .chars()
                .map(|c| format!("{prefix}{c}"))
                .collect(),
            _ => vec![prefix.chars().take(2).collect()],
        };
        let mut out = Vec::new();
        for head in partitions {
            let q = Q::table(format!("RP#{head}"), Sk::Begins(prefix.to_owned()));
            self.query_each(&q, limit.clamp(1, 100) as i32, |i| {
                out.push(get_s(&i, "sk")?);
                Ok(out.len() < limit as usize)
            })
            .await?;
            if out.len() >= limit as usize {
                break;
            }
        }
        out.sort();
        out.truncate(limit as usize);
        Ok(out)
    }

    async fn get_request_with_binding(
        &self,
        id: &RequestId,
    ) -> Result<Option<(Request, Option<Binding>)>, StoreError> {
        let Some(r) = self.get_request(id).await? else {
            return Ok(None);
        };
        let b = self.get_binding(&r.channel_id).await?;
        Ok(Some((r, b)))
    }

    async fn update_request(&self, next: &Request, ctx: WriteCtx) -> Result<(), StoreError> {
        let expected = next.version - 1;
        let Some(old) = self.get(keys::request(next.id.as_str())).await? else {
            return Err(StoreError::NotFound);
        };
        if get_n(&old, "version")? != expected {
            return Err(StoreError::Conflict);
        }
        let old_status = get_s(&old, "status")?;
        let row = request_to_row(next, ctx.now);
        let mut tx = Tx::default();
        tx.put(
            &self.table,
            request_item(&row)?,
            Some("version = :e"),
            vals([(":e", n(expected))]),
        )?;
        if old_status != row.status {
            tx.count("requests", &old_status, -1);
            tx.count("requests", &row.status, 1);
        }
        self.commit(&ctx, tx).await
    }

    async fn list_requests(
        &self,
        f: &RequestFilter,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError> {
        let limit = f.limit.clamp(1, 200) as usize;
        let want = limit + 1;
        // The most selective index the filter allows; the rest of the filter is checked on
        // each item read.
        let mut items = if let Some(c) = &f.channel_id {
            self.requests_from("g1", keys::request_by_channel(c), f, want)
                .await?
        } else if let Some(u) = &f.requester_id {
            self.requests_from("g5", keys::request_by_user(u), f, want)
                .await?
        } else if let Some(e) = &f.requester_email {
            self.requests_from("g3", keys::request_by_email(e), f, want)
                .await?
        } else if let Some(a) = &f.account_id {
            self.requests_from("g4", keys::request_by_account(a), f, want)
                .await?
        } else if !f.statuses.is_empty() {
            let mut all = Vec::new();
            for st in &f.statuses {
                all.extend(
                    self.requests_from("g2", keys::request_by_status(st.as_str()), f, want)
                        .await?,
                );
            }
            all.sort_by_key(|r| std::cmp::Reverse(sort_key_of(r)));
            all
        } else {
            self.requests_from("g6", keys::REQUESTS_ALL.to_owned(), f, want)
                .await?
        };
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(Cursor::after)
        } else {
            None
        };
        Ok((items, next))
    }

    async fn grant_history(
        &self,
        requester_email: &str,
        account_id: &str,
        permission_set: Option<&str>,
    ) -> Result<GrantHistory, StoreError> {
        let mut h = GrantHistory::default();
        let q = Q::index("g3", keys::request_by_email(requester_email), Sk::Any);
        self.query_each(&q, 200, |item| {
            let r = request_from_item(&item)?;
            if r.account_id.as_str() == account_id
                && r.permission_set_arn.as_ref().map(|p| p.as_str()) == permission_set
            {
                h.ever_granted |= r.granted_at().is_some();
                h.in_flight |= r.status() == Status::Approved;
            }
            Ok(true)
        })
        .await?;
        Ok(h)
    }

    async fn active_grants_for(
        &self,
        requester_email: &str,
        account_id: &str,
        permission_set: Option<&str>,
        except: &RequestId,
    ) -> Result<Vec<Request>, StoreError> {
        let mut out = Vec::new();
        let q = Q::index("g3", keys::request_by_email(requester_email), Sk::Any);
        self.query_each(&q, 200, |item| {
            if opt_s(&item, "status").as_deref() != Some(Status::Granted.as_str()) {
                return Ok(true);
            }
            let r = request_from_item(&item)?;
            if r.account_id.as_str() == account_id
                && r.permission_set_arn.as_ref().map(|p| p.as_str()) == permission_set
                && &r.id != except
            {
                out.push(r);
            }
            Ok(true)
        })
        .await?;
        // Re-read each from the table: the index may lag a moment behind.
        let mut fresh = Vec::new();
        for r in out {
            if let Some(r) = self.get_request(&r.id).await?
                && r.status() == Status::Granted
            {
                fresh.push(r);
            }
        }
        Ok(fresh)
    }

    async fn requests_missing_job(
        &self,
        status: Status,
        kind: JobKind,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError> {
        let limit = limit.clamp(1, 10_000) as usize;
        let sk = match &after {
            Some(c) => {
                let (at, id) = c.position();
                Sk::Gt(keys::request_sort(at, id))
            }
            None => Sk::Any,
        };
        let q = Q::index("g2", keys::request_by_status(status.as_str()), sk);
        let mut found = Vec::new();
        let mut start = None;
        let mut exhausted = false;
        while found.len() < limit {
            let (items, next) = self.query_page(&q, 100, start.take()).await?;
            let page = items
                .iter()
                .map(request_from_item)
                .collect::<Result<Vec<_>, _>>()?;
            let job_keys: Vec<(String, String)> = page
                .iter()
                .map(|r| keys::job(kind.as_str(), r.id.as_str()))
                .collect();
            let have: std::collections::HashSet<String> = self
                .batch_get(job_keys)
                .await?
                .iter()
                .filter_map(|j| opt_s(j, "request_id"))
                .collect();
            for r in page {
                if found.len() == limit {
                    break;
                }
                if !have.contains(r.id.as_str()) {
                    found.push(r);
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        let next = (!exhausted || found.len() == limit)
            .then(|| found.last().map(Cursor::after))
            .flatten();
        Ok((found, next))
    }
}

#[async_trait]
impl AuditStore for DynamoStore {
    async fn record(&self, ctx: WriteCtx) -> Result<(), StoreError> {
        self.commit(&ctx, Tx::default()).await
    }

    async fn list_audit(
        &self,
        f: &AuditFilter,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), StoreError> {
        let limit = f.limit.clamp(1, 1000) as usize;
        let want = limit + 1;
        let mut items = if let Some(v) = &f.request_id {
            self.audit_from_index("g1", keys::audit_by_request(v), f, want)
                .await?
        } else if let Some(actor) = &f.actor {
            // By user id or by email: two indexes, merged in sequence order.
            let mut by_id = self
                .audit_from_index("g3", keys::audit_by_actor(actor), f, want)
                .await?;
            let by_email = self
                .audit_from_index("g6", keys::audit_by_email(actor), f, want)
                .await?;
            by_id.extend(
                by_email
                    .into_iter()
                    .filter(|e| e.draft.actor_id.as_deref() != Some(actor.as_str())),
            );
            by_id.sort_by_key(|e| e.seq);
            by_id
        } else if let Some(v) = &f.channel_id {
            self.audit_from_index("g5", keys::audit_by_channel(v), f, want)
                .await?
        } else if let Some(v) = &f.account_id {
            self.audit_from_index("g4", keys::audit_by_account(v), f, want)
                .await?
        } else if let Some(v) = &f.kind {
            self.audit_from_index("g2", keys::audit_by_type(v), f, want)
                .await?
        } else {
            let (head, _) = self.head().await?;
            let mut out = Vec::new();
            self.audit_range(f.after_seq.unwrap_or(0), head, |item| {
                let e = audit_from_item(&item)?;
                if audit_matches(&e, f) {
                    out.push(e);
                }
                Ok(out.len() < want)
            })
            .await?;
            out
        };
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.seq)
        } else {
            None
        };
        Ok((items, next))
    }

    async fn verify_audit_with(
        &self,
        opts: VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    ) -> Result<VerifyReport, VerifyError> {
        let (head_seq, _) = self.head().await?;
        let mut v = ChainVerifier::default();
        let mut from_checkpoint = 0;
        if !opts.full {
            let q = Q::table(keys::CHECKPOINT_PK, Sk::Le(keys::pad(head_seq))).backwards();
            let (cps, _) = self.query_page(&q, 1, None).await?;
            if let Some(cp) = cps.first() {
                let seq = get_n(cp, "seq")?;
                let hash = get_s(cp, "hash")?;
                let stored = self.get(keys::audit(seq)).await?;
                if stored.as_ref().and_then(|e| opt_s(e, "hash")).as_deref() != Some(hash.as_str())
                {
                    return Err(ChainError::Tampered(seq).into());
                }
                v = ChainVerifier::resume(seq, &hash);
                from_checkpoint = seq;
            }
        }
        let from_seq = v.last_seq() + 1;
        let mut buf = Vec::with_capacity(4096);
        let mut chain_err = None;
        let mut since_progress = 0;
        self.audit_range(v.last_seq(), head_seq, |item| {
            let text = |name: &str| {
                item.get(name)
                    .and_then(|a| a.as_s().ok())
                    .map(String::as_bytes)
            };
            let e = RawEvent {
                seq: get_n(&item, "seq")?,
                at_ms: get_n(&item, "at")?,
                kind: text("type").unwrap_or_default(),
                actor_id: text("actor_id"),
                actor_email: text("actor_email"),
                request_id: text("request_id"),
                channel_id: text("channel_id"),
                account_id: text("account_id"),
                data: text("data").unwrap_or_default(),
                prev_hash: text("prev").unwrap_or_default(),
                hash: text("hash").unwrap_or_default(),
            };
            if let Err(err) = v.push_raw(&e, &mut buf) {
                chain_err = Some(err);
                return Ok(false);
            }
            since_progress += 1;
            if since_progress == 1000 {
                since_progress = 0;
                progress(VerifyProgress {
                    from_seq,
                    verified_seq: v.last_seq(),
                    head_seq,
                });
            }
            Ok(true)
        })
        .await?;
        if let Some(e) = chain_err {
            return Err(e.into());
        }
        progress(VerifyProgress {
            from_seq,
            verified_seq: v.last_seq(),
            head_seq,
        });
        let checked = v.last_seq() - from_seq + 1;
        let head_hash = v.prev_hash().to_owned();
        let head_seq = v.finish(head_seq)?;
        if opts.record_checkpoint && head_seq > from_checkpoint {
            let mut item = key(keys::CHECKPOINT_PK.into(), keys::pad(head_seq));
            item.insert("seq".into(), n(head_seq));
            item.insert("hash".into(), s(head_hash));
            item.insert("verified_at".into(), n(opts.now_ms));
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(backend)?;
        }
        Ok(VerifyReport {
            head_seq,
            from_checkpoint,
            checked,
        })
    }
}

const KINDS: [JobKind; 3] = [JobKind::Grant, JobKind::Revoke, JobKind::Timeout];

#[async_trait]
impl JobStore for DynamoStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let limit = limit.max(1) as usize;
        // Due jobs of every kind, earliest first; a leased one is skipped.
        let mut due = Vec::new();
        for kind in KINDS {
            let q = Q::index(
                "g1",
                keys::job_due(kind.as_str()),
                Sk::Le(format!("{}~", keys::pad(now_ms))),
            );
            let mut seen = 0;
            self.query_each(&q, (limit as i32).clamp(10, 500), |item| {
                let free = opt_n(&item, "lease_until")?.is_none_or(|u| u < now_ms);
                if free {
                    due.push(job_from_item(&item)?);
                    seen += 1;
                }
                Ok(seen < limit)
            })
            .await?;
        }
        due.sort_by_key(|j| j.due_ms);
        due.truncate(limit);
        let mut claimed = Vec::new();
        for j in due {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(
                    keys::job(j.kind.as_str(), j.request_id.as_str()).0,
                    "J".into(),
                )))
                .update_expression("SET lease_owner = :o, lease_until = :u ADD attempts :one")
                .condition_expression(
                    "due = :d AND (attribute_not_exists(lease_until) OR lease_until < :now)",
                )
                .set_expression_attribute_values(vals([
                    (":o", s(owner)),
                    (":u", n(now_ms + lease_ms)),
                    (":one", n(1)),
                    (":d", n(j.due_ms)),
                    (":now", n(now_ms)),
                ]))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match r {
                Ok(out) => {
                    if let Some(item) = out.attributes {
                        claimed.push(job_from_item(&item)?);
                    }
                }
                Err(e) if Self::is_condition(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(claimed)
    }

    async fn renew_lease(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                keys::job(kind.as_str(), request_id.as_str()).0,
                "J".into(),
            )))
            .update_expression("SET lease_until = :u")
            .condition_expression("lease_owner = :o")
            .set_expression_attribute_values(vals([(":u", n(until_ms)), (":o", s(owner))]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if Self::is_condition(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    /// Nothing: on DynamoDB several processes (function instances, servers) share the table, so
    /// no one of them may free the others' leases; a lease of a process that died runs out by
    /// itself within its (short) term.
    async fn release_all_leases(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn retry_job(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        retry_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(2000).collect();
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                keys::job(kind.as_str(), request_id.as_str()).0,
                "J".into(),
            )))
            .update_expression(
                "SET due = :d, last_error = :e, g1sk = :g1s, g2pk = :g2p, g2sk = :g2s \
                 REMOVE lease_owner, lease_until",
            )
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(vals([
                (":d", n(retry_ms)),
                (":e", s(error)),
                (":g1s", s(keys::job_due_sort(retry_ms, request_id.as_str()))),
                (":g2p", s(keys::job_failed(kind.as_str()))),
                (":g2s", s(request_id.as_str())),
            ]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if Self::is_condition(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn next_job_due(&self) -> Result<Option<i64>, StoreError> {
        let mut best: Option<i64> = None;
        for kind in KINDS {
            let (items, _) = self
                .query_page(
                    &Q::index("g1", keys::job_due(kind.as_str()), Sk::Any),
                    1,
                    None,
                )
                .await?;
            if let Some(i) = items.first() {
                let d = get_n(i, "due")?;
                best = Some(best.map_or(d, |b| b.min(d)));
            }
        }
        Ok(best)
    }

    async fn list_jobs(&self, kind: Option<JobKind>) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for k in KINDS {
            if kind.is_some_and(|want| want != k) {
                continue;
            }
            for item in self
                .query_all(&Q::index("g1", keys::job_due(k.as_str()), Sk::Any))
                .await?
            {
                out.push(job_from_item(&item)?);
            }
        }
        out.sort_by_key(|j| j.due_ms);
        Ok(out)
    }

    async fn overdue_revokes(&self, now_ms: i64) -> Result<Vec<(Job, Request)>, StoreError> {
        let kind = JobKind::Revoke.as_str();
        let mut jobs = Vec::new();
        for item in self
            .query_all(&Q::index(
                "g1",
                keys::job_due(kind),
                Sk::Lt(keys::pad(now_ms)),
            ))
            .await?
        {
            jobs.push(job_from_item(&item)?);
        }
        for item in self
            .query_all(&Q::index("g2", keys::job_failed(kind), Sk::Any))
            .await?
        {
            let j = job_from_item(&item)?;
            if j.due_ms >= now_ms {
                jobs.push(j);
            }
        }
        let reqs = self
            .batch_get(
                jobs.iter()
                    .map(|j| keys::request(j.request_id.as_str()))
                    .collect(),
            )
            .await?;
        let mut by_id = HashMap::new();
        for item in &reqs {
            let r = request_from_item(item)?;
            by_id.insert(r.id.as_str().to_owned(), r);
        }
        Ok(jobs
            .into_iter()
            .filter_map(|j| by_id.get(j.request_id.as_str()).cloned().map(|r| (j, r)))
            .collect())
    }
}

#[async_trait]
impl PrincipalStore for DynamoStore {
    async fn get_assignment(&self, principal: &str) -> Result<Option<bool>, StoreError> {
        Ok(self
            .get(keys::assignment(principal))
            .await?
            .map(|i| matches!(i.get("standing"), Some(Av::Bool(true)))))
    }

    async fn lock_principal(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = keys::principal_lock(principal);
        let mut item = key(pk, sk);
        item.insert("owner".into(), s(owner));
        item.insert("until_ms".into(), n(until_ms));
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR until_ms < :now OR #o = :o")
            .expression_attribute_names("#o", "owner")
            .set_expression_attribute_values(vals([(":now", n(now_ms)), (":o", s(owner))]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if Self::is_condition(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn renew_principal_lock(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = keys::principal_lock(principal);
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression("SET until_ms = :u")
            .condition_expression("#o = :o")
            .expression_attribute_names("#o", "owner")
            .set_expression_attribute_values(vals([(":u", n(until_ms)), (":o", s(owner))]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if Self::is_condition(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn unlock_principal(&self, principal: &str, owner: &str) -> Result<(), StoreError> {
        let (pk, sk) = keys::principal_lock(principal);
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .condition_expression("#o = :o")
            .expression_attribute_names("#o", "owner")
            .set_expression_attribute_values(vals([(":o", s(owner))]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if Self::is_condition(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

#[async_trait]
impl OutboxStore for DynamoStore {
    async fn due_callbacks(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let limit = limit.clamp(1, 1000) as usize;
        let q = Q::index(
            "g2",
            keys::OUTBOX_DUE,
            Sk::Le(format!("{}~", keys::pad(now_ms))),
        );
        // Requests with a callback due; for each, its first pending callback (the one to send
        // next, in order), if that one is due.
        let mut requests = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.query_each(&q, 200, |item| {
            let rid = get_s(&item, "request_id")?;
            if seen.insert(rid.clone()) {
                requests.push(rid);
            }
            Ok(requests.len() < limit)
        })
        .await?;
        let mut out = Vec::new();
        for rid in requests {
            let q = Q::index("g3", keys::outbox_by_request(&rid), Sk::Any);
            let mut head = None;
            self.query_each(&q, 20, |item| {
                if opt_s(&item, "status").as_deref() == Some("PENDING") {
                    head = Some(outbox_from_item(&item)?);
                    return Ok(false);
                }
                Ok(true)
            })
            .await?;
            if let Some(h) = head
                && h.next_attempt_ms <= now_ms
            {
                out.push(h);
            }
        }
        Ok(out)
    }

    async fn claim_callback(
        &self,
        event_id: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(keys::outbox(event_id).0, "O".into())))
            .update_expression("SET lease_owner = :o, lease_until = :u")
            .condition_expression(
                "#st = :p AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :o)",
            )
            .expression_attribute_names("#st", "status")
            .set_expression_attribute_values(vals([
                (":o", s(owner)),
                (":u", n(until_ms)),
                (":p", s("PENDING")),
                (":now", n(now_ms)),
            ]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if Self::is_condition(&e) => Ok(false),
            Err(e) => Err(backend(e)),
        }
    }

    async fn callback_delivered(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.move_callback(
            event_id,
            "DELIVERED",
            "delivered_at = :at",
            HashMap::from([(":at".to_owned(), n(now_ms))]),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn callback_failed(
        &self,
        event_id: &str,
        retry_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), StoreError> {
        let to = if dead { "DEAD" } else { "PENDING" };
        let error: String = error.chars().take(2000).collect();
        self.move_callback(
            event_id,
            to,
            "attempts = attempts + :one, next_at = :next, last_error = :e",
            HashMap::from([
                (":one".to_owned(), n(1)),
                (":next".to_owned(), n(retry_ms)),
                (":e".to_owned(), s(error)),
            ]),
            None,
        )
        .await
        .map(|_| ())
    }

    async fn list_callbacks(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let (items, _) = self
            .query_page(
                &Q::index("g1", keys::outbox_by_status(status), Sk::Any),
                limit.clamp(1, 1000) as i32,
                None,
            )
            .await?;
        items.iter().map(outbox_from_item).collect()
    }

    async fn resend_callback(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError> {
        if self
            .move_callback(
                event_id,
                "PENDING",
                "next_at = :next",
                HashMap::from([(":next".to_owned(), n(now_ms))]),
                Some("DEAD"),
            )
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn prune_callbacks(&self, before_ms: i64, undelivered: bool) -> Result<u64, StoreError> {
        let mut statuses = vec!["DELIVERED", "DEAD"];
        if undelivered {
            statuses.push("PENDING");
        }
        let mut pruned = 0u64;
        for st in statuses {
            let q = Q::index(
                "g1",
                keys::outbox_by_status(st),
                Sk::Lt(keys::pad(before_ms)),
            );
            loop {
                let (items, _) = self.query_page(&q, 25, None).await?;
                if items.is_empty() {
                    break;
                }
                let mut tx = Tx::default();
                for item in &items {
                    tx.delete(
                        &self.table,
                        key(get_s(item, "pk")?, get_s(item, "sk")?),
                        Some("#st = :st"),
                        Some(HashMap::from([("#st".to_owned(), "status".to_owned())])),
                        vals([(":st", s(st))]),
                    )?;
                }
                tx.count("outbox", st, -(items.len() as i64));
                self.add_counts(&mut tx)?;
                match self.send_tx(tx.items).await {
                    Ok(()) => pruned += items.len() as u64,
                    // One of them moved (a resend): read the page again.
                    Err(TxFailure::Condition(_) | TxFailure::Conflict) => {}
                    Err(TxFailure::Other(e)) => return Err(e),
                }
                // The index may lag the deletes for a moment; a page that comes back the same
                // is left for the next run rather than spun on.
                if items.len() < 25 {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

/// Nonces in their own table, one item each, with a time-to-live: inserted, or an expired one
/// reused, on a condition; anything else is a replay.
impl NonceStore for DynamoStore {
    fn check_and_insert<'a>(
        &'a self,
        nonce: &'a str,
        now: i64,
        expires_at: i64,
    ) -> NonceFuture<'a> {
        Box::pin(async move {
            let item = HashMap::from([
                ("pk".to_owned(), s(nonce)),
                ("expires_at".to_owned(), n(expires_at)),
                ("ttl".to_owned(), n(expires_at)),
            ]);
            let r = self
                .client
                .put_item()
                .table_name(&self.nonces)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
                .set_expression_attribute_values(vals([(":now", n(now))]))
                .send()
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(e) if Self::is_condition(&e) => Err(NonceError::Replayed),
                Err(e) => Err(NonceError::Unavailable(format!(
                    "dynamodb: {}",
                    DisplayErrorContext(&e)
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_name_both_tables() {
        assert_eq!(
            parse_url("dynamodb://jit-state").unwrap(),
            ("jit-state".into(), "jit-nonces".into())
        );
        assert_eq!(
            parse_url("dynamodb://t?nonces=n").unwrap(),
            ("t".into(), "n".into())
        );
        assert!(matches!(
            parse_url("dynamodb://"),
            Err(StoreError::InvalidUrl(_))
        ));
        assert!(matches!(
            parse_url("dynamodb://t?region=x"),
            Err(StoreError::InvalidUrl(_))
        ));
    }
}
