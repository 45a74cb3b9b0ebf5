//! The failure-matrix rows of the rate limits (DESIGN.md §5): a pair
//! locked after concurrent wrong passwords, the per-IP limit, and logins
//! abandoned in the hash queue that must not count against their account.

use super::CONFIG;
use crate::support::{Backend, PASSWORD, Stack};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_lockout_and_ip_limits() {
    let config = format!(
        "{CONFIG}[rate_limit]\nlogin_failures_per_account = \"3/15min\"\nlogin_per_ip = \"8/min\"\n"
    );
    let stack = Stack::start_with(Backend::PostgresRedis, &config).await;
    let app = &stack.app;
    app.register("ida@example.com", "ida").await;
    let ok = app.login("ida", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("ratelimit-limit"), Some("8"));
    assert_eq!(ok.header("ratelimit-remaining"), Some("7"));
    // Concurrent wrong passwords never exceed the limit of 3.
    let attempts: Vec<_> = (0..5)
        .map(|_| app.spawn_login("ida", "wrong-password-here"))
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.expect("join").map_or(0, |s| s.as_u16()));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 3, "at most 3 password checks: {statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Locked: even the right password waits; the answer says how long.
    let locked = app.login("ida", PASSWORD).await;
    locked.expect_error(429, "RATE001");
    let retry: u64 = locked
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retry > 800, "locked for the window (15 min): {retry}");
    // The per-IP limit: 8 per minute in all.
    let mut last = None;
    for _ in 0..3 {
        last = Some(app.login("nobody", PASSWORD).await);
    }
    last.expect("reply").expect_error(429, "RATE001");
}

/// A login abandoned before its verdict — the client gave up while the
/// hash waited in the queue — gives its account attempt back: it is no
/// failure, and a few of them must not lock the owner out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_do_not_count_against_the_account() {
    let config = r#"
[passwords]
hash_workers = 1
queue = 64
[rate_limit]
login_per_ip = "1000/min"
login_failures_per_account = "2/15min"
"#;
    let stack = Stack::start_with(Backend::PostgresRedis, config).await;
    let app = &stack.app;
    app.user("owner").await;
    // Forty unknown logins (one attempt each under its own name) keep the
    // one hash worker busy for a second or more: with twenty, an idle fast
    // machine once emptied the queue before the third abandoned login.
    let busy: Vec<_> = (0..40)
        .map(|i| app.spawn_login(&format!("ghost{i}"), PASSWORD))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Three logins of the owner, each abandoned while queued behind them.
    for _ in 0..3 {
        let abandoned = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .timeout(Duration::from_millis(150))
            .json(&json!({"login": "owner", "password": PASSWORD}))
            .send()
            .await;
        assert!(
            abandoned.as_ref().is_err_and(reqwest::Error::is_timeout),
            "the login was meant to be abandoned in the queue: {abandoned:?}"
        );
    }
    for task in busy {
        assert_eq!(
            task.await.expect("join").expect("send"),
            StatusCode::UNAUTHORIZED
        );
    }
    // The refunds run in the background; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.login_ok("owner").await;
}
