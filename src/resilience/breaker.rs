//! A circuit breaker with Resilience4j semantics, written here because no
//! well-kept crate has them (DEPENDENCIES.md trap 5: tower-resilience is
//! young and takes a tokio Mutex per call, recloser counts calls only,
//! failsafe is unmaintained).
//!
//! * Closed: outcomes fall into a time-based sliding window of `BUCKETS`
//!   buckets. With at least `minimum_calls` in the window, a failure rate or
//!   a slow-call rate at or above its threshold opens the breaker.
//! * Open: every call is rejected at once until `open_wait` has passed.
//! * Half-open: `half_open_permits` probes go through; all succeed → closed,
//!   any fails (or is slow) → open again with the wait doubled, capped at
//!   `open_wait_max`.
//!
//! Time is `tokio::time::Instant`, so tests drive it with paused time. The
//! lock is a std-style mutex held for a few field updates, never across an
//! await; transitions are logged after it is released.

use parking_lot::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Buckets in the sliding window (each `window / BUCKETS` long).
const BUCKETS: usize = 10;

/// The breaker's settings are read from `[breaker]` (`config::breaker`).
pub use crate::config::BreakerSettings;

/// Serialized as `as_str` spells it (the health report's `circuit_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// For the Prometheus gauge: 0 closed, 1 half-open, 2 open (DESIGN.md
    /// §3), so the value grows with how far the dependency is from usable.
    pub fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// How a call through the breaker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer, including "not found" or a conflict.
    Success,
    /// Infrastructure failure: refused, reset, timed out, shutting down.
    Failure,
}

/// A call was refused because the breaker is open (or out of probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When the next probe will be let through.
    pub retry_after: Duration,
}

/// Leave to make one call. Hand it back with `record`; a permit dropped
/// unrecorded (a cancelled request) only frees its half-open slot.
#[must_use]
pub struct Permit {
    generation: u64,
    half_open: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the bucket-length period this bucket counts.
    epoch: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Bumped at every transition; outcomes of older permits are ignored.
    generation: u64,
    buckets: [Bucket; BUCKETS],
    opened_at: Option<(Instant, SystemTime)>,
    wait: Duration,
    probes_issued: u32,
    probes_succeeded: u32,
}

/// What changed, logged once the lock is released.
struct Transition {
    from: BreakerState,
    to: BreakerState,
    reason: String,
}

/// A point-in-time view for the admin endpoint and health.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: BreakerState,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub calls: u32,
    pub failures: u32,
    pub opened_at: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
}

pub struct CircuitBreaker {
    name: &'static str,
    settings: BreakerSettings,
    started: Instant,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        let wait = settings.open_wait;
        metrics::gauge!("holdfast_breaker_state", "dependency" => name)
            .set(BreakerState::Closed.as_gauge());
        Self {
            name,
            settings,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                buckets: [Bucket::default(); BUCKETS],
                opened_at: None,
                wait,
                probes_issued: 0,
                probes_succeeded: 0,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    pub fn state(&self) -> BreakerState {
        self.inner.lock().state
    }

    /// Asks to make a call now.
    pub fn acquire(&self) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let (result, transition) = {
            let mut inner = self.inner.lock();
            let mut transition = None;
            if inner.state == BreakerState::Open {
                let (opened, _) = inner.opened_at.unwrap_or((now, SystemTime::now()));
                let due = opened + inner.wait;
                if now < due {
                    return Err(Rejected {
                        retry_after: due - now,
                    });
                }
                transition = Some(self.switch(
                    &mut inner,
                    BreakerState::HalfOpen,
                    "open wait elapsed".into(),
                ));
            }
            let result = match inner.state {
                BreakerState::Closed => Ok(Permit {
                    generation: inner.generation,
                    half_open: false,
                }),
                BreakerState::HalfOpen if inner.probes_issued < self.settings.half_open_permits => {
                    inner.probes_issued += 1;
                    Ok(Permit {
                        generation: inner.generation,
                        half_open: true,
                    })
                }
                _ => Err(Rejected {
                    retry_after: Duration::from_secs(1),
                }),
            };
            (result, transition)
        };
        self.log(transition);
        result
    }

    /// Reports how the permitted call ended and how long it took.
    pub fn record(&self, permit: Permit, outcome: Outcome, took: Duration) {
        let slow = took >= self.settings.slow_call_duration;
        let transition = {
            let mut inner = self.inner.lock();
            if permit.generation != inner.generation {
                return;
            }
            match inner.state {
                BreakerState::Closed => self.record_closed(&mut inner, outcome, slow),
                BreakerState::HalfOpen if permit.half_open => {
                    self.record_probe(&mut inner, outcome, slow)
                }
                _ => None,
            }
        };
        self.log(transition);
    }

    /// A permit whose call never finished (cancelled): free its probe slot.
    pub fn release(&self, permit: Permit) {
        let mut inner = self.inner.lock();
        if permit.half_open && permit.generation == inner.generation {
            inner.probes_issued = inner.probes_issued.saturating_sub(1);
        }
    }

