//! Domain errors with stable codes. The HTTP layer maps [`ErrorKind`] to a status; the code and
//! message go to the caller as they are, so messages never contain secrets or internals.

pub use jit_proto::wire::ErrorCode;

/// The class of an error, which decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input (400).
    BadRequest,
    /// Well-formed input that breaks a rule (422).
    Unprocessable,
    /// The actor may not do this (403).
    Forbidden,
    /// No such thing (404).
    NotFound,
    /// The current state does not allow it, or someone else changed it first (409).
    Conflict,
}

/// An error a caller can act on: a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    /// What class of error.
    pub kind: ErrorKind,
    /// Stable code, e.g. `invalid_account_id`.
    pub code: ErrorCode,
    /// Human explanation, safe to show.
    pub message: String,
}

impl DomainError {
    /// A new error.
    pub fn new(kind: ErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, code, message)
    }

    /// 422 with `code`.
    pub fn rule(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unprocessable, code, message)
    }

    /// 403 with `code`.
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, message)
    }

    /// 409 with `code`.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }
}
