//! The failure-matrix rows of the fallback credentials (DESIGN.md §4): API
//! key auth, authz check and external IdP tokens with Redis down, with
//! PostgreSQL down too, and with the upstream IdP down — against private
//! PostgreSQL and Redis processes and a JWKS server this test runs.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use support::jwks::{ISSUER, UpstreamKey, start_upstream};
use support::{Backend, Stack, TestApp};

async fn authz(app: &TestApp, token: &str, permission: &str) -> support::Reply {
    app.post(
        "/api/v1/authz/check",
        Some(token),
        json!({"permission": permission}),
    )
    .await
}

/// Small breakers and caches, and the upstream IdP at `addr`.
fn access_config(addr: std::net::SocketAddr) -> String {
    format!(
        r#"
[database]
timeout = "500ms"
[redis]
timeout = "200ms"
[breaker]
minimum_calls = 3
open_wait = "1s"
open_wait_max = "2s"
[cache]
authz_ttl = "1s"
authz_max_stale = "60s"
[rate_limit]
on_backend_failure = "local"
[[idp]]
name = "upstream"
issuer = "{ISSUER}"
jwks_url = "http://{addr}/jwks"
audience = "holdfast-tests"
timeout = "500ms"
"#
    )
}

/// Ivy's credentials of every kind, each seen once while all was well
/// (except `unseen`, never looked up).
struct Credentials {
    access: String,
    seen: String,
    unseen: String,
    external: String,
}

/// A `reader` called ivy with two API keys; her key, her decision and an
/// upstream token are verified once so the caches hold them.
async fn credentials(app: &TestApp, admin: &str, upstream_key: &UpstreamKey) -> Credentials {
    let ivy = app.user("ivy").await;
    let me = app.get("/api/v1/users/me", Some(&ivy.access)).await;
    let ivy_id = me.body["id"].as_str().expect("id").to_string();
    app.post(
        "/api/v1/admin/roles",
        Some(admin),
        json!({"name": "reader", "permissions": ["docs:read"]}),
    )
    .await;
    app.call(
        Method::PUT,
        &format!("/api/v1/admin/users/{ivy_id}/roles"),
        Some(admin),
        Some(json!({"roles": ["reader"]})),
    )
    .await;
    let (_, seen) = app.api_key(&ivy.access, &["users"]).await;
    let (_, unseen) = app.api_key(&ivy.access, &["users"]).await;
    assert_eq!(app.verify_key(&seen).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        authz(app, &ivy.access, "docs:read").await.body["source"],
        "live"
    );
    let external = upstream_key.token("upstream-user");
    assert_eq!(app.verify(&external).await.status, StatusCode::NO_CONTENT);
    Credentials {
        access: ivy.access,
        seen,
        unseen,
        external,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authz_and_external_tokens_across_failures() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (upstream, _server) = start_upstream(listener).await;
    let upstream_key = UpstreamKey::new("k1");
    upstream.publish(&[&upstream_key]);
    let mut stack = Stack::start_with(Backend::PostgresRedis, &access_config(addr)).await;
    let admin = stack.app.admin_token().await;
    let ivy = credentials(&stack.app, &admin, &upstream_key).await;

    // Upstream IdP down: everything of ours works; its cached keys still
    // verify; a kid never seen is 503.
    upstream.break_it();
    upstream_down(&stack.app, &admin, &ivy).await;
    upstream.publish(&[&upstream_key]);
    let refreshed = stack
        .app
        .post("/api/v1/admin/jwks/refresh", Some(&admin), json!({}))
        .await;
    assert_eq!(refreshed.body["idps"]["upstream"]["refreshed"], true);

    stack.redis.as_mut().expect("redis").kill();
    let fresh = redis_down(&stack.app, &ivy).await;
    stack.pg.as_mut().expect("pg").kill();
    tokio::time::sleep(Duration::from_millis(1200)).await; // authz_ttl passes
    both_stores_down(&stack.app, &ivy, &fresh).await;
}

/// The upstream IdP broken: logins, our keys and live decisions work; its
/// cached keys still verify; a kid never seen is 503; health is degraded.
async fn upstream_down(app: &TestApp, admin: &str, ivy: &Credentials) {
    let refreshed = app
        .post("/api/v1/admin/jwks/refresh", Some(admin), json!({}))
        .await;
    assert_eq!(refreshed.body["idps"]["upstream"]["refreshed"], false);
    assert!(!app.login_ok("ivy").await.access.is_empty());
    assert_eq!(
        app.verify_key(&ivy.seen).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        authz(app, &ivy.access, "docs:write").await.body["source"],
        "live"
    );
    assert_eq!(
        app.verify(&ivy.external).await.status,
        StatusCode::NO_CONTENT
    );
    app.verify(&UpstreamKey::new("k9").token("x"))
        .await
        .expect_error(503, "SVC001");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
}

/// Redis down: API keys and authz answer from PostgreSQL. Returns a key
/// minted (and so cached) while Redis is down.
async fn redis_down(app: &TestApp, ivy: &Credentials) -> String {
    let (_, fresh) = app.api_key(&ivy.access, &["users"]).await;
    assert_eq!(app.verify_key(&fresh).await.status, StatusCode::NO_CONTENT);
    let reply = authz(app, &ivy.access, "docs:write").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        (
            reply.body["allowed"].as_bool(),
            reply.body["stale"].as_bool()
        ),
        (Some(false), Some(false))
    );
    assert_eq!(
        app.verify(&ivy.external).await.status,
        StatusCode::NO_CONTENT
    );
    fresh
}