    /// Operator reset: closed, empty window, initial wait.
    pub fn reset(&self) {
        let transition = {
            let mut inner = self.inner.lock();
            inner.wait = self.settings.open_wait;
            Some(self.switch(
                &mut inner,
                BreakerState::Closed,
                "reset by an operator".into(),
            ))
        };
        self.log(transition);
    }

    /// The dependency behind an open breaker was replaced (Redis Sentinel
    /// followed a new master): the failures it counted were the old one's,
    /// so probe now instead of waiting out the open wait. A failing probe
    /// reopens it with the usual longer wait; a closed or half-open
    /// breaker is left alone.
    pub fn probe_now(&self, why: &str) {
        let transition = {
            let mut inner = self.inner.lock();
            (inner.state == BreakerState::Open)
                .then(|| self.switch(&mut inner, BreakerState::HalfOpen, why.to_string()))
        };
        self.log(transition);
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let inner = self.inner.lock();
        let (calls, failures, slow) = self.totals(&inner, now);
        let rate = |n: u32| {
            if calls == 0 {
                0.0
            } else {
                f64::from(n) * 100.0 / f64::from(calls)
            }
        };
        let next_attempt_at = match (inner.state, inner.opened_at) {
            (BreakerState::Open, Some((_, wall))) => Some(wall + inner.wait),
            _ => None,
        };
        Snapshot {
            state: inner.state,
            failure_rate: rate(failures),
            slow_call_rate: rate(slow),
            calls,
            failures,
            opened_at: inner.opened_at.map(|(_, wall)| wall),
            next_attempt_at,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let bucket = (self.settings.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.duration_since(self.started).as_nanos() / bucket.as_nanos()) as u64
    }

    /// Calls, failures and slow calls inside the window ending now.
    fn totals(&self, inner: &Inner, now: Instant) -> (u32, u32, u32) {
        let current = self.epoch(now);
        inner
            .buckets
            .iter()
            .filter(|b| b.epoch + BUCKETS as u64 > current)
            .fold((0, 0, 0), |(c, f, s), b| {
                (c + b.calls, f + b.failures, s + b.slow)
            })
    }

    fn record_closed(&self, inner: &mut Inner, outcome: Outcome, slow: bool) -> Option<Transition> {
        let now = Instant::now();
        let epoch = self.epoch(now);
        let bucket = &mut inner.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(outcome == Outcome::Failure);
        bucket.slow += u32::from(slow);
        let (calls, failures, slow) = self.totals(inner, now);
        if calls < self.settings.minimum_calls {
            return None;
        }
        let failure_rate = f64::from(failures) * 100.0 / f64::from(calls);
        let slow_rate = f64::from(slow) * 100.0 / f64::from(calls);
        let reason = if failure_rate >= self.settings.failure_rate_threshold {
            format!("after {failures} failures in {calls} calls ({failure_rate:.0}%)")
        } else if slow_rate >= self.settings.slow_call_rate_threshold {
            format!(
                "after {slow} slow calls in {calls} ({slow_rate:.0}% slower than {:?})",
                self.settings.slow_call_duration
            )
        } else {
            return None;
        };
        inner.wait = self.settings.open_wait;
        Some(self.switch(inner, BreakerState::Open, reason))
    }

    fn record_probe(&self, inner: &mut Inner, outcome: Outcome, slow: bool) -> Option<Transition> {
        if outcome == Outcome::Failure || slow {
            inner.wait = (inner.wait * 2).min(self.settings.open_wait_max);
            let why = if slow { "was slow" } else { "failed" };
            return Some(self.switch(
                inner,
                BreakerState::Open,
                format!("half-open probe {why}; next wait {:?}", inner.wait),
            ));
        }
        inner.probes_succeeded += 1;
        if inner.probes_succeeded >= self.settings.half_open_permits {
            inner.wait = self.settings.open_wait;
            return Some(self.switch(
                inner,
                BreakerState::Closed,
                "every half-open probe succeeded".into(),
            ));
        }
        None
    }

    fn switch(&self, inner: &mut Inner, to: BreakerState, reason: String) -> Transition {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.probes_issued = 0;
        inner.probes_succeeded = 0;
        match to {
            BreakerState::Open => inner.opened_at = Some((Instant::now(), SystemTime::now())),
            BreakerState::Closed => {
                inner.opened_at = None;
                inner.buckets = [Bucket::default(); BUCKETS];
            }
            BreakerState::HalfOpen => {}
        }
        Transition { from, to, reason }
    }

    fn log(&self, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let dependency = self.name;
        metrics::counter!(
            "holdfast_breaker_transitions_total",
            "dependency" => dependency, "from" => t.from.as_str(), "to" => t.to.as_str()
        )
        .increment(1);
        metrics::gauge!("holdfast_breaker_state", "dependency" => dependency).set(t.to.as_gauge());
        match t.to {
            BreakerState::Open => tracing::warn!(
                dependency,
                from = t.from.as_str(),
                "circuit breaker {dependency} opened {}",
                t.reason
            ),
            BreakerState::HalfOpen => tracing::info!(
                dependency,
                "circuit breaker {dependency} half-open: {}",
                t.reason
            ),
            BreakerState::Closed => tracing::info!(
                dependency,
                from = t.from.as_str(),
                "circuit breaker {dependency} closed: {}",
                t.reason
            ),
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
