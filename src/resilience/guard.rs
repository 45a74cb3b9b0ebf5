//! The single door every PostgreSQL or Redis call goes through:
//! timeout → circuit breaker → retry (idempotent calls only) → metrics.
//!
//! Only infrastructure failures (`StoreError::Unavailable`, and the timeout
//! itself) count against the breaker; an answer such as a conflict or a
//! missing row is a success. While the breaker is open a call is refused
//! before it starts (`StoreError::CircuitOpen`), which is what makes a dead
//! dependency cost microseconds instead of a timeout.

use crate::resilience::breaker::{BreakerSettings, CircuitBreaker, Outcome, Permit, State};
use crate::resilience::failure::FailureKind;
use crate::store::StoreError;
use parking_lot::Mutex;
use std::future::Future;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Whether a call may be repeated safely; the retry policy keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
}

/// Retries after the first attempt, for idempotent calls only.
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

#[derive(Debug, Clone)]
pub struct LastFailure {
    pub at: OffsetDateTime,
    pub kind: FailureKind,
    pub reason: String,
}

pub struct DependencyGuard {
    name: &'static str,
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

    /// One attempt, bounded by the timeout, admitted by the breaker.
    pub async fn run<T, F>(&self, _call: Call, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        self.attempt(fut).await
    }

    /// An idempotent call: retried up to `MAX_RETRIES` times with
    /// exponential backoff and full jitter when it failed fast and the
    /// breaker is still closed. A timeout is never retried, so nothing waits
    /// on a hung server longer than the timeout.
    pub async fn run_idempotent<T, F, Fut>(&self, mut make: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            let result = self.attempt(make()).await;
            let fast_failure = matches!(&result, Err(StoreError::Unavailable { kind, .. }) if *kind != FailureKind::Timeout);
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

    async fn attempt<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let permit = match self.breaker.acquire() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.stats.lock().rejected += 1;
                metrics::counter!("holdfast_breaker_rejected_total", "dependency" => self.name)
                    .increment(1);
                return Err(StoreError::CircuitOpen {
                    dependency: self.name,
                    retry_after: rejected.retry_after,
                });
            }
        };
        let in_flight = InFlight {
            breaker: &self.breaker,
            permit: Some(permit),
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                dependency: self.name,
                kind: FailureKind::Timeout,
                reason: format!("timed out after {:?}", self.timeout),
            }),
        };
        let took = started.elapsed();
        let outcome = match &result {
            Err(StoreError::Unavailable { .. }) => Outcome::Failure,
            _ => Outcome::Success,
        };
        in_flight.finish(outcome, took);
        self.record(took, &result);
        result
    }

    fn record<T>(&self, latency: Duration, result: &Result<T, StoreError>) {
        let failed = matches!(result, Err(StoreError::Unavailable { .. }));
        metrics::histogram!(
            "holdfast_dependency_call_duration_seconds",
            "dependency" => self.name,
            "outcome" => if failed { "failure" } else { "success" }
        )
        .record(latency.as_secs_f64());
        let mut stats = self.stats.lock();
        stats.calls += 1;
        stats.last_latency = Some(latency);
        if let Err(StoreError::Unavailable { kind, reason, .. }) = result {
            stats.failure_count += 1;
            stats.last_failure = Some(LastFailure {
                at: OffsetDateTime::now_utc(),
                kind: *kind,
                reason: reason.clone(),
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
        let result: Result<(), _> = guard
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
            let _: Result<(), _> = guard.run(Call::Write, async { Err(refused()) }).await;
        }
        assert_eq!(guard.breaker().state(), State::Open);
        let mut called = false;
        let result: Result<(), _> = guard
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
        let result: Result<(), _> = guard
            .run_idempotent(|| {
                calls += 1;
                async { Err(StoreError::Conflict("email")) }
            })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))));
        assert_eq!(calls, 1, "an answer is never retried");

        let mut calls = 0;
        let result: Result<(), _> = guard
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
        let result: Result<(), _> = guard
            .run(Call::Write, async { Err(StoreError::Conflict("email")) })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict("email"))));
        let stats = guard.stats();
        assert_eq!((stats.calls, stats.failure_count), (1, 0));
        assert_eq!(guard.breaker().snapshot().failures, 0);
    }
}
