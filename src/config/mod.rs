//! One typed configuration, loaded from a TOML file and `HOLDFAST_*`
//! environment variables (DESIGN.md §6), and validated once at start so a bad
//! key is reported by name instead of surfacing later as odd behaviour.

use crate::resilience::breaker::BreakerSettings;
use crate::secret::Secret;
use crate::store::Window;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use parse::{duration, networks, opt_duration, rate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod access;
mod env;
mod parse;

pub use access::{CacheConfig, IdpConfig};
pub use parse::parse_rate;

/// Development relaxes start-up checks and may fall back to process memory;
/// production never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub env: Environment,
    pub listen: SocketAddr,
    /// `iss` of every token we sign, and the base of the discovery document.
    pub issuer: String,
    pub audience: String,
    pub master_key_file: Option<PathBuf>,
    /// Base64 of 32 bytes, from `HOLDFAST_MASTER_KEY`; wins over the file.
    pub master_key: Option<Secret<String>>,
    /// Where the embedded mode keeps its SQLite file and generated master key.
    pub data_dir: PathBuf,
    /// Load balancers whose `X-Forwarded-For` is believed (CIDRs or
    /// addresses). Empty: the TCP peer is the client, and the header is
    /// ignored so it cannot be used to dodge per-IP limits.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub breaker: BreakerConfig,
    pub rate_limit: RateLimitConfig,
    pub tokens: TokenConfig,
    pub passwords: PasswordConfig,
    pub emergency: EmergencyConfig,
    pub cache: CacheConfig,
    /// Upstream identity providers (`[[idp]]` blocks).
    pub idp: Vec<IdpConfig>,
    /// `[admin]`: the optional operators' listener.
    pub admin: AdminConfig,
    /// `[tls]`: holdfast terminates TLS itself; unset, the load balancer does.
    pub tls: Option<TlsConfig>,
    /// `HOLDFAST_*` variables that name no key, for the log once it is set
    /// up (development only: production refuses them).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[admin] listen`: when set, `/metrics` (and the other operator
/// endpoints) are served there, in plain HTTP, and not on `listen`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
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

/// `[breaker]`: defaults for every dependency; `[breaker.database]` and
/// `[breaker.redis]` override single keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    pub minimum_calls: u32,
    pub failure_rate_threshold: u32,
    #[serde(deserialize_with = "duration")]
    pub slow_call_duration: Duration,
    pub slow_call_rate_threshold: u32,
    #[serde(deserialize_with = "duration")]
    pub open_wait: Duration,
    #[serde(deserialize_with = "duration")]
    pub open_wait_max: Duration,
    pub half_open_permits: u32,
    #[serde(default)]
    pub database: BreakerOverride,
    #[serde(default)]
    pub redis: BreakerOverride,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    #[serde(default, deserialize_with = "opt_duration")]
    pub window: Option<Duration>,
    pub minimum_calls: Option<u32>,
    pub failure_rate_threshold: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub slow_call_duration: Option<Duration>,
    pub slow_call_rate_threshold: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub open_wait: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub open_wait_max: Option<Duration>,
    pub half_open_permits: Option<u32>,
}

