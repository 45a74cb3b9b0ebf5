//! The rate-limit policy of DESIGN.md §5: per IP on login, register and
//! refresh; per account on login and password change. Failed passwords
//! lock the pair (account, client address), so nobody can lock anyone
//! else out from their own address; an account-wide ceiling throttles an
//! account guessed at from many addresses, for at most `lockout_max`,
//! except from addresses that logged into it in the last 30 days. Password
//! checks are reserved before they run, so concurrent wrong passwords can
//! never exceed a limit.
//!
//! When the shared limiter (Redis) is unavailable, login, register and
//! password change fail closed (503, `rate_limiter`) unless
//! `on_backend_failure = "local"`, which enforces per-node limits at half
//! the rate. Refresh always falls back to the per-node limiter: its tokens
//! carry 256 bits and cannot be guessed. Never a bypass.
//!
//! Failed API-key lookups are limited per client address on each node
//! only (in process): API keys must keep working with Redis down.
//!
//! Windows are judged on the `Clock` the limits were given (the system's
//! outside tests), also when a dropped attempt is refunded later.

use crate::auth::clock::{self, Clock};
use crate::auth::error::{AuthError, FieldError};
use crate::config::{OnBackendFailure, RateLimitConfig};
use crate::store::memory_limiter::MemoryLimiter;
use crate::store::{AccountWindows, LimitDecision, LimiterStore, LoginSubject, Window};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a successful login exempts its address from the ceiling.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest `login` accepted: an email address is at most 254
/// characters (RFC 5321), and usernames are shorter.
pub const MAX_LOGIN_CHARS: usize = 254;

/// Refuses a `login` no account can have before it costs a limiter key, a
/// store lookup or a hash: 422, as for any malformed field. It says nothing
/// about any account (the rule is the same for all), and unlike 401 it
/// does not pretend a password was checked.
pub fn check_login(login: &str) -> Result<(), AuthError> {
    if login.trim().chars().nth(MAX_LOGIN_CHARS).is_some() {
        return Err(AuthError::Validation(vec![FieldError::new(
            "login",
            format!("must be at most {MAX_LOGIN_CHARS} characters"),
        )]));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    LoginPerIp,
    RegisterPerIp,
    RefreshPerIp,
}

impl Limit {
    /// Its `[rate_limit]` key, the `limit` label of its decisions.
    pub fn label(self) -> &'static str {
        match self {
            Limit::LoginPerIp => "login_per_ip",
            Limit::RegisterPerIp => "register_per_ip",
            Limit::RefreshPerIp => "refresh_per_ip",
        }
    }
}

/// A reserved password check on an account from one address, settled
/// after the check. One dropped unsettled — abandoned before a verdict, as
/// when the client goes away while its hash waits in the queue — is
/// refunded in the background: left standing it would count as a failure
/// for the whole window, and enough abandoned checks (a slow queue,
/// clients that time out) would lock the owner out.
pub struct AccountAttempt {
    account: String,
    address: String,
    member: String,
    /// The windows it was reserved under (halved on the per-node fallback).
    windows: AccountWindows,
    /// Where it was reserved: the shared store, or the per-node fallback.
    store: Arc<dyn LimiterStore>,
    /// The limits' clock, for a refund made after the request is gone.
    clock: Arc<dyn Clock>,
    settled: bool,
}

impl AccountAttempt {
    fn subject(&self) -> LoginSubject<'_> {
        LoginSubject {
            account: &self.account,
            address: &self.address,
        }
    }

    async fn refund(mut self, succeeded: bool) {
        if let Err(e) = self
            .store
            .refund_login(
                self.subject(),
                self.windows,
                &self.member,
                succeeded,
                self.clock.now_ms(),
            )
            .await
        {
            tracing::warn!(error = %e, "could not refund a password check");
        }
        // Only now: abandoned during the refund, it is refunded again.
        self.settled = true;
    }
}

impl Drop for AccountAttempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, windows) = (Arc::clone(&self.store), self.windows);
        let clock = Arc::clone(&self.clock);
        let (account, address, member) = (
            std::mem::take(&mut self.account),
            std::mem::take(&mut self.address),
            std::mem::take(&mut self.member),
        );
        runtime.spawn(async move {
            let subject = LoginSubject {
                account: &account,
                address: &address,
            };
            if let Err(e) = store
                .refund_login(subject, windows, &member, false, clock.now_ms())
                .await
            {
                tracing::warn!(error = %e, "could not refund an abandoned password check");
            }
        });
    }
}

/// A reserved API-key lookup from one address. Dropped without `failed`,
/// its slot is given back: only lookups that found no key count.
pub struct ApiKeyAttempt {
    limiter: Arc<MemoryLimiter>,
    key: String,
    member: String,
    failed: bool,
}

impl ApiKeyAttempt {
    /// The key was unknown or its secret wrong: the slot stays taken.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for ApiKeyAttempt {
    fn drop(&mut self) {
        if !self.failed {
            self.limiter.refund_now(&self.key, &self.member);
        }
    }
}

