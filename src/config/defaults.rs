//! The defaults of DESIGN.md §6, in one place: the bottom figment layer,
//! under the file and the environment, so a key left out of both still has
//! the contract's value.

/// The defaults of DESIGN.md §6, as a figment layer under the file and env.
pub(super) fn defaults() -> serde_json::Value {
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
        "admin": {},
        "audit": { "retention": "90days" }
    })
}
