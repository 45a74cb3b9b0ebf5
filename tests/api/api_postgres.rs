//! The API conformance suite on private PostgreSQL and Redis servers, plus
//! what only that shape has: sessions surviving a Redis restart.

use crate::support;

use reqwest::StatusCode;
use support::{Backend, Stack, Tokens};

crate::all_scenarios!(Backend::PostgresRedis);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_redis_restart() {
    let mut stack = Stack::start(Backend::PostgresRedis).await;
    let first = stack.app.user("pam").await;
    let rotated = stack.app.refresh(&first.refresh).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let second = Tokens::from(&rotated.body);

    // Everything Redis held is gone; PostgreSQL has every session.
    stack.redis.as_mut().expect("redis").restart();

    let app = &stack.app;
    let list = app
        .get("/api/v1/users/me/sessions", Some(&second.access))
        .await;
    assert_eq!(
        list.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.body
    );
    let reply = app.refresh(&second.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let third = Tokens::from(&reply.body);
    // Reuse detection survived the restart too: the used token kills it.
    app.refresh(&first.refresh)
        .await
        .expect_error(401, "AUTH007");
    app.refresh(&third.refresh)
        .await
        .expect_error(401, "AUTH004");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_is_a_fast_503_naming_it_while_tokens_still_verify() {
    let mut stack = Stack::start(Backend::PostgresRedis).await;
    let tokens = stack.app.user("quinn").await;
    stack.pg.as_mut().expect("pg").kill();

    let started = std::time::Instant::now();
    let reply = stack.app.login("quinn", support::PASSWORD).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "database");
    assert!(reply.header("retry-after").is_some());
    // sqlx retries refused connects until the pool's acquire timeout, so the
    // bound is the 2 s database timeout (plus margin for a loaded machine).
    // Once a circuit breaker is open this drops to milliseconds.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    stack
        .app
        .register("late@example.com", "late")
        .await
        .expect_error(503, "SVC001");

    // Verification touches no database.
    assert_eq!(
        stack.app.verify(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
    let health = stack.app.get("/api/v1/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["database"]["healthy"], false);
    assert!(health.body["components"]["database"]["last_failure"].is_string());
}