pub struct RateLimits {
    shared: Arc<dyn LimiterStore>,
    /// The per-node limiter: the fallback, and failed API-key lookups.
    local: Arc<MemoryLimiter>,
    /// The shared limiter is itself in process (embedded): a refusal of
    /// it (at its memory bound) has nowhere better to go.
    shared_in_process: bool,
    config: RateLimitConfig,
    clock: Arc<dyn Clock>,
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
            shared_in_process: shared.backend() == "memory",
            shared,
            local: Arc::new(MemoryLimiter::new()),
            config,
            clock: clock::system(),
        }
    }

    /// The same limits on another clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn window(&self, limit: Limit) -> Window {
        match limit {
            Limit::LoginPerIp => self.config.login_per_ip,
            Limit::RegisterPerIp => self.config.register_per_ip,
            Limit::RefreshPerIp => self.config.refresh_per_ip,
        }
    }

    fn account_windows(&self) -> AccountWindows {
        AccountWindows {
            pair: self.config.login_failures_per_account,
            ceiling: self.config.login_failures_account_ceiling,
            lockout_max: self.config.lockout_max,
            known_for: KNOWN_FOR,
        }
    }

    /// May `limit` (`None`: a password check) use the per-node limiter
    /// when the shared one cannot answer?
    fn may_fall_back(&self, limit: Option<Limit>) -> bool {
        !self.shared_in_process
            && (limit == Some(Limit::RefreshPerIp)
                || self.config.on_backend_failure == OnBackendFailure::Local)
    }

    /// Takes one slot of `limit` for `subject` (an IP address).
    pub async fn check(&self, limit: Limit, subject: &str) -> Result<LimitDecision, AuthError> {
        let decision = self.take(limit, subject).await;
        count_decision(limit.label(), &decision);
        decision
    }

    async fn take(&self, limit: Limit, subject: &str) -> Result<LimitDecision, AuthError> {
        let window = self.window(limit);
        let key = format!("{limit:?}:{subject}");
        let member = Uuid::new_v4().to_string();
        let now = self.clock.now_ms();
        let decision = match self.shared.reserve(&key, window, &member, now).await {
            Ok(decision) => decision,
            Err(e) if e.is_unavailable() && self.may_fall_back(Some(limit)) => {
                tracing::warn!(error = %e, "shared rate limiter unavailable: per-node limits at half rate");
                self.local.reserve_now(&key, half(window), &member, now)?
            }
            Err(e) => return Err(unavailable(e)),
        };
        if decision.allowed {
            Ok(decision)
        } else {
            Err(limited(decision))
        }
    }

    /// Reserves a password check on `account` (a user id, or the lowercased
    /// login tried when no such user exists) from `address`, before it runs.
    pub async fn reserve_account(
        &self,
        account: &str,
        address: &str,
    ) -> Result<AccountAttempt, AuthError> {
        let attempt = self.reserve_account_once(account, address).await;
        count_decision("login_failures_per_account", &attempt);
        attempt
    }

    async fn reserve_account_once(
        &self,
        account: &str,
        address: &str,
    ) -> Result<AccountAttempt, AuthError> {
        let subject = LoginSubject { account, address };
        let member = Uuid::new_v4().to_string();
        let now = self.clock.now_ms();
        let mut windows = self.account_windows();
        let (decision, store): (LimitDecision, Arc<dyn LimiterStore>) = match self
            .shared
            .reserve_login(subject, windows, &member, now)
            .await
        {
            Ok(decision) => (decision, Arc::clone(&self.shared)),
            Err(e) if e.is_unavailable() && self.may_fall_back(None) => {
                tracing::warn!(error = %e, "shared rate limiter unavailable: per-node limits at half rate");
                windows.pair = half(windows.pair);
                windows.ceiling = half(windows.ceiling);
                let decision = self
                    .local
                    .reserve_login(subject, windows, &member, now)
                    .await?;
                (decision, Arc::clone(&self.local) as Arc<dyn LimiterStore>)
            }
            Err(e) => return Err(unavailable(e)),
        };
        if !decision.allowed {
            tracing::warn!(
                account,
                address,
                "password check refused: locked, or out of attempts"
            );
            return Err(limited(decision));
        }
        Ok(AccountAttempt {
            account: account.to_string(),
            address: address.to_string(),
            member,
            windows,
            store,
            clock: Arc::clone(&self.clock),
            settled: false,
        })
    }

    /// The password was right: the check does not count, and the address
    /// is remembered as one that logs into the account.
    pub async fn account_succeeded(&self, attempt: AccountAttempt) {
        attempt.refund(true).await;
    }

    /// No verdict was reached (the hashing failed): the check does not
    /// count.
    pub async fn account_undecided(&self, attempt: AccountAttempt) {
        attempt.refund(false).await;
    }

    /// The password was wrong: it counts, and may lock the pair. Returns
    /// the lock when it locked it.
    pub async fn account_failed(&self, mut attempt: AccountAttempt) -> Option<Duration> {
        // At once: a failure abandoned while being recorded still counts.
        attempt.settled = true;
        match attempt
            .store
            .fail_login(attempt.subject(), attempt.windows, self.clock.now_ms())
            .await
        {
            Ok(Some(lock)) => {
                tracing::warn!(account = %attempt.account, address = %attempt.address, lock_secs = lock.as_secs(), "locked for this address after repeated password failures");
                Some(lock)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a password failure");
                None
            }
        }
    }

    /// Reserves an API-key lookup from `address` on this node: 429 once the
    /// address has had `api_key_failures_per_ip` failed lookups, before
    /// any store is asked.
    pub fn api_key_attempt(&self, address: &str) -> Result<ApiKeyAttempt, AuthError> {
        let attempt = self.api_key_attempt_once(address);
        count_decision("api_key_failures_per_ip", &attempt);
        attempt
    }

    fn api_key_attempt_once(&self, address: &str) -> Result<ApiKeyAttempt, AuthError> {
        let key = format!("ApiKeyFailuresPerIp:{address}");
        let member = Uuid::new_v4().to_string();
        let decision = self.local.reserve_now(
            &key,
            self.config.api_key_failures_per_ip,
            &member,
            self.clock.now_ms(),
        )?;
        if !decision.allowed {
            tracing::warn!(address, "API key refused: too many failed lookups");
            return Err(limited(decision));
        }
        Ok(ApiKeyAttempt {
            limiter: Arc::clone(&self.local),
            key,
            member,
            failed: false,
        })
    }
}

