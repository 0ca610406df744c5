//! The item design of the DynamoDB store: every key and index key is built here, so the layout
//! documented in `docs/architecture.md` ("The DynamoDB item design") is one file to read.
//!
//! One state table with a string partition key `pk` and sort key `sk`, and six overloaded global
//! secondary indexes `g1`..`g6` (hash `gNpk`, range `gNsk`, all attributes projected). An item
//! fills only the index keys it is found by, so every index is sparse. Numbers in sort keys are
//! zero-padded to 20 digits, so string order is numeric order.

/// Zero-padded, so that string order is numeric order (negative values sort as 0).
pub(crate) fn pad(v: i64) -> String {
    format!("{:020}", v.max(0))
}

/// Sort key of a request in every request index: newest first when read backwards.
pub(crate) fn request_sort(created_ms: i64, id: &str) -> String {
    format!("{}#{id}", pad(created_ms))
}

/// The chain head: `seq`, `hash`, and `oseq` (the last callback sequence number).
pub(crate) const HEAD: (&str, &str) = ("HEAD", "HEAD");

/// The counters behind `/metrics`: one item per table and status.
pub(crate) const COUNT_PK: &str = "COUNT";

pub(crate) fn count_sk(table: &str, status: &str) -> String {
    format!("{table}#{status}")
}

pub(crate) fn binding(channel: &str) -> (String, String) {
    (format!("B#{channel}"), "B".into())
}

/// g1 of a binding: every binding in channel order.
pub(crate) const BINDINGS_G1: &str = "BINDINGS";

pub(crate) fn request(id: &str) -> (String, String) {
    (format!("R#{id}"), "R".into())
}

/// An id-prefix item: the partition is the id's first two characters, so a short id from the
/// plugin's status table is one `begins_with` query.
pub(crate) fn request_prefix(id: &str) -> (String, String) {
    let head: String = id.chars().take(2).collect();
    (format!("RP#{head}"), id.to_owned())
}

/// Request indexes: g1 channel, g2 status, g3 requester email, g4 account, g5 requester id,
/// g6 every request.
pub(crate) fn request_by_channel(channel: &str) -> String {
    format!("RC#{channel}")
}
pub(crate) fn request_by_status(status: &str) -> String {
    format!("RS#{status}")
}
pub(crate) fn request_by_email(email: &str) -> String {
    format!("RE#{}", email.to_ascii_lowercase())
}
pub(crate) fn request_by_account(account: &str) -> String {
    format!("RA#{account}")
}
pub(crate) fn request_by_user(user: &str) -> String {
    format!("RU#{user}")
}
pub(crate) const REQUESTS_ALL: &str = "RALL";

pub(crate) fn job(kind: &str, request_id: &str) -> (String, String) {
    (format!("J#{kind}:{request_id}"), "J".into())
}
/// g1 of a job: due time within its kind.
pub(crate) fn job_due(kind: &str) -> String {
    format!("JD#{kind}")
}
pub(crate) fn job_due_sort(due_ms: i64, request_id: &str) -> String {
    format!("{}#{request_id}", pad(due_ms))
}
/// g2 of a job that failed at least once (sparse).
pub(crate) fn job_failed(kind: &str) -> String {
    format!("JF#{kind}")
}

pub(crate) fn outbox(event_id: &str) -> (String, String) {
    (format!("O#{event_id}"), "O".into())
}
/// g1 of a callback: by status, oldest first.
pub(crate) fn outbox_by_status(status: &str) -> String {
    format!("OS#{status}")
}
pub(crate) fn outbox_status_sort(created_ms: i64, event_id: &str) -> String {
    format!("{}#{event_id}", pad(created_ms))
}
/// g2 of a pending callback (sparse): by next attempt.
pub(crate) const OUTBOX_DUE: &str = "OD";
pub(crate) fn outbox_due_sort(next_ms: i64, event_id: &str) -> String {
    format!("{}#{event_id}", pad(next_ms))
}
/// g3 of a callback: its request's events in order.
pub(crate) fn outbox_by_request(request_id: &str) -> String {
    format!("OR#{request_id}")
}

pub(crate) fn assignment(principal: &str) -> (String, String) {
    (format!("P#{principal}"), "A".into())
}
pub(crate) fn principal_lock(principal: &str) -> (String, String) {
    (format!("P#{principal}"), "L".into())
}

/// Idempotency records; the scope's length keeps `scope`/`key` pairs apart.
pub(crate) fn idempotency(scope: &str, key: &str) -> (String, String) {
    (format!("I#{}:{scope}{key}", scope.len()), "I".into())
}

/// Audit events live in buckets of this many, so a range of sequence numbers is a few queries.
pub(crate) const AUDIT_BUCKET: i64 = 1000;

pub(crate) fn audit_bucket(seq: i64) -> String {
    format!("A#{:012}", seq.max(0) / AUDIT_BUCKET)
}
pub(crate) fn audit(seq: i64) -> (String, String) {
    (audit_bucket(seq), pad(seq))
}
/// Audit indexes: g1 request, g2 type, g3 actor id, g4 account, g5 channel, g6 actor email;
/// the sort key is the sequence number.
pub(crate) fn audit_by_request(v: &str) -> String {
    format!("AR#{v}")
}
pub(crate) fn audit_by_type(v: &str) -> String {
    format!("AT#{v}")
}
pub(crate) fn audit_by_actor(v: &str) -> String {
    format!("AU#{v}")
}
pub(crate) fn audit_by_account(v: &str) -> String {
    format!("AA#{v}")
}
pub(crate) fn audit_by_channel(v: &str) -> String {
    format!("AC#{v}")
}
pub(crate) fn audit_by_email(v: &str) -> String {
    format!("AE#{}", v.to_ascii_lowercase())
}

pub(crate) const CHECKPOINT_PK: &str = "CP";

pub(crate) const KEY_USAGE_PK: &str = "K";
pub(crate) fn key_usage_sk(ring: &str, verifier: &str, key_id: &str) -> String {
    format!("{ring}\u{1f}{key_id}\u{1f}{verifier}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn padded_numbers_sort_as_numbers() {
        let mut v = vec![pad(10), pad(9), pad(1_700_000_000_000), pad(-5)];
        v.sort();
        assert_eq!(
            v,
            vec![pad(0), pad(9), pad(10), pad(1_700_000_000_000)],
            "string order must be numeric order"
        );
        assert!(request_sort(5, "b") > request_sort(5, "a"));
        assert!(request_sort(6, "a") > request_sort(5, "z"));
    }

    #[test]
    fn idempotency_keys_do_not_collide_across_scopes() {
        assert_ne!(idempotency("ab", "c"), idempotency("a", "bc"));
    }

    #[test]
    fn audit_buckets_hold_a_thousand_events() {
        assert_eq!(audit(999).0, audit(1).0);
        assert_ne!(audit(1000).0, audit(999).0);
    }
}
