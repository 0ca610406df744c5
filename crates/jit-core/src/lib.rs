//! The jit-access domain, pure: every function takes the time and the ids it needs, so the
//! rules can be tested with fixed inputs and reused by every store and front end.
//!
//! - [`types`]: small parsed types for every inbound value (`AccountId`, `DurationMinutes`, …).
//! - [`policy`]: channel bindings and their approval policy.
//! - [`request`]: access requests; states are types and transitions are functions.
//! - [`authz`]: who may do what, decided here rather than trusted from the chat side.
//! - [`audit`]: audit events and the hash chain that makes edits and deletions detectable.

pub mod audit;
pub mod authz;
pub mod error;
pub mod policy;
pub mod request;
pub mod types;

pub use error::{DomainError, ErrorCode, ErrorKind};
