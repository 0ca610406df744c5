//! The X-JIT request signing scheme.
//!
//! **v1** (byte-compatible with the existing Go plugin and backend):
//! `timestamp LF nonce LF UPPER(method) LF path LF hex(sha256(raw body))`, path without query.
//!
//! **v2** (what our own clients send; header `X-JIT-Signature-Version: 2`):
//! `"v2" LF timestamp LF nonce LF UPPER(method) LF path LF canonical_query LF audience LF
//! hex(sha256(raw body))`. The query and the audience are signed, so a captured request can
//! neither have its filters changed nor be reflected at the other side.
//!
//! The signature is lowercase hex HMAC-SHA256 keyed with the secret's bytes. The timestamp enters
//! the canonical string exactly as sent. See `docs/protocol.md` for the full specification and
//! vectors.

use crate::keyring::{HmacSha256, KeyEntry, KeyId, KeyRing};
use crate::nonce::{NonceError, NonceStore};
use hmac::Mac;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// Header names as the existing plugin writes them (HTTP header names are case-insensitive).
pub const HEADER_KEY_ID: &str = "X-JIT-KeyID";
/// Unix seconds, as decimal digits.
pub const HEADER_TIMESTAMP: &str = "X-JIT-Timestamp";
/// A one-time value, normally a UUID.
pub const HEADER_NONCE: &str = "X-JIT-Nonce";
/// Lowercase hex HMAC-SHA256.
pub const HEADER_SIGNATURE: &str = "X-JIT-Signature";
/// `2` for v2; absent (or `1`) for v1.
pub const HEADER_VERSION: &str = "X-JIT-Signature-Version";

/// Default allowed clock difference, in both directions.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 300;
const MAX_NONCE_LEN: usize = 128;
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// RFC 3986 unreserved characters stay as they are; everything else is `%XX` (uppercase hex).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which canonical string a request was signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// The existing system's scheme.
    V1,
    /// Ours: adds the query and the audience.
    V2,
}

/// Who a v2 request is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Calls from the bridge (or the CLI) to the backend API.
    Backend,
    /// Callbacks from the backend to the bridge.
    Bridge,
}

impl Audience {
    /// The word that enters the v2 canonical string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backend => "backend",
            Self::Bridge => "bridge",
        }
    }
}

/// Why a request was refused. The code is stable: it goes to logs, metrics and the 401 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// One of the four required headers is absent.
    MissingHeader,
    /// A header is duplicated or does not have the required form.
    MalformedHeader,
    /// The version header names no known version, or v1 arrived where v2 is required.
    UnsupportedVersion,
    /// The timestamp is further than the allowed skew from now, in either direction.
    StaleTimestamp,
    /// The key id is not in the ring. No other key is tried.
    UnknownKey,
    /// The signature does not match.
    BadSignature,
    /// The nonce was already used within the replay window.
    ReplayedNonce,
    /// The ring has no keys (never loaded, or empty): everything is refused.
    NoKeys,
    /// The nonce store could not answer; the request is refused (fail closed), with 503.
    NonceStoreUnavailable,
}

impl Rejection {
    /// Every rejection, for metrics that pre-register their labels.
    pub const ALL: [Rejection; 9] = [
        Self::MissingHeader,
        Self::MalformedHeader,
        Self::UnsupportedVersion,
        Self::StaleTimestamp,
        Self::UnknownKey,
        Self::BadSignature,
        Self::ReplayedNonce,
        Self::NoKeys,
        Self::NonceStoreUnavailable,
    ];

