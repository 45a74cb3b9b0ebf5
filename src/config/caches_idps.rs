//! `[cache]` and `[[idp]]`: the caches that keep answers alive through an
//! outage, and the upstream identity providers whose tokens we accept.

use super::parse::duration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Longest a verified token stays cached (never past its `exp`).
    #[serde(deserialize_with = "duration")]
    pub validation_ttl: Duration,
    /// How long an authorization decision is fresh.
    #[serde(deserialize_with = "duration")]
    pub authz_ttl: Duration,
    /// How long past `authz_ttl` a decision may still be served, marked
    /// stale, while the database cannot answer.
    #[serde(deserialize_with = "duration")]
    pub authz_max_stale: Duration,
    /// How long a successful API key lookup is trusted without the database.
    #[serde(deserialize_with = "duration")]
    pub api_key_ttl: Duration,
    /// How often every node polls the invalidation log: the bound on how
    /// late a node honours a logout when pub/sub is not delivering.
    #[serde(deserialize_with = "duration")]
    pub invalidation_poll: Duration,
}

/// One `[[idp]]` block: an upstream issuer whose tokens `/auth/verify`
/// accepts after checking them against its JWKS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    pub name: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audience: String,
    #[serde(default = "defaults::jwks_ttl", deserialize_with = "duration")]
    pub jwks_ttl: Duration,
    #[serde(default = "defaults::max_stale", deserialize_with = "duration")]
    pub max_stale: Duration,
    #[serde(default = "defaults::timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// An unknown `kid` triggers a refetch at most this often.
    #[serde(default = "defaults::refetch", deserialize_with = "duration")]
    pub min_refetch_interval: Duration,
    /// The claim whose values `/auth/verify` answers as `X-Auth-Roles`.
    #[serde(default)]
    pub roles_claim: Option<String>,
}

mod defaults {
    use std::time::Duration;
    pub fn jwks_ttl() -> Duration {
        Duration::from_secs(2 * 3600)
    }
    pub fn max_stale() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn refetch() -> Duration {
        Duration::from_secs(30)
    }
}

impl IdpConfig {
    /// Problems with this block, as `(key, message)`.
    pub(super) fn problems(&self, production: bool) -> Vec<(String, String)> {
        let key = |k: &str| format!("idp.{}.{k}", self.name);
        let mut out = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            out.push((
                "idp.name".to_string(),
                format!("`{}` must be letters, digits, - or _", self.name),
            ));
        }
        if self.issuer.trim().is_empty() {
            out.push((key("issuer"), "must not be empty".into()));
        }
        if self.audience.trim().is_empty() {
            out.push((key("audience"), "must not be empty".into()));
        }
        match url::Url::parse(&self.jwks_url) {
            Err(e) => out.push((key("jwks_url"), format!("not a URL: {e}"))),
            Ok(url) => {
                let loopback = match url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                };
                match url.scheme() {
                    "https" => {}
                    "http" if !production || loopback => {}
                    "http" => out.push((
                        key("jwks_url"),
                        "must be https in production (unless loopback)".into(),
                    )),
                    other => out.push((key("jwks_url"), format!("unsupported scheme {other}"))),
                }
            }
        }
        if self.jwks_ttl < Duration::from_secs(1) {
            out.push((key("jwks_ttl"), "must be at least 1s".into()));
        }
        if self
            .roles_claim
            .as_ref()
            .is_some_and(|c| c.trim().is_empty())
        {
            out.push((key("roles_claim"), "must not be empty when set".into()));
        }
        if self.timeout.is_zero() {
            out.push((key("timeout"), "must be greater than 0".into()));
        }
        out
    }
}
