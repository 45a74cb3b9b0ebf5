//! The series of authentication, rate limiting, the hash pool, the caches
//! and refresh reuse (DESIGN.md §3, issue 15 item 4): each appears with its
//! labels after the action that produces it. A binary of its own, like
//! `metrics.rs`: the Prometheus recorder is process-global, and an app
//! started beside another test would overwrite the gauges that test reads.

// This binary uses a part of the shared harness only.
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "api/support/mod.rs"]
mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, PASSWORD, Stack, TestApp};

async fn scrape(app: &TestApp) -> String {
    let reply = app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body.as_str().unwrap_or("").to_string()
}

/// The value of the series whose line starts with `series` (name and
/// labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn at_least(text: &str, series: &str, least: f64) {
    let found = value(text, series);
    assert!(
        found.is_some_and(|v| v >= least),
        "{series} = {found:?}, expected at least {least}, in:\n{text}"
    );
}

/// One hash worker and one place in the queue, so a burst of logins is
/// shed; Redis with a short timeout, so it is found gone at once.
const CONFIG: &str = r#"
[passwords]
hash_workers = 1
queue = 1
[redis]
timeout = "200ms"
[breaker]
minimum_calls = 3
open_wait = "30s"
"#;

/// Logins right, wrong and shed; access tokens good and bad; an API key;
/// an authorization decision asked twice; a refresh token used twice.
/// Returns how many logins were shed.
async fn produce_each_series(app: &TestApp) -> u32 {
    // Password logins, right and wrong; access tokens, good and bad.
    let tokens = app.user("metrics").await;
    app.login("metrics", "not-the-password")
        .await
        .expect_error(401, "AUTH001");
    for _ in 0..2 {
        assert_eq!(
            app.verify(&tokens.access).await.status,
            StatusCode::NO_CONTENT
        );
    }
    app.verify("not-a-token").await.expect_error(401, "AUTH003");
    // An API key, and an authorization decision asked twice (miss, hit).
    let (_, key) = app.api_key(&tokens.access, &["users"]).await;
    assert_eq!(app.verify_key(&key).await.status, StatusCode::NO_CONTENT);
    for _ in 0..2 {
        let reply = app
            .post(
                "/api/v1/authz/check",
                Some(&tokens.access),
                json!({"permission": "docs:read"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // A refresh token used twice: theft.
    let reply = app.refresh(&tokens.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    app.refresh(&tokens.refresh)
        .await
        .expect_error(401, "AUTH007");
    // A burst of logins against two places in the hash pool: some shed.
    let burst: Vec<_> = (0..12)
        .map(|_| app.spawn_login("metrics", PASSWORD))
        .collect();
    let mut shed = 0;
    for login in burst {
        if login.await.expect("task").expect("send") == StatusCode::SERVICE_UNAVAILABLE {
            shed += 1;
        }
    }
    assert!(shed > 0, "no login shed by a pool of two places");
    shed
}

/// Each series with its labels, and the least it must count after
/// `produce_each_series`.
const SERIES: &[(&str, f64)] = &[
    (
        r#"holdfast_auth_outcomes_total{method="password",code="ok"}"#,
        1.0,
    ),
    (
        r#"holdfast_auth_outcomes_total{method="password",code="AUTH001"}"#,
        1.0,
    ),
    (
        r#"holdfast_auth_outcomes_total{method="jwt",code="ok"}"#,
        2.0,
    ),
    (
        r#"holdfast_auth_outcomes_total{method="jwt",code="AUTH003"}"#,
        1.0,
    ),
    (
        r#"holdfast_auth_outcomes_total{method="api_key",code="ok"}"#,
        1.0,
    ),
    (
        r#"holdfast_rate_limit_decisions_total{limit="register_per_ip",outcome="allowed"}"#,
        1.0,
    ),
    (
        r#"holdfast_rate_limit_decisions_total{limit="login_per_ip",outcome="allowed"}"#,
        2.0,
    ),
    (
        r#"holdfast_rate_limit_decisions_total{limit="refresh_per_ip",outcome="allowed"}"#,
        2.0,
    ),
    (
        r#"holdfast_rate_limit_decisions_total{limit="login_failures_per_account",outcome="allowed"}"#,
        2.0,
    ),
    (
        r#"holdfast_rate_limit_decisions_total{limit="api_key_failures_per_ip",outcome="allowed"}"#,
        1.0,
    ),
    (
        r#"holdfast_cache_requests_total{cache="validation",result="hit"}"#,
        1.0,
    ),
    (
        r#"holdfast_cache_requests_total{cache="validation",result="miss"}"#,
        1.0,
    ),
    (
        r#"holdfast_cache_requests_total{cache="authz",result="hit"}"#,
        1.0,
    ),
    (
        r#"holdfast_cache_requests_total{cache="authz",result="miss"}"#,
        1.0,
    ),
    (
        r#"holdfast_cache_requests_total{cache="api_keys",result="miss"}"#,
        1.0,
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_series_appears_with_its_labels_after_its_action() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;

    let shed = produce_each_series(app).await;

    let text = scrape(app).await;
    for &(series, least) in SERIES {
        at_least(&text, series, least);
    }
    at_least(
        &text,
        r#"holdfast_auth_outcomes_total{method="password",code="SVC001"}"#,
        f64::from(shed),
    );
    // Every place given back once the burst is answered.
    assert_eq!(
        value(&text, "holdfast_password_hash_queue_depth"),
        Some(0.0),
        "{text}"
    );

    // Redis gone: the limiter cannot decide, and the login is refused.
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;
    app.login("metrics", PASSWORD)
        .await
        .expect_error(503, "SVC001");
    let text = scrape(app).await;
    at_least(
        &text,
        r#"holdfast_rate_limit_decisions_total{limit="login_per_ip",outcome="backend_unavailable"}"#,
        1.0,
    );
}
