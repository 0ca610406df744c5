//! Key ring edits behind `jit keys rotate|retire|rollback|auto`, as pure functions over the
//! ring's JSON document (the Secrets Manager `SecretString` format), so every rule is tested
//! without I/O. Entries the edit does not touch keep their form (plain strings stay strings).

use jit_proto::keyring::{KeyRing, Secret};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The document is not a JSON object of keys.
    #[error("the key ring is not a JSON object of keys: {0}")]
    NotAnObject(String),
    /// No such key.
    #[error("key {0:?} is not in the ring")]
    UnknownKey(String),
    /// It is the key that signs now.
    #[error("key {0:?} is the signing key; rotate first and retire it once the new key signs")]
    SigningKey(String),
    /// The ring would be empty.
    #[error("key {0:?} is the last key of the ring")]
    LastKey(String),
    /// A verifier used it within the overlap window.
    #[error(
        "key {id:?} verified a request {ago_secs} s ago at {verifier}; it is still in use (overlap {overlap_secs} s)"
    )]
    InUse {
        /// The key.
        id: String,
        /// Who saw it.
        verifier: String,
        /// How long ago.
        ago_secs: i64,
        /// The window.
        overlap_secs: i64,
    },
    /// The result would not parse as a ring.
    #[error("the edited ring is not valid: {0}")]
    Invalid(String),
}

/// Parses a ring document (only JSON object rings can be edited).
pub fn parse_doc(text: &str) -> Result<Map<String, Value>, EditError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) | Err(_) => Err(EditError::NotAnObject(
            "a plain single secret cannot be rotated in place; move it into a JSON object first"
                .into(),
        )),
    }
}