    /// The stable reason code.
    pub fn code(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::UnsupportedVersion => "unsupported_version",
            Self::StaleTimestamp => "stale_timestamp",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::ReplayedNonce => "replayed_nonce",
            Self::NoKeys => "no_keys",
            Self::NonceStoreUnavailable => "nonce_store_unavailable",
        }
    }

    /// The HTTP status to answer with: 401, except 503 when the nonce store is down.
    pub fn http_status(self) -> u16 {
        match self {
            Self::NonceStoreUnavailable => 503,
            _ => 401,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for Rejection {}

/// What a header lookup found.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// No such header.
    Missing,
    /// Exactly one value.
    One(&'a [u8]),
    /// The header was sent more than once.
    Many,
}

/// Access to request headers by case-insensitive name, so the scheme needs no web framework.
pub trait HeaderLookup {
    /// Looks up `name` (given in any case).
    fn lookup(&self, name: &str) -> Lookup<'_>;

    /// The five headers of the scheme (key id, timestamp, nonce, signature, version), in that
    /// order. Implementations may find them in one pass.
    fn scheme_headers(&self) -> [Lookup<'_>; 5] {
        SCHEME_HEADERS.map(|n| self.lookup(n))
    }
}

/// Lowercase names of the scheme's headers, in [`HeaderLookup::scheme_headers`] order.
const SCHEME_HEADERS: [&str; 5] = [
    "x-jit-keyid",
    "x-jit-timestamp",
    "x-jit-nonce",
    "x-jit-signature",
    "x-jit-signature-version",
];

fn found<'a>(slot: &mut Lookup<'a>, v: &'a [u8]) {
    *slot = match slot {
        Lookup::Missing => Lookup::One(v),
        _ => Lookup::Many,
    };
}

static H_KEY_ID: http::HeaderName = http::HeaderName::from_static("x-jit-keyid");
static H_TIMESTAMP: http::HeaderName = http::HeaderName::from_static("x-jit-timestamp");
static H_NONCE: http::HeaderName = http::HeaderName::from_static("x-jit-nonce");
static H_SIGNATURE: http::HeaderName = http::HeaderName::from_static("x-jit-signature");
static H_VERSION: http::HeaderName = http::HeaderName::from_static("x-jit-signature-version");

impl HeaderLookup for http::HeaderMap {
    fn lookup(&self, name: &str) -> Lookup<'_> {
        // Prebuilt names for the scheme's headers skip parsing the name on every request.
        let all = match name {
            "x-jit-keyid" => self.get_all(&H_KEY_ID),
            "x-jit-timestamp" => self.get_all(&H_TIMESTAMP),
            "x-jit-nonce" => self.get_all(&H_NONCE),
            "x-jit-signature" => self.get_all(&H_SIGNATURE),
            "x-jit-signature-version" => self.get_all(&H_VERSION),
            other => self.get_all(other),
        };
        let mut it = all.iter();
        match (it.next(), it.next()) {
            (None, _) => Lookup::Missing,
            (Some(v), None) => Lookup::One(v.as_bytes()),
            (Some(_), Some(_)) => Lookup::Many,
        }
    }

    /// One pass over the headers (names are stored lowercase) instead of five hash lookups.
    fn scheme_headers(&self) -> [Lookup<'_>; 5] {
        let mut out = [Lookup::Missing; 5];
        for (name, value) in self {
            let Some(rest) = name.as_str().strip_prefix("x-jit-") else {
                continue;
            };
            let i = match rest {
                "keyid" => 0,
                "timestamp" => 1,
                "nonce" => 2,
                "signature" => 3,
                "signature-version" => 4,
                _ => continue,
            };
            if let Some(slot) = out.get_mut(i) {
                found(slot, value.as_bytes());
            }
        }
        out
    }
}

impl HeaderLookup for [(&str, &str)] {
    fn lookup(&self, name: &str) -> Lookup<'_> {
        let mut found = None;
        for (k, v) in self {
            if k.eq_ignore_ascii_case(name) {
                if found.is_some() {
                    return Lookup::Many;
                }
                found = Some(v.as_bytes());
            }
        }
        found.map_or(Lookup::Missing, Lookup::One)
    }
}

/// The signature headers of one request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    /// Which canonical string applies.
    pub version: SignatureVersion,
    /// The key id the signer claims.
    pub key_id: &'a str,
    /// The timestamp exactly as sent (it enters the canonical string as is).
    pub timestamp_raw: &'a str,
    /// The timestamp as a number.
    pub timestamp: i64,
    /// The nonce.
    pub nonce: &'a str,
    /// The decoded signature.
    pub signature: [u8; 32],
}

