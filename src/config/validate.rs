//! The checks serde cannot express: rules between keys, ranges, URL schemes
//! and what production insists on. Every problem is collected, in a fixed
//! order, so an operator sees them all at once and tests can name them.

use super::{Config, ConfigError, DatabaseBackend, Environment};
use std::time::Duration;

/// The problems found so far, each as `key: message`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn bad(&mut self, key: &str, msg: &str) {
        self.0.push(format!("{key}: {msg}"));
    }
}

impl Config {
    /// Checks that need more than one key or a rule the type cannot express.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        let p = &mut problems;
        identity_and_tokens(self, p);
        emergency(self, p);
        capacity_and_timeouts(self, p);
        breakers(self, p);
        urls(self, p);
        if self.env == Environment::Production {
            production(self, p);
        }
        rate_limits(self, p);
        cache_and_listeners(self, p);
        idps(self, p);
        if problems.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems.0))
        }
    }
}

/// `issuer`, `audience` and `[tokens]`.
fn identity_and_tokens(c: &Config, p: &mut Problems) {
    if c.issuer.trim().is_empty() {
        p.bad("issuer", "must not be empty");
    }
    if c.audience.trim().is_empty() {
        p.bad("audience", "must not be empty");
    }
    if !["EdDSA", "ES256", "RS256"].contains(&c.tokens.algorithm.as_str()) {
        p.bad(
            "tokens.algorithm",
            "must be \"EdDSA\", \"ES256\" or \"RS256\"",
        );
    }
    // Short-lived tokens are a legitimate choice (DESIGN.md §2); the
    // leeway on `exp` is clamped to the TTL where tokens are verified.
    if c.tokens.access_ttl < Duration::from_secs(1)
        || c.tokens.access_ttl > Duration::from_secs(24 * 3600)
    {
        p.bad("tokens.access_ttl", "must be between 1s and 24h");
    }
    if c.tokens.refresh_ttl <= c.tokens.access_ttl {
        p.bad(
            "tokens.refresh_ttl",
            "must be longer than tokens.access_ttl",
        );
    }
    if c.tokens.leeway > Duration::from_secs(30) {
        p.bad("tokens.leeway", "must be at most 30s");
    }
}

/// A break-glass key that is switched on must be readable at start, not
/// at the moment of an incident.
fn emergency(c: &Config, p: &mut Problems) {
    if let Some(path) = &c.emergency.public_key_file
        && c.emergency.enabled
        && !path.exists()
    {
        p.bad("emergency.public_key_file", "does not exist");
    }
}

/// Pool sizes, queues and timeouts, where zero would mean "never works".
fn capacity_and_timeouts(c: &Config, p: &mut Problems) {
    if c.passwords.hash_workers == 0 {
        p.bad("passwords.hash_workers", "must be at least 1");
    }
    if c.passwords.queue == 0 {
        p.bad("passwords.queue", "must be at least 1");
    }
    if c.database.pool_size == 0 {
        p.bad("database.pool_size", "must be at least 1");
    }
    if c.database.timeout.is_zero() {
        p.bad("database.timeout", "must be greater than 0");
    }
    if c.redis.timeout.is_zero() {
        p.bad("redis.timeout", "must be greater than 0");
    }
}

/// Each dependency's effective breaker, named by its own key so an
/// override that breaks a rule is reported where it was written.
fn breakers(c: &Config, p: &mut Problems) {
    for dependency in ["database", "redis"] {
        let b = c.breaker.for_dependency(dependency);
        let key = |k: &str| format!("breaker.{dependency}.{k}");
        for (name, pct) in [
            ("failure_rate_threshold", b.failure_rate_threshold),
            ("slow_call_rate_threshold", b.slow_call_rate_threshold),
        ] {
            if !(1.0..=100.0).contains(&pct) {
                p.bad(&key(name), "must be a percentage from 1 to 100");
            }
        }
        if b.minimum_calls == 0 {
            p.bad(&key("minimum_calls"), "must be at least 1");
        }
        if b.half_open_permits == 0 {
            p.bad(&key("half_open_permits"), "must be at least 1");
        }
        if b.window < Duration::from_millis(100) {
            p.bad(&key("window"), "must be at least 100ms");
        }
        if b.open_wait.is_zero() || b.open_wait_max < b.open_wait {
            p.bad(
                &key("open_wait_max"),
                "must be at least open_wait, which must be > 0",
            );
        }
    }
}

/// The schemes of the database, replica and Redis URLs.
fn urls(c: &Config, p: &mut Problems) {
    if let Err(msg) = c.database_backend() {
        p.bad("database.url", &msg);
    }
    if c.database.replica_url.is_some() {
        if let Err(msg) = c.replica_hosts() {
            p.bad("database.replica_url", &msg);
        } else if !matches!(c.database_backend(), Ok(DatabaseBackend::Postgres(_))) {
            p.bad("database.replica_url", "needs a postgres:// database.url");
        }
    }
    if let Err(msg) = c.redis_topology() {
        p.bad("redis.url", &msg);
    }
}

/// Production never falls back to a generated key, SQLite, process memory
/// or plain-HTTP token URLs.
fn production(c: &Config, p: &mut Problems) {
    if c.master_key.is_none() && c.master_key_file.is_none() {
        p.bad(
            "master_key_file",
            "production needs a master key: set master_key_file or HOLDFAST_MASTER_KEY",
        );
    }
    if !matches!(c.database_backend(), Ok(DatabaseBackend::Postgres(_))) {
        p.bad("database.url", "production needs a postgres:// URL");
    }
    if c.redis.url.is_none() {
        p.bad(
            "redis.url",
            "production needs Redis; process memory is never used in its place",
        );
    }
    if !c.issuer.starts_with("https://") {
        p.bad("issuer", "must be an https:// URL in production");
    }
}

/// The account-wide throttle against `lockout_max`.
fn rate_limits(c: &Config, p: &mut Problems) {
    let r = &c.rate_limit;
    if r.lockout_max < Duration::from_secs(1) {
        p.bad("rate_limit.lockout_max", "must be at least 1s");
    } else if r.login_failures_account_ceiling.period > r.lockout_max {
        // The throttle lasts until the failures age out, and never
        // longer than lockout_max: the window must fit in it.
        p.bad(
            "rate_limit.login_failures_account_ceiling",
            "its period must not be longer than rate_limit.lockout_max",
        );
    }
}

/// The invalidation poll (a busy loop if too short), the admin listener
/// and the audit retention.
fn cache_and_listeners(c: &Config, p: &mut Problems) {
    if c.cache.invalidation_poll < Duration::from_millis(100) {
        p.bad("cache.invalidation_poll", "must be at least 100ms");
    }
    if c.admin.listen == Some(c.listen) {
        p.bad("admin.listen", "must differ from listen");
    }
    if c.audit.retention < Duration::from_secs(3600) {
        p.bad("audit.retention", "must be at least 1h");
    }
}

/// Each `[[idp]]` block's own problems, and names used twice.
fn idps(c: &Config, p: &mut Problems) {
    let production = c.env == Environment::Production;
    let mut names = std::collections::HashSet::new();
    for idp in &c.idp {
        if !names.insert(idp.name.as_str()) {
            p.bad("idp.name", &format!("`{}` is configured twice", idp.name));
        }
        for (key, message) in idp.problems(production) {
            p.bad(&key, &message);
        }
    }
}
