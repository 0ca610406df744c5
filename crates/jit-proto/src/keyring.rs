//! Key rings: key id → secret, parsed from the Secrets Manager `SecretString` format the existing
//! backend uses, plus the deterministic rule that picks the signing key.
//!
//! Format (compatible with the runbook's `jq '. + {($kid): $secret}'`):
//! - a JSON object whose values are strings: one key per member;
//! - a member may instead be `{"secret": "...", "created_at": RFC3339, "not_before": RFC3339,
//!   "roles": ["plugin"]}`; `roles` marks a key as the existing plugin's (see [`KeyRole`]). A
//!   plain string member has no roles, so the runbook's `jq` step still adds a working key;
//! - any other non-empty string is a single key with id `default` (the existing backend's rule).
//!
//! Stricter than the existing backend, on purpose: `{}`, non-string values and text that starts
//! with `{` but is not valid JSON are refused with an error instead of silently becoming one
//! key called `default`; a broken edit must not turn into a working but unintended key.

use hmac::{Hmac, KeyInit};
use serde::Deserialize;
use sha2::Sha256;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};
use zeroize::Zeroizing;

/// HMAC-SHA256 as used by the signing scheme.
pub type HmacSha256 = Hmac<Sha256>;

/// Minimum length of a newly generated key, in bytes. Shorter existing keys load with a warning.
pub const MIN_SECRET_LEN: usize = 32;
/// Maximum length of a key id.
pub const MAX_KEY_ID_LEN: usize = 128;
/// The id a plain (non-JSON) secret string gets, as in the existing backend.
pub const DEFAULT_KEY_ID: &str = "default";

/// Why a key ring could not be built. Messages name key ids, never secret values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyRingError {
    #[error("empty secret: the key ring source holds no text")]
    Empty,
    #[error(
        "empty key ring: the JSON object has no keys (add at least one \"key-id\": \"secret\" member)"
    )]
    EmptyObject,
    #[error(
        "the key ring looks like JSON but does not parse ({0}); fix the JSON or store a plain secret without a leading '{{'"
    )]
    MalformedJson(String),
    #[error("key {key_id:?}: value must be a string or an object with \"secret\", got {kind}")]
    NonStringValue { key_id: String, kind: &'static str },
    #[error("key {key_id:?}: {reason}")]
    BadEntry { key_id: String, reason: String },
    #[error("invalid key id: {0}")]
    InvalidKeyId(String),
    #[error("key {0:?} has an empty secret")]
    EmptySecret(String),
    #[error("key {0:?} appears twice")]
    Duplicate(String),
    #[error("the configured signing key id {0:?} is not in the key ring")]
    UnknownSigningKey(String),
}

