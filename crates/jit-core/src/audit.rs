//! Audit events and their hash chain. Each event's hash covers the previous event's hash and
//! the event's own fields in a fixed, canonical JSON form, so editing or deleting any row, or
//! truncating the tail (checked against the stored head), breaks verification.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event about to be appended (the store assigns sequence, time and hashes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditDraft {
    /// Event type, e.g. `request.approved`, `config.bound`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Acting user id (`None` for the system).
    pub actor_id: Option<String>,
    /// Acting user's email.
    pub actor_email: Option<String>,
    /// Request concerned.
    pub request_id: Option<String>,
    /// Channel concerned.
    pub channel_id: Option<String>,
    /// Account concerned.
    pub account_id: Option<String>,
    /// Details (JSON object; keys are sorted when hashed).
    pub data: serde_json::Value,
}

impl AuditDraft {
    /// A draft of `kind` with no subject yet.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            actor_id: None,
            actor_email: None,
            request_id: None,
            channel_id: None,
            account_id: None,
            data: serde_json::Value::Object(serde_json::Map::new()),
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// 1, 2, 3, … without gaps.
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub draft: AuditDraft,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of an event: SHA-256 over `prev_hash LF canonical-json`, lowercase hex.
pub fn event_hash(prev_hash: &str, seq: i64, at_ms: i64, d: &AuditDraft) -> String {
    let canonical = serde_json::json!([
        seq,
        at_ms,
        d.kind,
        d.actor_id,
        d.actor_email,
        d.request_id,
        d.channel_id,
        d.account_id,
        d.data
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// What verification found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A sequence number is missing (a deleted row).
    #[error("event {expected} is missing (found {found} next): a row was deleted")]
    Gap {
        /// Expected sequence number.
        expected: i64,
        /// What came instead.
        found: i64,
    },
    /// `prev_hash` does not match the previous event's hash.
    #[error("event {0} does not link to the event before it: the chain was altered")]
    BrokenLink(i64),
    /// The recomputed hash differs: the row was edited.
    #[error("event {0} was modified after it was written")]
    Tampered(i64),
    /// The chain ends before the recorded head: the tail was deleted.
    #[error(
        "the chain ends at event {found} but {expected} events were recorded: the tail was deleted"
    )]
    Truncated {
        /// Recorded head.
        expected: i64,
        /// Last event found.
        found: i64,
    },
}

/// Incremental verifier: feed events in sequence order, then call [`ChainVerifier::finish`].
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// An event as stored, borrowed from a database row: text columns are their stored bytes, and
/// `data` is the stored JSON text. Lets verification hash the stored bytes without building a
/// JSON value per event, or checking that each column is UTF-8 (bytes that are not could not
/// have been hashed by the writer, so they fail the hash comparison on their own).
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// Sequence number.
    pub seq: i64,
    /// When (unix ms).
    pub at_ms: i64,
    /// Event type.
    pub kind: &'a [u8],
    /// Actor user id.
    pub actor_id: Option<&'a [u8]>,
    /// Actor email.
    pub actor_email: Option<&'a [u8]>,
    /// Request.
    pub request_id: Option<&'a [u8]>,
    /// Channel.
    pub channel_id: Option<&'a [u8]>,
    /// Account.
    pub account_id: Option<&'a [u8]>,
    /// The stored `data` JSON text.
    pub data: &'a [u8],
    /// Stored `prev_hash`.
    pub prev_hash: &'a [u8],
    /// Stored `hash`.
    pub hash: &'a [u8],
}

