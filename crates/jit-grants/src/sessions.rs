//! What a session keeps after a revoke, and the policy that takes it away.
//!
//! Removing an IAM Identity Center account assignment stops the user from opening new sessions,
//! but a session already open keeps its role credentials until the permission set's session
//! duration ends (default `PT1H`, at most `PT12H`). The remedy AWS documents for Identity Center
//! is a `Deny` in the permission set's inline policy that matches the user's role sessions
//! (`aws:userid` ends in `:<user name>`, the role session name Identity Center gives them) issued
//! before the revoke (`aws:TokenIssueTime`). This module edits that document, and nothing else:
//! it is pure, so every case is a unit test; `aws.rs` reads, writes and provisions it.
//!
//! Our statements have a stable `Sid` per user and account, so a retried revoke replaces its own
//! statement instead of adding another; they are scoped to the account of the revoked grant
//! (`aws:PrincipalAccount`), because the inline policy applies in every account the permission
//! set is provisioned to, where the same user may hold other, unrevoked access. A statement whose
//! revoke time plus the session duration has passed can no longer match a live token and is
//! dropped. Every statement that is not ours is kept as it was.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// `Sid`s of our statements start with this.
pub const SID_PREFIX: &str = "JitRevoke";

/// The session duration assumed when the permission set's is unknown: the longest Identity
/// Center allows, so a statement is never dropped while a session it must stop may still live.
pub const LONGEST_SESSION: Duration = Duration::hours(12);

const VERSION: &str = "2012-10-17";

/// An IAM policy document: `Statement` (an array, or one object) and whatever else it holds.
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    #[serde(rename = "Version", default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(rename = "Statement", default, deserialize_with = "one_or_many")]
    statement: Vec<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(v) => Ok(v),
        one @ Value::Object(_) => Ok(vec![one]),
        _ => Err(serde::de::Error::custom(
            "Statement must be an object or an array",
        )),
    }
}

