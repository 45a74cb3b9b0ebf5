//! The failure matrix of DESIGN.md §4 against real processes: the private
//! PostgreSQL and Redis of each test are paused (SIGSTOP, the "zombie"
//! server that accepts and never answers), killed and restarted. Timeouts
//! and breaker waits are short (this file's config) so the suite stays fast;
//! time bounds carry margins for a loaded 2-core machine. The rate-limit rows
//! (lockout, per-IP limits, abandoned logins) are in `failure_matrix/limits.rs`.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use support::{Backend, PASSWORD, Stack, TestApp, Tokens};

mod limits;

/// Database timeout 500 ms, Redis 200 ms; breakers open after 3 failed
/// calls and probe again after 1 s.
const CONFIG: &str = support::FAST_RECOVERY;

const DB_TIMEOUT: Duration = Duration::from_millis(500);
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on a loaded 2-core machine, added to every bound.
const MARGIN: Duration = Duration::from_millis(700);
/// "Fast" once a breaker is open: refused before any I/O.
const OPEN_BOUND: Duration = Duration::from_millis(250);

async fn stack() -> Stack {
    Stack::start_with(Backend::PostgresRedis, CONFIG).await
}

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// Calls `login` until the named breaker is open (each call within bound).
async fn open_breaker(app: &TestApp, dependency: &str, bound: Duration) {
    for _ in 0..10 {
        if breaker_state(app, dependency).await == "open" {
            return;
        }
        let (reply, took) = timed(app.login("nobody", PASSWORD)).await;
        reply.expect_error(503, "SVC001");
        assert!(took < bound, "first calls bounded by the timeout: {took:?}");
    }
    panic!("{dependency} breaker never opened");
}

