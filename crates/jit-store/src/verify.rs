//! Audit-chain verification for the SQL stores, read outside the store's pools.
//!
//! Hashing is cheap (a few hundred bytes per event); what made verification slow was reading
//! the rows through `sqlx`'s `Any` driver, which copies every column of every row twice. Here
//! each reader uses its backend's fastest path instead and borrows the stored text:
//!
//! - SQLite: a read-only `rusqlite` connection on a blocking thread, stepping one statement
//!   per chunk of [`CHUNK`] events (so no read snapshot outlives a chunk and the write-ahead
//!   log can be checkpointed behind the verifier).
//! - PostgreSQL: `COPY (SELECT …) TO STDOUT (FORMAT binary)` on a connection of its own, one
//!   COPY per chunk, parsed as it streams in.
//!
//! The range is split into segments that are verified at the same time, one per core. Every
//! stored event carries the hash it links to, so a segment can check its own events, trusting
//! only its first event's `prev_hash`; [`join`] then checks that each segment starts exactly
//! where the one before it ended and links to its last hash. The result, and the first error
//! reported, are the same as one pass in sequence order.

use crate::queries::VERIFY_RANGE;
use crate::{StoreError, VerifyProgress};
use jit_core::audit::{ChainError, ChainVerifier, RawEvent};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Events per read (one statement or one COPY).
const CHUNK: i64 = 50_000;

/// How a run is cut up: events per read, and at most how many segments.
#[derive(Debug, Clone, Copy)]
struct Split {
    chunk: i64,
    parts: i64,
}

impl Split {
    /// One segment per core (at most four), reading [`CHUNK`] events at a time.
    fn for_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            chunk: CHUNK,
            parts: i64::try_from(cores).unwrap_or(1).clamp(1, 4),
        }
    }
}

/// Where a verification reads events from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL URL.
    Postgres(String),
}

/// What one segment found.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Its first event and the hash that event links to (`None`: the range held no events;
    /// no link: that event could not be read, and `end` says so).
    first: Option<(i64, Option<String>)>,
    /// Where its verifier ended, or the first error it met.
    end: Result<ChainVerifier, ChainError>,
}

/// Verifies one segment's events as they are read.
#[derive(Default)]
struct Check {
    first: Option<(i64, Option<String>)>,
    v: Option<ChainVerifier>,
    err: Option<ChainError>,
    buf: Vec<u8>,
}

impl Check {
    /// Checks `e`; false once an error was found (read no further).
    fn push(&mut self, e: &RawEvent<'_>) -> bool {
        let v = self.v.get_or_insert_with(|| {
            // Bytes that are not UTF-8 cannot be the hex of a hash, lossy or not: the link
            // fails, when joined or at once.
            let prev = String::from_utf8_lossy(e.prev_hash).into_owned();
            self.first = Some((e.seq, Some(prev.clone())));
            ChainVerifier::resume(e.seq - 1, &prev)
        });
        match v.push_raw(e, &mut self.buf) {
            Ok(()) => true,
            Err(err) => {
                self.err = Some(err);
                false
            }
        }
    }

    /// A row that could not be read as an event (a column of the wrong type or encoding) was
    /// written by hand: it is reported as tampered.
    fn unreadable(&mut self, seq: i64) {
        // As the segment's first event it still marks where the segment starts, so that the
        // join reports it (after any gap before it) rather than skipping the segment.
        self.first.get_or_insert((seq, None));
        self.err = Some(ChainError::Tampered(seq));
    }

    fn done(&self) -> bool {
        self.err.is_some()
    }

    fn finish(self) -> Segment {
        let end = match (self.err, self.v) {
            (Some(e), _) => Err(e),
            (None, Some(v)) => Ok(v),
            // No events: nothing to join (the segment is skipped).
            (None, None) => Ok(ChainVerifier::default()),
        };
        Segment {
            first: self.first,
            end,
        }
    }
}

