//! The SQL store: SQLite or PostgreSQL through sqlx's `Any` driver, with the same SQL text for
//! both (numbered `$n` parameters work on each) and dialect branches only where they differ
//! (row locks, advisory locks, connection set-up).

use crate::log_audit;
use crate::queries::{
    ACTIVE_GRANTS_FOR, Bind, DUE_CALLBACKS, GAUGE_COUNTS, GAUGE_LATE_JOBS, GAUGE_OLDEST_PENDING,
    GRANT_HISTORY, LATEST_CHECKPOINT, LIST_CALLBACKS, NEXT_JOB_DUE, OVERDUE_REVOKES, PURGE_NONCES,
    REQUESTS_MISSING_JOB, audit_query, requests_query,
};
use crate::rows::{
    REQUEST_COLUMNS, RequestRow, accounts_json, audit_from_row, binding_from_parts,
    binding_from_row, ms, policy_json, request_from_row, request_to_row,
};
use crate::verify::Source;
use crate::{
    AssignmentOp, AuditFilter, AuditStore, BindingStore, Cursor, Gauges, GrantHistory, IdemRecord,
    Job, JobKind, JobOp, JobStore, KeyUsage, OpsStore, OutboxEvent, OutboxStore, PrincipalStore,
    RequestFilter, RequestStore, StoreError, VerifyError, VerifyOptions, VerifyProgress,
    VerifyReport, WriteCtx,
};
use async_trait::async_trait;
use jit_core::audit::{AuditDraft, AuditEvent, ChainError, ChainVerifier, event_hash};
use jit_core::policy::Binding;
use jit_core::request::{Request, Status};
use jit_core::types::{ChannelId, RequestId};
use jit_proto::nonce::{NonceError, NonceFuture, NonceStore};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection, Executor, Row};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite, the embedded default: one writer connection, WAL, readers in parallel.
    Sqlite,
    /// PostgreSQL: for several servers sharing one database.
    Postgres,
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    write: AnyPool,
    read: AnyPool,
    dialect: Dialect,
    /// Where audit verification reads from, outside the pools ([`crate::verify`]).
    source: Source,
    /// The single writer task's queue (see [`writer`]).
    jobs: tokio::sync::mpsc::Sender<WriteJob>,
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../migrations/sqlite/0002_audit_head_trigger.sql"),
    ),
    (3, include_str!("../migrations/sqlite/0003_lifecycle.sql")),
    (4, include_str!("../migrations/sqlite/0004_key_usage.sql")),
    (5, include_str!("../migrations/sqlite/0005_leases.sql")),
    (6, include_str!("../migrations/sqlite/0006_flat_costs.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_audit_head_trigger.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_lifecycle.sql")),
    (4, include_str!("../migrations/postgres/0004_key_usage.sql")),
    (5, include_str!("../migrations/postgres/0005_leases.sql")),
    (
        6,
        include_str!("../migrations/postgres/0006_flat_costs.sql"),
    ),
];

/// Splits a migration file into statements: a statement ends with `;` at the end of a line
/// (so trigger and function bodies keep their inner `;` on one line).
fn statements(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut cur = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    let rest = cur.trim().to_owned();
    if !rest.is_empty() {
        out.push(rest);
    }
    out.into_iter()
}

/// Advisory lock id that serialises migrations when several servers start at once.
const MIGRATION_LOCK: i64 = 0x6a69_7461;

type AnyQuery<'q> = Query<'q, Any, AnyArguments>;

fn bind_all<'q>(mut q: AnyQuery<'q>, binds: Vec<Bind>) -> AnyQuery<'q> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

fn map_write_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Backend(e.to_string()),
    }
}

static INSERT_REQUEST: LazyLock<String> = LazyLock::new(|| {
    let n = REQUEST_COLUMNS.split(',').count();
    let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES ({})",
        params.join(", ")
    )
});

static UPDATE_REQUEST: LazyLock<String> = LazyLock::new(|| {
    // Every column but the id (first) is set; the id and the expected version close the list.
    let cols: Vec<&str> = REQUEST_COLUMNS.split(',').map(str::trim).collect();
    let sets: Vec<String> = cols
        .iter()
        .skip(1)
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    let n = cols.len();
    format!(
        "UPDATE requests SET {} WHERE id = ${n} AND version = ${}",
        sets.join(", "),
        n + 1
    )
});

fn bind_request_row<'q>(q: AnyQuery<'q>, r: RequestRow, with_id_first: bool) -> AnyQuery<'q> {
    let q = if with_id_first {
        q.bind(r.id.clone())
    } else {
        q
    };
    let q = q
        .bind(r.channel_id)
        .bind(r.account_id)
        .bind(r.permission_set_arn)
        .bind(r.requester_id)
        .bind(r.requester_email)
        .bind(r.ticket)
        .bind(r.reason)
        .bind(r.duration_minutes)
        .bind(r.status)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.pending_deadline)
        .bind(r.required_approvals)
        .bind(r.approvals)
        .bind(r.break_glass)
        .bind(r.review_pending)
        .bind(r.approved_at)
        .bind(r.granted_at)
        .bind(r.ends_at)
        .bind(r.closed_at)
        .bind(r.closed_by)
        .bind(r.close_reason)
        .bind(r.error_message)
        .bind(r.post_id)
        .bind(r.version);
    if with_id_first { q } else { q.bind(r.id) }
}

/// A database's schema against this build's migrations ([`SqlStore::schema_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaStatus {
    /// Migrations of this build not applied yet (`jit server` applies them at start).
    pub pending: Vec<i64>,
    /// Applied migrations this build does not know: the database was used by a newer version.
    pub unknown: Vec<i64>,
}

