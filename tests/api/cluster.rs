//! Two holdfast nodes sharing one private PostgreSQL and Redis: every
//! invalidation made on one node is honoured by the other within 2 s over
//! pub/sub, and — with Redis killed — within the poll interval of the
//! invalidation log.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};
use support::{Backend, Stack, TestApp};

const POLL: Duration = Duration::from_secs(1);
const CONFIG: &str = "[cache]\ninvalidation_poll = \"1s\"\nauthz_ttl = \"10m\"\n[redis]\ntimeout = \"200ms\"\n[rate_limit]\non_backend_failure = \"local\"\nregister_per_ip = \"1000/min\"\nlogin_per_ip = \"1000/min\"\n";

/// Waits until `done` holds, checking every 50 ms; returns how long it took
/// or panics after `within`.
async fn within<F, Fut>(what: &str, within: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if done().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: not honoured within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn second_node(stack: &Stack) -> TestApp {
    let urls = Some((
        stack.pg.as_ref().expect("pg").url(),
        stack.redis.as_ref().expect("redis").url(),
    ));
    TestApp::spawn(&stack.data.path().join("holdfast.toml"), urls).await
}

async fn refused(node: &TestApp, token: &str) -> bool {
    node.verify(token).await.status == StatusCode::UNAUTHORIZED
}

async fn key_refused(node: &TestApp, key: &str) -> bool {
    node.verify_key(key).await.status != StatusCode::NO_CONTENT
}

async fn allowed(node: &TestApp, token: &str, permission: &str) -> bool {
    let reply = node
        .post(
            "/api/v1/authz/check",
            Some(token),
            json!({"permission": permission}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["allowed"].as_bool().expect("allowed")
}

async fn published(node: &TestApp) -> Vec<String> {
    let jwks = node.get("/.well-known/jwks.json", None).await;
    jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect()
}

/// The invalidations that need a user and a role: run once with pub/sub
/// and once without, each bounded by `limit`.
async fn user_invalidations(one: &TestApp, two: &TestApp, admin: &str, tag: &str, limit: Duration) {
    sessions_end(one, two, tag, limit).await;
    accounts_and_keys_are_withdrawn(one, two, admin, tag, limit).await;
    role_changes_reach_cached_decisions(one, two, admin, tag, limit).await;
}

/// Logout, logout-all and a password change end sessions on node two.
async fn sessions_end(one: &TestApp, two: &TestApp, tag: &str, limit: Duration) {
    let name = |n: &str| format!("{n}{tag}");
    // Logout.
    let a = one.user(&name("logout")).await;
    assert_eq!(two.verify(&a.access).await.status, StatusCode::NO_CONTENT);
    one.call(Method::POST, "/api/v1/auth/logout", Some(&a.access), None)
        .await;
    within("logout", limit, || refused(two, &a.access)).await;

    // Logout-all.
    let b = one.user(&name("all")).await;
    let b2 = one.login_ok(&name("all")).await;
    assert_eq!(two.verify(&b2.access).await.status, StatusCode::NO_CONTENT);
    one.call(
        Method::POST,
        "/api/v1/auth/logout-all",
        Some(&b.access),
        None,
    )
    .await;
    within("logout-all", limit, || refused(two, &b2.access)).await;

    // Password change: the other sessions end.
    let c = one.user(&name("pwd")).await;
    let c2 = one.login_ok(&name("pwd")).await;
    assert_eq!(two.verify(&c2.access).await.status, StatusCode::NO_CONTENT);
    let changed = one
        .call(
            Method::PATCH,
            "/api/v1/users/me/password",
            Some(&c.access),
            Some(json!({"current_password": support::PASSWORD, "new_password": "violet-harbour-engine-42"})),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
    within("password change", limit, || refused(two, &c2.access)).await;
}

/// A user disabled by an admin, and a deleted API key, stop working on
/// node two.
async fn accounts_and_keys_are_withdrawn(
    one: &TestApp,
    two: &TestApp,
    admin: &str,
    tag: &str,
    limit: Duration,
) {
    let name = |n: &str| format!("{n}{tag}");
    // Disable (by an admin).
    let d = one.user(&name("gone")).await;
    let me = one.get("/api/v1/users/me", Some(&d.access)).await;
    let d_id = me.body["id"].as_str().expect("id").to_string();
    assert_eq!(two.verify(&d.access).await.status, StatusCode::NO_CONTENT);
    one.call(
        Method::POST,
        &format!("/api/v1/admin/users/{d_id}/disable"),
        Some(admin),
        None,
    )
    .await;
    within("disable", limit, || refused(two, &d.access)).await;

    // API key deletion: the key was cached on node two.
    let e = one.user(&name("key")).await;
    let (id, key) = one.api_key(&e.access, &["users"]).await;
    assert_eq!(two.verify_key(&key).await.status, StatusCode::NO_CONTENT);
    one.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{id}"),
        Some(&e.access),
        None,
    )
    .await;
    within("api key deletion", limit, || key_refused(two, &key)).await;
}

/// Role change: node two cached the decision for ten minutes.
async fn role_changes_reach_cached_decisions(
    one: &TestApp,
    two: &TestApp,
    admin: &str,
    tag: &str,
    limit: Duration,
) {
    let name = |n: &str| format!("{n}{tag}");
    let f = one.user(&name("role")).await;
    let me = one.get("/api/v1/users/me", Some(&f.access)).await;
    let f_id = me.body["id"].as_str().expect("id").to_string();
    let role = name("writer");
    one.post(
        "/api/v1/admin/roles",
        Some(admin),
        json!({"name": role, "permissions": ["docs:write"]}),
    )
    .await;
    one.call(
        Method::PUT,
        &format!("/api/v1/admin/users/{f_id}/roles"),
        Some(admin),
        Some(json!({"roles": [role]})),
    )
    .await;
    assert!(allowed(two, &f.access, "docs:write").await);
    one.post(
        "/api/v1/admin/roles",
        Some(admin),
        json!({"name": role, "permissions": []}),
    )
    .await;
    within("role change", limit, || async {
        !allowed(two, &f.access, "docs:write").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_honours_every_invalidation_with_and_without_pubsub() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let two = second_node(&stack).await;
    let admin = stack.app.admin_token().await;

    // With pub/sub: within 2 s.
    user_invalidations(&stack.app, &two, &admin, "", Duration::from_secs(2)).await;
    let rotated = stack
        .app
        .post("/api/v1/admin/keys/rotate", Some(&admin), json!({}))
        .await;
    let kid = rotated.body["kid"].as_str().expect("kid").to_string();
    within("key rotation", Duration::from_secs(2), || async {
        published(&two).await.contains(&kid)
    })
    .await;

    // Redis killed: the invalidation log, polled every second, carries
    // them (login falls back to per-node limits in this configuration).
    stack.redis.as_mut().expect("redis").kill();
    let limit = POLL + Duration::from_secs(2);
    user_invalidations(&stack.app, &two, &admin, "x", limit).await;

    let victim = stack.app.user("victim").await;
    assert_eq!(
        two.verify(&victim.access).await.status,
        StatusCode::NO_CONTENT
    );
    let revoked = stack
        .app
        .post("/api/v1/admin/keys/revoke-all", Some(&admin), json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    within("revoke-all", limit, || refused(&two, &victim.access)).await;
    within("revoke-all admin", limit, || refused(&two, &admin)).await;
}
