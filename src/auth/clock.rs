//! The wall clock, for the domain services that outlive a request and act
//! on their own (rate limits refunded in the background, audit events
//! stamped as they are made): they are given a `Clock` when built instead
//! of reading the system's, so their time rules are tested with a clock the
//! test moves. Request paths take `now` from their caller instead.

use crate::store::UnixTime;
use std::sync::Arc;

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now(&self) -> UnixTime {
        self.now_ms().div_euclid(1000)
    }
}

/// The system's clock: what every service gets outside tests.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        super::now_ms()
    }

    fn now(&self) -> UnixTime {
        super::now()
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told.
#[cfg(test)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

#[cfg(test)]
impl ManualClock {
    pub fn at(ms: i64) -> Arc<Self> {
        Arc::new(Self(ms.into()))
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