/// Where a store lives, parsed from its URL. Only `sqlite://PATH`, `postgres://…` and
/// `postgresql://…` are accepted: a mistyped URL (`postgres//host`, `mysql://…`, a bare path)
/// is refused rather than quietly becoming a SQLite file named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection URL (as given).
    Postgres(String),
    /// DynamoDB tables: the state table and the nonce table ([`crate::DynamoStore`]).
    DynamoDb {
        /// The state table.
        table: String,
        /// The nonce table.
        nonces: String,
    },
}

impl DatabaseUrl {
    /// Parses `url`. The error names the scheme it found, never the rest (a URL may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if url.starts_with("dynamodb://") {
            let (table, nonces) = crate::dynamo::parse_url(url)?;
            return Ok(Self::DynamoDb { table, nonces });
        }
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = rest.split('?').next().unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::InvalidUrl(
                    "sqlite:// needs a file path, as in sqlite:///var/lib/jit/jit.db".into(),
                ));
            }
            return Ok(Self::Sqlite(path.into()));
        }
        let found = match url.split_once("://") {
            Some((scheme, _)) if !scheme.is_empty() && scheme.len() <= 20 => {
                format!("the scheme {scheme:?}")
            }
            _ => "no scheme".to_owned(),
        };
        Err(StoreError::InvalidUrl(format!(
            "a database URL must start with sqlite://, postgres://, postgresql:// or dynamodb://; found {found}"
        )))
    }
}

fn not_sql() -> StoreError {
    StoreError::InvalidUrl(
        "a dynamodb:// URL names DynamoDB tables, not a SQL database (this command needs SQLite or PostgreSQL)"
            .into(),
    )
}

/// Creates `dir` (and its parents) for a new SQLite file; the last component gets mode 0700.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))
}

/// Creates an empty SQLite file with mode 0600 when none exists, so the database, and the
/// `-wal` and `-shm` files SQLite gives the same mode, are private to the service's user.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

