//! Signed tokens for button contexts and dialog state. Mattermost strips the integration
//! context from posts sent to clients, but anyone who can reach the bridge's URL could forge a
//! click; so the meaning of every button (request, action, expiry) and every dialog (user,
//! channel, purpose, expiry) is MACed with the bridge secret and checked on the way back.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The bridge secret (from configuration or generated); never printed.
#[derive(Clone)]
pub struct BridgeSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for BridgeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeSecret(***)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token, or not in the expected form.
    #[error("missing or malformed")]
    Malformed,
    /// The MAC does not match: forged or altered.
    #[error("forged")]
    Forged,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

impl BridgeSecret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    fn mac(&self, fields: &[&str], expiry: i64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this never fails.
        let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            return unreachable_mac();
        };
        for f in fields {
            m.update(&(f.len() as u64).to_be_bytes());
            m.update(f.as_bytes());
        }
        m.update(&expiry.to_be_bytes());
        m
    }

    /// A token over `fields` valid until `expiry` (unix seconds): `"<expiry>.<hex mac>"`.
    pub fn sign(&self, fields: &[&str], expiry: i64) -> String {
        format!(
            "{expiry}.{}",
            hex::encode(self.mac(fields, expiry).finalize().into_bytes())
        )
    }

    /// Checks a token over `fields` at `now`.
    pub fn verify(&self, token: &str, fields: &[&str], now: i64) -> Result<(), TokenError> {
        let (exp, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| TokenError::Malformed)?;
        self.mac(fields, exp)
            .verify_slice(&mac)
            .map_err(|_| TokenError::Forged)?;
        if now > exp {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[allow(clippy::panic)]
fn unreachable_mac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 accepts any key length")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_every_field_and_expire() {
        let s = BridgeSecret::new(b"bridge-secret-0123456789abcdef0123".to_vec());
        let t = s.sign(&["approve", "req-1"], 1000);
        assert_eq!(s.verify(&t, &["approve", "req-1"], 1000), Ok(()));
        assert_eq!(
            s.verify(&t, &["deny", "req-1"], 1000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            s.verify(&t, &["approve", "req-2"], 1000),
            Err(TokenError::Forged)
        );
        assert_eq!(
            s.verify(&t, &["approve", "req-1"], 1001),
            Err(TokenError::Expired)
        );
        let later = t.replacen("1000", "9999", 1);
        assert_eq!(
            s.verify(&later, &["approve", "req-1"], 1000),
            Err(TokenError::Forged),
            "expiry is signed"
        );
        assert_eq!(
            s.verify("garbage", &["approve"], 0),
            Err(TokenError::Malformed)
        );
        // Field boundaries are part of the MAC: ("ab","c") differs from ("a","bc").
        let t = s.sign(&["ab", "c"], 5);
        assert_eq!(s.verify(&t, &["a", "bc"], 0), Err(TokenError::Forged));
        let other = BridgeSecret::new(b"another-secret-0123456789abcdef0123".to_vec());
        assert_eq!(
            other.verify(&s.sign(&["x"], 5), &["x"], 0),
            Err(TokenError::Forged)
        );
        assert!(!format!("{s:?}").contains("bridge-secret"));
    }
}