fn header(found: Lookup<'_>) -> Result<&str, Rejection> {
    match found {
        Lookup::Missing => Err(Rejection::MissingHeader),
        Lookup::Many => Err(Rejection::MalformedHeader),
        Lookup::One(v) => std::str::from_utf8(v).map_err(|_| Rejection::MalformedHeader),
    }
}

fn visible_ascii(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

impl<'a> SignedHeaders<'a> {
    /// Parses the signature headers. Missing ones give `missing_header`; duplicated or garbled
    /// ones `malformed_header`; an unknown version `unsupported_version`.
    pub fn parse(h: &'a (impl HeaderLookup + ?Sized)) -> Result<Self, Rejection> {
        let [kid, ts, nonce, sig, ver] = h.scheme_headers();
        let key_id = header(kid)?;
        let timestamp_raw = header(ts)?;
        let nonce = header(nonce)?;
        let sig = header(sig)?;
        let version = match ver {
            Lookup::Missing => SignatureVersion::V1,
            Lookup::Many => return Err(Rejection::MalformedHeader),
            Lookup::One(b"1") => SignatureVersion::V1,
            Lookup::One(b"2") => SignatureVersion::V2,
            Lookup::One(_) => return Err(Rejection::UnsupportedVersion),
        };
        if !visible_ascii(key_id, crate::keyring::MAX_KEY_ID_LEN)
            || !visible_ascii(nonce, MAX_NONCE_LEN)
        {
            return Err(Rejection::MalformedHeader);
        }
        if timestamp_raw.is_empty()
            || timestamp_raw.len() > MAX_TIMESTAMP_DIGITS
            || !timestamp_raw.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Rejection::MalformedHeader);
        }
        let timestamp: i64 = timestamp_raw
            .parse()
            .map_err(|_| Rejection::MalformedHeader)?;
        let signature = decode_signature(sig).ok_or(Rejection::MalformedHeader)?;
        Ok(Self {
            version,
            key_id,
            timestamp_raw,
            timestamp,
            nonce,
            signature,
        })
    }
}

/// Decodes 64 hex characters (either case) into 32 bytes.
fn decode_signature(sig: &str) -> Option<[u8; 32]> {
    /// Hex digit values; 0xff marks a non-digit. (Evaluated at compile time: an out-of-range
    /// index here would fail the build, not panic.)
    #[allow(clippy::indexing_slicing)]
    const HEX: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b = sig.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = HEX
            .get(usize::from(*pair.first()?))
            .copied()
            .unwrap_or(0xff);
        let lo = HEX.get(usize::from(*pair.get(1)?)).copied().unwrap_or(0xff);
        bad |= (hi | lo) & 0xf0;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

/// The parts of a request that are signed.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The HTTP method, any case (it is upper-cased for signing).
    pub method: &'a str,
    /// The request target as sent: path, then optionally `?` and the raw query.
    pub path_and_query: &'a str,
    /// The raw body bytes.
    pub body: &'a [u8],
}

impl<'a> RequestParts<'a> {
    fn split(&self) -> (&'a str, &'a str) {
        self.path_and_query
            .split_once('?')
            .unwrap_or((self.path_and_query, ""))
    }
}

/// The v2 canonical form of a raw query string: pairs split at the first `=`, percent-decoded,
/// re-encoded with only RFC 3986 unreserved characters left bare (uppercase hex), sorted by
/// encoded name then encoded value, joined with `&`. Empty pieces are dropped; a pair without
/// `=` has an empty value. `+` is a space (form encoding, as the server decodes queries), so
/// `a+b` and `a%20b` sign alike and mean alike; a literal plus is `%2B`.
pub fn canonical_query(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    emit_canonical_query(raw, |b| out.push_str(&String::from_utf8_lossy(b)));
    out
}

