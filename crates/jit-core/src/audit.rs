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

impl ChainVerifier {
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
