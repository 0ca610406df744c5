//! The text of the store's read queries, kept apart so that the plan test
//! ([`crate::SqlStore::query_plans`]) explains exactly the SQL the store runs. Every query
//! here is served by an index that matches its filter and its order (migration 0006), so its
//! cost is in the rows it returns or the live work it finds, not in what the store holds.

use crate::rows::REQUEST_COLUMNS;
use crate::{AuditFilter, RequestFilter};
use jit_core::request::Status;
use std::sync::LazyLock;

/// A bind value for dynamically built queries.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

pub(crate) const AUDIT_SELECT: &str = "seq, at_ms, type, actor_id, actor_email, request_id, channel_id, account_id, data, prev_hash, hash";

/// Counts by status of one table (`$1`: `requests` or `outbox`), from the trigger-kept counters.
pub(crate) const GAUGE_COUNTS: &str =
    "SELECT status, n FROM status_counts WHERE tbl = $1 AND n > 0 ORDER BY status";

pub(crate) const GAUGE_OLDEST_PENDING: &str =
    "SELECT MIN(created_at) FROM outbox WHERE status = 'PENDING'";

/// Late jobs by kind: due before `$1`, or failed at least once. Two indexed branches, so the
/// `OR` does not turn into a scan: the second reads the partial index of failed jobs, and its
/// `+due_at` (an expression, not the column) keeps the planner from reading every job due
/// after `$1` instead.
pub(crate) const GAUGE_LATE_JOBS: &str = "SELECT kind, CAST(COUNT(*) AS BIGINT) FROM (\
     SELECT kind FROM jobs WHERE due_at < $1 \
     UNION ALL SELECT kind FROM jobs WHERE last_error IS NOT NULL AND +due_at >= $1) AS late \
     GROUP BY kind ORDER BY kind";

pub(crate) const GRANT_HISTORY: &str = "SELECT \
     CAST(COALESCE(MAX(CASE WHEN granted_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(MAX(CASE WHEN status = 'APPROVED' THEN 1 ELSE 0 END), 0) AS BIGINT) \
     FROM requests WHERE requester_email = $1 AND account_id = $2 AND COALESCE(permission_set_arn, '') = $3";

pub(crate) const LATEST_CHECKPOINT: &str =
    "SELECT seq, hash FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 1";

/// Events after `$1` up to `$2`, at most `$3`: one chunk of a verification ([`crate::verify`]
/// runs it through its own readers, and writes the three integers into PostgreSQL's COPY).
pub(crate) const VERIFY_RANGE: &str = "SELECT seq, at_ms, type, actor_id, actor_email, request_id, channel_id, account_id, data, prev_hash, hash \
     FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq ASC LIMIT $3";

fn prefixed(cols: &str, alias: &str) -> String {
    cols.split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Revoke jobs due before `$1`, and those that failed (a retry moved their due time on), each
/// with its request. The second branch reads the partial index of failed jobs (see
/// [`GAUGE_LATE_JOBS`] for the `+`).
pub(crate) static OVERDUE_REVOKES: LazyLock<String> = LazyLock::new(|| {
    let cols = prefixed(REQUEST_COLUMNS, "r");
    format!(
        "SELECT j.kind, j.request_id, j.due_at, j.attempts, j.last_error, {cols} FROM jobs j JOIN requests r ON r.id = j.request_id \
         WHERE j.kind = 'revoke' AND j.due_at < $1 \
         UNION ALL SELECT j.kind, j.request_id, j.due_at, j.attempts, j.last_error, {cols} FROM jobs j JOIN requests r ON r.id = j.request_id \
         WHERE j.kind = 'revoke' AND j.last_error IS NOT NULL AND +j.due_at >= $1"
    )
});

/// Requests in status `$1` after the position (`$2`, `$3`) whose job `$4 || id` is missing,
/// oldest first, at most `$5`.
pub(crate) static REQUESTS_MISSING_JOB: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM requests r WHERE r.status = $1 AND r.created_at >= $2 AND (r.created_at > $2 OR r.id > $3) \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = $4 || r.id) ORDER BY r.created_at, r.id LIMIT $5",
        prefixed(REQUEST_COLUMNS, "r")
    )
});