impl SqlStore {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    /// `postgres://…` or `postgresql://…` selects PostgreSQL; `sqlite://PATH` selects SQLite
    /// (a new file gets mode 0600, a new directory 0700). Anything else is refused
    /// ([`DatabaseUrl::parse`]).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let store = match DatabaseUrl::parse(url)? {
            DatabaseUrl::DynamoDb { .. } => return Err(not_sql()),
            DatabaseUrl::Postgres(url) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&url)
                    .await?;
                Self::with_writer(pool.clone(), pool, Source::Postgres(url))
            }
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    create_private_dir(dir)?;
                }
                create_private_file(&path)?;
                let url = format!("sqlite://{}?mode=rwc", path.display());
                let pragmas = sqlite_pragmas;
                // One writer: SQLite serialises writes anyway, and a single connection avoids
                // SQLITE_BUSY on read-to-write upgrades.
                let write = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(pragmas)
                    .connect(&url)
                    .await?;
                let read = AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(pragmas)
                    .connect(&url)
                    .await?;
                Self::with_writer(write, read, Source::Sqlite(path))
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens an existing database read-only, for inspection (`jit audit verify`): nothing is
    /// created, migrated or written. A missing SQLite file, or a database without our schema,
    /// is an error.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let store = match DatabaseUrl::parse(url)? {
            DatabaseUrl::DynamoDb { .. } => return Err(not_sql()),
            DatabaseUrl::Postgres(url) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                Self::with_writer(pool.clone(), pool, Source::Postgres(url))
            }
            DatabaseUrl::Sqlite(path) => {
                if !path.is_file() {
                    return Err(StoreError::Backend(format!(
                        "no database at {}: check the path (nothing was created)",
                        path.display()
                    )));
                }
                let url = format!("sqlite://{}?mode=ro", path.display());
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                Self::with_writer(pool.clone(), pool, Source::Sqlite(path))
            }
        };
        let schema: Result<Option<AnyRow>, sqlx::Error> =
            sqlx::query("SELECT MAX(version) FROM schema_migrations")
                .fetch_optional(&store.read)
                .await;
        if schema.is_err() {
            return Err(StoreError::Backend(
                "this database holds no jit-access schema (no schema_migrations table)".into(),
            ));
        }
        Ok(store)
    }

    /// Writes an online, consistent copy of a SQLite database to `dest` (`VACUUM INTO`: one
    /// read transaction, so writers carry on and the copy is a single point in time), mode
    /// 0600. Refuses to overwrite a file. PostgreSQL is backed up with `pg_dump`.
    pub async fn backup_to(&self, dest: &Path) -> Result<u64, StoreError> {
        if self.dialect == Dialect::Postgres {
            return Err(StoreError::Backend(
                "a PostgreSQL database is backed up with pg_dump (for example \
                 `pg_dump --format=custom --file=jit.dump \"$JIT_DATABASE_URL\"`), not with jit"
                    .into(),
            ));
        }
        if dest.exists() {
            return Err(StoreError::Backend(format!(
                "{} exists; choose a new file (a backup never overwrites)",
                dest.display()
            )));
        }
        let text = dest
            .to_str()
            .ok_or_else(|| StoreError::Backend("the backup path is not UTF-8".into()))?;
        if let Some(dir) = dest.parent() {
            create_private_dir(dir)?;
        }
        create_private_file(dest)?;
        // VACUUM INTO needs a file that is absent or empty: the 0600 one just made is empty.
        let sql = format!("VACUUM INTO '{}'", text.replace('\'', "''"));
        let mut conn = self.read.acquire().await?;
        let done = conn.execute(AssertSqlSafe(sql)).await;
        if let Err(e) = done {
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        Ok(std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0))
    }

    /// How this database's schema compares with this build's migrations, read without
    /// changing anything (`jit doctor` on a read-only store).
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let known: Vec<i64> = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        }
        .iter()
        .map(|(v, _)| *v)
        .collect();
        let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&self.read)
            .await?;
        let applied: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()?;
        Ok(SchemaStatus {
            pending: known
                .iter()
                .copied()
                .filter(|v| !applied.contains(v))
                .collect(),
            unknown: applied
                .iter()
                .copied()
                .filter(|v| !known.contains(v))
                .collect(),
        })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.write.acquire().await?;
        let migrations = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_lock($1) AS TEXT)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await?;
            for (version, text) in migrations {
                let done: Option<AnyRow> = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *conn)
                    .await?;
                if done.is_some() {
                    continue;
                }
                let mut tx = conn.begin().await?;
                for stmt in statements(text) {
                    tx.execute(AssertSqlSafe(stmt)).await?;
                }
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(*version)
                    .bind(0_i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, "applied database migration");
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT CAST(pg_advisory_unlock($1) AS TEXT)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        result.map_err(StoreError::from)
    }

    fn with_writer(write: AnyPool, read: AnyPool, source: Source) -> Self {
        let dialect = match source {
            Source::Sqlite(_) => Dialect::Sqlite,
            Source::Postgres(_) => Dialect::Postgres,
        };
        let (jobs, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(writer(write.clone(), dialect, rx));
        Self {
            write,
            read,
            dialect,
            source,
            jobs,
        }
    }

    /// One statement through the writer, with no audit event; returns the rows it touched.
    async fn write_one(&self, sql: &'static str, binds: Vec<Bind>) -> Result<u64, StoreError> {
        self.statement(sql, binds, false).await
    }

    async fn statement(
        &self,
        sql: &'static str,
        binds: Vec<Bind>,
        reset_head: bool,
    ) -> Result<u64, StoreError> {
        let touched = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let out = touched.clone();
        let body: WriteBody = Box::new(move |tx| {
            Box::pin(async move {
                let n = bind_all(sqlx::query(sql), binds)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                out.store(n, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
        });
        let ctx = WriteCtx::with_audit(vec![], time::OffsetDateTime::UNIX_EPOCH);
        self.send_job(ctx, body, reset_head).await?;
        Ok(touched.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Queues one write for the writer task and waits for its outcome. `body` makes the change;
    /// the writer then appends the audit events and the idempotency record in the same
    /// transaction.
    async fn write_tx(
        &self,
        ctx: &WriteCtx,
        body: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, ()> + Send + 'static,
    ) -> Result<(), StoreError> {
        self.send_job(ctx.clone(), Box::new(body), false).await
    }

    async fn send_job(
        &self,
        ctx: WriteCtx,
        body: WriteBody,
        reset_head: bool,
    ) -> Result<(), StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = WriteJob {
            ctx,
            body: Some(body),
            reset_head,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the writer dropped the write".into()))?
    }
}

type WriteBody = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, ()> + Send>;

/// One queued write.
struct WriteJob {
    ctx: WriteCtx,
    body: Option<WriteBody>,
    /// Forget the cached chain head after this job (raw statements may have changed it).
    reset_head: bool,
    reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 64;

/// The writer: one task per store that commits queued writes in batches. Every write of a batch
/// is applied in one transaction with its audit events (group commit), so the chain head is
/// read once per batch and the commit (an fsync on PostgreSQL) is shared. A write that fails
/// in an expected way (compare-and-set lost, unique key taken) is undone alone (savepoint);
/// anything unexpected rolls the whole batch back and fails its writes.
async fn writer(pool: AnyPool, dialect: Dialect, mut rx: tokio::sync::mpsc::Receiver<WriteJob>) {
    // SQLite has this single writer, so the head can be cached between batches; PostgreSQL
    // may have other servers appending, so it is read (and locked) in every batch.
    let mut cached: Option<(i64, String)> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let start_head = if dialect == Dialect::Sqlite {
            cached.take()
        } else {
            None
        };
        let reset = batch.iter().any(|j| j.reset_head);
        match run_batch(&pool, dialect, start_head, &mut batch).await {
            Ok((results, head)) => {
                cached = if reset { None } else { head };
                for (job, r) in batch.drain(..).zip(results) {
                    if r.is_ok() {
                        log_audit(&job.ctx.audit);
                    }
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "write batch failed and was rolled back");
                cached = None;
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

async fn run_batch(
    pool: &AnyPool,
    dialect: Dialect,
    mut head: Option<(i64, String)>,
    batch: &mut [WriteJob],
) -> Result<(Vec<Result<(), StoreError>>, Option<(i64, String)>), StoreError> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        // SQLite undoes a failed statement by itself and keeps the transaction usable, so a
        // savepoint is needed only where a later statement of the same write can fail (the
        // idempotency record). PostgreSQL aborts the whole transaction on any error.
        let savepoint = dialect == Dialect::Postgres || job.ctx.idem.is_some();
        if savepoint {
            tx.execute("SAVEPOINT w").await?;
        }
        let outcome = match job.body.take() {
            Some(body) => body(&mut tx).await,
            None => Ok(()),
        };
        if let Err(e) = outcome {
            if savepoint {
                tx.execute("ROLLBACK TO SAVEPOINT w").await?;
                if dialect == Dialect::Postgres {
                    // The rollback may have released the head row lock taken in this savepoint.
                    head = None;
                }
            }
            if matches!(e, StoreError::Backend(_)) {
                return Err(e);
            }
            results.push(Err(e));
            continue;
        }
        apply_ops(&mut tx, &job.ctx).await?;
        if head.is_none() && !job.ctx.audit.is_empty() {
            head = Some(read_head(&mut tx, dialect).await?);
        }
        let next_head = match &head {
            Some(h) => {
                Some(append_audit(&mut tx, h.clone(), &job.ctx.audit, ms(job.ctx.now)).await?)
            }
            None => None,
        };
        if let Some(idem) = &job.ctx.idem {
            let r = sqlx::query(
                "INSERT INTO idempotency (scope, key, request_hash, status, response, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(idem.scope.clone())
            .bind(idem.key.clone())
            .bind(idem.request_hash.clone())
            .bind(i64::from(idem.status))
            .bind(idem.response.clone())
            .bind(ms(job.ctx.now))
            .execute(&mut *tx)
            .await;
            if let Err(e) = r {
                let e = map_write_err(e);
                tx.execute("ROLLBACK TO SAVEPOINT w").await?;
                if dialect == Dialect::Postgres {
                    // The rollback may have released the head row lock taken in this savepoint.
                    head = None;
                }
                if matches!(e, StoreError::Backend(_)) {
                    return Err(e);
                }
                results.push(Err(e));
                continue;
            }
        }
        if savepoint {
            tx.execute("RELEASE SAVEPOINT w").await?;
        }
        if next_head.is_some() {
            head = next_head;
        }
        results.push(Ok(()));
    }
    tx.commit().await?;
    Ok((results, head))
}

/// The jobs, assignment records and callback events of a write.
async fn apply_ops(tx: &mut AnyConnection, ctx: &WriteCtx) -> Result<(), StoreError> {
    let now = ms(ctx.now);
    for op in &ctx.jobs {
        match op {
            JobOp::Schedule {
                kind,
                request_id,
                due_ms,
            } => {
                sqlx::query(
                    "INSERT INTO jobs (id, kind, request_id, due_at, attempts, created_at) VALUES ($1, $2, $3, $4, 0, $5) \
                     ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at, lease_owner = NULL, lease_until = NULL",
                )
                .bind(kind.id_for(request_id.as_str()))
                .bind(kind.as_str())
                .bind(request_id.as_str().to_owned())
                .bind(*due_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            JobOp::Ensure {
                kind,
                request_id,
                due_ms,
            } => {
                sqlx::query(
                    "INSERT INTO jobs (id, kind, request_id, due_at, attempts, created_at) VALUES ($1, $2, $3, $4, 0, $5) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(kind.id_for(request_id.as_str()))
                .bind(kind.as_str())
                .bind(request_id.as_str().to_owned())
                .bind(*due_ms)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            JobOp::Remove { kind, request_id } => {
                sqlx::query("DELETE FROM jobs WHERE id = $1")
                    .bind(kind.id_for(request_id.as_str()))
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    for op in &ctx.assignments {
        match op {
            AssignmentOp::Add {
                principal,
                standing,
            } => {
                sqlx::query(
                    "INSERT INTO assignments (principal, standing, created_at) VALUES ($1, $2, $3) ON CONFLICT (principal) DO NOTHING",
                )
                .bind(principal.clone())
                .bind(i64::from(*standing))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            AssignmentOp::Remove { principal } => {
                sqlx::query("DELETE FROM assignments WHERE principal = $1")
                    .bind(principal.clone())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    for ev in &ctx.outbox {
        sqlx::query(
            "INSERT INTO outbox (event_id, request_id, seq, payload, status, attempts, next_attempt_at, created_at) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, 'PENDING', 0, $4, $4 FROM outbox WHERE request_id = $2",
        )
        .bind(ev.event_id.clone())
        .bind(ev.request_id.as_str().to_owned())
        .bind(ev.payload.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

fn parse_request_id(v: &str) -> Result<RequestId, StoreError> {
    RequestId::parse(v).map_err(|e| StoreError::Corrupt(format!("request id {v:?}: {}", e.message)))
}

fn job_from_row(r: &AnyRow) -> Result<Job, StoreError> {
    let kind: String = r.try_get("kind")?;
    Ok(Job {
        kind: JobKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("job kind {kind}")))?,
        request_id: parse_request_id(&r.try_get::<String, _>("request_id")?)?,
        due_ms: r.try_get("due_at")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
    })
}

fn outbox_from_row(r: &AnyRow) -> Result<OutboxEvent, StoreError> {
    Ok(OutboxEvent {
        event_id: r.try_get("event_id")?,
        request_id: parse_request_id(&r.try_get::<String, _>("request_id")?)?,
        seq: r.try_get("seq")?,
        payload: r.try_get("payload")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_ms: r.try_get("next_attempt_at")?,
        last_error: r.try_get("last_error")?,
        created_ms: r.try_get("created_at")?,
    })
}

async fn read_head(tx: &mut AnyConnection, dialect: Dialect) -> Result<(i64, String), StoreError> {
    let head_sql = match dialect {
        Dialect::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        Dialect::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
    };
    let head = sqlx::query(head_sql).fetch_one(&mut *tx).await?;
    Ok((head.try_get("seq")?, head.try_get("hash")?))
}

/// The future a write body returns.
type WriteFuture<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>>;

type PragmaFuture<'c> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

fn sqlite_pragmas(
    conn: &mut AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> PragmaFuture<'_> {
    Box::pin(async move {
        conn.execute("PRAGMA busy_timeout = 5000").await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = NORMAL").await?;
        Ok(())
    })
}

const AUDIT_COLUMNS: usize = 11;

/// Appends `drafts` after `head` in one multi-row INSERT (a trigger advances `audit_head`).
/// Returns the new head.
async fn append_audit(
    tx: &mut AnyConnection,
    head: (i64, String),
    drafts: &[AuditDraft],
    now_ms: i64,
) -> Result<(i64, String), StoreError> {
    let (mut seq, mut prev) = head;
    if drafts.is_empty() {
        return Ok((seq, prev));
    }
    let mut rows = Vec::with_capacity(drafts.len());
    for (i, _) in drafts.iter().enumerate() {
        let params: Vec<String> = (1..=AUDIT_COLUMNS)
            .map(|c| format!("${}", i * AUDIT_COLUMNS + c))
            .collect();
        rows.push(format!("({})", params.join(", ")));
    }
    let sql = format!(
        "INSERT INTO audit_events (seq, at_ms, type, actor_id, actor_email, request_id, channel_id, account_id, data, prev_hash, hash) VALUES {}",
        rows.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for d in drafts {
        seq += 1;
        let hash = event_hash(&prev, seq, now_ms, d);
        q = q
            .bind(seq)
            .bind(now_ms)
            .bind(d.kind.clone())
            .bind(d.actor_id.clone())
            .bind(d.actor_email.clone())
            .bind(d.request_id.clone())
            .bind(d.channel_id.clone())
            .bind(d.account_id.clone())
            .bind(d.data.to_string())
            .bind(prev.clone())
            .bind(hash.clone());
        prev = hash;
    }
    q.execute(&mut *tx).await?;
    Ok((seq, prev))
}

#[async_trait]
impl OpsStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.read).await?;
        Ok(())
    }

    async fn record_key_usage(
        &self,
        ring: &str,
        verifier: &str,
        keys: &[(String, i64)],
    ) -> Result<(), StoreError> {
        for (key_id, at) in keys {
            let binds = vec![
                Bind::Text(ring.to_owned()),
                Bind::Text(verifier.to_owned()),
                Bind::Text(key_id.clone()),
                Bind::Int(*at),
            ];
            self.write_one(
                "INSERT INTO key_usage (ring, verifier, key_id, last_used_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (ring, verifier, key_id) DO UPDATE SET last_used_at = excluded.last_used_at \
                 WHERE key_usage.last_used_at < excluded.last_used_at",
                binds,
            )
            .await?;
        }
        Ok(())
    }

    async fn key_usage(&self) -> Result<Vec<KeyUsage>, StoreError> {
        let rows = sqlx::query("SELECT ring, verifier, key_id, last_used_at FROM key_usage ORDER BY ring, key_id, verifier")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyUsage {
                    ring: r.try_get("ring")?,
                    verifier: r.try_get("verifier")?,
                    key_id: r.try_get("key_id")?,
                    last_used_unix: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    async fn gauges(&self, late_before_ms: i64) -> Result<Gauges, StoreError> {
        // Counters kept by triggers in the writing transaction (migration 0006), an indexed
        // MIN, and the late jobs themselves: nothing here grows with the store.
        let pairs = |rows: Vec<AnyRow>| -> Result<Vec<(String, i64)>, StoreError> {
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect()
        };
        let requests = sqlx::query(GAUGE_COUNTS)
            .bind("requests")
            .fetch_all(&self.read)
            .await?;
        let outbox = sqlx::query(GAUGE_COUNTS)
            .bind("outbox")
            .fetch_all(&self.read)
            .await?;
        let oldest: Option<i64> = sqlx::query_scalar(GAUGE_OLDEST_PENDING)
            .fetch_one(&self.read)
            .await?;
        let late = sqlx::query(GAUGE_LATE_JOBS)
            .bind(late_before_ms)
            .fetch_all(&self.read)
            .await?;
        Ok(Gauges {
            requests_by_status: pairs(requests)?,
            outbox_by_status: pairs(outbox)?,
            outbox_oldest_pending_ms: oldest,
            jobs_late_by_kind: pairs(late)?,
        })
    }

    async fn idempotency_get(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdemRecord>, StoreError> {
        let row = sqlx::query("SELECT scope, key, request_hash, status, response FROM idempotency WHERE scope = $1 AND key = $2")
            .bind(scope.to_owned())
            .bind(key.to_owned())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(IdemRecord {
                scope: r.try_get("scope")?,
                key: r.try_get("key")?,
                request_hash: r.try_get("request_hash")?,
                status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(200),
                response: r.try_get("response")?,
            })
        })
        .transpose()
    }

    async fn purge_nonces(&self, now_unix: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(PURGE_NONCES)
            .bind(now_unix)
            .execute(&self.write)
            .await?
            .rows_affected())
    }
}

#[async_trait]
impl BindingStore for SqlStore {
    async fn get_binding(&self, channel: &ChannelId) -> Result<Option<Binding>, StoreError> {
        let row = sqlx::query(
            "SELECT channel_id, accounts, policy, version, updated_at FROM bindings WHERE channel_id = $1",
        )
        .bind(channel.as_str().to_owned())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(binding_from_row).transpose()
    }

    async fn list_bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel_id, accounts, policy, version, updated_at FROM bindings ORDER BY channel_id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(binding_from_row).collect()
    }

    async fn save_binding(
        &self,
        b: &Binding,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<Binding, StoreError> {
        let new_version = expected_version + 1;
        let saved_at =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms(ctx.now)) * 1_000_000)
                .ok();
        let (channel, accounts, policy, now) = (
            b.channel_id.as_str().to_owned(),
            accounts_json(b),
            policy_json(&b.policy),
            ms(ctx.now),
        );
        self.write_tx(&ctx, move |tx| {
            Box::pin(async move {
                let affected = if expected_version == 0 {
                    sqlx::query(
                        "INSERT INTO bindings (channel_id, accounts, policy, version, updated_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(channel)
                    .bind(accounts)
                    .bind(policy)
                    .bind(new_version)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_write_err)?
                    .rows_affected()
                } else {
                    sqlx::query(
                        "UPDATE bindings SET accounts = $1, policy = $2, version = $3, updated_at = $4 WHERE channel_id = $5 AND version = $6",
                    )
                    .bind(accounts)
                    .bind(policy)
                    .bind(new_version)
                    .bind(now)
                    .bind(channel)
                    .bind(expected_version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                };
                if affected == 1 { Ok(()) } else { Err(StoreError::Conflict) }
            })
        })
        .await?;
        Ok(Binding {
            version: new_version,
            updated_at: saved_at,
            ..b.clone()
        })
    }

    async fn delete_binding(
        &self,
        channel: &ChannelId,
        expected_version: i64,
        ctx: WriteCtx,
    ) -> Result<(), StoreError> {
        let channel = channel.as_str().to_owned();
        self.write_tx(&ctx, move |tx| {
            Box::pin(async move {
                let affected =
                    sqlx::query("DELETE FROM bindings WHERE channel_id = $1 AND version = $2")
                        .bind(channel)
                        .bind(expected_version)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if affected == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Conflict)
                }
            })
        })
        .await
    }
}

#[async_trait]
impl RequestStore for SqlStore {
    async fn set_post_id(&self, id: &RequestId, post_id: &str) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(post_id.to_owned()),
            Bind::Text(id.as_str().to_owned()),
        ];
        match self
            .write_one("UPDATE requests SET post_id = $1 WHERE id = $2", binds)
            .await?
        {
            1 => Ok(()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn create_request(&self, req: &Request, ctx: WriteCtx) -> Result<(), StoreError> {
        let row = request_to_row(req, ctx.now);
        self.write_tx(&ctx, move |tx| {
            Box::pin(async move {
                bind_request_row(sqlx::query(INSERT_REQUEST.as_str()), row, true)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_write_err)?;
                Ok(())
            })
        })
        .await
    }

    async fn get_request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn request_ids_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // Ids hold only [0-9a-f-], all below '~': [prefix, prefix~) is exactly the ids that
        // start with it, and a range on the primary key is an index seek on both backends.
        let rows =
            sqlx::query("SELECT id FROM requests WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3")
                .bind(prefix.to_owned())
                .bind(format!("{prefix}~"))
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }

    async fn get_request_with_binding(
        &self,
        id: &RequestId,
    ) -> Result<Option<(Request, Option<Binding>)>, StoreError> {
        let sql = format!(
            "SELECT {}, b.channel_id AS b_channel_id, b.accounts AS b_accounts, b.policy AS b_policy, b.version AS b_version \
             FROM requests r LEFT JOIN bindings b ON b.channel_id = r.channel_id WHERE r.id = $1",
            REQUEST_COLUMNS
                .split(',')
                .map(|c| format!("r.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id.as_str().to_owned())
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let req = request_from_row(&row)?;
        let binding = match row.try_get::<Option<String>, _>("b_channel_id")? {
            Some(channel) => Some(binding_from_parts(
                &channel,
                &row.try_get::<String, _>("b_accounts")?,
                &row.try_get::<String, _>("b_policy")?,
                row.try_get("b_version")?,
            )?),
            None => None,
        };
        Ok(Some((req, binding)))
    }

    async fn update_request(&self, next: &Request, ctx: WriteCtx) -> Result<(), StoreError> {
        let row = request_to_row(next, ctx.now);
        let (id, expected) = (next.id.as_str().to_owned(), next.version - 1);
        self.write_tx(&ctx, move |tx| {
            Box::pin(async move {
                let affected = bind_request_row(sqlx::query(UPDATE_REQUEST.as_str()), row, false)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_write_err)?
                    .rows_affected();
                if affected == 1 {
                    return Ok(());
                }
                let exists = sqlx::query("SELECT version FROM requests WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                Err(if exists.is_some() {
                    StoreError::Conflict
                } else {
                    StoreError::NotFound
                })
            })
        })
        .await
    }

    async fn list_requests(
        &self,
        f: &RequestFilter,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError> {
        let limit = f.limit.clamp(1, 200);
        let (sql, binds) = requests_query(f, limit);
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
            .fetch_all(&self.read)
            .await?;
        let mut items = rows
            .iter()
            .map(request_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
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
        let row = sqlx::query(GRANT_HISTORY)
            .bind(requester_email.to_owned())
            .bind(account_id.to_owned())
            .bind(permission_set.unwrap_or("").to_owned())
            .fetch_one(&self.read)
            .await?;
        Ok(GrantHistory {
            ever_granted: row.try_get::<i64, _>(0)? != 0,
            in_flight: row.try_get::<i64, _>(1)? != 0,
        })
    }

    async fn active_grants_for(
        &self,
        requester_email: &str,
        account_id: &str,
        permission_set: Option<&str>,
        except: &RequestId,
    ) -> Result<Vec<Request>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(ACTIVE_GRANTS_FOR.as_str()))
            .bind(requester_email.to_owned())
            .bind(account_id.to_owned())
            .bind(permission_set.unwrap_or("").to_owned())
            .bind(except.as_str().to_owned())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(request_from_row).collect()
    }

    async fn requests_missing_job(
        &self,
        status: Status,
        kind: JobKind,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<(Vec<Request>, Option<Cursor>), StoreError> {
        let limit = limit.clamp(1, 10_000);
        let (at, id) = after.as_ref().map_or((i64::MIN, ""), |c| c.position());
        let rows = sqlx::query(AssertSqlSafe(REQUESTS_MISSING_JOB.as_str()))
            .bind(status.as_str())
            .bind(at)
            .bind(id)
            .bind(kind.id_for(""))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        let page = rows
            .iter()
            .map(request_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = (page.len() == limit as usize)
            .then(|| page.last().map(Cursor::after))
            .flatten();
        Ok((page, next))
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, ctx: WriteCtx) -> Result<(), StoreError> {
        self.write_tx(&ctx.clone(), |_tx| Box::pin(async { Ok(()) }))
            .await
    }

    async fn list_audit(
        &self,
        f: &AuditFilter,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), StoreError> {
        let limit = f.limit.clamp(1, 1000);
        let (sql, binds) = audit_query(f, limit);
        let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
            .fetch_all(&self.read)
            .await?;
        let mut items = rows
            .iter()
            .map(audit_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
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
        // Events up to the head were committed with it, so reading the head first gives a
        // consistent end point even while others append.
        let head = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(StoreError::from)?;
        let head_seq: i64 = head.try_get("seq").map_err(StoreError::from)?;
        let mut v = ChainVerifier::default();
        let mut from_checkpoint = 0;
        if !opts.full {
            let cp = sqlx::query(LATEST_CHECKPOINT)
                .bind(head_seq)
                .fetch_optional(&self.read)
                .await
                .map_err(StoreError::from)?;
            if let Some(cp) = cp {
                let seq: i64 = cp.try_get("seq").map_err(StoreError::from)?;
                let hash: String = cp.try_get("hash").map_err(StoreError::from)?;
                // The checkpoint's own event must still carry the hash that was verified.
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
                        .bind(seq)
                        .fetch_optional(&self.read)
                        .await
                        .map_err(StoreError::from)?;
                if stored.as_deref() != Some(hash.as_str()) {
                    return Err(ChainError::Tampered(seq).into());
                }
                v = ChainVerifier::resume(seq, &hash);
                from_checkpoint = seq;
            }
        }
        let from_seq = v.last_seq() + 1;
        let v = crate::verify::run(&self.source, v, head_seq, progress).await?;
        let checked = v.last_seq() - from_seq + 1;
        let head_hash = v.prev_hash().to_owned();
        let head_seq = v.finish(head_seq)?;
        if opts.record_checkpoint && head_seq > from_checkpoint {
            self.write_one(
                "INSERT INTO audit_checkpoints (seq, hash, verified_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (seq) DO UPDATE SET verified_at = excluded.verified_at",
                vec![
                    Bind::Int(head_seq),
                    Bind::Text(head_hash),
                    Bind::Int(opts.now_ms),
                ],
            )
            .await?;
        }
        Ok(VerifyReport {
            head_seq,
            from_checkpoint,
            checked,
        })
    }
}

#[async_trait]
impl JobStore for SqlStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2, attempts = attempts + 1 WHERE id IN (SELECT id FROM jobs WHERE due_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY due_at LIMIT $4{lock}) \
             RETURNING kind, request_id, due_at, attempts, last_error"
        );
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        let owner = owner.to_owned();
        let ctx = WriteCtx::with_audit(vec![], time::OffsetDateTime::UNIX_EPOCH);
        self.write_tx(&ctx, move |tx| {
            Box::pin(async move {
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let jobs = rows
                    .iter()
                    .map(job_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                if let Ok(mut o) = sink.lock() {
                    *o = jobs;
                }
                Ok(())
            })
        })
        .await?;
        let mut jobs = out
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default();
        jobs.sort_by_key(|j| j.due_ms);
        Ok(jobs)
    }

    async fn renew_lease(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        owner: &str,
        until_ms: i64,
    ) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Int(until_ms),
            Bind::Text(kind.id_for(request_id.as_str())),
            Bind::Text(owner.to_owned()),
        ];
        self.write_one(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND lease_owner = $3",
            binds,
        )
        .await
        .map(|_| ())
    }

    async fn release_all_leases(&self) -> Result<(), StoreError> {
        self.write_one(
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
            vec![],
        )
        .await?;
        self.write_one(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL",
            vec![],
        )
        .await?;
        self.write_one("DELETE FROM principal_locks", vec![])
            .await
            .map(|_| ())
    }

    async fn retry_job(
        &self,
        kind: JobKind,
        request_id: &RequestId,
        retry_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(2000).collect();
        let binds = vec![
            Bind::Int(retry_ms),
            Bind::Text(error),
            Bind::Text(kind.id_for(request_id.as_str())),
        ];
        self.write_one(
            "UPDATE jobs SET due_at = $1, last_error = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3",
            binds,
        )
        .await
        .map(|_| ())
    }

    async fn next_job_due(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(NEXT_JOB_DUE).fetch_one(&self.read).await?;
        Ok(row.try_get::<Option<i64>, _>("d")?)
    }

    async fn list_jobs(&self, kind: Option<JobKind>) -> Result<Vec<Job>, StoreError> {
        let rows = match kind {
            Some(k) => {
                sqlx::query("SELECT kind, request_id, due_at, attempts, last_error FROM jobs WHERE kind = $1 ORDER BY due_at")
                    .bind(k.as_str())
                    .fetch_all(&self.read)
                    .await?
            }
            None => {
                sqlx::query("SELECT kind, request_id, due_at, attempts, last_error FROM jobs ORDER BY due_at")
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(job_from_row).collect()
    }

    async fn overdue_revokes(&self, now_ms: i64) -> Result<Vec<(Job, Request)>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(OVERDUE_REVOKES.as_str()))
            .bind(now_ms)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((job_from_row(r)?, request_from_row(r)?)))
            .collect()
    }
}

#[async_trait]
impl PrincipalStore for SqlStore {
    async fn get_assignment(&self, principal: &str) -> Result<Option<bool>, StoreError> {
        let row = sqlx::query("SELECT standing FROM assignments WHERE principal = $1")
            .bind(principal.to_owned())
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("standing")? != 0))
            .transpose()
    }

    async fn lock_principal(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Text(principal.to_owned()),
            Bind::Text(owner.to_owned()),
            Bind::Int(until_ms),
            Bind::Int(now_ms),
        ];
        Ok(self
            .write_one(
                "INSERT INTO principal_locks (principal, owner, until_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (principal) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms \
                 WHERE principal_locks.until_ms < $4 OR principal_locks.owner = excluded.owner",
                binds,
            )
            .await?
            == 1)
    }

    async fn renew_principal_lock(
        &self,
        principal: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Int(until_ms),
            Bind::Text(principal.to_owned()),
            Bind::Text(owner.to_owned()),
        ];
        Ok(self
            .write_one(
                "UPDATE principal_locks SET until_ms = $1 WHERE principal = $2 AND owner = $3",
                binds,
            )
            .await?
            == 1)
    }

    async fn unlock_principal(&self, principal: &str, owner: &str) -> Result<(), StoreError> {
        let binds = vec![
            Bind::Text(principal.to_owned()),
            Bind::Text(owner.to_owned()),
        ];
        self.write_one(
            "DELETE FROM principal_locks WHERE principal = $1 AND owner = $2",
            binds,
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn due_callbacks(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!("{} LIMIT {}", DUE_CALLBACKS.as_str(), limit.clamp(1, 1000));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn claim_callback(
        &self,
        event_id: &str,
        owner: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let binds = vec![
            Bind::Text(owner.to_owned()),
            Bind::Int(until_ms),
            Bind::Text(event_id.to_owned()),
            Bind::Int(now_ms),
        ];
        Ok(self
            .write_one(
                "UPDATE outbox SET lease_owner = $1, lease_until = $2 WHERE event_id = $3 AND status = 'PENDING' \
                 AND (lease_until IS NULL OR lease_until < $4 OR lease_owner = $1)",
                binds,
            )
            .await?
            == 1)
    }

    async fn callback_delivered(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let binds = vec![Bind::Int(now_ms), Bind::Text(event_id.to_owned())];
        self.write_one(
            "UPDATE outbox SET status = 'DELIVERED', delivered_at = $1, lease_owner = NULL, lease_until = NULL WHERE event_id = $2",
            binds,
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
        let status = if dead { "DEAD" } else { "PENDING" };
        let binds = vec![
            Bind::Text(status.to_owned()),
            Bind::Int(retry_ms),
            Bind::Text(error.chars().take(2000).collect()),
            Bind::Text(event_id.to_owned()),
        ];
        self.write_one(
            "UPDATE outbox SET status = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3, lease_owner = NULL, lease_until = NULL WHERE event_id = $4",
            binds,
        )
        .await
        .map(|_| ())
    }

    async fn list_callbacks(
        &self,
        status: &str,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!("{} LIMIT {}", LIST_CALLBACKS.as_str(), limit.clamp(1, 1000));
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(status.to_owned())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn resend_callback(&self, event_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let binds = vec![Bind::Int(now_ms), Bind::Text(event_id.to_owned())];
        match self
            .write_one("UPDATE outbox SET status = 'PENDING', next_attempt_at = $1 WHERE event_id = $2 AND status = 'DEAD'", binds)
            .await?
        {
            1 => Ok(()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn prune_callbacks(&self, before_ms: i64, undelivered: bool) -> Result<u64, StoreError> {
        let sql = if undelivered {
            "DELETE FROM outbox WHERE created_at < $1"
        } else {
            "DELETE FROM outbox WHERE status IN ('DELIVERED', 'DEAD') AND created_at < $1"
        };
        self.write_one(sql, vec![Bind::Int(before_ms)]).await
    }
}

/// The durable nonce store, for several servers sharing one database: a nonce row is inserted,
/// or an expired one reused, atomically; anything else is a replay.
impl NonceStore for SqlStore {
    fn check_and_insert<'a>(
        &'a self,
        nonce: &'a str,
        now: i64,
        expires_at: i64,
    ) -> NonceFuture<'a> {
        Box::pin(async move {
            let r = sqlx::query(
                "INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at WHERE nonces.expires_at <= $3",
            )
            .bind(nonce.to_owned())
            .bind(expires_at)
            .bind(now)
            .execute(&self.write)
            .await
            .map_err(|e| NonceError::Unavailable(e.to_string()))?;
            if r.rows_affected() == 1 {
                Ok(())
            } else {
                Err(NonceError::Replayed)
            }
        })
    }
}

/// One read query's plan, as the database would run it.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// Which query.
    pub name: &'static str,
    /// The plan, one line per step.
    pub lines: Vec<String>,
    /// Plan steps this query may show that would otherwise count as a scan or a sort: a walk
    /// of an index in its order cut by `LIMIT`, or the merge of a few page-sized branches.
    pub allow: &'static [&'static str],
}

impl SqlStore {
    /// The plans of the store's read queries, for the test that keeps them on their indexes.
    /// SQLite: `EXPLAIN QUERY PLAN`. PostgreSQL: `EXPLAIN` with sequential scans and sorts
    /// priced out (an empty test table would otherwise always be scanned), so the plan shows
    /// whether an index can serve the filter and the order at all.
    #[doc(hidden)]
    pub async fn query_plans(&self) -> Result<Vec<QueryPlan>, StoreError> {
        let mut conn = self.read.acquire().await?;
        if self.dialect == Dialect::Postgres {
            conn.execute("SET enable_seqscan = off").await?;
            conn.execute("SET enable_sort = off").await?;
        }
        let mut out = Vec::new();
        for q in crate::queries::planned() {
            let sql = match self.dialect {
                Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {}", q.sql),
                Dialect::Postgres => format!("EXPLAIN {}", q.sql),
            };
            let rows = bind_all(sqlx::query(AssertSqlSafe(sql)), q.binds)
                .fetch_all(&mut *conn)
                .await;
            let rows = match rows {
                Ok(r) => r,
                Err(e) => return Err(StoreError::Backend(format!("explaining {}: {e}", q.name))),
            };
            let col = match self.dialect {
                Dialect::Sqlite => 3,
                Dialect::Postgres => 0,
            };
            let lines = rows
                .iter()
                .map(|r| r.try_get::<String, _>(col))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(QueryPlan {
                name: q.name,
                lines,
                allow: q.allow,
            });
        }
        if self.dialect == Dialect::Postgres {
            conn.execute("RESET enable_seqscan").await?;
            conn.execute("RESET enable_sort").await?;
        }
        Ok(out)
    }

    /// Runs one statement directly. For tests and repair tooling only (tests use it to tamper
    /// with audit rows and prove that verification notices); never reachable from the API.
    #[doc(hidden)]
    pub async fn raw_execute(&self, sql: &'static str) -> Result<u64, StoreError> {
        self.statement(sql, vec![], true).await
    }
}
