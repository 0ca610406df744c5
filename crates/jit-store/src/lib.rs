//! Storage. One [`Store`] trait; one SQL implementation ([`SqlStore`]) that runs on SQLite (the
//! embedded default: WAL, one writer connection) and PostgreSQL (for several servers), with
//! migrations per backend under `migrations/<backend>/` applied at start.
//!
//! Invariants kept here:
//! - a state change and its audit events commit in one transaction, or nothing does;
//! - every update is compare-and-set on the row's `version`, so two servers never both apply
//!   the same transition (the loser gets [`StoreError::Conflict`]);
//! - an `Idempotency-Key` record is written in the same transaction as the change it answers.

pub mod dynamo;
mod queries;
mod rows;
mod sql;
mod verify;

pub use dynamo::DynamoStore;
pub use rows::ms as unix_ms;
pub use sql::{DatabaseUrl, Dialect, QueryPlan, SchemaStatus, SqlStore};

use async_trait::async_trait;
use jit_core::audit::{AuditDraft, AuditEvent, ChainError};
use jit_core::policy::Binding;
use jit_core::request::{Request, Status};
use jit_core::types::{ChannelId, RequestId};
use jit_proto::nonce::NonceStore;
use time::OffsetDateTime;

/// Every store trait, for `use jit_store::prelude::*` where a `dyn Store` is called.
pub mod prelude {
    pub use crate::{
        AuditStore, BindingStore, JobStore, OpsStore, OutboxStore, PrincipalStore, RequestStore,
        Store,
    };
    pub use jit_proto::nonce::NonceStore;
}

/// Where a paged list of requests resumes: opaque to callers, who hand back what a page gave
/// them (the API passes it out and in as `next_token`). Every backend pages requests by
/// `(created_at, id)`, so the token is that position; its text form is the one earlier
/// versions issued, so a token survives an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    at_ms: i64,
    id: RequestId,
}

/// A token that no store issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this store issued")]
pub struct InvalidCursor;

impl Cursor {
    /// The position just after `req` in a newest-first (or oldest-first) walk.
    pub fn after(req: &Request) -> Self {
        Self {
            at_ms: rows::ms(req.created_at),
            id: req.id.clone(),
        }
    }

    /// Parses a token from [`Cursor::token`].
    pub fn parse(token: &str) -> Result<Self, InvalidCursor> {
        let (ms, id) = token.split_once('_').ok_or(InvalidCursor)?;
        Ok(Self {
            at_ms: ms.parse().map_err(|_| InvalidCursor)?,
            id: RequestId::parse(id).map_err(|_| InvalidCursor)?,
        })
    }

    /// The text a client hands back.
    pub fn token(&self) -> String {
        format!("{}_{}", self.at_ms, self.id.as_str())
    }

    /// `(created_at ms, id)`: for backends.
    pub(crate) fn position(&self) -> (i64, &str) {
        (self.at_ms, self.id.as_str())
    }
}

/// Where the AWS SDK looks, for a `dynamodb://` store (the server's `aws_region` and
/// `aws_endpoint_url`). Other stores never build an SDK client.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Region (else the SDK's chain: `AWS_REGION`, the profile).
    pub region: Option<String>,
    /// Endpoint override (a VPC endpoint; moto or DynamoDB Local in tests).
    pub endpoint_url: Option<String>,
    /// Told of every committed job change (DynamoDB only: the Lambda function keeps one
    /// EventBridge schedule per job with it).
    pub job_hook: Option<std::sync::Arc<dyn JobHook>>,
}

/// Hears of job changes once they are committed.
#[async_trait]
pub trait JobHook: Send + Sync + std::fmt::Debug {
    /// The jobs a committed write scheduled, moved or removed. Failing here loses nothing: the
    /// job is in the store, and a periodic pass finds it.
    async fn committed(&self, jobs: &[JobOp]);
}

/// Opens the store a database URL names, by its scheme: `sqlite://PATH`, `postgres://…` or
/// `postgresql://…` ([`SqlStore`], migrations applied), or
/// `dynamodb://STATE_TABLE?nonces=NONCES_TABLE` ([`DynamoStore`], tables made by
/// `deploy/aws/template.yaml`). Any other URL is refused, naming only its scheme.
pub async fn open(url: &str, aws: &AwsOptions) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("dynamodb://") {
        dynamo::parse_url(url)?;
        let sdk = jit_keys::aws_sdk_config(aws.region.clone(), aws.endpoint_url.clone()).await;
        let mut store = DynamoStore::open(url, &sdk).await?;
        if let Some(h) = &aws.job_hook {
            store = store.with_job_hook(h.clone());
        }
        return Ok(std::sync::Arc::new(store));
    }
    Ok(std::sync::Arc::new(SqlStore::open(url).await?))
}

