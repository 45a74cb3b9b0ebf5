//! Read-only mode (DESIGN.md §4): with a streaming replica configured and
//! the primary down, reads go to the replica, writes answer 503 SVC002,
//! login and refresh keep working, health says `read_only`; all of it
//! reverts by itself when the primary returns.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use support::replica::ReplicaStack;
use support::{PASSWORD, TestApp, Tokens};

async fn mode(app: &TestApp) -> (String, String) {
    let health = app.get("/api/v1/health", None).await;
    (
        health.body["mode"].as_str().unwrap_or("").to_string(),
        health.body["status"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_with_a_replica_is_read_only() {
    let mut stack = ReplicaStack::start("500ms", "").await;
    let mut app = stack.app().await;
    let before = app.user("rex").await;
    stack.await_replica("rex").await;

    stack.primary.kill();
    let during = reads_are_served_by_the_replica(&app, &before).await;
    writes_are_refused_and_health_says_read_only(&app, &during).await;

    // The primary returns: normal mode by itself, deferred writes replayed.
    stack.primary.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while mode(&app).await != ("normal".into(), "healthy".into()) {
        assert!(
            Instant::now() < deadline,
            "no recovery: {:?}",
            mode(&app).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let put = app
        .call(
            Method::PUT,
            "/api/v1/users/me",
            Some(&during.access),
            Some(json!({"username": "rex2"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Lose Redis and restart the node: the session started in read-only
    // mode must be in PostgreSQL now.
    tokio::task::block_in_place(|| stack.redis.restart());
    drop(app);
    app = stack.app().await;
    let reply = app.refresh(&during.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// Login: the lookup is served by the replica, the session by Redis;
/// refresh and profile reads work. Returns the tokens of that login.
async fn reads_are_served_by_the_replica(app: &TestApp, before: &Tokens) -> Tokens {
    let started = Instant::now();
    let reply = app.login("rex", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_millis(500 * 2 + 700),
        "{:?}",
        started.elapsed()
    );
    let during = Tokens::from(&reply.body);
    let reply = app.refresh(&before.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let me = app.get("/api/v1/users/me", Some(&during.access)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["username"], "rex");
    during
}

/// Writes: 503 SVC002, with Retry-After; health reports read-only mode.
async fn writes_are_refused_and_health_says_read_only(app: &TestApp, during: &Tokens) {
    let put = app
        .call(
            Method::PUT,
            "/api/v1/users/me",
            Some(&during.access),
            Some(json!({"username": "rex2"})),
        )
        .await;
    put.expect_error(503, "SVC002");
    assert!(put.header("retry-after").is_some());
    app.register("new@example.com", "newcomer")
        .await
        .expect_error(503, "SVC002");
    let patch = app
        .call(
            Method::PATCH,
            "/api/v1/users/me/password",
            Some(&during.access),
            Some(json!({"current_password": PASSWORD, "new_password": "another-long-secret"})),
        )
        .await;
    patch.expect_error(503, "SVC002");

    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["mode"], "read_only", "{}", health.body);
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(
        health.body["components"]["database_replica"]["healthy"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_read_only_survives_losing_its_deferred_write() {
    let mut stack = ReplicaStack::start("500ms", "").await;
    let app = stack.app().await;
    app.register("sam@example.com", "sam").await;
    stack.await_replica("sam").await;
    stack.primary.kill();
    let during = app.login_ok("sam").await;
    // The node dies with its deferred create; the primary returns later.
    drop(app);
    stack.primary.restart();
    let app = stack.app().await;
    let reply = app.refresh(&during.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    // Now in PostgreSQL: it survives losing Redis as well.
    tokio::task::block_in_place(|| stack.redis.restart());
    let reply = app.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}