/// A key id: 1 to 128 visible ASCII characters (it travels in the `X-JIT-KeyID` header).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id.
    pub fn parse(s: &str) -> Result<Self, KeyRingError> {
        if s.is_empty() {
            return Err(KeyRingError::InvalidKeyId("key id is empty".into()));
        }
        if s.len() > MAX_KEY_ID_LEN {
            return Err(KeyRingError::InvalidKeyId(format!(
                "key id is longer than {MAX_KEY_ID_LEN} characters"
            )));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(KeyRingError::InvalidKeyId(
                "key id must be visible ASCII without spaces".into(),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `YYYYMMDD` date embedded in ids such as `key-20261125` (the last 8-digit run that is
    /// a valid date), used to order keys that carry no `created_at`.
    pub fn embedded_date(&self) -> Option<Date> {
        let mut found = None;
        for run in digit_runs(&self.0) {
            if run.len() != 8 {
                continue;
            }
            let y: i32 = run.get(0..4)?.parse().ok()?;
            let m: u8 = run.get(4..6)?.parse().ok()?;
            let d: u8 = run.get(6..8)?.parse().ok()?;
            if let Ok(month) = Month::try_from(m)
                && let Ok(date) = Date::from_calendar_date(y, month, d)
            {
                found = Some(date);
            }
        }
        found
    }
}

fn digit_runs(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
}

/// Natural order: digit runs compare by numeric value, everything else bytewise
/// (`key-9` < `key-10`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, ra) = a.split_at(la);
                let (nb, rb) = b.split_at(lb);
                let na = trim_zeros(na);
                let nb = trim_zeros(nb);
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = ra;
                b = rb;
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = a.get(1..).unwrap_or_default();
                b = b.get(1..).unwrap_or_default();
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    d.get(n..).unwrap_or_default()
}

/// Lets a ring be queried by the header's `&str` without allocating (the ordering of `KeyId`
/// is the ordering of its text, as `Borrow` requires).
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Secret key material: zeroized on drop, never printed, never serialised.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes. The scheme uses the secret's UTF-8 bytes as the HMAC key (not a hex
    /// decoding of it), as the existing implementation does.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes. Call sites are few and reviewed: HMAC keying, and writing a key file.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// 32 random bytes as 64 lowercase hex characters, the format `jit keys generate` and the
    /// runbook's `openssl rand -hex 32` produce.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut())?;
        Ok(Self::new(hex::encode(raw.as_ref()).into_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a key is marked as, beyond signing and verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRole {
    /// The existing Mattermost plugin's key: in the existing-plugin profile it vouches for the
    /// admin checks the plugin made itself (bind, approvers, revoking another user's grant).
    Plugin,
    /// Our bridge's key: never vouches; the bridge sends the proven actor.
    Bridge,
}

/// One key of a ring.
pub struct KeyEntry {
    id: KeyId,
    secret: Secret,
    mac: HmacSha256,
    created_at: Option<OffsetDateTime>,
    not_before: Option<OffsetDateTime>,
    verify_only: bool,
    roles: Option<Vec<KeyRole>>,
}

impl KeyEntry {
    /// A key that may verify and (once `not_before` has passed) sign.
    pub fn new(
        id: KeyId,
        secret: Secret,
        created_at: Option<OffsetDateTime>,
        not_before: Option<OffsetDateTime>,
    ) -> Result<Self, KeyRingError> {
        if secret.is_empty() {
            return Err(KeyRingError::EmptySecret(id.0));
        }
        let mac = <HmacSha256 as KeyInit>::new_from_slice(secret.expose()).map_err(|_| {
            KeyRingError::BadEntry {
                key_id: id.0.clone(),
                reason: "unusable secret".into(),
            }
        })?;
        Ok(Self {
            id,
            secret,
            mac,
            created_at,
            not_before,
            verify_only: false,
            roles: None,
        })
    }

    /// The same key with these roles.
    pub fn with_roles(mut self, roles: Option<Vec<KeyRole>>) -> Self {
        self.roles = roles;
        self
    }

    /// The roles the ring marks this key with; `None` for an unmarked key (a plain string).
    pub fn roles(&self) -> Option<&[KeyRole]> {
        self.roles.as_deref()
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// A prepared HMAC state keyed with this secret (cloning it skips re-keying per request).
    pub fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    /// When the key was created, if recorded.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        self.created_at
    }

    /// Before this time the key verifies but does not sign.
    pub fn not_before(&self) -> Option<OffsetDateTime> {
        self.not_before
    }

    /// True for keys loaded from extra stages (`AWSPENDING`, `AWSPREVIOUS`): they verify, never sign.
    pub fn is_verify_only(&self) -> bool {
        self.verify_only
    }

    /// True when the key is shorter than [`MIN_SECRET_LEN`]; such keys load with a warning.
    pub fn is_short(&self) -> bool {
        self.secret.len() < MIN_SECRET_LEN
    }

    /// True when this key may sign at `now`.
    pub fn can_sign_at(&self, now: OffsetDateTime) -> bool {
        !self.verify_only && self.not_before.is_none_or(|nb| nb <= now)
    }

    /// The rule that orders keys by age: `created_at`, then the date in the id, then natural
    /// order of the id. The greatest key is the newest.
    fn newness_cmp(&self, other: &Self) -> Ordering {
        self.created_at
            .cmp(&other.created_at)
            .then_with(|| self.id.embedded_date().cmp(&other.id.embedded_date()))
            .then_with(|| natural_cmp(self.id.as_str(), other.id.as_str()))
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("created_at", &self.created_at)
            .field("not_before", &self.not_before)
            .field("verify_only", &self.verify_only)
            .field("roles", &self.roles)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RichEntry {
    secret: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    not_before: Option<OffsetDateTime>,
    #[serde(default)]
    roles: Option<Vec<KeyRole>>,
}

/// Parses a `SecretString` (or key file) into key entries. See the module docs for the format.
pub fn parse_secret_string(text: &str) -> Result<Vec<KeyEntry>, KeyRingError> {
    if text.is_empty() {
        return Err(KeyRingError::Empty);
    }
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        if text.trim().is_empty() {
            return Err(KeyRingError::Empty);
        }
        let id = KeyId::parse(DEFAULT_KEY_ID)?;
        return Ok(vec![KeyEntry::new(
            id,
            Secret::new(text.as_bytes().to_vec()),
            None,
            None,
        )?]);
    }
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| {
            KeyRingError::MalformedJson(format!("line {}, column {}", e.line(), e.column()))
        })?;
    if value.is_empty() {
        return Err(KeyRingError::EmptyObject);
    }
    let mut out = Vec::with_capacity(value.len());
    for (raw_id, v) in value {
        let id = KeyId::parse(&raw_id)?;
        let entry = match v {
            serde_json::Value::String(s) => KeyEntry::new(
                id,
                Secret::new(Zeroizing::new(s).as_bytes().to_vec()),
                None,
                None,
            )?,
            serde_json::Value::Object(_) => {
                let rich: RichEntry = serde_json::from_value(v).map_err(|e| {
                    // serde's message names fields and types, never values.
                    KeyRingError::BadEntry {
                        key_id: raw_id.clone(),
                        reason: scrub(&e.to_string()),
                    }
                })?;
                let secret = Zeroizing::new(rich.secret);
                KeyEntry::new(
                    id,
                    Secret::new(secret.as_bytes().to_vec()),
                    rich.created_at,
                    rich.not_before,
                )?
                .with_roles(rich.roles)
            }
            other => {
                return Err(KeyRingError::NonStringValue {
                    key_id: raw_id,
                    kind: kind_of(&other),
                });
            }
        };
        out.push(entry);
    }
    Ok(out)
}

/// serde error text can quote an offending string value; keep only the structural part.
fn scrub(msg: &str) -> String {
    match msg.find('`').or_else(|| msg.find('"')) {
        Some(i) if msg.contains("invalid") => {
            format!("{}<value hidden>", msg.get(..i).unwrap_or_default())
        }
        _ => msg.to_owned(),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An immutable set of keys. Rings are replaced whole on reload, never mutated in place.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: BTreeMap<KeyId, Arc<KeyEntry>>,
    signing_key_id: Option<KeyId>,
}

impl KeyRing {
    /// An empty ring: it rejects every request (`no_keys`) and cannot sign.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a ring from entries; duplicate ids are refused.
    pub fn from_entries(entries: Vec<KeyEntry>) -> Result<Self, KeyRingError> {
        let mut keys = BTreeMap::new();
        for e in entries {
            let id = e.id.clone();
            if keys.insert(id.clone(), Arc::new(e)).is_some() {
                return Err(KeyRingError::Duplicate(id.0));
            }
        }
        Ok(Self {
            keys,
            signing_key_id: None,
        })
    }

    /// Parses a `SecretString` into a ring.
    pub fn parse(text: &str) -> Result<Self, KeyRingError> {
        Self::from_entries(parse_secret_string(text)?)
    }

    /// Adds keys from an extra stage (`AWSPENDING`, `AWSPREVIOUS`): they verify but never sign.
    /// A key id already present keeps the current stage's secret.
    pub fn add_verify_only(&mut self, entries: Vec<KeyEntry>) {
        for mut e in entries {
            e.verify_only = true;
            self.keys.entry(e.id.clone()).or_insert_with(|| Arc::new(e));
        }
    }

    /// Pins the signing key (the runbook's step 4: "Set Signing Key ID"). The id must be in the ring.
    pub fn with_signing_key(mut self, id: Option<KeyId>) -> Result<Self, KeyRingError> {
        if let Some(id) = &id
            && !self.keys.contains_key(id)
        {
            return Err(KeyRingError::UnknownSigningKey(id.0.clone()));
        }
        self.signing_key_id = id;
        Ok(self)
    }

    /// Pins the signing key while it is in the ring; a pin whose key is gone is dropped (the
    /// newest-key rule applies again) instead of failing the load, so a pin never outlives
    /// its key and never freezes a reloading ring on a deleted key. Returns whether the pin
    /// took.
    pub fn pin_if_present(&mut self, id: Option<&KeyId>) -> bool {
        match id {
            Some(id) if self.keys.contains_key(id) => {
                self.signing_key_id = Some(id.clone());
                true
            }
            Some(_) => {
                self.signing_key_id = None;
                false
            }
            None => true,
        }
    }

    /// The key a verifier must use for `id`; there is no fallback to other keys.
    pub fn get(&self, id: &str) -> Option<&Arc<KeyEntry>> {
        self.keys.get(id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// All keys, ordered by id.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        self.keys.values()
    }

    /// The configured signing key id, if one is pinned.
    pub fn pinned_signing_key(&self) -> Option<&KeyId> {
        self.signing_key_id.as_ref()
    }

    /// The key that signs at `now`: the pinned key if one is configured; otherwise the newest
    /// key that may sign (latest `created_at`, then the `YYYYMMDD` date in its id, then the
    /// natural order of its id). Keys whose `not_before` is in the future and verify-only keys
    /// never sign.
    pub fn signing_key(&self, now: OffsetDateTime) -> Option<&Arc<KeyEntry>> {
        if let Some(k) = self
            .signing_key_id
            .as_ref()
            .and_then(|id| self.keys.get(id))
            .filter(|k| k.can_sign_at(now))
        {
            return Some(k);
        }
        self.keys
            .values()
            .filter(|k| k.can_sign_at(now))
            .max_by(|a, b| a.newness_cmp(b))
    }

    /// The keys that may sign at `now`, newest first by the signing-key rule (what a signer
    /// falls back through when a receiver refuses its key).
    pub fn signers_newest_first(&self, now: OffsetDateTime) -> Vec<Arc<KeyEntry>> {
        let mut v: Vec<Arc<KeyEntry>> = self
            .keys
            .values()
            .filter(|k| k.can_sign_at(now))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.newness_cmp(a));
        v
    }

    /// If the two rings hold the same secret under any ids, those ids. The bridge-to-backend
    /// ring and the callback ring must never share a secret, or a captured request could be
    /// replayed as a callback.
    pub fn shared_secret_with(&self, other: &KeyRing) -> Option<(KeyId, KeyId)> {
        for a in self.keys.values() {
            for b in other.keys.values() {
                let same: bool =
                    subtle::ConstantTimeEq::ct_eq(a.secret.expose(), b.secret.expose()).into();
                if same {
                    return Some((a.id.clone(), b.id.clone()));
                }
            }
        }
        None
    }

    /// Ids of keys shorter than [`MIN_SECRET_LEN`], for a load-time warning.
    pub fn short_keys(&self) -> Vec<KeyId> {
        self.keys
            .values()
            .filter(|k| k.is_short())
            .map(|k| k.id.clone())
            .collect()
    }

    /// Serialises the ring in the `SecretString` format: plain strings where a key has no
    /// timestamps, rich objects otherwise. Verify-only keys are left out (they belong to
    /// another stage). This is secret material: write it only to a protected file or secret.
    pub fn to_secret_string(&self) -> Result<Zeroizing<String>, serde_json::Error> {
        let mut map = serde_json::Map::new();
        for k in self.keys.values().filter(|k| !k.verify_only) {
            let secret = String::from_utf8_lossy(k.secret.expose()).into_owned();
            let value = if k.created_at.is_none() && k.not_before.is_none() && k.roles.is_none() {
                serde_json::Value::String(secret)
            } else {
                let mut o = serde_json::Map::new();
                o.insert("secret".into(), secret.into());
                if let Some(t) = k.created_at.and_then(|t| t.format(&Rfc3339).ok()) {
                    o.insert("created_at".into(), t.into());
                }
                if let Some(t) = k.not_before.and_then(|t| t.format(&Rfc3339).ok()) {
                    o.insert("not_before".into(), t.into());
                }
                if let Some(r) = &k.roles {
                    o.insert("roles".into(), serde_json::to_value(r)?);
                }
                serde_json::Value::Object(o)
            };
            map.insert(k.id.0.clone(), value);
        }
        Ok(Zeroizing::new(serde_json::to_string_pretty(
            &serde_json::Value::Object(map),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ids(r: &KeyRing) -> Vec<&str> {
        r.keys().map(|k| k.id().as_str()).collect()
    }

    #[test]
    fn shared_vectors_parse_as_the_existing_backend_does_except_empty_object() {
        let raw = include_str!("../../../fixtures/keyring-secret-string.json");
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        for case in v["cases"].as_array().unwrap() {
            let s = case["secret_string"].as_str().unwrap();
            let got = KeyRing::parse(s);
            if s == "{}" {
                assert_eq!(
                    got.unwrap_err(),
                    KeyRingError::EmptyObject,
                    "we reject {{}} on purpose"
                );
                continue;
            }
            match case.get("keys") {
                Some(keys) => {
                    let ring = got.unwrap();
                    let want = keys.as_object().unwrap();
                    assert_eq!(ring.len(), want.len());
                    for (id, secret) in want {
                        let k = ring.get(id).unwrap();
                        assert_eq!(k.secret().expose(), secret.as_str().unwrap().as_bytes());
                    }
                }
                None => assert_eq!(got.unwrap_err(), KeyRingError::Empty),
            }
        }
    }

    #[test]
    fn non_string_values_are_refused_naming_the_key_not_the_value() {
        let err = KeyRing::parse(r#"{"key-v1":"s3cret-value","key-v2":42}"#).unwrap_err();
        assert_eq!(
            err,
            KeyRingError::NonStringValue {
                key_id: "key-v2".into(),
                kind: "a number"
            }
        );
        assert!(!err.to_string().contains("s3cret"));
        for bad in [r#"{"k":null}"#, r#"{"k":true}"#, r#"{"k":["x"]}"#] {
            assert!(matches!(
                KeyRing::parse(bad),
                Err(KeyRingError::NonStringValue { .. })
            ));
        }
    }

    #[test]
    fn broken_json_is_an_error_not_a_default_key() {
        let err = KeyRing::parse(r#"{"key-v1": "abc""#).unwrap_err();
        assert!(matches!(err, KeyRingError::MalformedJson(_)));
        assert!(!err.to_string().contains("abc"));
    }

    #[test]
    fn whitespace_only_is_empty() {
        assert_eq!(KeyRing::parse("   \n").unwrap_err(), KeyRingError::Empty);
    }

    #[test]
    fn rich_entries_sit_beside_plain_ones() {
        let ring = KeyRing::parse(
            r#"{"key-v1":"old-secret","key-20261201":{"secret":"new-secret","created_at":"2026-12-01T00:00:00Z","not_before":"2026-12-01T00:02:00Z"}}"#,
        )
        .unwrap();
        let k = ring.get("key-20261201").unwrap();
        assert_eq!(k.created_at(), Some(datetime!(2026-12-01 0:00 UTC)));
        assert_eq!(k.not_before(), Some(datetime!(2026-12-01 0:02 UTC)));
        assert_eq!(ids(&ring), vec!["key-20261201", "key-v1"]);
    }

    #[test]
    fn rich_entry_with_unknown_field_or_bad_time_is_refused_without_the_secret() {
        let e = KeyRing::parse(r#"{"k":{"secret":"topsecretvalue","not_befor":"x"}}"#).unwrap_err();
        assert!(matches!(e, KeyRingError::BadEntry { .. }));
        assert!(!e.to_string().contains("topsecretvalue"));
        let e = KeyRing::parse(r#"{"k":{"secret":"topsecretvalue","created_at":"yesterday"}}"#)
            .unwrap_err();
        assert!(!e.to_string().contains("topsecretvalue"), "{e}");
        let e = KeyRing::parse(r#"{"k":{"secret":""}}"#).unwrap_err();
        assert_eq!(e, KeyRingError::EmptySecret("k".into()));
    }

    #[test]
    fn key_ids_must_be_header_safe() {
        assert!(KeyRing::parse(r#"{"key v1":"secret"}"#).is_err());
        assert!(KeyRing::parse(r#"{"":"secret"}"#).is_err());
        assert!(KeyId::parse(&"k".repeat(129)).is_err());
        assert!(KeyId::parse("cb-20261125").is_ok());
    }

    #[test]
    fn signing_key_prefers_created_at_then_id_date_then_natural_order() {
        let now = datetime!(2026-11-25 12:00 UTC);
        let ring = KeyRing::parse(r#"{"key-9":"a","key-10":"b"}"#).unwrap();
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-10");

        let ring = KeyRing::parse(r#"{"zzz":"a","key-20261101":"b","key-20251231":"c"}"#).unwrap();
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-20261101");

        let ring = KeyRing::parse(
            r#"{"key-20261124":"a","old":{"secret":"b","created_at":"2020-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            ring.signing_key(now).unwrap().id().as_str(),
            "old",
            "created_at wins"
        );

        // The runbook's key-v1/key-v2 pair: natural order picks key-v2.
        let ring = KeyRing::parse(r#"{"key-v1":"a","key-v2":"b"}"#).unwrap();
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-v2");
    }

    #[test]
    fn future_not_before_verifies_but_does_not_sign() {
        let ring = KeyRing::parse(
            r#"{"key-20261101":"a","key-20261125":{"secret":"b","not_before":"2026-11-25T12:02:00Z"}}"#,
        )
        .unwrap();
        assert!(ring.get("key-20261125").is_some());
        let before = datetime!(2026-11-25 12:01:59 UTC);
        assert_eq!(
            ring.signing_key(before).unwrap().id().as_str(),
            "key-20261101"
        );
        let at = datetime!(2026-11-25 12:02 UTC);
        assert_eq!(ring.signing_key(at).unwrap().id().as_str(), "key-20261125");
    }

    #[test]
    fn pinned_signing_key_wins_and_must_exist() {
        let now = datetime!(2026-11-25 12:00 UTC);
        let ring = KeyRing::parse(r#"{"key-v1":"a","key-v2":"b"}"#)
            .unwrap()
            .with_signing_key(Some(KeyId::parse("key-v1").unwrap()))
            .unwrap();
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-v1");
        let err = KeyRing::parse(r#"{"key-v1":"a"}"#)
            .unwrap()
            .with_signing_key(Some(KeyId::parse("key-v9").unwrap()))
            .unwrap_err();
        assert_eq!(err, KeyRingError::UnknownSigningKey("key-v9".into()));
    }

    #[test]
    fn a_pinned_key_that_may_not_sign_yet_is_passed_over() {
        let now = datetime!(2026-11-25 12:00 UTC);
        let ring = KeyRing::parse(
            r#"{"key-v1":"a","key-v2":{"secret":"b","not_before":"2026-11-26T00:00:00Z"}}"#,
        )
        .unwrap()
        .with_signing_key(Some(KeyId::parse("key-v2").unwrap()))
        .unwrap();
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-v1");
        assert_eq!(
            ring.signing_key(datetime!(2026-11-26 0:00 UTC))
                .unwrap()
                .id()
                .as_str(),
            "key-v2"
        );
    }

    #[test]
    fn verify_only_stage_keys_never_sign_and_do_not_override_current() {
        let now = datetime!(2026-11-25 12:00 UTC);
        let mut ring = KeyRing::parse(r#"{"key-v1":"current"}"#).unwrap();
        ring.add_verify_only(
            parse_secret_string(r#"{"key-v1":"other","key-v9":"pending"}"#).unwrap(),
        );
        assert_eq!(ring.get("key-v1").unwrap().secret().expose(), b"current");
        assert!(ring.get("key-v9").unwrap().is_verify_only());
        assert_eq!(ring.signing_key(now).unwrap().id().as_str(), "key-v1");
    }

    #[test]
    fn empty_ring_cannot_sign() {
        assert!(
            KeyRing::empty()
                .signing_key(datetime!(2026-11-25 12:00 UTC))
                .is_none()
        );
    }

    #[test]
    fn shared_secrets_between_rings_are_found() {
        let a = KeyRing::parse(r#"{"a1":"same-secret","a2":"x"}"#).unwrap();
        let b = KeyRing::parse(r#"{"b1":"y","b2":"same-secret"}"#).unwrap();
        let (x, y) = a.shared_secret_with(&b).unwrap();
        assert_eq!((x.as_str(), y.as_str()), ("a1", "b2"));
        let c = KeyRing::parse(r#"{"c":"z"}"#).unwrap();
        assert!(a.shared_secret_with(&c).is_none());
    }

    #[test]
    fn secrets_never_reach_debug_or_errors() {
        let secret = "do-not-print-this-secret-0123456789abcdef";
        let ring = KeyRing::parse(&format!(r#"{{"key-v1":"{secret}"}}"#)).unwrap();
        let dbg = format!("{ring:?} {:?}", ring.get("key-v1").unwrap());
        assert!(!dbg.contains(secret), "{dbg}");
        assert!(dbg.contains("***"));
        let plain = KeyRing::parse(secret).unwrap();
        assert!(!format!("{plain:?}").contains(secret));
    }

    #[test]
    fn short_keys_are_reported() {
        let ring =
            KeyRing::parse(&format!(r#"{{"short":"abc","long":"{}"}}"#, "x".repeat(32))).unwrap();
        assert_eq!(ring.short_keys(), vec![KeyId::parse("short").unwrap()]);
    }

    #[test]
    fn generated_secrets_are_64_hex_chars_and_differ() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.expose().iter().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn to_secret_string_round_trips_and_stays_jq_compatible() {
        let text =
            r#"{"key-v1":"a","key-20261201":{"secret":"b","created_at":"2026-12-01T00:00:00Z"}}"#;
        let ring = KeyRing::parse(text).unwrap();
        let out = ring.to_secret_string().unwrap();
        let back = KeyRing::parse(&out).unwrap();
        assert_eq!(ids(&back), ids(&ring));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["key-v1"], "a");
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("key-9", "key-10"), Ordering::Less);
        assert_eq!(natural_cmp("key-010", "key-10"), Ordering::Equal);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
        assert_eq!(natural_cmp("key", "key-1"), Ordering::Less);
    }

    #[test]
    fn embedded_dates() {
        let d = KeyId::parse("key-20261125")
            .unwrap()
            .embedded_date()
            .unwrap();
        assert_eq!(d, time::macros::date!(2026 - 11 - 25));
        assert!(
            KeyId::parse("key-20261399")
                .unwrap()
                .embedded_date()
                .is_none()
        );
        assert!(KeyId::parse("key-v2").unwrap().embedded_date().is_none());
    }
}
