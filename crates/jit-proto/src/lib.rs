//! The wire protocol shared by every jit-access component: the X-JIT request signing scheme
//! (v1, byte-compatible with the existing Go plugin and backend, and our v2), key rings and the
//! rule that picks the signing key, replay protection, and the clock abstraction.
//!
//! This crate performs no I/O: callers pass in the current time, the request bytes and the key
//! ring, which is what keeps every rule here testable with fixed inputs.

pub mod clock;
pub mod keyring;
pub mod nonce;
pub mod sign;
pub mod wire;

pub use clock::{Clock, ManualClock, SystemClock};
pub use keyring::{KeyEntry, KeyId, KeyRing, KeyRingError, KeyRole, Secret};
pub use nonce::{MemoryNonceStore, NonceError, NonceStore};
pub use sign::{
    Audience, Rejection, RequestParts, SignatureVersion, SignedHeaders, Verified, Verifier,
    VerifierConfig,
};
