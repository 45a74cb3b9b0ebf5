//! The validation cache and the cache admin endpoints, against private
//! PostgreSQL and Redis.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backend, Stack, TestApp};

async fn stats(app: &TestApp, admin: &str) -> Value {
    let reply = app.get("/api/v1/admin/cache/stats", Some(admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["caches"].clone()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tokens_are_cached_failures_never_and_revocation_still_wins() {
    let stack = Stack::start(Backend::PostgresRedis).await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let user = app.user("gina").await;

    let before = stats(app, &admin).await;
    for name in ["validation", "api_keys", "authz"] {
        for field in ["entries", "hits", "misses", "hit_rate", "evictions"] {
            assert!(
                before[name].get(field).is_some(),
                "{name}.{field} in {before}"
            );
        }
    }
    for _ in 0..5 {
        assert_eq!(
            app.verify(&user.access).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let after = stats(app, &admin).await;
    let hits = n(&after["validation"]["hits"]) - n(&before["validation"]["hits"]);
    // Five verifications of one token (one miss, four hits) plus this
    // stats call's own admin token (a hit).
    assert!(hits >= 4, "hits went up by {hits}: {after}");

    // Failures are not cached: garbage is a miss every time and adds no entry.
    let cleaned = app
        .post("/api/v1/admin/cache/cleanup", Some(&admin), json!({}))
        .await;
    assert_eq!(cleaned.status, StatusCode::OK, "{}", cleaned.body);
    let entries = n(&cleaned.body["caches"]["validation"]["entries"]);
    for _ in 0..3 {
        app.verify("eyJhbGciOiJFZERTQSJ9.e30.AAAA")
            .await
            .expect_error(401, "AUTH003");
    }
    let cleaned = app
        .post("/api/v1/admin/cache/cleanup", Some(&admin), json!({}))
        .await;
    assert_eq!(n(&cleaned.body["caches"]["validation"]["entries"]), entries);

    // A cached token is refused at once after logout.
    app.call(
        Method::POST,
        "/api/v1/auth/logout",
        Some(&user.access),
        None,
    )
    .await;
    app.verify(&user.access).await.expect_error(401, "AUTH004");

    // Operators only.
    let other = app.user("hank").await;
    app.get("/api/v1/admin/cache/stats", Some(&other.access))
        .await
        .expect_error(403, "AUTH005");
    app.post(
        "/api/v1/admin/cache/cleanup",
        Some(&other.access),
        json!({}),
    )
    .await
    .expect_error(403, "AUTH005");
}