/// Storage failures. `Conflict` and `NotFound` are expected outcomes; `Backend` is not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else changed the row first (compare-and-set lost).
    #[error("conflict: the record was changed by someone else; reload and retry")]
    Conflict,
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// The same idempotency key was used with a different request body.
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Backend(String),
    /// A stored value no longer parses (a hand edit, or a bug).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL is not one the store accepts.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

/// An idempotency record: the first answer to a POST with a given key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemRecord {
    /// Route and actor the key is scoped to.
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request body, to refuse a reused key with another body.
    pub request_hash: String,
    /// HTTP status of the first answer.
    pub status: u16,
    /// JSON body of the first answer.
    pub response: String,
}

/// What accompanies every write, in the same transaction: audit events, the idempotency
/// record, scheduled jobs, assignment records and callback events.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// Events appended in the same transaction.
    pub audit: Vec<AuditDraft>,
    /// The answer to remember for the request's `Idempotency-Key`, if it had one.
    pub idem: Option<IdemRecord>,
    /// Now.
    pub now: OffsetDateTime,
    /// Jobs to schedule, move or remove.
    pub jobs: Vec<JobOp>,
    /// Assignment records to add or remove.
    pub assignments: Vec<AssignmentOp>,
    /// Callback events to queue.
    pub outbox: Vec<OutboxDraft>,
}

impl WriteCtx {
    /// A write with one audit event.
    pub fn new(audit: AuditDraft, now: OffsetDateTime) -> Self {
        Self::with_audit(vec![audit], now)
    }

    /// A write with these audit events (possibly none).
    pub fn with_audit(audit: Vec<AuditDraft>, now: OffsetDateTime) -> Self {
        Self {
            audit,
            idem: None,
            now,
            jobs: vec![],
            assignments: vec![],
            outbox: vec![],
        }
    }
}

/// Kinds of scheduled work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Put an approved grant in place.
    Grant,
    /// Remove a grant at its end (or at once, after a revoke).
    Revoke,
    /// Time out a pending request.
    Timeout,
}

impl JobKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Timeout => "timeout",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grant" => Some(Self::Grant),
            "revoke" => Some(Self::Revoke),
            "timeout" => Some(Self::Timeout),
            _ => None,
        }
    }

    /// The job id for `kind` on `request_id` (one job of each kind per request).
    pub fn id_for(self, request_id: &str) -> String {
        format!("{}:{request_id}", self.as_str())
    }
}

/// A change to the job table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOp {
    /// Schedule `kind` for the request at `due_ms`, or move an existing one there.
    Schedule {
        /// What.
        kind: JobKind,
        /// For which request.
        request_id: RequestId,
        /// When (unix ms).
        due_ms: i64,
    },
    /// Schedule `kind` at `due_ms` unless the request already has such a job (the reconciler:
    /// never moves or unleases a job that exists).
    Ensure {
        /// What.
        kind: JobKind,
        /// For which request.
        request_id: RequestId,
        /// When (unix ms).
        due_ms: i64,
    },
    /// Remove the job (done, or no longer needed).
    Remove {
        /// What.
        kind: JobKind,
        /// For which request.
        request_id: RequestId,
    },
}

/// A change to the record of assignments this system holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentOp {
    /// The principal (user, account, permission set) is now assigned; `standing` when it was
    /// already assigned before any grant of ours and must never be removed by us.
    Add {
        /// `email|account|permission-set`.
        principal: String,
        /// Pre-existing assignment.
        standing: bool,
    },
    /// No grant of ours covers the principal any more.
    Remove {
        /// `email|account|permission-set`.
        principal: String,
    },
}

/// A callback event to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDraft {
    /// Unique id; receivers dedupe by it.
    pub event_id: String,
    /// The request it is about (delivery is in order per request).
    pub request_id: RequestId,
    /// JSON body.
    pub payload: String,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What.
    pub kind: JobKind,
    /// For which request.
    pub request_id: RequestId,
    /// When it is due (unix ms).
    pub due_ms: i64,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// When a key last verified a request at one verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    /// `backend` or `callback`.
    pub ring: String,
    /// Which process saw it (e.g. `backend:<id>`, `bridge:<id>`).
    pub verifier: String,
    /// The key.
    pub key_id: String,
    /// Unix seconds.
    pub last_used_unix: i64,
}

