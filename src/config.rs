//! One typed configuration, loaded from a TOML file and `HOLDFAST_*`
//! environment variables (DESIGN.md §6), and validated once at start so a bad
//! key is reported by name instead of surfacing later as odd behaviour.

use crate::secret::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokenConfig,
    pub passwords: PasswordConfig,
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
        "database": { "timeout": "2s", "pool_size": 16 },
        "redis": { "timeout": "250ms" },
        "tokens": {
            "algorithm": "EdDSA",
            "access_ttl": "15m",
            "refresh_ttl": "30d",
            "jwks_max_age": "5m",
            "leeway": "30s"
        },
        "passwords": { "hash_workers": 2, "queue": 64 }
    })
}

/// Environment variables that share the prefix but are not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &["config", "log"];

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
        figment = figment.merge(Env::prefixed("HOLDFAST_").split("__").filter(|key| {
            !NOT_CONFIG_KEYS
                .iter()
                .any(|k| key.as_str().eq_ignore_ascii_case(k))
        }));
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
        if self.tokens.algorithm != "EdDSA" {
            bad(
                "tokens.algorithm",
                "only \"EdDSA\" is supported by this version",
            );
        }
        if self.tokens.access_ttl < Duration::from_secs(60)
            || self.tokens.access_ttl > Duration::from_secs(24 * 3600)
        {
            bad("tokens.access_ttl", "must be between 1m and 24h");
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
        match self.database_backend() {
            Ok(_) => {}
            Err(msg) => bad("database.url", &msg),
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

/// Durations as the contract writes them: `250ms`, `2s`, `15m`, `30d`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration like 250ms, 2s, 15m ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("holdfast.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(Some(&path))
    }

    #[test]
    fn defaults_are_the_embedded_development_shape() {
        let config = load_toml("").expect("defaults load");
        assert_eq!(config.env, Environment::Development);
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(matches!(
            config.database_backend(),
            Ok(DatabaseBackend::Sqlite(_))
        ));
        assert_eq!(config.tokens.access_ttl, Duration::from_secs(900));
        assert_eq!(config.redis.timeout, Duration::from_millis(250));
    }

    #[test]
    fn bad_keys_are_named() {
        let err = load_toml("[tokens]\naccess_ttl = \"soon\"\n").expect_err("must fail");
        assert!(err.to_string().contains("tokens.access_ttl"), "{err}");
        let err = load_toml("[databse]\nurl = \"x\"\n").expect_err("must fail");
        assert!(err.to_string().contains("databse"), "{err}");
    }

    #[test]
    fn production_requires_master_key_postgres_and_redis() {
        let err = load_toml("env = \"production\"\nissuer = \"https://a.example\"\n")
            .expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("master_key_file"), "{text}");
        assert!(text.contains("database.url"), "{text}");
        assert!(text.contains("redis.url"), "{text}");
    }
}
