//! The service modes of DESIGN.md §4 against real processes: `read_only`
//! (the primary paused, a streaming replica answering) must answer at the
//! replica's speed, never after the primary's timeout; `minimal` (neither
//! PostgreSQL nor Redis answers) keeps verification working and revokes a
//! logout on the node while answering 503 SVC001. The mode's Prometheus
//! series are checked in `tests/mode_metrics.rs`, a process of its own.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};
use support::replica::ReplicaStack;
use support::{Backend, PASSWORD, Stack, TestApp, Tokens};

/// One primary timeout. Every read-only answer must come well under it
/// (half): one replica round trip and a password hash take ~100 ms here,
/// the rest is slack for a loaded 2-core machine, where the hashing
/// threads (`SCHED_IDLE`) wait for idle CPU. Waiting on the primary even
/// once would take the whole timeout.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(2);
const READ_ONLY_BOUND: Duration = Duration::from_secs(1);

async fn timed<F: std::future::Future>(f: F) -> (F::Output, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

async fn mode(app: &TestApp) -> String {
    let health = app.get("/api/v1/health", None).await;
    health.body["mode"].as_str().unwrap_or("").to_string()
}

/// Asks for health (each ask pings every store through its guard, which
/// feeds the breakers) until it reports `wanted`.
async fn await_mode(app: &TestApp, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = mode(app).await;
        if now == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "mode still {now}, not {wanted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mode_waits_on_no_paused_primary() {
    let stack = ReplicaStack::start("2s", RAISED_LIMITS).await;
    let app = TestApp::spawn(&stack.data.path().join("holdfast.toml"), None).await;
    // The replica's breaker is exported from the first scrape as well.
    let metrics = app.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or("").to_string();
    assert!(
        text.contains("holdfast_breaker_state{dependency=\"database_replica\"}"),
        "{text}"
    );
    let before = app.user("rex").await;
    stack.await_replica("rex").await;

    // The "zombie" primary: accepts, never answers.
    stack.primary.pause();
    await_mode(&app, "read_only").await;

    // Logins: user from the replica, session in Redis, ledger deferred.
    let mut during = None;
    for _ in 0..3 {
        let (reply, took) = timed(app.login("rex", PASSWORD)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(took < READ_ONLY_BOUND, "login took {took:?}");
        during = Some(Tokens::from(&reply.body));
    }
    let during = during.expect("logged in");
    let (reply, took) = timed(app.refresh(&before.refresh)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(took < READ_ONLY_BOUND, "refresh took {took:?}");
    let (me, took) = timed(app.get("/api/v1/users/me", Some(&during.access))).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert!(took < READ_ONLY_BOUND, "profile read took {took:?}");

    // Writes: refused at once, not after the primary's timeout.
    let (put, took) = timed(app.call(
        Method::PUT,
        "/api/v1/users/me",
        Some(&during.access),
        Some(json!({"username": "rex2"})),
    ))
    .await;
    put.expect_error(503, "SVC002");
    assert!(took < READ_ONLY_BOUND, "write refused after {took:?}");

    // Across the breaker's open wait and its half-open probes (the health
    // monitor's pings, each hanging for the timeout): no login waits.
    let until = Instant::now() + PRIMARY_TIMEOUT * 2;
    while Instant::now() < until {
        let (reply, took) = timed(app.login("rex", PASSWORD)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(took < READ_ONLY_BOUND, "login while probing took {took:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (reply, took) = timed(app.call(
        Method::POST,
        "/api/v1/auth/logout",
        Some(&during.access),
        None,
    ))
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(took < READ_ONLY_BOUND, "logout took {took:?}");

    // The primary answers again: normal by itself, writes work.
    stack.primary.resume();
    await_mode(&app, "normal").await;
    let fresh = app.login_ok("rex").await;
    let put = app
        .call(
            Method::PUT,
            "/api/v1/users/me",
            Some(&fresh.access),
            Some(json!({"username": "rex2"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
}

/// Enough logins and refreshes for the timing loops.
const RAISED_LIMITS: &str =
    "[rate_limit]\nlogin_per_ip = \"1000/min\"\nrefresh_per_ip = \"1000/min\"\n";

const BOTH_DOWN: &str = support::FAST_RECOVERY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_mode_revokes_a_logout_on_the_node_and_answers_503() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, BOTH_DOWN).await;
    let tokens = stack.app.user("mia").await;
    let other = stack.app.login_ok("mia").await;
    assert_eq!(mode(&stack.app).await, "normal");
    // Verified once, so the token sits in the validation cache too.
    let reply = stack.app.verify(&tokens.access).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    stack.pg.as_mut().expect("pg").kill();
    stack.redis.as_mut().expect("redis").kill();
    await_mode(&stack.app, "minimal").await;
    let app = &stack.app;
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.status, StatusCode::OK, "verification still works");
    assert_eq!(health.body["status"], "degraded");

    // What still works: verification.
    let reply = app.verify(&other.access).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);

    // Logout: no store can acknowledge it, so 503 SVC001...
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&tokens.access),
            None,
        )
        .await;
    reply.expect_error(503, "SVC001");
    assert!(reply.header("retry-after").is_some());
    // ...but this node honours it at once, cached token or not.
    app.verify(&tokens.access)
        .await
        .expect_error(401, "AUTH004");
    let reply = app.verify(&other.access).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "only that session");

    // The stores return: normal by itself, and the deferred revocation
    // reached PostgreSQL (the session's refresh token is dead there too).
    stack.pg.as_mut().expect("pg").restart();
    stack.redis.as_mut().expect("redis").restart();
    await_mode(&stack.app, "normal").await;
    let url = stack.pg.as_ref().expect("pg").url();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !session_revoked_in(&url, &tokens.session_id).await {
        assert!(
            Instant::now() < deadline,
            "deferred revocation never replayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack
        .app
        .refresh(&tokens.refresh)
        .await
        .expect_error(401, "AUTH004");
}

async fn session_revoked_in(url: &str, session_id: &str) -> bool {
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return false;
    };
    sqlx::query_scalar::<_, bool>("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1::uuid")
        .bind(session_id)
        .fetch_one(&mut conn)
        .await
        .unwrap_or(false)
}
