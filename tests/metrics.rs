//! The Prometheus metrics an operator scrapes. A file of its own: the
//! recorder is one per process, so a test elsewhere in the same binary that
//! opened or reset a `database` breaker would overwrite the gauges this one
//! reads.

// This binary uses a part of the shared harness only.
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "api/support/mod.rs"]
mod support;

use reqwest::StatusCode;
use support::{Backend, PASSWORD, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_breakers_dependencies_and_http() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, support::SHORT_BREAKERS).await;
    stack.app.user("metric").await;
    stack.pg.as_mut().expect("pg").kill();
    stack.app.fail_database_until_open().await;
    stack
        .app
        .login("metric", PASSWORD)
        .await
        .expect_error(503, "SVC001");
    let reply = stack.app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = reply.body.as_str().expect("text body").to_string();
    for needle in [
        "holdfast_http_requests_total{route=\"/api/v1/auth/login\",method=\"POST\",status=\"503\"}",
        "holdfast_http_request_duration_seconds_bucket{route=\"/api/v1/auth/login\"",
        "holdfast_dependency_call_duration_seconds_bucket{dependency=\"database\",outcome=\"failure\"",
        "holdfast_breaker_state{dependency=\"database\"} 2",
        "holdfast_breaker_transitions_total{dependency=\"database\",from=\"closed\",to=\"open\"}",
        "holdfast_breaker_rejected_total{dependency=\"database\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(
        !text.contains("holdfast@"),
        "no connection strings in metrics"
    );
}