/// `holdfast_rate_limit_decisions_total{limit,outcome}`: `allowed`,
/// `limited`, or `backend_unavailable` (the limiter could not decide and
/// the request was refused: fail-closed). A decision made by the per-node
/// fallback counts as `allowed` or `limited` like any other.
fn count_decision<T>(limit: &'static str, decision: &Result<T, AuthError>) {
    let outcome = match decision {
        Ok(_) => "allowed",
        Err(AuthError::RateLimited { .. }) => "limited",
        Err(_) => "backend_unavailable",
    };
    metrics::counter!(
        "holdfast_rate_limit_decisions_total",
        "limit" => limit,
        "outcome" => outcome
    )
    .increment(1);
}

/// The shared limiter could not answer and no fallback is allowed.
fn unavailable(e: crate::store::StoreError) -> AuthError {
    if e.is_unavailable() {
        tracing::warn!(error = %e, "rate limiter unavailable: failing closed");
        AuthError::Unavailable {
            dependency: "rate_limiter".into(),
            retry_after: Duration::from_secs(5),
        }
    } else {
        e.into()
    }
}

fn limited(decision: LimitDecision) -> AuthError {
    AuthError::RateLimited {
        limit: decision.limit,
        retry_after: decision.reset_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_longer_than_an_email_can_be_are_refused() {
        assert!(check_login(&"a".repeat(254)).is_ok());
        assert!(check_login(&format!("  {}  ", "é".repeat(254))).is_ok());
        assert!(matches!(
            check_login(&"a".repeat(255)),
            Err(AuthError::Validation(_))
        ));
    }

    fn per_minute(limit: u32) -> Window {
        Window {
            limit,
            period: Duration::from_secs(60),
        }
    }

    fn limits(clock: Arc<crate::auth::clock::ManualClock>) -> RateLimits {
        let config = RateLimitConfig {
            login_per_ip: per_minute(2),
            login_failures_per_account: per_minute(3),
            register_per_ip: per_minute(2),
            refresh_per_ip: per_minute(2),
            on_backend_failure: OnBackendFailure::Deny,
            login_failures_account_ceiling: per_minute(10),
            lockout_max: Duration::from_secs(900),
            api_key_failures_per_ip: per_minute(1),
        };
        RateLimits::new(Arc::new(MemoryLimiter::new()), config).with_clock(clock)
    }

    /// The windows slide on the clock the limits were given: no sleeping.
    #[tokio::test]
    async fn a_window_frees_its_slots_when_its_period_has_passed_on_the_clock() {
        let clock = crate::auth::clock::ManualClock::at(1_700_000_000_000);
        let limits = limits(Arc::clone(&clock));
        for _ in 0..2 {
            assert!(limits.check(Limit::LoginPerIp, "10.0.0.1").await.is_ok());
        }
        assert!(limits.check(Limit::LoginPerIp, "10.0.0.1").await.is_err());
        clock.advance(Duration::from_secs(59));
        assert!(limits.check(Limit::LoginPerIp, "10.0.0.1").await.is_err());
        clock.advance(Duration::from_secs(1));
        assert!(limits.check(Limit::LoginPerIp, "10.0.0.1").await.is_ok());

        limits.api_key_attempt("10.0.0.2").expect("first").failed();
        assert!(limits.api_key_attempt("10.0.0.2").is_err());
        clock.advance(Duration::from_secs(60));
        assert!(limits.api_key_attempt("10.0.0.2").is_ok());
    }
}