/// Counts for the metrics endpoint, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Requests by status name (`PENDING`, `GRANTED`, …); statuses with none are absent.
    pub requests_by_status: Vec<(String, i64)>,
    /// Callback events by outbox status (`PENDING`, `DELIVERED`, `DEAD`).
    pub outbox_by_status: Vec<(String, i64)>,
    /// Creation time (ms) of the oldest undelivered callback still being tried.
    pub outbox_oldest_pending_ms: Option<i64>,
    /// Jobs by kind (`grant`, `revoke`, `timeout`) due before the cut-off given or that have
    /// failed at least once (a retry moves the due time on, but the work is still late).
    pub jobs_late_by_kind: Vec<(String, i64)>,
}

/// A callback event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique id.
    pub event_id: String,
    /// The request.
    pub request_id: RequestId,
    /// Order within the request.
    pub seq: i64,
    /// JSON body.
    pub payload: String,
    /// `PENDING`, `DELIVERED` or `DEAD`.
    pub status: String,
    /// Failed deliveries so far.
    pub attempts: i64,
    /// Next try (unix ms).
    pub next_attempt_ms: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was queued (unix ms).
    pub created_ms: i64,
}

/// Filters for listing requests (all optional; combined with AND).
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Channel.
    pub channel_id: Option<String>,
    /// Account.
    pub account_id: Option<String>,
    /// Requester email (exact, case-insensitive).
    pub requester_email: Option<String>,
    /// Requester user id.
    pub requester_id: Option<String>,
    /// Statuses (any of).
    pub statuses: Vec<Status>,
    /// Created at or after (unix ms).
    pub start_ms: Option<i64>,
    /// Created before (unix ms).
    pub end_ms: Option<i64>,
    /// Page size (1-200).
    pub limit: u32,
    /// Resume after this position (from a previous page).
    pub after: Option<Cursor>,
}

/// Filters for exporting audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Request.
    pub request_id: Option<String>,
    /// Account.
    pub account_id: Option<String>,
    /// Channel.
    pub channel_id: Option<String>,
    /// Actor (user id or email).
    pub actor: Option<String>,
    /// Event type.
    pub kind: Option<String>,
    /// At or after (unix ms).
    pub since_ms: Option<i64>,
    /// Before (unix ms).
    pub until_ms: Option<i64>,
    /// Page size (1-1000).
    pub limit: u32,
    /// Resume after this sequence number.
    pub after_seq: Option<i64>,
}

/// See [`Store::grant_history`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantHistory {
    /// A request of ours was granted this access at some time.
    pub ever_granted: bool,
    /// A request is APPROVED: its grant is being applied now.
    pub in_flight: bool,
}

/// How to verify the audit chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// From the first event, ignoring checkpoints.
    pub full: bool,
    /// Record the verified head as a checkpoint (not on a read-only store).
    pub record_checkpoint: bool,
    /// When (unix ms), for the checkpoint's record.
    pub now_ms: i64,
}

/// Where a verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    /// The first event this run checks.
    pub from_seq: i64,
    /// The last event checked so far.
    pub verified_seq: i64,
    /// The head it verifies up to.
    pub head_seq: i64,
}

/// A verification that found the chain whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// The head verified up to: the number of events in the chain.
    pub head_seq: i64,
    /// The checkpoint this run started after (0: from the first event).
    pub from_checkpoint: i64,
    /// Events checked by this run.
    pub checked: i64,
}

/// The result of verifying the audit chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Liveness, key-use records, idempotency answers, nonce purge and the counts behind `/metrics`.
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Records when keys last verified a request at a verifier (newer times win).
    async fn record_key_usage(
        &self,
        ring: &str,
        verifier: &str,
        keys: &[(String, i64)],
    ) -> Result<(), StoreError>;

    /// Every recorded key use.
    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError>;

    /// Counts for `/metrics`: requests by status, the outbox, and late jobs: due before
    /// `late_before_ms` or failed at least once (a revoke job that is late is an overdue
    /// revocation).
    async fn gauges(&self, late_before_ms: i64) -> Result<Gauges, StoreError>;

    /// The stored answer for an idempotency key.
    async fn idempotency_get(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdemRecord>, StoreError>;

    /// Deletes expired nonces; returns how many.
    async fn purge_nonces(&self, now_unix: i64) -> Result<u64, StoreError>;
}

