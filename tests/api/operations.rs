//! What an operator relies on: the circuit-breaker view and reset, and load
//! shedding when the password hasher is full. (The metrics have a file of
//! their own: `tests/metrics.rs`.)

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Backend, PASSWORD, Stack, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_and_reset_circuit_breakers() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, support::SHORT_BREAKERS).await;
    let admin = stack.app.admin_token().await;
    let user = stack.app.user("plain").await;
    let app = &stack.app;
    app.get("/api/v1/admin/circuit-breakers", None)
        .await
        .expect_error(401, "AUTH003");
    app.get("/api/v1/admin/circuit-breakers", Some(&user.access))
        .await
        .expect_error(403, "AUTH005");
    let view = app
        .get("/api/v1/admin/circuit-breakers", Some(&admin))
        .await;
    assert_eq!(view.status, StatusCode::OK);
    let db = &view.body["circuit_breakers"]["database"];
    assert_eq!(db["state"], "closed", "{}", view.body);
    for key in [
        "failure_rate",
        "slow_call_rate",
        "calls",
        "failures",
        "opened_at",
        "next_attempt_at",
    ] {
        assert!(db.get(key).is_some(), "{key} missing: {db}");
    }
    assert_eq!(view.body["circuit_breakers"]["redis"]["state"], "closed");

    stack.pg.as_mut().expect("pg").kill();
    let app = &stack.app;
    app.fail_database_until_open().await;
    let view = app
        .get("/api/v1/admin/circuit-breakers", Some(&admin))
        .await;
    let db = &view.body["circuit_breakers"]["database"];
    assert_eq!(db["state"], "open", "{}", view.body);
    assert!(db["opened_at"].is_string() && db["next_attempt_at"].is_string());
    assert!(db["failures"].as_u64() >= Some(3));
    assert!(db["failure_rate"].as_f64() >= Some(50.0), "{db}");

    let reply = app
        .call(
            Method::POST,
            "/api/v1/admin/circuit-breakers/database/reset",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["state"], "closed");
    app.call(
        Method::POST,
        "/api/v1/admin/circuit-breakers/nope/reset",
        Some(&admin),
        None,
    )
    .await
    .expect_error(404, "NOTFOUND");
    app.call(
        Method::POST,
        "/api/v1/admin/circuit-breakers/database/reset",
        Some(&user.access),
        None,
    )
    .await
    .expect_error(403, "AUTH005");
}

/// Shed logins are refused at the door: they spend no rate-limit budget
/// (16 per minute here, for 1 + 24 logins from one address: were the 21 or
/// so shed ones counted, some would get 429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_and_verification_is_unaffected() {
    let config = r#"
[passwords]
hash_workers = 1
queue = 2
[rate_limit]
login_per_ip = "16/min"
login_failures_per_account = "1000/min"
"#;
    let stack = Stack::start_with(Backend::Embedded, config).await;
    let app = &stack.app;
    let tokens = app.user("flood").await;
    let flood: Vec<_> = (0..24)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/api/v1/auth/login");
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = client
                    .post(url)
                    .json(&json!({"login": "flood", "password": PASSWORD}))
                    .send()
                    .await
                    .expect("send");
                let status = reply.status();
                let body: serde_json::Value = reply.json().await.unwrap_or_default();
                (status, body, started.elapsed())
            })
        })
        .collect();
    // Verification keeps answering while the hasher is saturated.
    for _ in 0..50 {
        assert_eq!(
            app.verify(&tokens.access).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let mut shed = 0;
    for task in flood {
        let (status, body, took) = task.await.expect("join");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            shed += 1;
            assert_eq!(body["error"]["code"], "SVC001");
            assert_eq!(body["error"]["details"]["dependency"], "password_hasher");
            assert!(
                took < Duration::from_millis(500),
                "shed at once, not queued: {took:?}"
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    assert!(
        shed > 0,
        "a queue of 2 behind 1 worker must shed some of 24 logins"
    );
}

async fn login_from(app: &TestApp, forwarded_for: &str) -> u16 {
    app.client
        .post(app.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"login": "fwd", "password": PASSWORD}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limits_follow_forwarded_for_only_behind_trusted_proxies() {
    let limits = "[rate_limit]\nlogin_per_ip = \"2/min\"\n";
    // Behind a trusted balancer (the test client is 127.0.0.1): each
    // forwarded client has its own budget, and the session shows it.
    let trusted = format!("trusted_proxies = [\"127.0.0.1\"]\n{limits}");
    let stack = Stack::start_with(Backend::Embedded, &trusted).await;
    let app = &stack.app;
    app.register("fwd@example.com", "fwd").await;
    assert_eq!(login_from(app, "203.0.113.1").await, 200);
    assert_eq!(login_from(app, "203.0.113.1").await, 200);
    assert_eq!(login_from(app, "203.0.113.1").await, 429);
    assert_eq!(login_from(app, "203.0.113.2").await, 200);
    let tokens = app.login_ok("fwd").await; // no header: the proxy's own budget
    let sessions = app
        .get("/api/v1/users/me/sessions", Some(&tokens.access))
        .await;
    let ips: Vec<&str> = sessions.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["ip"].as_str())
        .collect();
    assert!(
        ips.contains(&"203.0.113.1") && ips.contains(&"203.0.113.2"),
        "{ips:?}"
    );

    // Without trusted proxies the header is ignored: it cannot buy budget.
    let stack = Stack::start_with(Backend::Embedded, limits).await;
    let app = &stack.app;
    app.register("fwd@example.com", "fwd").await;
    assert_eq!(login_from(app, "203.0.113.1").await, 200);
    assert_eq!(login_from(app, "203.0.113.2").await, 200);
    assert_eq!(login_from(app, "203.0.113.3").await, 429);
}