/// True when `s` is already in canonical form: only unreserved characters.
fn is_canonical(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn canonical_part(s: &str) -> Cow<'_, str> {
    if is_canonical(s) {
        Cow::Borrowed(s)
    } else {
        // `+` is a space, as the server's query parser reads it (form encoding).
        let spaced = s.replace('+', " ");
        let bytes: Vec<u8> = percent_decode_str(&spaced).collect();
        Cow::Owned(percent_encode(&bytes, UNRESERVED).to_string())
    }
}

type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

fn split_pair(p: &str) -> Pair<'_> {
    let (n, v) = p.split_once('=').unwrap_or((p, ""));
    (canonical_part(n), canonical_part(v))
}

/// [`canonical_query`] piece by piece, allocating only for parts that need re-encoding or for
/// queries of more than 16 pairs.
fn emit_canonical_query(raw: &str, mut emit: impl FnMut(&[u8])) {
    if raw.is_empty() {
        return;
    }
    let split = |p| split_pair(p);
    let mut small: [Option<Pair<'_>>; 16] = Default::default();
    let mut len = 0;
    let mut spill: Vec<Pair<'_>> = Vec::new();
    for p in raw.split('&').filter(|p| !p.is_empty()) {
        if spill.is_empty() && len < small.len() {
            if let Some(slot) = small.get_mut(len) {
                *slot = Some(split(p));
            }
            len += 1;
        } else {
            if spill.is_empty() {
                spill.extend(small.iter_mut().take(len).filter_map(Option::take));
            }
            spill.push(split(p));
        }
    }
    let mut write = |i: usize, (n, v): &Pair<'_>| {
        if i > 0 {
            emit(b"&");
        }
        emit(n.as_bytes());
        emit(b"=");
        emit(v.as_bytes());
    };
    if spill.is_empty() {
        let pairs = small.get_mut(..len).unwrap_or_default();
        // Insertion sort: queries have a handful of pairs.
        for i in 1..pairs.len() {
            let mut j = i;
            while j > 0 && pairs.get(j - 1) > pairs.get(j) {
                pairs.swap(j - 1, j);
                j -= 1;
            }
        }
        for (i, p) in pairs.iter().flatten().enumerate() {
            write(i, p);
        }
    } else {
        spill.sort_unstable();
        for (i, p) in spill.iter().enumerate() {
            write(i, p);
        }
    }
}

/// Hands the canonical string to `emit` piece by piece, so the MAC can be fed without building
/// the string. Used by signing, verifying and [`canonical_string`] alike.
fn emit_canonical(
    version: SignatureVersion,
    audience: Audience,
    timestamp: &str,
    nonce: &str,
    req: &RequestParts<'_>,
    mut emit: impl FnMut(&[u8]),
) {
    let (path, query) = req.split();
    let body_hash: [u8; 32] = Sha256::digest(req.body).into();
    let mut body_hex = [0u8; 64];
    // 32 bytes always fit 64 hex characters.
    let _ = hex::encode_to_slice(body_hash, &mut body_hex);
    if version == SignatureVersion::V2 {
        emit(b"v2\n");
    }
    emit(timestamp.as_bytes());
    emit(b"\n");
    emit(nonce.as_bytes());
    emit(b"\n");
    if req.method.bytes().any(|b| b.is_ascii_lowercase()) {
        emit(req.method.to_ascii_uppercase().as_bytes());
    } else {
        emit(req.method.as_bytes());
    }
    emit(b"\n");
    emit(path.as_bytes());
    emit(b"\n");
    if version == SignatureVersion::V2 {
        emit_canonical_query(query, &mut emit);
        emit(b"\n");
        emit(audience.as_str().as_bytes());
        emit(b"\n");
    }
    emit(&body_hex);
}

/// The canonical string, for documentation, vectors and `jit sign --canonical`.
pub fn canonical_string(
    version: SignatureVersion,
    audience: Audience,
    timestamp: &str,
    nonce: &str,
    req: &RequestParts<'_>,
) -> String {
    let mut out = Vec::new();
    emit_canonical(version, audience, timestamp, nonce, req, |b| {
        out.extend_from_slice(b)
    });
    String::from_utf8_lossy(&out).into_owned()
}

