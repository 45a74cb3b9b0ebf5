//! Configuration text through the same extraction and validation as the
//! file at start-up: it must answer with a config or a list of problems,
//! never panic; and a config that loads keeps the contract's bounds.
#![no_main]

use holdfast::fuzzing::config_from_toml;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config_from_toml(text) {
        Ok(config) => {
            let ttl = config.tokens.access_ttl;
            assert!(ttl >= Duration::from_secs(60) && ttl <= Duration::from_secs(24 * 3600));
            assert!(config.tokens.refresh_ttl > ttl);
            assert!(config.tokens.leeway <= Duration::from_secs(30));
            assert!(config.passwords.hash_workers > 0 && config.passwords.queue > 0);
            assert!(config.database_backend().is_ok());
            for dependency in ["database", "redis"] {
                let breaker = config.breaker.for_dependency(dependency);
                assert!(breaker.minimum_calls > 0 && breaker.half_open_permits > 0);
                assert!(breaker.open_wait_max >= breaker.open_wait);
            }
        }
        Err(error) => assert!(!error.0.is_empty(), "an error names no problem"),
    }
});
