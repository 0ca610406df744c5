//! Parsed values. Every inbound string becomes one of these through `parse`, which returns a
//! [`DomainError`] with a stable code and a message naming the field, never a panic.

use crate::error::ErrorCode;

use crate::error::DomainError;
use serde::{Serialize, Serializer};
use std::fmt;

macro_rules! string_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn has_control(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
}

string_type!(
    /// An AWS account id: exactly 12 digits.
    AccountId
);

impl AccountId {
    /// Parses an account id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(DomainError::bad(
                ErrorCode::InvalidAccountId,
                "account_id must be exactly 12 digits",
            ))
        }
    }
}

fn mm_id(s: &str, field: &'static str, code: ErrorCode) -> Result<String, DomainError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(DomainError::bad(
            code,
            format!("{field} must be 1-64 letters, digits, '_' or '-'"),
        ))
    }
}

string_type!(
    /// A Mattermost channel id (26 lowercase alphanumerics in practice; 1-64 `[A-Za-z0-9_-]`
    /// accepted).
    ChannelId
);

impl ChannelId {
    /// Parses a channel id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        mm_id(s, "channel_id", ErrorCode::InvalidChannelId).map(Self)
    }
}

string_type!(
    /// A Mattermost user id.
    UserId
);

impl UserId {
    /// Parses a user id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        mm_id(s, "user id", ErrorCode::InvalidUserId).map(Self)
    }
}

string_type!(
    /// An email address, lowercased. Deliberately simple: one `@`, a dot in the domain, no
    /// spaces or control characters, at most 254 characters.
    Email
);

impl Email {
    /// Parses an email address.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = s.trim();
        let bad = || DomainError::bad(ErrorCode::InvalidEmail, "not a valid email address");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(bad());
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
}

string_type!(
    /// An IAM Identity Center permission set ARN.
    PermissionSetArn
);

impl PermissionSetArn {
    /// Parses `arn:<partition>:sso:::permissionSet/ssoins-…/ps-…`.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::bad(
                ErrorCode::InvalidPermissionSetArn,
                "permission set must look like arn:aws:sso:::permissionSet/ssoins-…/ps-…",
            )
        };
        let rest = s.strip_prefix("arn:").ok_or_else(bad)?;
        let (partition, rest) = rest.split_once(':').ok_or_else(bad)?;
        if !partition.starts_with("aws") || s.len() > 1224 {
            return Err(bad());
        }
        let tail = rest.strip_prefix("sso:::permissionSet/").ok_or_else(bad)?;
        let (ins, ps) = tail.split_once('/').ok_or_else(bad)?;
        let alnum = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_alphanumeric());
        match (ins.strip_prefix("ssoins-"), ps.strip_prefix("ps-")) {
            (Some(i), Some(p)) if alnum(i) && alnum(p) => Ok(Self(s.to_owned())),
            _ => Err(bad()),
        }
    }
}

string_type!(
    /// A request id: a UUID in its hyphenated form (any version, lowercase).
    RequestId
);

impl RequestId {
    /// Parses a request id.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        let ok = groups.len() == 5
            && groups
                .iter()
                .zip(lens)
                .all(|(g, l)| g.len() == l && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(DomainError::bad(
                ErrorCode::InvalidRequestId,
                "request id must be a UUID",
            ))
        }
    }

    /// A full id, or a prefix of at least [`RequestId::MIN_PREFIX`] characters (the plugin's
    /// status table shows the first 8, and users paste those). Case is ignored.
    pub fn parse_ref(s: &str) -> Result<RequestRef, DomainError> {
        if let Ok(id) = Self::parse(s) {
            return Ok(RequestRef::Id(id));
        }
        let ok = (Self::MIN_PREFIX..36).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if ok {
            Ok(RequestRef::Prefix(s.to_ascii_lowercase()))
        } else {
            Err(DomainError::bad(
                ErrorCode::InvalidRequestId,
                "request id must be a UUID or its first 8 or more characters",
            ))
        }
    }

    /// Shortest accepted id prefix.
    pub const MIN_PREFIX: usize = 8;

    /// A request id from 16 random bytes (made into a version 4 UUID).
    pub fn from_random(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default().to_owned();
        Self(format!(
            "{}-{}-{}-{}-{}",
            part(0..8),
            part(8..12),
            part(12..16),
            part(16..20),
            part(20..32)
        ))
    }
}

