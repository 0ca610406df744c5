//! `jit server`: the backend. An axum API in front of the [`jit_store::Store`], every route but
//! `/healthz` and `/readyz` behind the X-JIT signature check, and authorisation decided here
//! from the proven actor.

pub mod api;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod effects;
pub mod embedded;
pub mod error;
pub mod health;
pub mod idem;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod serve;
pub mod state;
pub mod verifications;
pub mod views;

pub use config::Config;
pub use serve::{Server, run};
pub use state::AppState;

/// Unix milliseconds of a time.
pub fn effects_ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
