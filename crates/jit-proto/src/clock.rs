//! The only place that reads the wall clock. Everything else takes a [`Clock`] so tests can
//! move time by hand (`clippy.toml` forbids `SystemTime::now` elsewhere).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time, UTC.
    fn now(&self) -> OffsetDateTime;

    /// The current time in whole unix seconds, as the signing scheme carries it.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// The current time in unix milliseconds.
    fn now_ms(&self) -> i64 {
        i64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(unix_seconds.saturating_mul(1000))),
        }
    }

    /// Moves the clock forward (or back, with a negative value) by `millis`.
    pub fn advance_millis(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    /// Moves the clock by whole seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance_millis(secs.saturating_mul(1000));
    }

    /// Sets the clock to `unix_seconds`.
    pub fn set(&self, unix_seconds: i64) {
        self.millis
            .store(unix_seconds.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        let ms = i128::from(self.millis.load(Ordering::SeqCst));
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_764_072_000);
        assert_eq!(c.unix(), 1_764_072_000);
        let shared = c.clone();
        shared.advance_secs(301);
        assert_eq!(c.unix(), 1_764_072_301);
        c.advance_millis(999);
        assert_eq!(c.unix(), 1_764_072_301);
        c.set(5);
        assert_eq!(shared.unix(), 5);
    }
}