/// Appends `s` as a JSON string, exactly as `serde_json` writes it.
fn put_json_str(buf: &mut Vec<u8>, s: Option<&[u8]>) {
    let Some(s) = s else {
        buf.extend_from_slice(b"null");
        return;
    };
    // serde_json escapes only `"`, `\\` and control characters; most fields have none, and are
    // copied as they are. The scan has no early exit, so it runs on whole vectors.
    let needs_escape = s.iter().fold(false, |esc, &b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    // Writing a str to a Vec cannot fail. Bytes that are not UTF-8 are not text the writer
    // could have hashed: they are copied as they are, and cannot match.
    let escaped = needs_escape
        && std::str::from_utf8(s).is_ok_and(|t| serde_json::to_writer(&mut *buf, t).is_ok());
    if !escaped {
        buf.push(b'"');
        buf.extend_from_slice(s);
        buf.push(b'"');
    }
}

impl ChainVerifier {
    /// Resumes after a verified checkpoint: the next event is `seq + 1` and must link to
    /// `hash`.
    pub fn resume(seq: i64, hash: &str) -> Self {
        Self {
            next_seq: seq + 1,
            prev_hash: hash.to_owned(),
        }
    }

    /// The hash of the last event verified (the genesis hash before any).
    pub fn prev_hash(&self) -> &str {
        &self.prev_hash
    }

    /// The last event verified (0 before any).
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// Checks one stored event, hashing the canonical form assembled from the stored text
    /// (`buf` is reused between calls). The stored `data` is the canonical JSON the writer
    /// hashed, so this is exact; should the text differ from its canonical form (a row
    /// rewritten by hand in an equivalent spelling), the event is checked again the slow way,
    /// through [`event_hash`], before it is called tampered.
    pub fn push_raw(&mut self, e: &RawEvent<'_>, buf: &mut Vec<u8>) -> Result<(), ChainError> {
        if e.seq != self.next_seq {
            return Err(ChainError::Gap {
                expected: self.next_seq,
                found: e.seq,
            });
        }
        if e.prev_hash != self.prev_hash.as_bytes() {
            return Err(ChainError::BrokenLink(e.seq));
        }
        buf.clear();
        buf.extend_from_slice(e.prev_hash);
        buf.push(b'\n');
        let mut ints = itoa::Buffer::new();
        buf.push(b'[');
        buf.extend_from_slice(ints.format(e.seq).as_bytes());
        buf.push(b',');
        buf.extend_from_slice(ints.format(e.at_ms).as_bytes());
        buf.push(b',');
        put_json_str(buf, Some(e.kind));
        for f in [
            e.actor_id,
            e.actor_email,
            e.request_id,
            e.channel_id,
            e.account_id,
        ] {
            buf.push(b',');
            put_json_str(buf, f);
        }
        buf.push(b',');
        buf.extend_from_slice(e.data);
        buf.push(b']');
        let digest = Sha256::digest(&buf[..]);
        let mut hexed = [0_u8; 64];
        let fast_ok = hex::encode_to_slice(digest, &mut hexed).is_ok() && hexed[..] == *e.hash;
        if !fast_ok && !self.slow_matches(e) {
            return Err(ChainError::Tampered(e.seq));
        }
        self.next_seq += 1;
        self.prev_hash.clear();
        // The stored hash matched the hex just written (or, on the slow path, equalled it).
        self.prev_hash
            .push_str(std::str::from_utf8(e.hash).unwrap_or_default());
        Ok(())
    }

    fn slow_matches(&self, e: &RawEvent<'_>) -> bool {
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        let opt = |b: Option<&[u8]>| match b {
            None => Some(None),
            Some(b) => text(b).map(Some),
        };
        let parsed = || {
            let d = AuditDraft {
                kind: text(e.kind)?,
                actor_id: opt(e.actor_id)?,
                actor_email: opt(e.actor_email)?,
                request_id: opt(e.request_id)?,
                channel_id: opt(e.channel_id)?,
                account_id: opt(e.account_id)?,
                data: serde_json::from_slice(e.data).ok()?,
            };
            Some((d, text(e.prev_hash)?, text(e.hash)?))
        };
        parsed().is_some_and(|(d, prev, hash)| event_hash(&prev, e.seq, e.at_ms, &d) == hash)
    }

    /// Checks one event.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainError> {
        if e.seq != self.next_seq {
            return Err(ChainError::Gap {
                expected: self.next_seq,
                found: e.seq,
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(ChainError::BrokenLink(e.seq));
        }
        if event_hash(&e.prev_hash, e.seq, e.at_ms, &e.draft) != e.hash {
            return Err(ChainError::Tampered(e.seq));
        }
        self.next_seq += 1;
        self.prev_hash.clone_from(&e.hash);
        Ok(())
    }

    /// Checks the end of the chain against the recorded head sequence; returns the count.
    pub fn finish(self, head_seq: i64) -> Result<i64, ChainError> {
        let last = self.next_seq - 1;
        if last != head_seq {
            return Err(ChainError::Truncated {
                expected: head_seq,
                found: last,
            });
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "quote \" inside",
            "back\\slash",
            "tab\tnew\nline\u{1}\u{1f}",
            "del\u{7f} é ✓ 🚀",
            "</script>",
        ] {
            let mut buf = Vec::new();
            put_json_str(&mut buf, Some(s.as_bytes()));
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
        let mut buf = Vec::new();
        put_json_str(&mut buf, None);
        assert_eq!(buf, b"null");
        // Not UTF-8 (half a character, then a quote): the bytes as they are.
        let mut buf = Vec::new();
        put_json_str(&mut buf, Some(b"\xc3\""));
        assert_eq!(buf, b"\"\xc3\"\"");
    }

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut d = AuditDraft::new("request.created");
                d.request_id = Some(format!("r{seq}"));
                d.data = serde_json::json!({"b": 1, "a": "x"});
                let hash = event_hash(&prev, seq, 1000 + seq, &d);
                let e = AuditEvent {
                    seq,
                    at_ms: 1000 + seq,
                    draft: d,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent], head: i64) -> Result<i64, ChainError> {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e)?;
        }
        v.finish(head)
    }

    fn verify_raw(events: &[(AuditEvent, String)], head: i64) -> Result<i64, ChainError> {
        let mut v = ChainVerifier::default();
        let mut buf = Vec::new();
        for (e, data) in events {
            let raw = RawEvent {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.draft.kind.as_bytes(),
                actor_id: e.draft.actor_id.as_deref().map(str::as_bytes),
                actor_email: e.draft.actor_email.as_deref().map(str::as_bytes),
                request_id: e.draft.request_id.as_deref().map(str::as_bytes),
                channel_id: e.draft.channel_id.as_deref().map(str::as_bytes),
                account_id: e.draft.account_id.as_deref().map(str::as_bytes),
                data: data.as_bytes(),
                prev_hash: e.prev_hash.as_bytes(),
                hash: e.hash.as_bytes(),
            };
            v.push_raw(&raw, &mut buf)?;
        }
        v.finish(head)
    }

    #[test]
    fn raw_verification_agrees_with_the_parsed_one() {
        let stored = |c: Vec<AuditEvent>| -> Vec<(AuditEvent, String)> {
            c.into_iter()
                .map(|e| {
                    let t = e.draft.data.to_string();
                    (e, t)
                })
                .collect()
        };
        let mut c = chain(5);
        c[1].draft.actor_email = Some("a\"b\u{e9}@example.com".into());
        // Rehash so the odd email is part of a valid chain.
        let mut prev = GENESIS_HASH.to_owned();
        for e in &mut c {
            e.prev_hash.clone_from(&prev);
            e.hash = event_hash(&prev, e.seq, e.at_ms, &e.draft);
            prev.clone_from(&e.hash);
        }
        assert_eq!(verify_raw(&stored(c.clone()), 5), Ok(5));
        // Equivalent JSON in another spelling still verifies (through the slow path).
        let mut s = stored(c.clone());
        s[2].1 = "{ \"b\": 1, \"a\": \"x\" }".into();
        assert_eq!(verify_raw(&s, 5), Ok(5));
        // A changed value does not.
        let mut s = stored(c.clone());
        s[3].1 = r#"{"a":"y","b":1}"#.into();
        assert_eq!(verify_raw(&s, 5), Err(ChainError::Tampered(4)));
        let mut s = stored(c);
        s[0].0.draft.kind = "request.approved".into();
        assert_eq!(verify_raw(&s, 5), Err(ChainError::Tampered(1)));
        // Resuming after a checkpoint checks only what follows it.
        let c = stored(chain(5));
        let mut v = ChainVerifier::resume(3, &c[2].0.hash);
        let mut buf = Vec::new();
        for (e, data) in &c[3..] {
            let raw = RawEvent {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.draft.kind.as_bytes(),
                actor_id: None,
                actor_email: None,
                request_id: e.draft.request_id.as_deref().map(str::as_bytes),
                channel_id: None,
                account_id: None,
                data: data.as_bytes(),
                prev_hash: e.prev_hash.as_bytes(),
                hash: e.hash.as_bytes(),
            };
            v.push_raw(&raw, &mut buf).unwrap();
        }
        assert_eq!(v.finish(5), Ok(5));
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5), 5), Ok(5));
        assert_eq!(verify(&[], 0), Ok(0));
    }

    #[test]
    fn edits_deletions_and_truncation_are_found() {
        let mut c = chain(5);
        c[2].draft.actor_id = Some("mallory".into());
        assert_eq!(verify(&c, 5), Err(ChainError::Tampered(3)));
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify(&c, 5),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );
        let c = chain(5);
        assert_eq!(
            verify(&c[..4], 5),
            Err(ChainError::Truncated {
                expected: 5,
                found: 4
            })
        );
        // Re-hashing an edited row does not help: the next link breaks.
        let mut c = chain(5);
        c[2].draft.data = serde_json::json!({"a": "y"});
        c[2].hash = event_hash(&c[2].prev_hash, 3, c[2].at_ms, &c[2].draft);
        assert_eq!(verify(&c, 5), Err(ChainError::BrokenLink(4)));
    }

    #[test]
    fn key_order_in_data_does_not_matter() {
        let mut a = AuditDraft::new("x");
        a.data = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let mut b = AuditDraft::new("x");
        b.data = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(
            event_hash(GENESIS_HASH, 1, 1, &a),
            event_hash(GENESIS_HASH, 1, 1, &b)
        );
    }
}
