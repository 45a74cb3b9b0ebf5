//! One typed configuration, loaded from a TOML file and `HOLDFAST_*`
//! environment variables (DESIGN.md §6), and validated once at start so a bad
//! key is reported by name instead of surfacing later as odd behaviour.

use crate::secret::Secret;
use defaults::defaults;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use parse::networks;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod breaker;
mod caches_idps;
mod database_url;
mod defaults;
mod env;
mod parse;
mod redis_url;
mod sections;
mod validate;

pub use breaker::{BreakerConfig, BreakerOverride, BreakerSettings};
pub use caches_idps::{CacheConfig, IdpConfig};
pub use database_url::{PgHost, pg_hosts};
pub use parse::{Window, parse_rate};
pub use redis_url::{ClusterTopology, Credentials, HostPort, RedisTopology, SentinelTopology};
pub use sections::{
    AdminConfig, AuditConfig, DatabaseConfig, EmergencyConfig, OnBackendFailure, PasswordConfig,
    RateLimitConfig, RedisConfig, TlsConfig, TokenConfig,
};

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
    /// `[audit]`: the audit log's retention.
    pub audit: AuditConfig,
    /// `[tls]`: holdfast terminates TLS itself; unset, the load balancer does.
    pub tls: Option<TlsConfig>,
    /// `HOLDFAST_*` variables that name no key, for the log once it is set
    /// up (development only: production refuses them).
    #[serde(skip)]
    pub warnings: Vec<String>,
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

    /// Which SQL backend the URL names; SQLite in `data_dir` when unset.
    pub fn database_backend(&self) -> Result<DatabaseBackend, String> {
        match &self.database.url {
            None => Ok(DatabaseBackend::Sqlite(
                self.data_dir.join("holdfast.db").display().to_string(),
            )),
            Some(url) => {
                let url = url.expose();
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Ok(DatabaseBackend::Postgres(pg_hosts(url)?))
                } else if let Some(path) = url.strip_prefix("sqlite://") {
                    Ok(DatabaseBackend::Sqlite(path.to_string()))
                } else {
                    Err("must start with postgres:// or sqlite://".into())
                }
            }
        }
    }

    /// The read hosts `[database] replica_url` names (none when unset).
    pub fn replica_hosts(&self) -> Result<Vec<PgHost>, String> {
        match &self.database.replica_url {
            None => Ok(Vec::new()),
            Some(url) => pg_hosts(url.expose()),
        }
    }
}

/// The SQL backend chosen from `[database] url`.
#[derive(Debug, Clone)]
pub enum DatabaseBackend {
    /// The hosts of the URL, in its order (one, or libpq's `h1,h2` list).
    Postgres(Vec<PgHost>),
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