async fn breaker_state(app: &TestApp, dependency: &str) -> String {
    let health = app.get("/api/v1/health", None).await;
    health.body["components"][dependency]["circuit_state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits (bounded) until health is `healthy` again, without restarting.
async fn await_recovery(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = app.get("/api/v1/health", None).await;
        if health.body["status"] == "healthy" {
            return;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", health.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Many verifications from several tasks at once; all must succeed.
async fn verify_under_load(app: &TestApp, token: &str) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let client = app.client.clone();
        let url = app.url("/api/v1/auth/verify");
        let token = token.to_string();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..50 {
                let status = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map(|r| r.status());
                ok += usize::from(matches!(status, Ok(StatusCode::NO_CONTENT)));
            }
            ok
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("join");
    }
    assert_eq!(total, 200, "every verification succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hung() {
    let stack = stack().await;
    let app = &stack.app;
    let tokens = app.user("ann").await;
    let revoked = app.login_ok("ann").await;
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&revoked.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    stack.pg.as_ref().expect("pg").pause();

    // Verification and known revocations: memory only, under load.
    verify_under_load(app, &tokens.access).await;
    app.verify(&revoked.access)
        .await
        .expect_error(401, "AUTH004");

    // Login: 503 within the timeout at first, at once when the breaker opens.
    open_breaker(app, "database", DB_TIMEOUT + MARGIN).await;
    let (reply, took) = timed(app.login("ann", PASSWORD)).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "database");
    assert!(reply.header("retry-after").is_some());
    assert!(took < OPEN_BOUND, "breaker open: {took:?}");

    let (reply, took) = timed(app.register("new@example.com", "newbie")).await;
    reply.expect_error(503, "SVC001");
    assert!(took < OPEN_BOUND, "{took:?}");
    let put = app.call(
        Method::PUT,
        "/api/v1/users/me",
        Some(&tokens.access),
        Some(json!({"username": "ann2"})),
    );
    let (reply, took) = timed(put).await;
    reply.expect_error(503, "SVC001");
    assert!(took < OPEN_BOUND, "{took:?}");

    // Refresh works from Redis; the write-through waits for the database.
    let (reply, took) = timed(app.refresh(&tokens.refresh)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(took < OPEN_BOUND, "{took:?}");
    let rotated = Tokens::from(&reply.body);
    assert_eq!(
        app.verify(&rotated.access).await.status,
        StatusCode::NO_CONTENT
    );

    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(
        health.body["components"]["database"]["circuit_state"],
        "open"
    );
    assert_eq!(health.body["components"]["database"]["healthy"], false);
    assert!(health.body["components"]["database"]["last_failure"].is_string());
    assert!(health.body["components"]["database"]["failure_count"].as_u64() > Some(0));

    // Back: the breaker closes by itself, writes replay, logins work.
    stack.pg.as_ref().expect("pg").resume();
    await_recovery(app).await;
    assert_eq!(app.login("ann", PASSWORD).await.status, StatusCode::OK);
    assert_eq!(app.refresh(&rotated.refresh).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_refresh_and_logout_are_replayed() {
    let mut stack = stack().await;
    let tokens = stack.app.user("bea").await;
    let other = stack.app.login_ok("bea").await;
    stack.pg.as_mut().expect("pg").kill();

    let (reply, took) = timed(stack.app.refresh(&tokens.refresh)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(took < DB_TIMEOUT * 2 + MARGIN, "{took:?}");
    let rotated = Tokens::from(&reply.body);
    // Logout always works: the cache and memory hold it, the ledger later.
    let reply = stack
        .app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&other.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    stack
        .app
        .verify(&other.access)
        .await
        .expect_error(401, "AUTH004");
    stack
        .app
        .login("bea", PASSWORD)
        .await
        .expect_error(503, "SVC001");

    stack.pg.as_mut().expect("pg").restart();
    await_recovery(&stack.app).await;
    // Give the replay loop (every 500 ms) a moment, then lose Redis: only
    // the ledger can now know the rotation and the logout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.redis.as_mut().expect("redis").restart();
    stack.restart_app().await;
    let app = &stack.app;
    // The rotation made while the database was down was replayed: the
    // ledger alone accepts the new token and knows the old one as used.
    let reply = app.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    app.refresh(&tokens.refresh)
        .await
        .expect_error(401, "AUTH007");
    let fresh = app.login_ok("bea").await;
    app.refresh(&other.refresh)
        .await
        .expect_error(401, "AUTH004");
    app.verify(&other.access).await.expect_error(401, "AUTH004");
    assert_eq!(
        app.verify(&fresh.access).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_deferred_rotation_survives_redis_loss() {
    let mut stack = stack().await;
    let tokens = stack.app.user("cid").await;
    stack.pg.as_mut().expect("pg").kill();
    let reply = stack.app.refresh(&tokens.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    stack.pg.as_mut().expect("pg").restart();
    await_recovery(&stack.app).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.redis.as_mut().expect("redis").restart();
    // The rotation acknowledged while the database was down was replayed:
    // the ledger alone accepts the new token and knows the old one as used.
    let reply = stack.app.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down() {
    let mut stack = stack().await;
    let tokens = stack.app.user("dan").await;
    stack.redis.as_mut().expect("redis").kill();
    redis_unavailable_rows(&stack.app, &tokens, REDIS_TIMEOUT).await;
    stack.redis.as_mut().expect("redis").restart();
    await_recovery(&stack.app).await;
    assert_eq!(
        stack.app.login("dan", PASSWORD).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_hung() {
    let stack = stack().await;
    let tokens = stack.app.user("dan").await;
    stack.redis.as_ref().expect("redis").pause();
    redis_unavailable_rows(&stack.app, &tokens, REDIS_TIMEOUT).await;
    stack.redis.as_ref().expect("redis").resume();
    await_recovery(&stack.app).await;
    assert_eq!(
        stack.app.login("dan", PASSWORD).await.status,
        StatusCode::OK
    );
}

/// The Redis column of the matrix, shared by "down" and "hung".
async fn redis_unavailable_rows(app: &TestApp, tokens: &Tokens, timeout: Duration) {
    verify_under_load(app, &tokens.access).await;
    // Login and register fail closed: no rate limiter, no guessing.
    for _ in 0..4 {
        let (reply, took) = timed(app.login("dan", PASSWORD)).await;
        reply.expect_error(503, "SVC001");
        assert_eq!(reply.body["error"]["details"]["dependency"], "rate_limiter");
        assert!(took < timeout * 3 + MARGIN, "{took:?}");
    }
    let (reply, took) = timed(app.register("eve@example.com", "eve")).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "rate_limiter");
    assert!(took < OPEN_BOUND, "breaker open by now: {took:?}");
    // Refresh works from PostgreSQL with the per-node limiter.
    let reply = app.refresh(&tokens.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    app.refresh(&tokens.refresh)
        .await
        .expect_error(401, "AUTH007");
    app.verify(&rotated.access)
        .await
        .expect_error(401, "AUTH004");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["redis"]["circuit_state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_profile_writes_and_logout_work() {
    let mut stack = stack().await;
    let tokens = stack.app.user("fay").await;
    let other = stack.app.login_ok("fay").await;
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;
    let reply = app
        .call(
            Method::PUT,
            "/api/v1/users/me",
            Some(&tokens.access),
            Some(json!({"username": "fay2"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let list = app
        .get("/api/v1/users/me/sessions", Some(&tokens.access))
        .await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(2));
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&other.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    app.verify(&other.access).await.expect_error(401, "AUTH004");
    // The stale live copy Redis may still hold after it returns is caught
    // by the ledger's compare-and-swap.
    stack.redis.as_mut().expect("redis").restart();
    await_recovery(&stack.app).await;
    stack
        .app
        .refresh(&other.refresh)
        .await
        .expect_error(401, "AUTH004");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_limits_login_works_at_half_rate() {
    let config =
        format!("{CONFIG}[rate_limit]\non_backend_failure = \"local\"\nlogin_per_ip = \"4/min\"\n");
    let mut stack = Stack::start_with(Backend::PostgresRedis, &config).await;
    stack.app.register("gus@example.com", "gus").await;
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;
    // 4/min halved: two logins pass per node, the third is limited.
    for _ in 0..2 {
        let reply = app.login("gus", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = app.login("gus", PASSWORD).await;
    reply.expect_error(429, "RATE001");
    assert!(reply.header("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_down() {
    let mut stack = stack().await;
    let tokens = stack.app.user("hal").await;
    stack.pg.as_mut().expect("pg").kill();
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;
    verify_under_load(app, &tokens.access).await;
    for _ in 0..4 {
        let (reply, took) = timed(app.login("hal", PASSWORD)).await;
        reply.expect_error(503, "SVC001");
        assert!(took < DB_TIMEOUT + MARGIN, "{took:?}");
    }
    let (reply, took) = timed(app.refresh(&tokens.refresh)).await;
    reply.expect_error(503, "SVC001");
    assert!(took < DB_TIMEOUT * 2 + MARGIN, "{took:?}");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "verification works, so not unhealthy"
    );
    assert_eq!(health.body["status"], "degraded");
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    // Logout: no store can hold it, so it is not acknowledged (503
    // SVC001), but this node refuses the session from now on.
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&tokens.access),
            None,
        )
        .await;
    reply.expect_error(503, "SVC001");
    app.verify(&tokens.access)
        .await
        .expect_error(401, "AUTH004");

    stack.pg.as_mut().expect("pg").restart();
    stack.redis.as_mut().expect("redis").restart();
    await_recovery(&stack.app).await;
    assert_eq!(
        stack.app.login("hal", PASSWORD).await.status,
        StatusCode::OK
    );
}