/// Both down: cached keys and decisions only; external tokens unaffected.
async fn both_stores_down(app: &TestApp, ivy: &Credentials, fresh: &str) {
    for key in [ivy.seen.as_str(), fresh] {
        assert_eq!(app.verify_key(key).await.status, StatusCode::NO_CONTENT);
    }
    app.verify_key(&ivy.unseen)
        .await
        .expect_error(503, "SVC001");
    let reply = authz(app, &ivy.access, "docs:read").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"allowed": true, "source": "cache", "stale": true})
    );
    authz(app, &ivy.access, "docs:delete")
        .await
        .expect_error(503, "SVC001");
    assert_eq!(
        app.verify(&ivy.external).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.verify(&ivy.access).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hung_cached_keys_and_stale_decisions_answer_uncached_ones_fail_fast() {
    let config = "[database]\ntimeout = \"500ms\"\n[breaker]\nminimum_calls = 3\nopen_wait = \"1s\"\nopen_wait_max = \"2s\"\n[cache]\nauthz_ttl = \"1s\"\nauthz_max_stale = \"60s\"\n";
    let stack = Stack::start_with(Backend::PostgresRedis, config).await;
    let app = &stack.app;
    let jo = app.user("joan").await;
    let (_, seen) = app.api_key(&jo.access, &["users"]).await;
    let (_, unseen) = app.api_key(&jo.access, &["users"]).await;
    assert_eq!(app.verify_key(&seen).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        authz(app, &jo.access, "docs:read").await.body["allowed"],
        false
    );

    stack.pg.as_ref().expect("pg").pause();
    tokio::time::sleep(Duration::from_millis(1100)).await; // authz_ttl passes
    // Bound: the 500 ms database timeout plus scheduling margin.
    let bound = Duration::from_millis(1200);
    for _ in 0..4 {
        let started = std::time::Instant::now();
        app.verify_key(&unseen).await.expect_error(503, "SVC001");
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        let reply = authz(app, &jo.access, "docs:read").await;
        assert_eq!(
            reply.body,
            json!({"allowed": false, "source": "cache", "stale": true})
        );
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        let started = std::time::Instant::now();
        authz(app, &jo.access, "docs:write")
            .await
            .expect_error(503, "SVC001");
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        assert_eq!(app.verify_key(&seen).await.status, StatusCode::NO_CONTENT);
    }
    stack.pg.as_ref().expect("pg").resume();
}