/// Joins the segments, in order, onto `start` (the checkpoint, or the genesis): each must
/// begin at the next sequence number and link to the hash the chain so far ends with.
pub(crate) fn join(
    start: ChainVerifier,
    segments: Vec<Segment>,
) -> Result<ChainVerifier, ChainError> {
    let mut run = start;
    for s in segments {
        let Some((seq, prev)) = s.first else { continue };
        let expected = run.last_seq() + 1;
        if seq != expected {
            return Err(ChainError::Gap {
                expected,
                found: seq,
            });
        }
        if prev.is_some_and(|p| p != run.prev_hash()) {
            return Err(ChainError::BrokenLink(seq));
        }
        run = s.end?;
    }
    Ok(run)
}

/// The segments `(after, upto]` is split into: at most `split.parts`, each at least a chunk.
fn segments(after: i64, upto: i64, split: Split) -> Vec<(i64, i64)> {
    let len = (upto - after).max(0);
    let parts = split.parts.min(len / split.chunk + 1);
    let step = len / parts;
    (0..parts)
        .map(|i| {
            let lo = after + i * step;
            let hi = if i == parts - 1 { upto } else { lo + step };
            (lo, hi)
        })
        .collect()
}

/// Verifies the events after `start` up to `head_seq` from `source`, calling `progress`
/// about four times a second. Returns the verifier at the head (not yet `finish`ed).
pub(crate) async fn run(
    source: &Source,
    start: ChainVerifier,
    head_seq: i64,
    progress: &(dyn Fn(VerifyProgress) + Send + Sync),
) -> Result<ChainVerifier, crate::VerifyError> {
    run_split(source, start, head_seq, progress, Split::for_machine()).await
}

async fn run_split(
    source: &Source,
    start: ChainVerifier,
    head_seq: i64,
    progress: &(dyn Fn(VerifyProgress) + Send + Sync),
    split: Split,
) -> Result<ChainVerifier, crate::VerifyError> {
    let from_seq = start.last_seq() + 1;
    let checked = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    let chunk = split.chunk;
    for (lo, hi) in segments(start.last_seq(), head_seq, split) {
        let checked = checked.clone();
        tasks.push(match source {
            Source::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    sqlite_segment(&path, (lo, hi), chunk, &checked)
                })
            }
            Source::Postgres(url) => {
                let url = url.clone();
                tokio::spawn(async move { pg_segment(&url, (lo, hi), chunk, &checked).await })
            }
        });
    }
    let report = || VerifyProgress {
        from_seq,
        verified_seq: from_seq - 1 + checked.load(Ordering::Relaxed),
        head_seq,
    };
    let mut done = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        let segment = loop {
            match tokio::time::timeout(Duration::from_millis(250), &mut task).await {
                Ok(joined) => {
                    break joined
                        .map_err(|e| StoreError::Backend(format!("verification reader: {e}")))??;
                }
                Err(_) => progress(report()),
            }
        };
        done.push(segment);
    }
    progress(report());
    Ok(join(start, done)?)
}

fn sqlite_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("verification reader: {e}"))
}

/// One segment from SQLite, on a blocking thread.
fn sqlite_segment(
    path: &std::path::Path,
    (after, upto): (i64, i64),
    chunk: i64,
    checked: &AtomicI64,
) -> Result<Segment, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sqlite_err)?;
    let mut stmt = conn.prepare(VERIFY_RANGE).map_err(sqlite_err)?;
    let mut check = Check::default();
    let mut pos = after;
    while pos < upto && !check.done() {
        let mut rows = stmt.query((pos, upto, chunk)).map_err(sqlite_err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(sqlite_err)? {
            n += 1;
            let seq = r.get_ref(0).and_then(|v| Ok(v.as_i64()?));
            let Ok(seq) = seq else {
                return Err(StoreError::Backend(format!(
                    "verification reader: an event after {pos} has no integer seq"
                )));
            };
            pos = seq;
            match sqlite_event(r, seq) {
                Ok(e) => {
                    if !check.push(&e) {
                        break;
                    }
                }
                Err(_) => {
                    check.unreadable(seq);
                    break;
                }
            }
        }
        checked.fetch_add(n, Ordering::Relaxed);
        if n < chunk {
            break;
        }
    }
    Ok(check.finish())
}