/// A request named by its id or by a prefix of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestRef {
    /// The whole id.
    Id(RequestId),
    /// A lowercase prefix of 8 to 35 characters.
    Prefix(String),
}

string_type!(
    /// A ticket reference, at most 256 characters, no control characters.
    Ticket
);

impl Ticket {
    /// Parses a ticket; empty input means "no ticket" and returns `None`.
    pub fn parse(s: &str) -> Result<Option<Self>, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().count() > 256 || s.chars().any(char::is_control) {
            return Err(DomainError::bad(
                ErrorCode::InvalidTicket,
                "ticket must be at most 256 characters without control characters",
            ));
        }
        Ok(Some(Self(s.to_owned())))
    }
}

string_type!(
    /// Free text explaining a request or a decision, at most 2,000 characters.
    Reason
);

impl Reason {
    /// Parses a reason; empty input gives `None`.
    pub fn parse(s: &str) -> Result<Option<Self>, DomainError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().count() > 2000 || has_control(s) {
            return Err(DomainError::bad(
                ErrorCode::InvalidReason,
                "reason must be at most 2,000 characters without control characters",
            ));
        }
        Ok(Some(Self(s.to_owned())))
    }
}

/// A duration in whole minutes, 1 to 10,080 (one week); policies narrow it further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DurationMinutes(u32);

impl DurationMinutes {
    /// The largest duration any policy may allow.
    pub const MAX: u32 = 10_080;

    /// Parses a number of minutes.
    pub fn new(m: i64) -> Result<Self, DomainError> {
        match u32::try_from(m) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(DomainError::bad(
                ErrorCode::InvalidDuration,
                format!("duration must be between 1 and {} minutes", Self::MAX),
            )),
        }
    }

    /// Parses a JSON value that may be a number or a numeric string (dialogs send either).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::bad(
                ErrorCode::InvalidDuration,
                "duration must be a whole number of minutes",
            )
        };
        match v {
            serde_json::Value::Number(n) => Self::new(n.as_i64().ok_or_else(bad)?),
            serde_json::Value::String(s) => Self::new(s.trim().parse().map_err(|_| bad())?),
            _ => Err(bad()),
        }
    }

    /// Parses minutes given as text (`"60"`; what `jit_proto::wire::MinutesInput` carries).
    pub fn parse_text(s: &str) -> Result<Self, DomainError> {
        let n: i64 = s.trim().parse().map_err(|_| {
            DomainError::bad(
                ErrorCode::InvalidDuration,
                "duration must be a whole number of minutes",
            )
        })?;
        Self::new(n)
    }

    /// The minutes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// As a `time::Duration`.
    pub fn as_duration(self) -> time::Duration {
        time::Duration::minutes(i64::from(self.0))
    }
}

/// Roles the bridge looked up for an actor in Mattermost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Mattermost `system_admin`.
    SystemAdmin,
    /// Mattermost `channel_admin` of the channel concerned.
    ChannelAdmin,
}

impl Role {
    /// Parses a role name; unknown roles are ignored by callers (Mattermost has many).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system_admin" => Some(Self::SystemAdmin),
            "channel_admin" => Some(Self::ChannelAdmin),
            _ => None,
        }
    }
}

/// The proven identity acting on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// Mattermost user id.
    pub user_id: UserId,
    /// Email (from Mattermost, not from the payload's display names).
    pub email: Option<Email>,
    /// Roles looked up by the bridge.
    pub roles: Vec<Role>,
}