fn mac_over(
    mut mac: HmacSha256,
    version: SignatureVersion,
    audience: Audience,
    timestamp: &str,
    nonce: &str,
    req: &RequestParts<'_>,
) -> HmacSha256 {
    emit_canonical(version, audience, timestamp, nonce, req, |b| mac.update(b));
    mac
}

/// Everything needed to sign one request.
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// v1 for the existing system's peers, v2 otherwise.
    pub version: SignatureVersion,
    /// Who the request is for (v2 only).
    pub audience: Audience,
    /// The request.
    pub request: RequestParts<'a>,
    /// Unix seconds.
    pub timestamp: i64,
    /// A fresh nonce ([`new_nonce`]).
    pub nonce: &'a str,
}

/// Signs a request with `key`, returning the headers to send (names as the existing plugin
/// spells them).
pub fn sign(key: &KeyEntry, input: &SignInput<'_>) -> Vec<(&'static str, String)> {
    let ts = input.timestamp.to_string();
    let mac = mac_over(
        key.mac(),
        input.version,
        input.audience,
        &ts,
        input.nonce,
        &input.request,
    );
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut out = vec![
        (HEADER_KEY_ID, key.id().as_str().to_owned()),
        (HEADER_TIMESTAMP, ts),
        (HEADER_NONCE, input.nonce.to_owned()),
        (HEADER_SIGNATURE, sig),
    ];
    if input.version == SignatureVersion::V2 {
        out.push((HEADER_VERSION, "2".to_owned()));
    }
    out
}

/// A random UUID v4 string, the nonce format the existing plugin uses.
pub fn new_nonce() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    if let Some(x) = b.get_mut(6) {
        *x = (*x & 0x0f) | 0x40;
    }
    if let Some(x) = b.get_mut(8) {
        *x = (*x & 0x3f) | 0x80;
    }
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or_default(),
        h.get(8..12).unwrap_or_default(),
        h.get(12..16).unwrap_or_default(),
        h.get(16..20).unwrap_or_default(),
        h.get(20..32).unwrap_or_default()
    ))
}

/// Settings of a verifier.
#[derive(Debug, Clone, Copy)]
pub struct VerifierConfig {
    /// Allowed difference between the request's timestamp and now, both directions.
    pub max_skew_secs: i64,
    /// Refuse v1 signatures.
    pub require_v2: bool,
    /// The audience this side accepts in v2 signatures.
    pub audience: Audience,
}

impl VerifierConfig {
    /// Defaults for a verifier of `audience`: ±300 s, v1 and v2 accepted.
    pub fn new(audience: Audience) -> Self {
        Self {
            max_skew_secs: DEFAULT_MAX_SKEW_SECS,
            require_v2: false,
            audience,
        }
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key that verified it.
    pub key_id: KeyId,
    /// The version it was signed with.
    pub version: SignatureVersion,
    /// Its timestamp.
    pub timestamp: i64,
}

/// Checks signed requests against a key ring.
#[derive(Debug, Clone, Copy)]
pub struct Verifier {
    config: VerifierConfig,
}

impl Verifier {
    /// A verifier with the given settings.
    pub fn new(config: VerifierConfig) -> Self {
        Self { config }
    }

    /// The settings.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Everything but the replay check: version policy, timestamp window, key lookup by id
    /// only, and a constant-time comparison of the decoded signature.
    pub fn check(
        &self,
        ring: &KeyRing,
        headers: &SignedHeaders<'_>,
        req: &RequestParts<'_>,
        now: i64,
    ) -> Result<Verified, Rejection> {
        if self.config.require_v2 && headers.version == SignatureVersion::V1 {
            return Err(Rejection::UnsupportedVersion);
        }
        if now.abs_diff(headers.timestamp) > self.config.max_skew_secs.unsigned_abs() {
            return Err(Rejection::StaleTimestamp);
        }
        if ring.is_empty() {
            return Err(Rejection::NoKeys);
        }
        let key = ring.get(headers.key_id).ok_or(Rejection::UnknownKey)?;
        let mac = mac_over(
            key.mac(),
            headers.version,
            self.config.audience,
            headers.timestamp_raw,
            headers.nonce,
            req,
        );
        mac.verify_slice(&headers.signature)
            .map_err(|_| Rejection::BadSignature)?;
        Ok(Verified {
            key_id: key.id().clone(),
            version: headers.version,
            timestamp: headers.timestamp,
        })
    }