/// Serialises a document (pretty JSON) after checking that it still parses as a ring.
pub fn render_doc(doc: &Map<String, Value>) -> Result<Zeroizing<String>, EditError> {
    let text = Zeroizing::new(
        serde_json::to_string_pretty(&Value::Object(doc.clone()))
            .map_err(|e| EditError::Invalid(e.to_string()))?,
    );
    KeyRing::parse(&text).map_err(|e| EditError::Invalid(e.to_string()))?;
    Ok(text)
}

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Adds a new key `<prefix>-YYYYMMDD` (with `-2`, `-3`… if taken) created now, that signs only
/// from `not_before` on, so every verifier holds it before any signer uses it. Returns its id.
pub fn rotate(
    doc: &mut Map<String, Value>,
    prefix: &str,
    now: OffsetDateTime,
    not_before: OffsetDateTime,
) -> Result<String, EditError> {
    let d = now.date();
    let base = format!(
        "{prefix}-{:04}{:02}{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    );
    let mut id = base.clone();
    let mut n = 2;
    while doc.contains_key(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    let secret =
        Secret::generate().map_err(|e| EditError::Invalid(format!("random generator: {e}")))?;
    let mut entry = Map::new();
    entry.insert(
        "secret".into(),
        Value::String(String::from_utf8_lossy(secret.expose()).into_owned()),
    );
    entry.insert("created_at".into(), Value::String(ts(now)));
    entry.insert("not_before".into(), Value::String(ts(not_before)));
    doc.insert(id.clone(), Value::Object(entry));
    Ok(id)
}

/// The id of the key that signs at `now` in this document.
pub fn signing_id(
    doc: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<Option<String>, EditError> {
    let text = render_doc(doc)?;
    let ring = KeyRing::parse(&text).map_err(|e| EditError::Invalid(e.to_string()))?;
    Ok(ring.signing_key(now).map(|k| k.id().as_str().to_owned()))
}

/// Removes `id` unless it signs now, is the last key, or was used (by any verifier in `uses`:
/// `(verifier, unix seconds)`) within `overlap_secs`; `force` skips the use check only.
/// Returns the removed entry (for the backup).
pub fn retire(
    doc: &mut Map<String, Value>,
    id: &str,
    now: OffsetDateTime,
    uses: &[(String, i64)],
    overlap_secs: i64,
    force: bool,
) -> Result<Value, EditError> {
    if !doc.contains_key(id) {
        return Err(EditError::UnknownKey(id.into()));
    }
    if doc.len() == 1 {
        return Err(EditError::LastKey(id.into()));
    }
    if signing_id(doc, now)?.as_deref() == Some(id) {
        return Err(EditError::SigningKey(id.into()));
    }
    if !force && let Some((verifier, at)) = uses.iter().max_by_key(|(_, at)| *at) {
        let ago = now.unix_timestamp() - at;
        if ago < overlap_secs {
            return Err(EditError::InUse {
                id: id.into(),
                verifier: verifier.clone(),
                ago_secs: ago,
                overlap_secs,
            });
        }
    }
    doc.remove(id)
        .ok_or_else(|| EditError::UnknownKey(id.into()))
}

/// Puts a retired key back and makes it the signing key again (its `created_at` becomes now,
/// which makes it the newest; no `not_before`: it signs at once, as the verifiers never lost it
/// for longer than the backup's life).
pub fn rollback(
    doc: &mut Map<String, Value>,
    id: &str,
    entry: &Value,
    now: OffsetDateTime,
) -> Result<(), EditError> {
    let secret = match entry {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("secret")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    if secret.is_empty() {
        return Err(EditError::Invalid("the backup holds no secret".into()));
    }
    let mut e = Map::new();
    e.insert("secret".into(), Value::String(secret));
    e.insert("created_at".into(), Value::String(ts(now)));
    doc.insert(id.to_owned(), Value::Object(e));
    Ok(())
}

/// The newest key's age: `created_at`, else the date in its id; `None` when neither is known.
pub fn newest_created(doc: &Map<String, Value>) -> Option<OffsetDateTime> {
    let text = render_doc(doc).ok()?;
    let ring = KeyRing::parse(&text).ok()?;
    ring.keys()
        .filter_map(|k| {
            k.created_at()
                .or_else(|| k.id().embedded_date().map(|d| d.midnight().assume_utc()))
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    fn doc() -> Map<String, Value> {
        parse_doc(r#"{"key-v1":"old-secret-old-secret-old-secret-00","key-v2":"new-secret-new-secret-new-secret-00"}"#).unwrap()
    }

    #[test]
    fn rotate_adds_a_dated_key_that_signs_only_after_the_activation_delay() {
        let mut d = doc();
        let id = rotate(&mut d, "key", NOW, NOW + time::Duration::minutes(2)).unwrap();
        assert_eq!(id, "key-20261125");
        assert_eq!(rotate(&mut d, "key", NOW, NOW).unwrap(), "key-20261125-2");
        assert_eq!(
            d["key-v1"],
            Value::String("old-secret-old-secret-old-secret-00".into()),
            "untouched entries keep their form"
        );
        let mut d = doc();
        rotate(&mut d, "key", NOW, NOW + time::Duration::minutes(2)).unwrap();
        assert_eq!(
            signing_id(&d, NOW).unwrap().as_deref(),
            Some("key-v2"),
            "not active yet"
        );
        assert_eq!(
            signing_id(&d, NOW + time::Duration::minutes(2))
                .unwrap()
                .as_deref(),
            Some("key-20261125")
        );
        render_doc(&d).unwrap();
    }

    #[test]
    fn retire_refuses_the_signing_key_the_last_key_and_keys_in_use() {
        let mut d = doc();
        assert_eq!(
            retire(&mut d, "key-v2", NOW, &[], 0, false).unwrap_err(),
            EditError::SigningKey("key-v2".into())
        );
        assert_eq!(
            retire(&mut d, "nope", NOW, &[], 0, false).unwrap_err(),
            EditError::UnknownKey("nope".into())
        );
        let recent = [("backend:a".to_owned(), NOW.unix_timestamp() - 60)];
        assert!(matches!(
            retire(&mut d, "key-v1", NOW, &recent, 86_400, false),
            Err(EditError::InUse { .. })
        ));
        let removed = retire(&mut d, "key-v1", NOW, &recent, 86_400, true).unwrap();
        assert_eq!(
            removed,
            Value::String("old-secret-old-secret-old-secret-00".into())
        );
        assert_eq!(
            retire(&mut d, "key-v2", NOW, &[], 0, true).unwrap_err(),
            EditError::LastKey("key-v2".into())
        );
    }

    #[test]
    fn rollback_makes_the_restored_key_sign_again() {
        let mut d = doc();
        let old = retire(&mut d, "key-v1", NOW, &[], 0, false).unwrap();
        rollback(&mut d, "key-v1", &old, NOW).unwrap();
        assert_eq!(signing_id(&d, NOW).unwrap().as_deref(), Some("key-v1"));
    }

    #[test]
    fn plain_secrets_cannot_be_edited_in_place() {
        assert!(matches!(
            parse_doc("just-a-secret"),
            Err(EditError::NotAnObject(_))
        ));
    }

    #[test]
    fn newest_age_from_created_at_or_id_date() {
        let d = parse_doc(r#"{"key-20250101":"a","key-20260101":"b"}"#).unwrap();
        assert_eq!(newest_created(&d), Some(datetime!(2026-01-01 0:00 UTC)));
        let mut d = doc();
        assert_eq!(newest_created(&d), None);
        rotate(&mut d, "key", NOW, NOW).unwrap();
        assert_eq!(newest_created(&d), Some(NOW));
    }
}
