//! Tokens from an upstream issuer (`[[idp]]`), verified against its JWKS
//! served by a small server this test starts, rotates, breaks and stops.

use crate::support;

use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use support::jwks::{ISSUER, UpstreamKey, start_upstream};
use support::{Backend, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tokens_follow_the_jwks_through_rotation_and_outage() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up, server) = start_upstream(listener).await;
    let k1 = UpstreamKey::new("k1");
    let k2 = UpstreamKey::new("k2");
    up.publish(&[&k1]);

    let config = format!(
        "[[idp]]\nname = \"upstream\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://{addr}/jwks\"\naudience = \"holdfast-tests\"\njwks_ttl = \"30s\"\nmax_stale = \"3s\"\ntimeout = \"500ms\"\nmin_refetch_interval = \"1s\"\n"
    );
    let stack = Stack::start_with(Backend::Embedded, &config).await;
    let app = &stack.app;
    let admin = app.admin_token().await;

    // Accepted after verification against the JWKS.
    let reply = app.verify(&k1.token("upstream-user-1")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("x-auth-method"), Some("external"));
    assert_eq!(reply.header("x-auth-user-id"), Some("upstream-user-1"));
    assert_eq!(reply.header("x-auth-idp"), Some("upstream"));

    // Wrong audience, expired, and a forged key under a known kid.
    let now = holdfast::auth::now();
    app.verify(&k1.sign(json!({"iss": ISSUER, "aud": "other", "sub": "u", "exp": now + 600})))
        .await
        .expect_error(401, "AUTH003");
    app.verify(
        &k1.sign(json!({"iss": ISSUER, "aud": "holdfast-tests", "sub": "u", "exp": now - 120})),
    )
    .await
    .expect_error(401, "AUTH002");
    app.verify(&UpstreamKey::new("k1").token("forger"))
        .await
        .expect_error(401, "AUTH003");

    // The issuer rotates: an unknown kid triggers one refetch.
    up.publish(&[&k1, &k2]);
    let before = up.fetches();
    let reply = app.verify(&k2.token("upstream-user-2")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(up.fetches(), before + 1);
    // Another unknown kid at once: over the refetch budget, no fetch, 401.
    let before = up.fetches();
    app.verify(&UpstreamKey::new("k3").token("x"))
        .await
        .expect_error(401, "AUTH003");
    assert_eq!(up.fetches(), before);

    // The issuer fails: cached keys keep verifying (stale within
    // max_stale); an unknown kid cannot be decided, so 503.
    up.break_it();
    let refreshed = app
        .post("/api/v1/admin/jwks/refresh", Some(&admin), json!({}))
        .await;
    assert_eq!(
        refreshed.body["idps"]["upstream"]["refreshed"], false,
        "{}",
        refreshed.body
    );
    let reply = app.verify(&k1.token("still-works")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = app.verify(&UpstreamKey::new("k4").token("x")).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "idp:upstream");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["idp:upstream"]["healthy"], false);
    // Our own tokens are unaffected.
    let own = app.login_ok("root").await;
    assert_eq!(app.verify(&own.access).await.status, StatusCode::NO_CONTENT);

    // Past max_stale since the last good fetch: 503, never a guess.
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.verify(&k1.token("too-stale"))
        .await
        .expect_error(503, "SVC001");

    // Stopped entirely, then back: an admin refresh restores service.
    server.abort();
    app.verify(&k1.token("down"))
        .await
        .expect_error(503, "SVC001");
    let listener = loop {
        // The port is ours again once the aborted server has closed it.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let (up, _server) = start_upstream(listener).await;
    up.publish(&[&k1, &k2]);
    let refreshed = app
        .post("/api/v1/admin/jwks/refresh", Some(&admin), json!({}))
        .await;
    assert_eq!(
        refreshed.body["idps"]["upstream"]["refreshed"], true,
        "{}",
        refreshed.body
    );
    let reply = app.verify(&k2.token("back")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_refreshed_in_the_background_before_it_expires() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up, _server) = start_upstream(listener).await;
    let k1 = UpstreamKey::new("k1");
    up.publish(&[&k1]);
    let config = format!(
        "[[idp]]\nname = \"upstream\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://{addr}/jwks\"\naudience = \"holdfast-tests\"\njwks_ttl = \"1s\"\n"
    );
    let _stack = Stack::start_with(Backend::Embedded, &config).await;
    // No request at all: the refresher alone fetches at 80 % of the TTL.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert!(up.fetches() >= 3, "fetched {} times", up.fetches());
}