impl BreakerConfig {
    /// The effective settings of one dependency's breaker.
    pub fn for_dependency(&self, name: &str) -> BreakerSettings {
        let o = match name {
            "database" => &self.database,
            "redis" => &self.redis,
            _ => &BreakerOverride::default(),
        };
        BreakerSettings {
            window: o.window.unwrap_or(self.window),
            minimum_calls: o.minimum_calls.unwrap_or(self.minimum_calls),
            failure_rate_threshold: f64::from(
                o.failure_rate_threshold
                    .unwrap_or(self.failure_rate_threshold),
            ),
            slow_call_duration: o.slow_call_duration.unwrap_or(self.slow_call_duration),
            slow_call_rate_threshold: f64::from(
                o.slow_call_rate_threshold
                    .unwrap_or(self.slow_call_rate_threshold),
            ),
            open_wait: o.open_wait.unwrap_or(self.open_wait),
            open_wait_max: o.open_wait_max.unwrap_or(self.open_wait_max),
            half_open_permits: o.half_open_permits.unwrap_or(self.half_open_permits),
        }
    }
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

/// The defaults of DESIGN.md §6, as a figment layer under the file and env.
fn defaults() -> serde_json::Value {
    serde_json::json!({
        "env": "development",
        "listen": "127.0.0.1:8080",
        "issuer": "http://127.0.0.1:8080",
        "audience": "holdfast",
        "data_dir": "./holdfast-data",
        "trusted_proxies": [],
        "database": { "timeout": "2s", "pool_size": 16 },
        "redis": { "timeout": "250ms" },
        "breaker": {
            "window": "10s",
            "minimum_calls": 5,
            "failure_rate_threshold": 50,
            "slow_call_duration": "1s",
            "slow_call_rate_threshold": 100,
            "open_wait": "30s",
            "open_wait_max": "5m",
            "half_open_permits": 2
        },
        "rate_limit": {
            "login_per_ip": "20/min",
            "login_failures_per_account": "5/15min",
            "register_per_ip": "5/min",
            "refresh_per_ip": "60/min",
            "on_backend_failure": "deny",
            "login_failures_account_ceiling": "100/15min",
            "lockout_max": "15m",
            "api_key_failures_per_ip": "20/min"
        },
        "tokens": {
            "algorithm": "EdDSA",
            "access_ttl": "15m",
            "refresh_ttl": "30d",
            "jwks_max_age": "5m",
            "leeway": "30s"
        },
        "passwords": { "hash_workers": 2, "queue": 64 },
        "emergency": { "enabled": true, "deny_jti": [] },
        "cache": {
            "validation_ttl": "5m",
            "authz_ttl": "60s",
            "authz_max_stale": "15m",
            "api_key_ttl": "60s",
            "invalidation_poll": "5s"
        },
        "idp": [],
        "admin": {}
    })
}

impl Config {
    /// Defaults, then the TOML file (if any), then `HOLDFAST_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(defaults()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            figment = figment.merge(Toml::file(path));
        }
        let unknown = env::unknown_variables(std::env::vars().map(|(name, _)| name));
        // Figment sees a key either as written or with `__` as `.`.
        let skipped: Vec<String> = unknown
            .iter()
            .filter_map(|name| name.strip_prefix(env::PREFIX))
            .map(|rest| rest.to_ascii_lowercase())
            .flat_map(|rest| [rest.replace("__", "."), rest])
            .chain(["config".to_string(), "log".to_string()])
            .collect();
        figment = figment.merge(
            Env::prefixed(env::PREFIX)
                .split("__")
                .filter(move |key| !skipped.iter().any(|k| key.as_str().eq_ignore_ascii_case(k))),
        );
        let mut config = Self::extract(figment)?;
        let problems: Vec<String> = unknown.iter().map(|name| env::describe(name)).collect();
        if config.env == Environment::Production && !problems.is_empty() {
            return Err(ConfigError(
                problems
                    .into_iter()
                    .map(|p| format!("{p}; production refuses unknown HOLDFAST_ variables"))
                    .collect(),
            ));
        }
        config.warnings = problems;
        Ok(config)
    }

    /// TOML text over the defaults, without the environment: the fuzz
    /// target's way in (no file, and the same answer whatever the process
    /// environment holds).
    pub(crate) fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(Figment::from(Serialized::defaults(defaults())).merge(Toml::string(text)))
    }

    /// Deserialises and validates, naming every bad key.
    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            ConfigError(
                e.into_iter()
                    .map(|e| {
                        let key = e.path.join(".");
                        if key.is_empty() {
                            e.to_string()
                        } else {
                            format!("{key}: {}", e.kind)
                        }
                    })
                    .collect(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that need more than one key or a rule the type cannot express.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, msg: &str| errors.push(format!("{key}: {msg}"));
        if self.issuer.trim().is_empty() {
            bad("issuer", "must not be empty");
        }
        if self.audience.trim().is_empty() {
            bad("audience", "must not be empty");
        }
        if !["EdDSA", "ES256", "RS256"].contains(&self.tokens.algorithm.as_str()) {
            bad(
                "tokens.algorithm",
                "must be \"EdDSA\", \"ES256\" or \"RS256\"",
            );
        }
        // Short-lived tokens are a legitimate choice (DESIGN.md §2); the
        // leeway on `exp` is clamped to the TTL where tokens are verified.
        if self.tokens.access_ttl < Duration::from_secs(1)
            || self.tokens.access_ttl > Duration::from_secs(24 * 3600)
        {
            bad("tokens.access_ttl", "must be between 1s and 24h");
        }
        if self.tokens.refresh_ttl <= self.tokens.access_ttl {
            bad(
                "tokens.refresh_ttl",
                "must be longer than tokens.access_ttl",
            );
        }
        if self.tokens.leeway > Duration::from_secs(30) {
            bad("tokens.leeway", "must be at most 30s");
        }
        if let Some(path) = &self.emergency.public_key_file
            && self.emergency.enabled
            && !path.exists()
        {
            bad("emergency.public_key_file", "does not exist");
        }
        if self.passwords.hash_workers == 0 {
            bad("passwords.hash_workers", "must be at least 1");
        }
        if self.passwords.queue == 0 {
            bad("passwords.queue", "must be at least 1");
        }
        if self.database.pool_size == 0 {
            bad("database.pool_size", "must be at least 1");
        }
        if self.database.timeout.is_zero() {
            bad("database.timeout", "must be greater than 0");
        }
        if self.redis.timeout.is_zero() {
            bad("redis.timeout", "must be greater than 0");
        }
        for dependency in ["database", "redis"] {
            let b = self.breaker.for_dependency(dependency);
            let key = |k: &str| format!("breaker.{dependency}.{k}");
            for (name, pct) in [
                ("failure_rate_threshold", b.failure_rate_threshold),
                ("slow_call_rate_threshold", b.slow_call_rate_threshold),
            ] {
                if !(1.0..=100.0).contains(&pct) {
                    bad(&key(name), "must be a percentage from 1 to 100");
                }
            }
            if b.minimum_calls == 0 {
                bad(&key("minimum_calls"), "must be at least 1");
            }
            if b.half_open_permits == 0 {
                bad(&key("half_open_permits"), "must be at least 1");
            }
            if b.window < Duration::from_millis(100) {
                bad(&key("window"), "must be at least 100ms");
            }
            if b.open_wait.is_zero() || b.open_wait_max < b.open_wait {
                bad(
                    &key("open_wait_max"),
                    "must be at least open_wait, which must be > 0",
                );
            }
        }
        match self.database_backend() {
            Ok(_) => {}
            Err(msg) => bad("database.url", &msg),
        }
        if let Some(replica) = &self.database.replica_url {
            let url = replica.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bad("database.replica_url", "must be a postgres:// URL");
            } else if !matches!(self.database_backend(), Ok(DatabaseBackend::Postgres(_))) {
                bad("database.replica_url", "needs a postgres:// database.url");
            }
        }
        if let Some(url) = &self.redis.url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            bad("redis.url", "must start with redis:// or rediss://");
        }
        if self.env == Environment::Production {
            if self.master_key.is_none() && self.master_key_file.is_none() {
                bad(
                    "master_key_file",
                    "production needs a master key: set master_key_file or HOLDFAST_MASTER_KEY",
                );
            }
            if !matches!(self.database_backend(), Ok(DatabaseBackend::Postgres(_))) {
                bad("database.url", "production needs a postgres:// URL");
            }
            if self.redis.url.is_none() {
                bad(
                    "redis.url",
                    "production needs Redis; process memory is never used in its place",
                );
            }
            if !self.issuer.starts_with("https://") {
                bad("issuer", "must be an https:// URL in production");
            }
        }
        if self.rate_limit.lockout_max < Duration::from_secs(1) {
            bad("rate_limit.lockout_max", "must be at least 1s");
        } else if self.rate_limit.login_failures_account_ceiling.period
            > self.rate_limit.lockout_max
        {
            // The throttle lasts until the failures age out, and never
            // longer than lockout_max: the window must fit in it.
            bad(
                "rate_limit.login_failures_account_ceiling",
                "its period must not be longer than rate_limit.lockout_max",
            );
        }
        if self.cache.invalidation_poll < Duration::from_millis(100) {
            bad("cache.invalidation_poll", "must be at least 100ms");
        }
        if self.admin.listen == Some(self.listen) {
            bad("admin.listen", "must differ from listen");
        }
        let production = self.env == Environment::Production;
        let mut names = std::collections::HashSet::new();
        for idp in &self.idp {
            if !names.insert(idp.name.as_str()) {
                bad("idp.name", &format!("`{}` is configured twice", idp.name));
            }
            for (key, message) in idp.problems(production) {
                bad(&key, &message);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    /// Which SQL backend the URL names; SQLite in `data_dir` when unset.
    pub fn database_backend(&self) -> Result<DatabaseBackend, String> {
        match &self.database.url {
            None => Ok(DatabaseBackend::Sqlite(
                self.data_dir.join("holdfast.db").display().to_string(),
            )),
            Some(url) => {
                let url = url.expose();
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Ok(DatabaseBackend::Postgres(Secret::new(url.clone())))
                } else if let Some(path) = url.strip_prefix("sqlite://") {
                    Ok(DatabaseBackend::Sqlite(path.to_string()))
                } else {
                    Err("must start with postgres:// or sqlite://".into())
                }
            }
        }
    }
}

/// The SQL backend chosen from `[database] url`.
#[derive(Debug, Clone)]
pub enum DatabaseBackend {
    Postgres(Secret<String>),
    /// A file path.
    Sqlite(String),
}

/// Every problem found, one line per key, so an operator fixes them in one go.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for line in &self.0 {
            writeln!(f, "  - {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests;
