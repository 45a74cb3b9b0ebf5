//! The series that describe a dependency or a mode exist from the first
//! scrape (DESIGN.md §3), and `holdfast_mode` follows the mode. One test in
//! a process of its own: the Prometheus recorder is process-global, so any
//! other app started in the same binary would create these series first and
//! hide a missing one (and overwrite the mode gauge).

// This binary uses a part of the shared harness only.
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "api/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{Backend, Stack, TestApp};

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics", None).await;
    reply.body.as_str().unwrap_or("").to_string()
}

/// The value of the series whose line starts with `series` (name and
/// labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The skew against the test PostgreSQL (same host clock): measured at
/// start, in the background, and small.
async fn clock_skew_is_measured_and_small(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let skew = loop {
        if let Some(skew) = value(&scrape(app).await, "holdfast_clock_skew_seconds") {
            break skew;
        }
        assert!(Instant::now() < deadline, "no clock skew series");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(skew.abs() < 1.0, "skew {skew}");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(
        health.body["warnings"],
        serde_json::json!([]),
        "{}",
        health.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dependency_and_mode_series_exists_from_the_first_scrape() {
    // An IdP that never answers: its breaker has a series all the same.
    let config = r#"
[database]
timeout = "500ms"
[redis]
timeout = "200ms"
[breaker]
minimum_calls = 3
open_wait = "1s"
half_open_permits = 1
[[idp]]
name = "upstream"
issuer = "https://idp.example"
jwks_url = "http://127.0.0.1:9/jwks"
audience = "holdfast-tests"
"#;
    let mut stack = Stack::start_with(Backend::PostgresRedis, config).await;
    let text = scrape(&stack.app).await;
    for (series, expected) in [
        ("holdfast_breaker_state{dependency=\"database\"}", 0.0),
        ("holdfast_breaker_state{dependency=\"redis\"}", 0.0),
        ("holdfast_mode{mode=\"normal\"}", 1.0),
        ("holdfast_mode{mode=\"read_only\"}", 0.0),
        ("holdfast_mode{mode=\"minimal\"}", 0.0),
        ("holdfast_deferred_writes", 0.0),
        ("holdfast_password_hash_queue_depth", 0.0),
        ("holdfast_logins_shed_total", 0.0),
        ("holdfast_refresh_reuse_total", 0.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in:\n{text}");
    }
    for series in [
        "holdfast_breaker_state{dependency=\"idp:upstream\"}",
        "holdfast_revocations{kind=\"sessions\"}",
        "holdfast_revocations{kind=\"users\"}",
        "holdfast_cache_requests_total{cache=\"validation\",result=\"hit\"}",
        "holdfast_cache_requests_total{cache=\"api_keys\",result=\"miss\"}",
        "holdfast_cache_requests_total{cache=\"authz\",result=\"miss\"}",
    ] {
        assert!(value(&text, series).is_some(), "{series} in:\n{text}");
    }

    clock_skew_is_measured_and_small(&stack.app).await;

    // Both stores gone: the mode gauge moves to minimal, alone.
    stack.pg.as_mut().expect("pg").kill();
    stack.redis.as_mut().expect("redis").kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.app.get("/api/v1/health", None).await.body["mode"] != "minimal" {
        assert!(Instant::now() < deadline, "never minimal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape(&stack.app).await;
    for (series, expected) in [
        ("holdfast_mode{mode=\"normal\"}", 0.0),
        ("holdfast_mode{mode=\"read_only\"}", 0.0),
        ("holdfast_mode{mode=\"minimal\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in:\n{text}");
    }
    // Open (2), or half-open (1) for the instant of a recovery probe.
    for dependency in ["database", "redis"] {
        let series = format!("holdfast_breaker_state{{dependency=\"{dependency}\"}}");
        let state = value(&text, &series).unwrap_or(0.0);
        assert!(state >= 1.0, "{series} = {state}");
    }
}
