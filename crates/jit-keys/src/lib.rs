//! Where keys come from and how a running process keeps them current.
//!
//! A [`KeySource`] loads a whole [`KeyRing`]; a [`RefreshingRing`] holds the last good ring,
//! reloads it every `refresh_interval`, when a watched file changes, and (at most once per
//! 10 s) when a request names a key id it does not know. A failed load never replaces a good
//! ring. This is what removes the runbook's "restart the Lambda" steps.

pub mod periodic;
mod ring;
pub mod rotation;
mod source;

pub use periodic::every;
pub use ring::{
    RefreshingRing, RingConfig, RingStatus, USAGE_FLUSH_SECS, USAGE_HEARTBEAT_KEY, USAGE_LIVE_SECS,
    USAGE_MARGIN_SECS, VerifiedUse, prometheus,
};
pub use source::{
    EnvSource, FileSource, KeySource, LoadError, SecretsManagerSource, SourceFuture, SourceSpec,
    absolute_if_relative, aws_sdk_config, open_source, unsafe_key_file_mode,
};