    /// The full check: headers, signature, then the nonce (recorded only for requests whose
    /// signature is valid, so forged traffic cannot fill the store). A nonce is remembered for
    /// twice the skew window, after which the timestamp check refuses the request anyway.
    pub async fn verify(
        &self,
        ring: &KeyRing,
        headers: &(impl HeaderLookup + ?Sized),
        req: &RequestParts<'_>,
        now: i64,
        nonces: &dyn NonceStore,
    ) -> Result<Verified, Rejection> {
        let parsed = SignedHeaders::parse(headers)?;
        let verified = self.check(ring, &parsed, req, now)?;
        // Accepted until `timestamp + skew`; remembered one second past that.
        let expires = parsed
            .timestamp
            .saturating_add(self.config.max_skew_secs)
            .saturating_add(1);
        match nonces.check_and_insert(parsed.nonce, now, expires).await {
            Ok(()) => Ok(verified),
            Err(NonceError::Replayed) => Err(Rejection::ReplayedNonce),
            Err(NonceError::Unavailable(_)) => Err(Rejection::NonceStoreUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_sorts_and_normalises_encoding() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(canonical_query("a=2&a=1"), "a=1&a=2");
        assert_eq!(canonical_query("q=a b"), "q=a%20b");
        assert_eq!(canonical_query("q=a%20b"), "q=a%20b");
        assert_eq!(canonical_query("q=a+b"), "q=a%20b");
        assert_eq!(canonical_query("q=a%2Bb"), "q=a%2Bb");
        assert_eq!(canonical_query("e=%7e%2d"), "e=~-");
        assert_eq!(canonical_query("flag&&x="), "flag=&x=");
        assert_eq!(canonical_query("k=%zz"), "k=%25zz");
    }

    #[test]
    fn header_parse_reasons() {
        let ok: Vec<(&str, &str)> = vec![
            ("x-jit-keyid", "k"),
            ("X-JIT-Timestamp", "100"),
            ("X-JIT-Nonce", "n"),
            ("X-JIT-Signature", "00".repeat(32).leak()),
        ];
        assert!(SignedHeaders::parse(ok.as_slice()).is_ok());
        let mut dup = ok.clone();
        dup.push(("x-jit-nonce", "m"));
        assert_eq!(
            SignedHeaders::parse(dup.as_slice()),
            Err(Rejection::MalformedHeader)
        );
        let missing: Vec<_> = ok.iter().copied().skip(1).collect();
        assert_eq!(
            SignedHeaders::parse(missing.as_slice()),
            Err(Rejection::MissingHeader)
        );
        for (i, bad) in [
            (1, "-5"),
            (1, "12a"),
            (1, ""),
            (3, "zz"),
            (3, "00"),
            (0, "a b"),
            (2, ""),
        ] {
            let mut h = ok.clone();
            h[i].1 = bad;
            assert_eq!(
                SignedHeaders::parse(h.as_slice()),
                Err(Rejection::MalformedHeader),
                "{bad}"
            );
        }
        let mut v = ok.clone();
        v.push((HEADER_VERSION, "3"));
        assert_eq!(
            SignedHeaders::parse(v.as_slice()),
            Err(Rejection::UnsupportedVersion)
        );
        let mut up = ok.clone();
        up[3].1 = "AB".repeat(32).leak();
        assert_eq!(
            SignedHeaders::parse(up.as_slice()).unwrap().signature,
            [0xab; 32]
        );
    }

    #[test]
    fn nonces_are_uuid_v4_shaped_and_unique() {
        let a = new_nonce().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_ne!(a, new_nonce().unwrap());
    }
}
