//! The single door every PostgreSQL or Redis call goes through. It bounds
//! each call by the dependency's timeout, retries idempotent calls that
//! failed fast (a dropped connection after a server restart), and records
//! what health reports (latency, failures, last failure). The circuit
//! breaker belongs here too, so no store has to change when it arrives.

use crate::store::StoreError;
use parking_lot::Mutex;
use std::future::Future;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Retries after the first attempt, for idempotent calls only.
const MAX_RETRIES: u32 = 2;
/// First backoff ceiling; doubles per retry, full jitter below it.
const BACKOFF_BASE: Duration = Duration::from_millis(20);

fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.as_micros() as u64 * (1u64 << attempt.min(6));
    let mut bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    Duration::from_micros(u64::from_le_bytes(bytes) % ceiling.max(1))
}

/// Whether a call may be repeated safely; the retry policy keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
}

/// What the guard has seen of its dependency, for `/api/v1/health`.
#[derive(Debug, Clone, Default)]
pub struct GuardStats {
    pub calls: u64,
    pub failure_count: u64,
    pub consecutive_failures: u64,
    pub last_latency: Option<Duration>,
    pub last_failure: Option<(OffsetDateTime, String)>,
}

pub struct DependencyGuard {
    name: &'static str,
    timeout: Duration,
    stats: Mutex<GuardStats>,
}

impl DependencyGuard {
    pub fn new(name: &'static str, timeout: Duration) -> Self {
        Self {
            name,
            timeout,
            stats: Mutex::new(GuardStats::default()),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn stats(&self) -> GuardStats {
        self.stats.lock().clone()
    }

    /// Runs one call under the timeout. Only `StoreError::Unavailable`
    /// (and the timeout itself) counts as a failure of the dependency.
    pub async fn run<T, F>(&self, _call: Call, fut: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                dependency: self.name,
                reason: format!("timed out after {:?}", self.timeout),
            }),
        };
        self.record(started.elapsed(), &result);
        result
    }

    /// Runs an idempotent call, retrying up to `MAX_RETRIES` times with
    /// exponential backoff and full jitter when it failed fast. A timeout is
    /// never retried: nothing waits on a hung server longer than the timeout.
    pub async fn run_idempotent<T, F, Fut>(&self, mut make: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout(self.timeout, make()).await {
                Ok(result) => result,
                Err(_) => {
                    let result = Err(StoreError::Unavailable {
                        dependency: self.name,
                        reason: format!("timed out after {:?}", self.timeout),
                    });
                    self.record(started.elapsed(), &result);
                    return result;
                }
            };
            let retry = matches!(result, Err(StoreError::Unavailable { .. }))
                && attempt < MAX_RETRIES
                && started.elapsed() < self.timeout;
            if !retry {
                self.record(started.elapsed(), &result);
                return result;
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    fn record<T>(&self, latency: Duration, result: &Result<T, StoreError>) {
        let mut stats = self.stats.lock();
        stats.calls += 1;
        stats.last_latency = Some(latency);
        match result {
            Err(StoreError::Unavailable { reason, .. }) => {
                stats.failure_count += 1;
                stats.consecutive_failures += 1;
                stats.last_failure = Some((OffsetDateTime::now_utc(), reason.clone()));
            }
            _ => stats.consecutive_failures = 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_ends_at_the_timeout_and_counts_as_failure() {
        let guard = DependencyGuard::new("database", Duration::from_millis(200));
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
    async fn idempotent_calls_retry_fast_failures_but_not_answers() {
        let guard = DependencyGuard::new("redis", Duration::from_secs(1));
        let mut calls = 0;
        let result = guard
            .run_idempotent(|| {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(StoreError::Unavailable {
                            dependency: "redis",
                            reason: "reset".into(),
                        })
                    } else {
                        Ok(n)
                    }
                }
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
    }

    #[tokio::test]
    async fn an_answer_is_not_a_failure() {
        let guard = DependencyGuard::new("database", Duration::from_secs(1));
        let result: Result<(), _> = guard
            .run(Call::Write, async { Err(StoreError::Conflict("email")) })
            .await;
        assert!(matches!(result, Err(StoreError::Conflict("email"))));
        let stats = guard.stats();
        assert_eq!((stats.calls, stats.failure_count), (1, 0));
    }
}
