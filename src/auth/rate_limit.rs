//! The rate-limit policy of DESIGN.md §5: per IP on login, register and
//! refresh; per account on login, where failures lock the account for a
//! growing interval. Attempts are reserved before the password is checked,
//! so concurrent wrong passwords can never exceed the lockout limit.
//!
//! When the shared limiter (Redis) is unavailable, login and register fail
//! closed (503, `rate_limiter`) unless `on_backend_failure = "local"`, which
//! enforces per-node limits at half the rate. Refresh always falls back to
//! the per-node limiter: its tokens carry 256 bits and cannot be guessed.
//! Never a bypass.

use crate::config::{OnBackendFailure, RateLimitConfig};
use crate::error::ApiError;
use crate::store::memory_limiter::MemoryLimiter;
use crate::store::{Decision, LimiterStore, Window};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Longest an account lock grows to.
const MAX_LOCK: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LoginPerIp,
    RegisterPerIp,
    RefreshPerIp,
}

/// A reserved login attempt on an account, settled after the password
/// check. One dropped unsettled — the login was abandoned before a verdict,
/// as when the client goes away while its hash waits in the queue — is
/// refunded in the background: left standing it would count as a failure
/// for the whole window, and enough abandoned logins (a slow queue, clients
/// that time out) would lock the account's owner out.
pub struct AccountAttempt {
    key: String,
    member: String,
    /// Where it was reserved: the shared store, or the per-node fallback.
    store: Arc<dyn LimiterStore>,
    local: bool,
    settled: bool,
}

impl Drop for AccountAttempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, key, member) = (
            Arc::clone(&self.store),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        runtime.spawn(async move {
            if let Err(e) = store.refund(&key, &member).await {
                tracing::warn!(error = %e, "could not refund an abandoned login attempt");
            }
        });
    }
}

pub struct RateLimits {
    shared: Arc<dyn LimiterStore>,
    local: Arc<MemoryLimiter>,
    config: RateLimitConfig,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn half(window: Window) -> Window {
    Window {
        limit: (window.limit / 2).max(1),
        period: window.period,
    }
}

impl RateLimits {
    pub fn new(shared: Arc<dyn LimiterStore>, config: RateLimitConfig) -> Self {
        Self {
            shared,
            local: Arc::new(MemoryLimiter::new()),
            config,
        }
    }

    fn window(&self, limit: Limit) -> Window {
        match limit {
            Limit::LoginPerIp => self.config.login_per_ip,
            Limit::RegisterPerIp => self.config.register_per_ip,
            Limit::RefreshPerIp => self.config.refresh_per_ip,
        }
    }

    fn may_fall_back(&self, limit: Option<Limit>) -> bool {
        limit == Some(Limit::RefreshPerIp)
            || self.config.on_backend_failure == OnBackendFailure::Local
    }

    /// Takes one slot of `limit` for `subject` (an IP address).
    pub async fn check(&self, limit: Limit, subject: &str) -> Result<Decision, ApiError> {
        let window = self.window(limit);
        let key = format!("{limit:?}:{subject}");
        let (decision, _) = self.reserve(&key, window, Some(limit)).await?;
        if decision.allowed {
            Ok(decision)
        } else {
            Err(limited(decision))
        }
    }

    /// Reserves a login attempt on an account before its password is checked.
    pub async fn reserve_account(&self, account: &str) -> Result<AccountAttempt, ApiError> {
        let window = self.config.login_failures_per_account;
        let key = format!("account:{account}");
        let (decision, member) = self.reserve(&key, window, None).await?;
        if !decision.allowed {
            tracing::warn!(account, "login refused: account locked or out of attempts");
            return Err(limited(decision));
        }
        let (member, local) = member;
        let store: Arc<dyn LimiterStore> = if local {
            Arc::clone(&self.local) as Arc<dyn LimiterStore>
        } else {
            Arc::clone(&self.shared)
        };
        Ok(AccountAttempt {
            key,
            member,
            store,
            local,
            settled: false,
        })
    }

    /// The password was right, or no verdict was reached: the attempt does
    /// not count.
    pub async fn account_succeeded(&self, mut attempt: AccountAttempt) {
        if let Err(e) = attempt.store.refund(&attempt.key, &attempt.member).await {
            tracing::warn!(error = %e, "could not refund a login attempt");
        }
        // Only now: abandoned during the refund, it is refunded again.
        attempt.settled = true;
    }

    /// The password was wrong: counts, and may lock the account.
    /// Records a failed attempt; returns the lock when it locked the account.
    pub async fn account_failed(&self, mut attempt: AccountAttempt) -> Option<std::time::Duration> {
        // At once: a failure abandoned while being recorded still counts.
        attempt.settled = true;
        let mut window = self.config.login_failures_per_account;
        if attempt.local {
            window = half(window);
        }
        match attempt
            .store
            .fail(&attempt.key, window, MAX_LOCK, now_ms())
            .await
        {
            Ok(Some(lock)) => {
                tracing::warn!(account = %attempt.key, lock_secs = lock.as_secs(), "account locked after repeated login failures");
                Some(lock)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a login failure");
                None
            }
        }
    }

    /// Reserves on the shared store, or per node when allowed. Returns the
    /// decision and (member, reserved locally).
    async fn reserve(
        &self,
        key: &str,
        window: Window,
        limit: Option<Limit>,
    ) -> Result<(Decision, (String, bool)), ApiError> {
        let member = Uuid::new_v4().to_string();
        let now = now_ms();
        match self.shared.reserve(key, window, &member, now).await {
            Ok(decision) => Ok((decision, (member, false))),
            Err(e) if e.is_unavailable() && self.may_fall_back(limit) => {
                tracing::warn!(error = %e, "shared rate limiter unavailable: per-node limits at half rate");
                let decision = self.local.reserve(key, half(window), &member, now).await?;
                Ok((decision, (member, true)))
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "shared rate limiter unavailable: failing closed");
                Err(ApiError::Unavailable {
                    dependency: "rate_limiter".into(),
                    retry_after_secs: 5,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn limited(decision: Decision) -> ApiError {
    ApiError::RateLimited {
        limit: decision.limit,
        retry_after_secs: decision.reset_after.as_secs().max(1),
    }
}
