//! The API conformance suite on private PostgreSQL and Redis servers, plus
//! what only that shape has: sessions surviving a Redis restart.

mod support;

use reqwest::StatusCode;
use support::{Backend, Stack, Tokens};

all_scenarios!(Backend::PostgresRedis);

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
