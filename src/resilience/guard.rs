//! The single door every call to a dependency (PostgreSQL, Redis, an
//! upstream issuer's JWKS) goes through:
//! timeout → circuit breaker → retry (repeatable calls only) → metrics.
//!
//! The guard is one per dependency; the error type is the caller's. Through
//! `GuardedError` (failsafe's failure predicate) the guard learns which
//! errors are infrastructure failures — `StoreError::Unavailable`, any
//! failed JWKS fetch, and its own timeout — and only those count against
//! the breaker; an answer such as a conflict or a missing row is a success.
//! While the breaker is open a call is refused before it starts
//! (`GuardedError::rejected`), which is what makes a dead dependency cost
//! microseconds instead of a timeout.

use crate::resilience::breaker::{BreakerSettings, CircuitBreaker, Outcome, Permit, State};
use crate::resilience::failure::{FailureKind, GuardedError};
use parking_lot::Mutex;
use std::future::Future;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// What a call does to its dependency.
///
/// Retries do not key on it: `run` makes exactly one attempt whatever the
/// call (a future runs once), and a call that may be repeated goes through
/// `run_idempotent`, which is handed a way to make it again. What `Call`
/// decides is what a timeout means: a read that timed out changed nothing,
/// while a write may have been applied, and its recorded failure says so
/// (the operator's breaker view and the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Changes nothing, or changes it the same way however often it runs.
    Read,
    /// Changes the dependency and must not be repeated.
    Write,
}

/// Retries after the first attempt, for `run_idempotent` only.
const MAX_RETRIES: u32 = 2;
/// First backoff ceiling; doubles per retry, full jitter below it.
const BACKOFF_BASE: Duration = Duration::from_millis(20);

/// What the guard has seen of its dependency, for `/api/v1/health`.
#[derive(Debug, Clone, Default)]
pub struct GuardStats {
    pub calls: u64,
    pub failure_count: u64,
    pub rejected: u64,
    pub last_latency: Option<Duration>,
    /// When, what kind (public), and the full text (logs and admins only).
    pub last_failure: Option<LastFailure>,
}

/// The last infrastructure failure the guard saw.
#[derive(Debug, Clone)]
pub struct LastFailure {
    pub at: OffsetDateTime,
    pub kind: FailureKind,
    pub reason: String,
}

/// One per dependency (`database`, `replica`, `redis`, `idp:<name>`), shared
/// by every caller of it, so its breaker sees all of the dependency's
/// traffic. Not typed by an error: each call brings its own `GuardedError`.
pub struct DependencyGuard {
    /// The metrics label and the name in health and the breaker view.
    name: &'static str,
    /// Bounds every attempt; `run_idempotent` starts no retry past it.
    timeout: Duration,
    breaker: CircuitBreaker,
    stats: Mutex<GuardStats>,
}

/// A permit for one attempt; freed if the attempt is cancelled mid-way.
struct InFlight<'a> {
    breaker: &'a CircuitBreaker,
    permit: Option<Permit>,
}