/// Channel bindings (compare-and-set on `version`).
#[async_trait]
pub trait BindingStore: Send + Sync {
    /// A channel's binding.
    async fn get_binding(&self, channel: &ChannelId) -> Result<Option<Binding>, StoreError>;

    /// Every binding (for the drift check).
    async fn list_bindings(&self) -> Result<Vec<Binding>, StoreError>;

    /// Creates (`expected_version` = 0) or updates (compare-and-set) a binding. Returns the
    /// stored binding with its new version.
    async fn save_binding(
        &self,
        binding: &Binding,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<Binding, StoreError>;

    /// Removes a binding (compare-and-set).
    async fn delete_binding(
        &self,
        channel: &ChannelId,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<(), StoreError>;
}

/// Access requests: one row per request, compare-and-set on `version`, paged newest first.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Records the approval card's post id (not a state change: no version bump, no event).
    async fn set_post_id(&self, id: &RequestId, post_id: &str) -> Result<(), StoreError>;

    /// Inserts a new request.
    async fn create_request(&self, req: &Request, ctx: WriteCtx) -> Result<(), StoreError>;

    /// One request.
    async fn get_request(&self, id: &RequestId) -> Result<Option<Request>, StoreError>;

    /// Ids of requests whose id starts with `prefix` (lowercase; at most `limit`, in id
    /// order): how an 8-character id from the plugin's status table finds its request. One
    /// index range scan on the primary key.
    async fn request_ids_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// One request with its channel's binding (one round trip; transitions need both).
    async fn get_request_with_binding(
        &self,
        id: &RequestId,
    ) -> Result<Option<(Request, Option<Binding>)>, StoreError>;

    /// Stores `next` if the stored row still has version `next.version - 1`.
    async fn update_request(&self, next: &Request, ctx: WriteCtx) -> Result<(), StoreError>;

    /// Requests, newest first.
    async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError>;

    /// What our records say about one user's access to one account and permission set, for
    /// the drift check: whether we ever granted it, and whether a grant is being applied now.
    /// Costs one indexed lookup of that user's requests on that account.
    async fn grant_history(
        &self,
        requester_email: &str,
        account_id: &str,
        permission_set: Option<&str>,
    ) -> Result<GrantHistory, StoreError>;

    /// Requests that hold access to the same principal (GRANTED), other than `except`.
    async fn active_grants_for(
        &self,
        requester_email: &str,
        account_id: &str,
        permission_set: Option<&str>,
        except: &RequestId,
    ) -> Result<Vec<Request>, StoreError>;

    /// Requests in `status` that have no job of `kind`, oldest first, a page of at most
    /// `limit` after `after`, with the cursor of the next page (none after the last). The
    /// reconciler walks every page, so no live request goes unseen however many there are.
    async fn requests_missing_job(
        &self,
        status: Status,
        kind: JobKind,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError>;
}

/// The hash-chained audit trail: appended only with a change (or through [`AuditStore::record`]), read in sequence order, verified in pages.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Commits only what `ctx` carries (audit events, jobs, assignment records, callbacks).
    async fn record(&self, ctx: WriteCtx) -> Result<(), StoreError>;

    /// Audit events in sequence order.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), StoreError>;

    /// Walks the whole audit chain; returns the number of events.
    async fn verify_audit(&self) -> Result<i64, VerifyError> {
        let opts = VerifyOptions {
            full: true,
            record_checkpoint: false,
            now_ms: 0,
        };
        Ok(self.verify_audit_with(opts, &|_| {}).await?.head_seq)
    }

    /// Verifies the audit chain in pages of bounded memory: from the newest verified
    /// checkpoint (after checking that its event still carries the checkpoint's hash), or
    /// from the first event with `full`. Calls `progress` after each page; records the head
    /// as a new checkpoint when asked and the chain holds.
    async fn verify_audit_with(
        &self,
        opts: VerifyOptions,
        progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    ) -> Result<VerifyReport, VerifyError>;
}

/// Scheduled work (grant, revoke, timeout), leased to one worker at a time.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Leases up to `limit` jobs due at `now_ms` to `owner` for `lease_ms` (a job leased by
    /// another live server is skipped: `FOR UPDATE SKIP LOCKED` on PostgreSQL). Each claim
    /// counts as an attempt, so a job re-run after a crash knows it ran before.
    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Extends `owner`'s lease on a running job to `until_ms` (a heartbeat: a server that dies
    /// stops renewing, and its jobs are free again once the short lease runs out).
    async fn renew_lease(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError>;

    /// Releases every lease (SQLite at start: no other process can hold one).
    async fn release_all_leases(&self) -> Result<(), StoreError>;

    /// Records a failed attempt: the job is retried at `retry_ms` and its lease released (the
    /// attempt was already counted when it was claimed).
    async fn retry_job(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        retry_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// The earliest due time of any job (arms the in-process timer).
    async fn next_job_due(&self) -> Result<Option<i64>, StoreError>;

    /// All jobs of a kind (or all), earliest first. For tests and tools: the periodic tasks
    /// use the indexed reads below.
    async fn list_jobs(&self, kind: Option<JobKind>) -> Result<Vec<Job>, StoreError>;

    /// Revoke jobs that may be overdue at `now_ms`: due before it, or failed at least once
    /// (a retry moves the due time on), each with its request. One indexed query: the cost is
    /// in the number overdue, not in the number of live grants.
    async fn overdue_revokes(&self, now_ms: i64) -> Result<Vec<(Job, Request)>, StoreError>;
}

/// Per-principal records: the assignments we hold and the lock that runs one principal's jobs one at a time across servers.
#[async_trait]
pub trait PrincipalStore: Send + Sync {
    /// Whether the assignment record exists, and whether it is standing.
    async fn get_assignment(&self, principal: &str) -> Result<Option<bool>, StoreError>;

    /// Takes the lock of one principal (user, account, permission set) for `owner` until
    /// `until_ms`: false while another owner holds an unexpired one. Across every server on the
    /// database, the jobs of one principal run one at a time.
    async fn lock_principal(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Extends `owner`'s lock; false when it was lost (expired and taken).
    async fn renew_principal_lock(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Releases `owner`'s lock.
    async fn unlock_principal(&self, principal: &str, owner: &str) -> Result<(), StoreError>;
}

/// Callback events queued with the change that caused them, delivered in order per request.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// The next deliverable callback of each request whose retry time has come (at most
    /// `limit`), in order per request.
    async fn due_callbacks(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Leases a due callback to `owner` until `until_ms`, so no other dispatcher delivers it at
    /// the same time; false when another holds an unexpired lease (or it is no longer pending).
    /// Delivered and failed clear the lease.
    async fn claim_callback(
        &self,
        event_id: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Marks a callback delivered.
    async fn callback_delivered(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Records a failed delivery: retried at `retry_ms`, or dead when `dead`.
    async fn callback_failed(
        &self,
        event_id: &str,
        retry_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), StoreError>;

    /// Callbacks in a status (`PENDING`, `DELIVERED`, `DEAD`), oldest first.
    async fn list_callbacks(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Puts a dead callback back in the queue, due at `now_ms`.
    async fn resend_callback(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Deletes delivered and dead callback rows created before `before_ms` (and, with
    /// `undelivered`, pending ones too: for a deployment with no callback URL); returns how
    /// many. The audit trail is never pruned here.
    async fn prune_callbacks(&self, before_ms: i64, undelivered: bool) -> Result<u64, StoreError>;
}

/// Everything the backend persists: every focused trait, and durable nonces. Implemented by
/// [`SqlStore`] (SQLite, PostgreSQL) and, with the `dynamodb` feature, `DynamoStore`;
/// [`open`] picks one from the database URL's scheme.
pub trait Store:
    OpsStore
    + BindingStore
    + RequestStore
    + AuditStore
    + JobStore
    + PrincipalStore
    + OutboxStore
    + NonceStore
    + std::fmt::Debug
{
}

impl<
    T: OpsStore
        + BindingStore
        + RequestStore
        + AuditStore
        + JobStore
        + PrincipalStore
        + OutboxStore
        + NonceStore
        + std::fmt::Debug,
> Store for T
{
}

/// Each committed audit event, once, on its own log target (`jit_audit`), so a log pipeline can
/// route the trail apart from operational noise. The database stays the record; this is a copy.
pub(crate) fn log_audit(drafts: &[AuditDraft]) {
    for d in drafts {
        tracing::info!(
            target: "jit_audit",
            kind = %d.kind,
            actor_id = d.actor_id.as_deref().unwrap_or(""),
            request_id = d.request_id.as_deref().unwrap_or(""),
            channel_id = d.channel_id.as_deref().unwrap_or(""),
            account_id = d.account_id.as_deref().unwrap_or(""),
            data = %d.data,
            "audit"
        );
    }
}