fn sqlite_event<'r>(r: &'r rusqlite::Row<'_>, seq: i64) -> rusqlite::Result<RawEvent<'r>> {
    use rusqlite::types::{FromSqlError, ValueRef};
    // The stored bytes of TEXT values, unchecked: `RawEvent` needs no UTF-8 (see there). Any
    // other storage class (a BLOB of the same bytes included) is not what the writer stored.
    let opt = |i: usize| -> rusqlite::Result<Option<&'r [u8]>> {
        match r.get_ref(i)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(b) => Ok(Some(b)),
            _ => Err(rusqlite::Error::FromSqlConversionFailure(
                i,
                r.get_ref(i)?.data_type(),
                Box::new(FromSqlError::InvalidType),
            )),
        }
    };
    let text = |i: usize| -> rusqlite::Result<&'r [u8]> {
        opt(i)?.ok_or(rusqlite::Error::InvalidColumnType(
            i,
            "NULL".into(),
            rusqlite::types::Type::Null,
        ))
    };
    Ok(RawEvent {
        seq,
        at_ms: r.get_ref(1)?.as_i64()?,
        kind: text(2)?,
        actor_id: opt(3)?,
        actor_email: opt(4)?,
        request_id: opt(5)?,
        channel_id: opt(6)?,
        account_id: opt(7)?,
        data: text(8)?,
        prev_hash: text(9)?,
        hash: text(10)?,
    })
}

/// One segment from PostgreSQL, over its own connection.
async fn pg_segment(
    url: &str,
    (after, upto): (i64, i64),
    chunk: i64,
    checked: &AtomicI64,
) -> Result<Segment, StoreError> {
    use futures_util::StreamExt as _;
    use sqlx::Connection as _;
    let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
    let mut check = Check::default();
    let mut pos = after;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    while pos < upto && !check.done() {
        // COPY takes no parameters; the three are integers.
        let select = VERIFY_RANGE
            .replace("$1", &pos.to_string())
            .replace("$2", &upto.to_string())
            .replace("$3", &chunk.to_string());
        let mut stream = conn
            .copy_out_raw(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await?;
        buf.clear();
        let mut at = 0;
        let mut header = false;
        let mut n = 0;
        let mut ended = false;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            if !header {
                match copy::header(&buf) {
                    Some(len) => {
                        at = len;
                        header = true;
                    }
                    None => continue,
                }
            }
            loop {
                match copy::tuple(buf.get(at..).unwrap_or_default()) {
                    copy::Tuple::More => break,
                    copy::Tuple::End => {
                        ended = true;
                        break;
                    }
                    copy::Tuple::Bad => {
                        return Err(StoreError::Backend(format!(
                            "verification reader: unexpected COPY data after event {pos}"
                        )));
                    }
                    copy::Tuple::Row(len, e) => {
                        n += 1;
                        pos = e.seq;
                        let ok = match e.event() {
                            Some(ev) => check.push(&ev),
                            None => {
                                check.unreadable(e.seq);
                                false
                            }
                        };
                        at += len;
                        if !ok {
                            break;
                        }
                    }
                }
            }
            if check.done() {
                break;
            }
            if ended {
                // Read the stream to its end, so the connection is ready for the next COPY.
                while let Some(rest) = stream.next().await {
                    rest?;
                }
                break;
            }
            // Keep only the unparsed tail.
            buf.drain(..at);
            at = 0;
        }
        drop(stream);
        checked.fetch_add(n, Ordering::Relaxed);
        if check.done() {
            break;
        }
        if !ended {
            return Err(StoreError::Backend(
                "verification reader: the COPY stream ended early".into(),
            ));
        }
        if n < chunk {
            break;
        }
    }
    Ok(check.finish())
}

/// PostgreSQL's binary COPY format, as far as verification reads it.
mod copy {
    use jit_core::audit::RawEvent;

    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