impl InFlight<'_> {
    fn finish(mut self, outcome: Outcome, took: Duration) {
        if let Some(permit) = self.permit.take() {
            self.breaker.record(permit, outcome, took);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

impl DependencyGuard {
    pub fn new(name: &'static str, timeout: Duration, breaker: BreakerSettings) -> Self {
        Self {
            name,
            timeout,
            breaker: CircuitBreaker::new(name, breaker),
            stats: Mutex::new(GuardStats::default()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    pub fn stats(&self) -> GuardStats {
        self.stats.lock().clone()
    }

    /// One attempt, bounded by the timeout, admitted by the breaker; never
    /// repeated (see `Call`).
    pub async fn run<T, E, F>(&self, call: Call, fut: F) -> Result<T, E>
    where
        E: GuardedError,
        F: Future<Output = Result<T, E>>,
    {
        self.attempt(call, fut).await
    }

    /// A repeatable call: retried up to `MAX_RETRIES` times with
    /// exponential backoff and full jitter when it failed fast and the
    /// breaker is still closed. A timeout is never retried, so nothing waits
    /// on a hung server longer than the timeout.
    pub async fn run_idempotent<T, E, F, Fut>(&self, mut make: F) -> Result<T, E>
    where
        E: GuardedError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let result = self.attempt(Call::Read, make()).await;
            let fast_failure = matches!(&result, Err(e) if e.failure().is_some_and(|(kind, _)| kind != FailureKind::Timeout));
            let retry = fast_failure
                && retries < MAX_RETRIES
                && self.breaker.state() == State::Closed
                && started.elapsed() < self.timeout;
            if !retry {
                return result;
            }
            retries += 1;
            tokio::time::sleep(backoff(retries)).await;
        }
    }

    async fn attempt<T, E, F>(&self, call: Call, fut: F) -> Result<T, E>
    where
        E: GuardedError,
        F: Future<Output = Result<T, E>>,
    {
        let permit = match self.breaker.acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.stats.lock().rejected += 1;
                metrics::counter!("holdfast_breaker_rejected_total", "dependency" => self.name)
                    .increment(1);
                return Err(E::rejected(self.name, rejected.retry_after));
            }
        };
        let in_flight = InFlight {
            breaker: &self.breaker,
            permit: Some(permit),
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(E::timed_out(self.name, self.timeout_reason(call))),
        };
        let took = started.elapsed();
        let failure = result.as_ref().err().and_then(GuardedError::failure);
        let outcome = match failure {
            Some(_) => Outcome::Failure,
            None => Outcome::Success,
        };
        in_flight.finish(outcome, took);
        self.record(took, failure);
        result
    }

    fn timeout_reason(&self, call: Call) -> String {
        match call {
            Call::Read => format!("timed out after {:?}", self.timeout),
            Call::Write => format!(
                "timed out after {:?}; the write may have been applied",
                self.timeout
            ),
        }
    }

    fn record(&self, latency: Duration, failure: Option<(FailureKind, &str)>) {
        metrics::histogram!(
            "holdfast_dependency_call_duration_seconds",
            "dependency" => self.name,
            "outcome" => if failure.is_some() { "failure" } else { "success" }
        )
        .record(latency.as_secs_f64());
        let mut stats = self.stats.lock();
        stats.calls += 1;
        stats.last_latency = Some(latency);
        if let Some((kind, reason)) = failure {
            stats.failure_count += 1;
            stats.last_failure = Some(LastFailure {
                at: OffsetDateTime::now_utc(),
                kind,
                reason: reason.to_string(),
            });
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.as_micros() as u64 * (1u64 << attempt.min(6));
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    Duration::from_micros(u64::from_le_bytes(bytes) % ceiling.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn guard(timeout: Duration) -> DependencyGuard {
        let settings = BreakerSettings {
            minimum_calls: 2,
            ..BreakerSettings::default()
        };
        DependencyGuard::new("database", timeout, settings)
    }

    fn refused() -> StoreError {
        StoreError::Unavailable {
            dependency: "database",
            kind: FailureKind::Refused,
            reason: "connection refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_ends_at_the_timeout_and_counts_as_failure() {
        let guard = guard(Duration::from_millis(200));
        let result: Result<(), StoreError> = guard
            .run(Call::Read, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(StoreError::Unavailable { .. })));
        assert_eq!(guard.stats().failure_count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_refuses_before_calling() {
        let guard = guard(Duration::from_secs(1));
        for _ in 0..2 {
            let _: Result<(), StoreError> = guard.run(Call::Write, async { Err(refused()) }).await;
        }
        assert_eq!(guard.breaker().state(), State::Open);
        let mut called = false;
        let result: Result<(), StoreError> = guard
            .run(Call::Read, async {
                called = true;
                Ok(())
            })
            .await;
        assert!(
            matches!(result, Err(StoreError::CircuitOpen { retry_after, .. }) if retry_after > Duration::ZERO)
        );
        assert!(!called);
        assert_eq!(guard.stats().rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_calls_retry_fast_failures_but_not_answers_or_timeouts() {
        let guard =
            DependencyGuard::new("redis", Duration::from_secs(1), BreakerSettings::default());
        let mut calls = 0;
        let result = guard
            .run_idempotent(|| {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(refused()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(result.expect("third attempt answers"), 3);

        let mut calls = 0;
        let result: Result<(), StoreError> = guard
            .run_idempotent(|| {
                calls += 1;
                async { Err(StoreError::Conflict("email")) }
            })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))));
        assert_eq!(calls, 1, "an answer is never retried");

        let mut calls = 0;
        let result: Result<(), StoreError> = guard
            .run_idempotent(|| {
                calls += 1;
                async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "a timeout is never retried");
    }

    #[tokio::test]
    async fn an_answer_is_not_a_failure() {
        let guard = guard(Duration::from_secs(1));
        let result: Result<(), StoreError> = guard
            .run(Call::Write, async { Err(StoreError::Conflict("email")) })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict("email"))));
        let stats = guard.stats();
        assert_eq!((stats.calls, stats.failure_count), (1, 0));
        assert_eq!(guard.breaker().snapshot().failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_timed_out_is_recorded_as_possibly_applied() {
        let guard = guard(Duration::from_millis(200));
        let hang = || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        };
        let _: Result<(), StoreError> = guard.run(Call::Read, hang()).await;
        let read = guard.stats().last_failure.expect("a failure");
        assert_eq!(read.kind, FailureKind::Timeout);
        assert_eq!(read.reason, "timed out after 200ms");
        let result: Result<(), StoreError> = guard.run(Call::Write, hang()).await;
        assert!(matches!(result, Err(StoreError::Unavailable { .. })));
        let write = guard.stats().last_failure.expect("a failure");
        assert!(write.reason.ends_with("the write may have been applied"));
    }

    /// An error type of another dependency: the guard asks it, not
    /// `StoreError`, what a failure is.
    #[derive(Debug, PartialEq)]
    enum Upstream {
        Down(&'static str),
        Refused,
        NotFound,
    }

    impl GuardedError for Upstream {
        fn failure(&self) -> Option<(FailureKind, &str)> {
            match self {
                Upstream::Down(reason) => Some((FailureKind::Http5xx, reason)),
                _ => None,
            }
        }
        fn timed_out(_: &'static str, _: String) -> Self {
            Upstream::Down("timeout")
        }
        fn rejected(_: &'static str, _: Duration) -> Self {
            Upstream::Refused
        }
    }

    #[tokio::test(start_paused = true)]
    async fn any_error_type_trips_the_breaker_only_by_its_failures() {
        let guard = guard(Duration::from_secs(1));
        for _ in 0..3 {
            let result: Result<(), _> = guard
                .run(Call::Read, async { Err(Upstream::NotFound) })
                .await;
            assert_eq!(result, Err(Upstream::NotFound));
        }
        assert_eq!(guard.breaker().state(), State::Closed, "answers only");
        for _ in 0..3 {
            let _: Result<(), _> = guard
                .run(Call::Read, async { Err(Upstream::Down("502")) })
                .await;
        }
        assert_eq!(guard.breaker().state(), State::Open);
        let result: Result<(), Upstream> = guard.run(Call::Read, async { Ok(()) }).await;
        assert_eq!(result, Err(Upstream::Refused));
        let failure = guard.stats().last_failure.expect("recorded");
        assert_eq!(
            (failure.kind, failure.reason.as_str()),
            (FailureKind::Http5xx, "502")
        );
    }
}