/// Our statement: deny everything to the user's sessions in one account issued before a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeStatement {
    #[serde(rename = "Sid")]
    sid: String,
    #[serde(rename = "Effect")]
    effect: Effect,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Resource")]
    resource: String,
    #[serde(rename = "Condition")]
    condition: RevokeCondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Effect {
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeCondition {
    #[serde(rename = "StringLike")]
    string_like: UserIdLike,
    #[serde(rename = "StringEquals")]
    string_equals: PrincipalAccount,
    #[serde(rename = "DateLessThan")]
    date_less_than: TokenIssueTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIdLike {
    /// `*:<role session name>`: any role's session of that name.
    #[serde(rename = "aws:userid")]
    user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalAccount {
    #[serde(rename = "aws:PrincipalAccount")]
    account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIssueTime {
    #[serde(rename = "aws:TokenIssueTime", with = "time::serde::rfc3339")]
    before: OffsetDateTime,
}

/// Our statement's `Sid` for a user name and account: stable across runs and versions
/// (SHA-256, not the standard library's hasher), letters and digits only as IAM requires.
pub fn sid(user_name: &str, account_id: &str) -> String {
    let digest = Sha256::digest(format!("{user_name}\n{account_id}").as_bytes());
    let short: String = hex::encode(digest).chars().take(16).collect();
    format!("{SID_PREFIX}{short}")
}

/// `user_name` as a `StringLike` pattern matching exactly itself: `*`, `?` and `$` are written
/// as the policy variables `${*}`, `${?}` and `${$}`.
fn literal(user_name: &str) -> String {
    let mut s = String::with_capacity(user_name.len());
    for c in user_name.chars() {
        match c {
            '*' | '?' | '$' => {
                s.push_str("${");
                s.push(c);
                s.push('}');
            }
            c => s.push(c),
        }
    }
    s
}

/// Up to the next whole second, in UTC: IAM compares times to the second, and a token issued
/// in the same second as the revoke, before it, must still be denied.
fn ceil_second(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let whole = t.replace_nanosecond(0).unwrap_or(t);
    if whole == t {
        t
    } else {
        whole + Duration::SECOND
    }
}

fn ours(v: &Value) -> Option<RevokeStatement> {
    let sid = v.get("Sid")?.as_str()?;
    if !sid.starts_with(SID_PREFIX) {
        return None;
    }
    serde_json::from_value(v.clone()).ok()
}

/// The inline policy `current` (empty: none) with a statement denying `user_name`'s sessions in
/// `account_id` issued before `revoked_at`, in place of any earlier one of ours for the same
/// user and account (keeping the later time of the two); statements of ours that can match no
/// live token any more (`before + session <= revoked_at`) dropped; all others kept as they are.
/// Applying it twice gives the same document. Fails when `current` is not a policy document.
pub fn with_revocation(
    current: &str,
    user_name: &str,
    account_id: &str,
    revoked_at: OffsetDateTime,
    session: Duration,
) -> Result<String, String> {
    let mut doc = if current.trim().is_empty() {
        Document {
            version: None,
            statement: Vec::new(),
            rest: serde_json::Map::new(),
        }
    } else {
        serde_json::from_str::<Document>(current)
            .map_err(|e| format!("the permission set's inline policy cannot be read: {e}"))?
    };
    // `${*}` needs the 2012-10-17 language; a document without a version is the old one.
    if doc.version.is_none() {
        doc.version = Some(VERSION.to_owned());
    }
    let sid = sid(user_name, account_id);
    let mut before = ceil_second(revoked_at);
    let mut at = None;
    let mut kept = Vec::with_capacity(doc.statement.len() + 1);
    for v in doc.statement {
        match ours(&v) {
            Some(s) if s.sid == sid => {
                before = before.max(s.condition.date_less_than.before);
                at.get_or_insert(kept.len());
            }
            Some(s) if s.condition.date_less_than.before + session <= revoked_at => {}
            _ => kept.push(v),
        }
    }
    let statement = RevokeStatement {
        sid,
        effect: Effect::Deny,
        action: "*".into(),
        resource: "*".into(),
        condition: RevokeCondition {
            string_like: UserIdLike {
                user_id: format!("*:{}", literal(user_name)),
            },
            string_equals: PrincipalAccount {
                account: account_id.to_owned(),
            },
            date_less_than: TokenIssueTime { before },
        },
    };
    let statement = serde_json::to_value(&statement).map_err(|e| e.to_string())?;
    match at {
        Some(i) if i <= kept.len() => kept.insert(i, statement),
        _ => kept.push(statement),
    }
    doc.statement = kept;
    serde_json::to_string(&doc)
        .map(|s| ascii_only(&s))
        .map_err(|e| e.to_string())
}

/// JSON text with every non-ASCII character written as `\uXXXX` (the same JSON): Identity
/// Center accepts only tab, newline, carriage return and U+0020 to U+00FF in an inline policy,
/// and a user name may hold anything. Non-ASCII characters occur only inside JSON strings, so
/// this is safe on the whole text.
fn ascii_only(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// An ISO 8601 duration as Identity Center writes a session duration (`PT1H`, `PT12H`,
/// `PT1H30M`, `PT3600S`); `None` for anything else.
pub fn parse_session_duration(iso: &str) -> Option<Duration> {
    let mut rest = iso.strip_prefix("PT")?;
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    for (unit, secs) in [('H', 3600i64), ('M', 60), ('S', 1)] {
        if let Some((n, tail)) = rest.split_once(unit)
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
        {
            let n: i64 = n.parse().ok()?;
            total += Duration::seconds(n.checked_mul(secs)?);
            rest = tail;
        }
    }
    rest.is_empty().then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const T: OffsetDateTime = datetime!(2025-11-25 12:00:00.250 UTC);

    fn statements(doc: &str) -> Vec<Value> {
        let v: Value = serde_json::from_str(doc).unwrap();
        v["Statement"].as_array().unwrap().clone()
    }

    #[test]
    fn a_first_revocation_writes_one_deny_for_the_user_in_the_account() {
        let doc =
            with_revocation("", "alice@example.com", "123456789012", T, Duration::HOUR).unwrap();
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["Version"], "2012-10-17");
        assert_eq!(
            v["Statement"],
            json!([{
                "Sid": sid("alice@example.com", "123456789012"),
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "StringLike": {"aws:userid": "*:alice@example.com"},
                    "StringEquals": {"aws:PrincipalAccount": "123456789012"},
                    "DateLessThan": {"aws:TokenIssueTime": "2025-11-25T12:00:01Z"}
                }
            }])
        );
    }

    #[test]
    fn sids_are_stable_per_user_and_account_and_plain() {
        let a = sid("alice@example.com", "123456789012");
        assert_eq!(a, sid("alice@example.com", "123456789012"));
        assert_ne!(a, sid("bob@example.com", "123456789012"));
        assert_ne!(a, sid("alice@example.com", "210987654321"));
        assert!(a.starts_with(SID_PREFIX) && a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.len(), SID_PREFIX.len() + 16);
    }

    #[test]
    fn others_statements_are_kept_and_a_rerun_changes_nothing() {
        let theirs = json!({"Version": "2012-10-17", "Id": "keep-me", "Statement": {
            "Sid": "ReadOnly", "Effect": "Allow", "Action": ["s3:Get*"], "Resource": "*"}});
        let one = with_revocation(
            &theirs.to_string(),
            "alice@example.com",
            "123456789012",
            T,
            Duration::HOUR,
        )
        .unwrap();
        let two = with_revocation(&one, "bob", "123456789012", T, Duration::HOUR).unwrap();
        let again =
            with_revocation(&two, "alice@example.com", "123456789012", T, Duration::HOUR).unwrap();
        assert_eq!(again, two, "idempotent, order kept");
        let s = statements(&two);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], theirs["Statement"]);
        assert_eq!(s[2]["Condition"]["StringLike"]["aws:userid"], "*:bob");
        let v: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(v["Id"], "keep-me");
    }

    #[test]
    fn a_later_revocation_of_the_same_user_moves_the_time_forward_never_back() {
        let first = with_revocation("", "alice", "123456789012", T, Duration::HOUR).unwrap();
        let later = with_revocation(
            &first,
            "alice",
            "123456789012",
            T + Duration::minutes(10),
            Duration::HOUR,
        )
        .unwrap();
        let s = statements(&later);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2025-11-25T12:10:01Z"
        );
        let earlier = with_revocation(&later, "alice", "123456789012", T, Duration::HOUR).unwrap();
        assert_eq!(earlier, later);
    }

    #[test]
    fn statements_no_live_token_can_match_are_dropped() {
        let old = with_revocation("", "alice", "123456789012", T, Duration::HOUR).unwrap();
        let old = with_revocation(
            &old,
            "carol",
            "123456789012",
            T + Duration::minutes(30),
            Duration::HOUR,
        )
        .unwrap();
        // 61 minutes later: alice's tokens issued before T are all expired; carol's may not be.
        let now = T + Duration::minutes(61);
        let doc = with_revocation(&old, "bob", "123456789012", now, Duration::HOUR).unwrap();
        let users: Vec<_> = statements(&doc)
            .iter()
            .map(|s| s["Condition"]["StringLike"]["aws:userid"].clone())
            .collect();
        assert_eq!(users, vec![json!("*:carol"), json!("*:bob")]);
        // With a 12-hour session nothing of that age is dropped.
        let doc = with_revocation(&old, "bob", "123456789012", now, LONGEST_SESSION).unwrap();
        assert_eq!(statements(&doc).len(), 3);
    }

    #[test]
    fn a_statement_that_only_looks_like_ours_is_not_touched() {
        let theirs = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "JitRevokeHandMade", "Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"StringLike": {"aws:userid": "*:mallory"}}}]});
        let doc = with_revocation(
            &theirs.to_string(),
            "bob",
            "123456789012",
            T + Duration::days(30),
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(statements(&doc)[0], theirs["Statement"][0]);
    }

    #[test]
    fn wildcards_in_a_user_name_match_only_themselves() {
        let doc = with_revocation("", "a*b?$", "123456789012", T, Duration::HOUR).unwrap();
        assert_eq!(
            statements(&doc)[0]["Condition"]["StringLike"]["aws:userid"],
            "*:a${*}b${?}${$}"
        );
    }

    #[test]
    fn the_document_is_ascii_and_means_the_same() {
        let doc = with_revocation("", "zoë.田中😀", "123456789012", T, Duration::HOUR).unwrap();
        assert!(doc.is_ascii(), "{doc}");
        assert_eq!(
            statements(&doc)[0]["Condition"]["StringLike"]["aws:userid"],
            "*:zoë.田中😀"
        );
        let again = with_revocation(&doc, "zoë.田中😀", "123456789012", T, Duration::HOUR).unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn what_is_not_a_policy_is_refused() {
        for bad in ["not json", "[]", r#"{"Statement": 3}"#] {
            assert!(
                with_revocation(bad, "a", "123456789012", T, Duration::HOUR).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn session_durations_parse_as_identity_center_writes_them() {
        assert_eq!(parse_session_duration("PT1H"), Some(Duration::HOUR));
        assert_eq!(parse_session_duration("PT12H"), Some(Duration::hours(12)));
        assert_eq!(
            parse_session_duration("PT1H30M"),
            Some(Duration::minutes(90))
        );
        assert_eq!(parse_session_duration("PT3600S"), Some(Duration::HOUR));
        for bad in ["", "PT", "P1D", "1H", "PTH", "PT1X", "PT-1H", "3600"] {
            assert_eq!(parse_session_duration(bad), None, "{bad}");
        }
    }
}