    /// The header's length, once `buf` holds all of it.
    pub(super) fn header(buf: &[u8]) -> Option<usize> {
        let ext = buf.get(SIGNATURE.len() + 4..SIGNATURE.len() + 8)?;
        let ext = u32::from_be_bytes(ext.try_into().ok()?) as usize;
        let len = SIGNATURE.len() + 8 + ext;
        (buf.len() >= len && buf.starts_with(SIGNATURE)).then_some(len)
    }

    /// One row's fields, borrowed from the buffer.
    pub(super) struct Fields<'a> {
        pub(super) seq: i64,
        f: [Option<&'a [u8]>; 11],
    }

    impl<'a> Fields<'a> {
        /// The event, or `None` when a field has the wrong size or a required one is NULL.
        pub(super) fn event(&self) -> Option<RawEvent<'a>> {
            let text = |i: usize| *self.f.get(i)?;
            let opt = |i: usize| self.f.get(i).copied();
            Some(RawEvent {
                seq: self.seq,
                at_ms: int8(self.f[1]?)?,
                kind: text(2)?,
                actor_id: opt(3)?,
                actor_email: opt(4)?,
                request_id: opt(5)?,
                channel_id: opt(6)?,
                account_id: opt(7)?,
                data: text(8)?,
                prev_hash: text(9)?,
                hash: text(10)?,
            })
        }
    }

    fn int8(b: &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(b.try_into().ok()?))
    }

    pub(super) enum Tuple<'a> {
        /// A whole row and the bytes it took.
        Row(usize, Fields<'a>),
        /// The trailer: no more rows.
        End,
        /// The buffer ends inside a row.
        More,
        /// Not a row of the query's shape.
        Bad,
    }

    /// The row at the start of `buf`.
    pub(super) fn tuple(buf: &[u8]) -> Tuple<'_> {
        let Some(&[a, b]) = buf.get(..2) else {
            return Tuple::More;
        };
        match i16::from_be_bytes([a, b]) {
            -1 => return Tuple::End,
            11 => {}
            _ => return Tuple::Bad,
        }
        let mut at = 2;
        let mut f = [None; 11];
        for slot in &mut f {
            let Some(&[a, b, c, d]) = buf.get(at..at + 4) else {
                return Tuple::More;
            };
            let len = i32::from_be_bytes([a, b, c, d]);
            at += 4;
            if len < 0 {
                continue;
            }
            let len = len as usize;
            let Some(b) = buf.get(at..at + len) else {
                return Tuple::More;
            };
            *slot = Some(b);
            at += len;
        }
        match f[0].and_then(int8) {
            Some(seq) => Tuple::Row(at, Fields { seq, f }),
            None => Tuple::Bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_core::audit::{AuditDraft, GENESIS_HASH, event_hash};

    /// A chain of `n` events as (seq, prev, hash), each segment's view of it.
    fn chain(n: i64) -> Vec<(i64, String, String, AuditDraft)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut d = AuditDraft::new("request.created");
                d.data = serde_json::json!({"n": seq});
                let hash = event_hash(&prev, seq, seq, &d);
                let row = (seq, prev.clone(), hash.clone(), d);
                prev = hash;
                row
            })
            .collect()
    }

    fn segment(rows: &[(i64, String, String, AuditDraft)]) -> Segment {
        let mut c = Check::default();
        for (seq, prev, hash, d) in rows {
            let data = d.data.to_string();
            let e = RawEvent {
                seq: *seq,
                at_ms: *seq,
                kind: d.kind.as_bytes(),
                actor_id: None,
                actor_email: None,
                request_id: None,
                channel_id: None,
                account_id: None,
                data: data.as_bytes(),
                prev_hash: prev.as_bytes(),
                hash: hash.as_bytes(),
            };
            if !c.push(&e) {
                break;
            }
        }
        c.finish()
    }

    #[test]
    fn segments_joined_verify_as_one_pass_and_report_the_first_error() {
        let rows = chain(30);
        let whole = |rows: &[(i64, String, String, AuditDraft)]| {
            join(
                ChainVerifier::default(),
                vec![
                    segment(&rows[..10]),
                    segment(&rows[10..20]),
                    segment(&rows[20..]),
                ],
            )
        };
        let v = whole(&rows).expect("an intact chain verifies in segments");
        assert_eq!((v.last_seq(), v.prev_hash()), (30, rows[29].2.as_str()));

        // A deleted event at a segment's start is a gap, as in one pass.
        let mut gap = rows.clone();
        gap.remove(10);
        assert_eq!(
            join(
                ChainVerifier::default(),
                vec![segment(&gap[..10]), segment(&gap[10..])]
            )
            .unwrap_err(),
            ChainError::Gap {
                expected: 11,
                found: 12
            }
        );
        // A segment's first event that links elsewhere is a broken link, reported before
        // a later segment's own error.
        let mut broken = rows.clone();
        broken[10].1 = GENESIS_HASH.to_owned();
        broken[25].3.data = serde_json::json!({"n": "edited"});
        assert_eq!(whole(&broken).unwrap_err(), ChainError::BrokenLink(11));
        // An edited event inside a segment is reported at its own seq.
        let mut edited = rows.clone();
        edited[14].3.data = serde_json::json!({"n": "edited"});
        assert_eq!(whole(&edited).unwrap_err(), ChainError::Tampered(15));
        // A segment whose first row cannot be read reports it, as one pass would.
        let unreadable = |seq: i64| {
            let mut c = Check::default();
            c.unreadable(seq);
            c.finish()
        };
        assert_eq!(
            join(
                ChainVerifier::default(),
                vec![segment(&rows[..10]), unreadable(11), segment(&rows[20..])]
            )
            .unwrap_err(),
            ChainError::Tampered(11)
        );
        // An empty segment (its events deleted) is skipped, and the next one shows the gap.
        assert_eq!(
            join(
                ChainVerifier::default(),
                vec![segment(&rows[..10]), segment(&[]), segment(&rows[20..])]
            )
            .unwrap_err(),
            ChainError::Gap {
                expected: 11,
                found: 21
            }
        );
    }

    #[test]
    fn segments_cover_the_range_once() {
        for (after, upto) in [(0, 0), (0, 7), (5, 1_000_003), (100, 100 + 2 * CHUNK)] {
            let s = segments(
                after,
                upto,
                Split {
                    chunk: CHUNK,
                    parts: 3,
                },
            );
            assert_eq!(s.first().map(|x| x.0), Some(after));
            assert_eq!(s.last().map(|x| x.1), Some(upto));
            assert!(s.windows(2).all(|w| w[0].1 == w[1].0), "{s:?}");
        }
    }

    #[test]
    fn copy_rows_parse_across_any_split() {
        // A binary COPY stream of one row and the trailer, as PostgreSQL sends it.
        let mut b = b"PGCOPY\n\xff\r\n\0".to_vec();
        b.extend_from_slice(&0_u32.to_be_bytes());
        b.extend_from_slice(&0_u32.to_be_bytes());
        let head = b.len();
        b.extend_from_slice(&11_i16.to_be_bytes());
        let field = |b: &mut Vec<u8>, v: Option<&[u8]>| match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1_i32).to_be_bytes()),
        };
        field(&mut b, Some(&7_i64.to_be_bytes()));
        field(&mut b, Some(&9_i64.to_be_bytes()));
        for v in [
            Some(&b"t"[..]),
            None,
            None,
            Some(b"r"),
            None,
            None,
            Some(b"{}"),
            Some(b"p"),
            Some(b"h"),
        ] {
            field(&mut b, v);
        }
        let row_end = b.len();
        b.extend_from_slice(&(-1_i16).to_be_bytes());
        assert_eq!(copy::header(&b[..head - 1]), None);
        assert_eq!(copy::header(&b), Some(head));
        for cut in head..row_end {
            assert!(matches!(copy::tuple(&b[head..cut]), copy::Tuple::More));
        }
        let copy::Tuple::Row(len, f) = copy::tuple(&b[head..]) else {
            panic!("a whole row parses")
        };
        assert_eq!(head + len, row_end);
        let e = f.event().expect("the row is an event");
        assert_eq!(
            (e.seq, e.at_ms, e.kind, e.request_id, e.actor_id),
            (7, 9, &b"t"[..], Some(&b"r"[..]), None)
        );
        assert!(matches!(copy::tuple(&b[row_end..]), copy::Tuple::End));
    }

    /// A chain of 100 events in a real store at `url`, verified in three segments read seven
    /// events at a time, whole and then tampered with in each way, at a segment's edge and
    /// inside one.
    async fn segments_on(url: String, source: Source) {
        use crate::prelude::*;
        let store = crate::SqlStore::open(&url).await.unwrap();
        let now = time::macros::datetime!(2026-11-25 12:00 UTC);
        for batch in 0..10 {
            let drafts = (0..10)
                .map(|i| {
                    let mut d = AuditDraft::new("config.bound");
                    d.actor_email = Some(format!("user{i}@example.com"));
                    d.data = serde_json::json!({"n": batch * 10 + i, "note": "a \"quoted\" word"});
                    d
                })
                .collect();
            store
                .record(crate::WriteCtx::with_audit(drafts, now))
                .await
                .unwrap();
        }
        let split = Split { chunk: 7, parts: 3 };
        let seen = AtomicI64::new(0);
        let progress = |p: VerifyProgress| {
            seen.fetch_max(p.verified_seq, Ordering::Relaxed);
        };
        let check = || run_split(&source, ChainVerifier::default(), 100, &progress, split);
        let v = check().await.expect("the chain verifies in segments");
        assert_eq!(v.last_seq(), 100);
        assert_eq!(
            seen.load(Ordering::Relaxed),
            100,
            "progress reaches the head"
        );
        let chain_err = |r: Result<ChainVerifier, crate::VerifyError>| match r {
            Err(crate::VerifyError::Chain(e)) => e,
            other => panic!("expected a chain error, got {other:?}"),
        };
        // Each edit comes before the ones already made, so each is the error reported.
        let mut cases = vec![
            // An edit inside the last segment (34..=66 is the second, 67..=100 the third).
            (
                "UPDATE audit_events SET actor_email = 'x@example.com' WHERE seq = 80",
                ChainError::Tampered(80),
            ),
            // A deletion at the second segment's first event.
            (
                "DELETE FROM audit_events WHERE seq = 34",
                ChainError::Gap {
                    expected: 34,
                    found: 35,
                },
            ),
            // An edit, then a deletion, in the first segment.
            (
                "UPDATE audit_events SET data = '{}' WHERE seq = 20",
                ChainError::Tampered(20),
            ),
            (
                "DELETE FROM audit_events WHERE seq = 3",
                ChainError::Gap {
                    expected: 3,
                    found: 4,
                },
            ),
        ];
        if matches!(source, Source::Sqlite(_)) {
            // SQLite keeps whatever bytes it is given as TEXT: half a UTF-8 character is read
            // as it is stored, and fails its hash (PostgreSQL refuses such text on the way in).
            cases.push((
                "UPDATE audit_events SET actor_email = CAST(x'c3' AS TEXT) WHERE seq = 2",
                ChainError::Tampered(2),
            ));
            // The right bytes in the wrong storage class are not what the writer stored.
            cases.push((
                "UPDATE audit_events SET type = CAST(type AS BLOB) WHERE seq = 1",
                ChainError::Tampered(1),
            ));
        }
        for (sql, expected) in cases {
            store.raw_execute(sql).await.unwrap();
            assert_eq!(chain_err(check().await), expected, "after {sql}");
        }
    }

    #[tokio::test]
    async fn segments_verify_a_real_sqlite_trail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jit.db");
        segments_on(format!("sqlite://{}", path.display()), Source::Sqlite(path)).await;
    }

    #[tokio::test]
    async fn segments_verify_a_real_postgres_trail_over_copy() {
        let url = jit_testkit::fresh_pg_database().unwrap();
        segments_on(url.clone(), Source::Postgres(url)).await;
    }
}
