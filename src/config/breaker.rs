//! `[breaker]`: one set of circuit-breaker settings for every dependency,
//! with `[breaker.database]` and `[breaker.redis]` overriding single keys, so
//! the common case is written once.

use super::parse::{duration, opt_duration};
use serde::Deserialize;
use std::time::Duration;

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

/// One dependency's circuit-breaker settings, as `resilience::breaker`
/// uses them (the percentages as fractions of 100).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    pub window: Duration,
    pub minimum_calls: u32,
    /// Percent, 1..=100.
    pub failure_rate_threshold: f64,
    pub slow_call_duration: Duration,
    /// Percent, 1..=100.
    pub slow_call_rate_threshold: f64,
    pub open_wait: Duration,
    pub open_wait_max: Duration,
    pub half_open_permits: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            minimum_calls: 5,
            failure_rate_threshold: 50.0,
            slow_call_duration: Duration::from_secs(1),
            slow_call_rate_threshold: 100.0,
            open_wait: Duration::from_secs(30),
            open_wait_max: Duration::from_secs(300),
            half_open_permits: 2,
        }
    }
}