impl Actor {
    /// True when the actor has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        assert!(AccountId::parse("123456789012").is_ok());
        for bad in [
            "12345678901",
            "1234567890123",
            "12345678901a",
            "",
            "１２３４５６７８９０１２",
        ] {
            assert_eq!(
                AccountId::parse(bad).unwrap_err().code,
                "invalid_account_id",
                "{bad}"
            );
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            Email::parse(" Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "alice",
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@example.com.",
            "a@@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn permission_set_arns() {
        let ok = "arn:aws:sso:::permissionSet/ssoins-1234567890abcdef/ps-0123456789abcdef";
        assert!(PermissionSetArn::parse(ok).is_ok());
        assert!(
            PermissionSetArn::parse("arn:aws-us-gov:sso:::permissionSet/ssoins-1/ps-2").is_ok()
        );
        for bad in [
            "ps-1",
            "arn:aws:iam::123:role/x",
            "arn:aws:sso:::permissionSet/ssoins-/ps-1",
        ] {
            assert!(PermissionSetArn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids() {
        assert!(RequestId::parse("a1b2c3d4-e5f6-7890-abcd-ef1234567890").is_ok());
        assert_eq!(
            RequestId::parse_ref("A1B2C3D4").unwrap(),
            RequestRef::Prefix("a1b2c3d4".into())
        );
        assert!(matches!(
            RequestId::parse_ref("a1b2c3d4-e5f6-7890-abcd-ef1234567890").unwrap(),
            RequestRef::Id(_)
        ));
        for bad in ["a1b2c3d", "a1b2c3d4/../x", "", "zzzzzzzz"] {
            assert_eq!(
                RequestId::parse_ref(bad).unwrap_err().code,
                ErrorCode::InvalidRequestId
            );
        }
        assert_eq!(
            RequestId::parse("A1B2C3D4-E5F6-7890-ABCD-EF1234567890")
                .unwrap()
                .as_str(),
            "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
        );
        for bad in [
            "",
            "x",
            "a1b2c3d4e5f67890abcdef1234567890",
            "a1b2c3d4-e5f6-7890-abcd-ef123456789g",
            "../etc",
        ] {
            assert!(RequestId::parse(bad).is_err(), "{bad}");
        }
        let r = RequestId::from_random([0xff; 16]);
        assert!(RequestId::parse(r.as_str()).is_ok());
        assert_eq!(r.as_str().as_bytes()[14], b'4');
    }

    #[test]
    fn durations_accept_numbers_and_numeric_strings() {
        assert_eq!(
            DurationMinutes::from_json(&serde_json::json!(60))
                .unwrap()
                .get(),
            60
        );
        assert_eq!(
            DurationMinutes::from_json(&serde_json::json!("90"))
                .unwrap()
                .get(),
            90
        );
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-5),
            serde_json::json!(1.5),
            serde_json::json!("x"),
            serde_json::json!(null),
            serde_json::json!(10_081),
        ] {
            assert_eq!(
                DurationMinutes::from_json(&bad).unwrap_err().code,
                "invalid_duration",
                "{bad}"
            );
        }
    }

    #[test]
    fn tickets_and_reasons_are_bounded() {
        assert_eq!(Ticket::parse("  ").unwrap(), None);
        assert!(Ticket::parse(&"x".repeat(256)).unwrap().is_some());
        assert!(Ticket::parse(&"x".repeat(257)).is_err());
        assert!(Ticket::parse("OPS-1\u{0}").is_err());
        assert!(Reason::parse(&"é".repeat(2000)).unwrap().is_some());
        assert!(Reason::parse(&"é".repeat(2001)).is_err());
        assert!(Reason::parse("line one\nline two").unwrap().is_some());
    }

    #[test]
    fn ids() {
        assert!(ChannelId::parse("ch1").is_ok());
        assert!(ChannelId::parse("4xp9fdt4ypgx7bq1mszcmrxz5e").is_ok());
        assert!(ChannelId::parse("ch 1").is_err());
        assert!(UserId::parse("' OR 1=1 --").is_err());
    }
}
