//! The small sections of the file (`[admin]`, `[audit]`, `[tls]`, `[emergency]`,
//! `[database]`, `[redis]`, `[rate_limit]`, `[tokens]`, `[passwords]`): plain
//! typed keys, kept apart from the loader so each reads as the contract's
//! table of keys.

use super::parse::Window;
use super::parse::{duration, rate};
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[admin] listen`: when set, `/metrics` (and the other operator
/// endpoints) are served there, in plain HTTP, and not on `listen`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

/// `[audit]`: how long security events are kept in the audit log; older
/// ones are deleted by every node's hourly purge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

/// `[tls]`: PEM files, re-read when they change (and on SIGHUP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[emergency]`: break-glass tokens are accepted only when the public key
/// file is set and `enabled` is not false.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyConfig {
    pub public_key_file: Option<PathBuf>,
    pub enabled: bool,
    /// Leaked break-glass tokens, refused by `jti`; re-read on SIGHUP.
    pub deny_jti: Vec<uuid::Uuid>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://path`; unset means SQLite in `data_dir`.
    pub url: Option<Secret<String>>,
    pub replica_url: Option<Secret<String>>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub pool_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Unset means sessions live in process memory (development only).
    pub url: Option<Secret<String>>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

/// What login and register do when the shared limiter (Redis) is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendFailure {
    /// Fail closed: 503 SVC001 (`rate_limiter`).
    Deny,
    /// Enforce per-node limits at half the configured rate.
    Local,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(deserialize_with = "rate")]
    pub login_per_ip: Window,
    #[serde(deserialize_with = "rate")]
    pub login_failures_per_account: Window,
    #[serde(deserialize_with = "rate")]
    pub register_per_ip: Window,
    #[serde(deserialize_with = "rate")]
    pub refresh_per_ip: Window,
    pub on_backend_failure: OnBackendFailure,
    /// Failures from all addresses together on one account before it is
    /// throttled (addresses that logged into it lately excepted).
    #[serde(deserialize_with = "rate")]
    pub login_failures_account_ceiling: Window,
    /// The longest any lock or account-wide throttle lasts.
    #[serde(deserialize_with = "duration")]
    pub lockout_max: Duration,
    /// Failed API-key lookups per client address, on each node.
    #[serde(deserialize_with = "rate")]
    pub api_key_failures_per_ip: Window,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub algorithm: String,
    #[serde(deserialize_with = "duration")]
    pub access_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub refresh_ttl: Duration,
    #[serde(deserialize_with = "duration")]
    pub jwks_max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfig {
    /// Dedicated threads for Argon2id, so hashing never runs on the executor.
    pub hash_workers: usize,
    /// Logins allowed to wait for a worker before we shed load with 503.
    pub queue: usize,
}