/// Numbers binds as they are pushed.
#[derive(Default)]
struct Binds {
    values: Vec<Bind>,
}

impl Binds {
    fn push(&mut self, b: Bind) -> String {
        self.values.push(b);
        format!("${}", self.values.len())
    }
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}

/// The request list, newest first, `limit + 1` rows (the extra one says there is a next page).
/// Several statuses become one indexed branch each, merged and cut to the page: an `IN` list
/// would read every match of every status and sort them.
pub(crate) fn requests_query(f: &RequestFilter, limit: u32) -> (String, Vec<Bind>) {
    let mut b = Binds::default();
    let mut conds = Vec::new();
    if let Some(v) = &f.channel_id {
        conds.push(format!("channel_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = &f.account_id {
        conds.push(format!("account_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = &f.requester_email {
        conds.push(format!(
            "requester_email = {}",
            b.push(Bind::Text(v.to_ascii_lowercase()))
        ));
    }
    if let Some(v) = &f.requester_id {
        conds.push(format!("requester_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = f.start_ms {
        conds.push(format!("created_at >= {}", b.push(Bind::Int(v))));
    }
    if let Some(v) = f.end_ms {
        conds.push(format!("created_at < {}", b.push(Bind::Int(v))));
    }
    if let Some(c) = &f.after {
        let (at, id) = c.position();
        let a = b.push(Bind::Int(at));
        let i = b.push(Bind::Text(id.to_owned()));
        // The first conjunct bounds the index range on both databases; the second only sorts
        // out the rows that share the cursor's created_at.
        conds.push(format!(
            "created_at <= {a} AND (created_at < {a} OR id < {i})"
        ));
    }
    let n = limit + 1;
    let order = "ORDER BY created_at DESC, id DESC";
    let sql = match f.statuses.as_slice() {
        [] => format!(
            "SELECT {REQUEST_COLUMNS} FROM requests {} {order} LIMIT {n}",
            where_clause(&conds)
        ),
        [one] => {
            let mut c = conds.clone();
            c.push(format!(
                "status = {}",
                b.push(Bind::Text(one.as_str().into()))
            ));
            format!(
                "SELECT {REQUEST_COLUMNS} FROM requests {} {order} LIMIT {n}",
                where_clause(&c)
            )
        }
        many => {
            let branches: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(k, st)| {
                    let mut c = conds.clone();
                    c.push(format!("status = {}", b.push(Bind::Text(st.as_str().into()))));
                    format!(
                        "SELECT * FROM (SELECT {REQUEST_COLUMNS} FROM requests {} {order} LIMIT {n}) AS s{k}",
                        where_clause(&c)
                    )
                })
                .collect();
            format!(
                "SELECT {REQUEST_COLUMNS} FROM ({}) AS u {order} LIMIT {n}",
                branches.join(" UNION ALL ")
            )
        }
    };
    (sql, b.values)
}

/// The audit trail in sequence order, `limit + 1` rows. The actor filter (user id or email)
/// is two indexed branches, merged and cut to the page.
pub(crate) fn audit_query(f: &AuditFilter, limit: u32) -> (String, Vec<Bind>) {
    let mut b = Binds::default();
    let mut conds = Vec::new();
    if let Some(v) = &f.request_id {
        conds.push(format!("request_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = &f.account_id {
        conds.push(format!("account_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = &f.channel_id {
        conds.push(format!("channel_id = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = &f.kind {
        conds.push(format!("type = {}", b.push(Bind::Text(v.clone()))));
    }
    if let Some(v) = f.since_ms {
        conds.push(format!("at_ms >= {}", b.push(Bind::Int(v))));
    }
    if let Some(v) = f.until_ms {
        conds.push(format!("at_ms < {}", b.push(Bind::Int(v))));
    }
    if let Some(v) = f.after_seq {
        conds.push(format!("seq > {}", b.push(Bind::Int(v))));
    }
    let n = limit + 1;
    let sql = match &f.actor {
        None => format!(
            "SELECT {AUDIT_SELECT} FROM audit_events {} ORDER BY seq ASC LIMIT {n}",
            where_clause(&conds)
        ),
        Some(actor) => {
            let id = b.push(Bind::Text(actor.clone()));
            let email = b.push(Bind::Text(actor.to_ascii_lowercase()));
            let mut by_id = conds.clone();
            by_id.push(format!("actor_id = {id}"));
            let mut by_email = conds;
            by_email.push(format!(
                "actor_email = {email} AND (actor_id IS NULL OR actor_id <> {id})"
            ));
            format!(
                "SELECT {AUDIT_SELECT} FROM (\
                 SELECT * FROM (SELECT {AUDIT_SELECT} FROM audit_events {} ORDER BY seq ASC LIMIT {n}) AS a0 \
                 UNION ALL SELECT * FROM (SELECT {AUDIT_SELECT} FROM audit_events {} ORDER BY seq ASC LIMIT {n}) AS a1\
                 ) AS u ORDER BY seq ASC LIMIT {n}",
                where_clause(&by_id),
                where_clause(&by_email)
            )
        }
    };
    (sql, b.values)
}

pub(crate) const NEXT_JOB_DUE: &str = "SELECT MIN(due_at) AS d FROM jobs";

pub(crate) const PURGE_NONCES: &str = "DELETE FROM nonces WHERE expires_at <= $1";

pub(crate) const OUTBOX_COLUMNS: &str =
    "event_id, request_id, seq, payload, status, attempts, next_attempt_at, last_error, created_at";

/// The other live grants of one principal: `$1` email, `$2` account, `$3` permission set
/// (`''` for none), except request `$4`.
pub(crate) static ACTIVE_GRANTS_FOR: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE status = 'GRANTED' AND requester_email = $1 AND account_id = $2 \
         AND COALESCE(permission_set_arn, '') = $3 AND id <> $4"
    )
});

/// The next deliverable callback of each request whose retry time `$1` has come (a `LIMIT`
/// is appended). Reads only the due rows: the live work.
pub(crate) static DUE_CALLBACKS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM outbox o WHERE o.status = 'PENDING' AND o.next_attempt_at <= $1 \
         AND (o.lease_until IS NULL OR o.lease_until < $1) \
         AND o.seq = (SELECT MIN(p.seq) FROM outbox p WHERE p.request_id = o.request_id AND p.status = 'PENDING') \
         ORDER BY o.created_at, o.seq",
        prefixed(OUTBOX_COLUMNS, "o")
    )
});

/// Callbacks in status `$1`, oldest first (a `LIMIT` is appended).
pub(crate) static LIST_CALLBACKS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = $1 ORDER BY created_at, seq")
});

/// A query to explain, with example binds.
pub(crate) struct Planned {
    pub name: &'static str,
    pub sql: String,
    pub binds: Vec<Bind>,
    pub allow: &'static [&'static str],
}

/// Every read the store makes in a paged list or a periodic task, with example parameters.
pub(crate) fn planned() -> Vec<Planned> {
    let t = |s: &str| Bind::Text(s.to_owned());
    let req = |name: &'static str, f: RequestFilter, allow: &'static [&'static str]| {
        let (sql, binds) = requests_query(&f, 50);
        Planned {
            name,
            sql,
            binds,
            allow,
        }
    };
    let aud = |name: &'static str, f: AuditFilter, allow: &'static [&'static str]| {
        let (sql, binds) = audit_query(&f, 500);
        Planned {
            name,
            sql,
            binds,
            allow,
        }
    };
    let fixed =
        |name: &'static str, sql: &str, binds: Vec<Bind>, allow: &'static [&'static str]| Planned {
            name,
            sql: sql.to_owned(),
            binds,
            allow,
        };
    // A merge of page-sized branches may sort at most (branches × page) rows.
    const MERGE: &[&str] = &["USE TEMP B-TREE FOR ORDER BY", "Sort"];
    let after = crate::Cursor::parse("1700000000000_a1b2c3d4-e5f6-7890-abcd-ef1234567890").ok();
    vec![
        // The newest page with no filter walks the (created_at, id) index backwards, cut by LIMIT.
        req(
            "requests: all",
            RequestFilter::default(),
            &["SCAN requests USING INDEX requests_created"],
        ),
        req(
            "requests: status",
            RequestFilter {
                statuses: vec![Status::Granted],
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: status, next page",
            RequestFilter {
                statuses: vec![Status::Granted],
                after: after.clone(),
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: several statuses",
            RequestFilter {
                statuses: vec![Status::Pending, Status::Approved, Status::Granted],
                ..Default::default()
            },
            MERGE,
        ),
        req(
            "requests: channel",
            RequestFilter {
                channel_id: Some("ch1".into()),
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: account",
            RequestFilter {
                account_id: Some("123456789012".into()),
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: requester email",
            RequestFilter {
                requester_email: Some("a@example.com".into()),
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: requester id",
            RequestFilter {
                requester_id: Some("alice".into()),
                ..Default::default()
            },
            &[],
        ),
        req(
            "requests: created range",
            RequestFilter {
                start_ms: Some(1),
                end_ms: Some(2),
                ..Default::default()
            },
            &[],
        ),
        // The first audit page walks the trail in seq order, cut by LIMIT.
        aud("audit: all", AuditFilter::default(), &["SCAN audit_events"]),
        aud(
            "audit: after seq",
            AuditFilter {
                after_seq: Some(10),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: type",
            AuditFilter {
                kind: Some("request.denied".into()),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: type, next page",
            AuditFilter {
                kind: Some("request.denied".into()),
                after_seq: Some(10),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: request",
            AuditFilter {
                request_id: Some("r".into()),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: channel",
            AuditFilter {
                channel_id: Some("ch1".into()),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: account",
            AuditFilter {
                account_id: Some("123456789012".into()),
                ..Default::default()
            },
            &[],
        ),
        aud(
            "audit: actor",
            AuditFilter {
                actor: Some("alice".into()),
                ..Default::default()
            },
            MERGE,
        ),
        fixed(
            "audit: verify range",
            VERIFY_RANGE,
            vec![Bind::Int(0), Bind::Int(10), Bind::Int(50_000)],
            &[],
        ),
        fixed(
            "audit: checkpoint",
            LATEST_CHECKPOINT,
            vec![Bind::Int(10)],
            &[],
        ),
        fixed(
            "callbacks: by status",
            &format!("{} LIMIT 100", LIST_CALLBACKS.as_str()),
            vec![t("PENDING")],
            &[],
        ),
        // Sorts the due rows only (the live work).
        fixed(
            "callbacks: due",
            &format!("{} LIMIT 100", DUE_CALLBACKS.as_str()),
            vec![Bind::Int(1)],
            &["USE TEMP B-TREE FOR ORDER BY", "Sort"],
        ),
        fixed(
            "grants: overdue",
            OVERDUE_REVOKES.as_str(),
            vec![Bind::Int(1)],
            &[],
        ),
        fixed(
            "reconciler: requests missing a job",
            REQUESTS_MISSING_JOB.as_str(),
            vec![
                t("GRANTED"),
                Bind::Int(0),
                t(""),
                t("revoke:"),
                Bind::Int(500),
            ],
            &[],
        ),
        fixed(
            "revoke: other grants of the principal",
            ACTIVE_GRANTS_FOR.as_str(),
            vec![t("a@example.com"), t("123456789012"), t(""), t("r")],
            &[],
        ),
        fixed(
            "drift: grant history",
            GRANT_HISTORY,
            vec![t("a@example.com"), t("123456789012"), t("")],
            &[],
        ),
        fixed("metrics: counts", GAUGE_COUNTS, vec![t("requests")], &[]),
        fixed(
            "metrics: oldest pending callback",
            GAUGE_OLDEST_PENDING,
            vec![],
            &[],
        ),
        // The failed-jobs branch walks the partial index of failed jobs only; the groups are
        // the three job kinds.
        fixed(
            "metrics: late jobs",
            GAUGE_LATE_JOBS,
            vec![Bind::Int(1)],
            &[
                "SCAN jobs USING INDEX jobs_failed",
                "USE TEMP B-TREE FOR GROUP BY",
                "Sort",
            ],
        ),
        fixed("jobs: next due", NEXT_JOB_DUE, vec![], &[]),
        fixed("nonces: purge", PURGE_NONCES, vec![Bind::Int(1)], &[]),
    ]
}
