//! Tokens from an upstream issuer (`[[idp]]`), verified against its JWKS
//! served by a small server this test starts, rotates, breaks and stops.

use crate::support;

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use support::jwks::{ISSUER, Upstream, UpstreamKey, start_upstream};
use support::{Backend, Stack, TestApp};

/// `max_stale` of the first test's provider.
const MAX_STALE: Duration = Duration::from_secs(2);

/// Wrong audience, expired, and a forged key under a known kid.
async fn bad_tokens_are_refused(app: &TestApp, k1: &UpstreamKey) {
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
}

/// The issuer rotates: an unknown kid triggers one refetch; another at once
/// is over the refetch budget (no fetch, 401). Returns when the last good
/// fetch had been made.
async fn rotation_refetches_within_budget(
    app: &TestApp,
    up: &Upstream,
    k1: &UpstreamKey,
    k2: &UpstreamKey,
) -> Instant {
    up.publish(&[k1, k2]);
    let before = up.fetches();
    let reply = app.verify(&k2.token("upstream-user-2")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(up.fetches(), before + 1);
    let fetched = Instant::now();
    let before = up.fetches();
    app.verify(&UpstreamKey::new("k3").token("x"))
        .await
        .expect_error(401, "AUTH003");
    assert_eq!(up.fetches(), before);
    fetched
}

/// The issuer fails: cached keys keep verifying (stale within max_stale);
/// an unknown kid cannot be decided, so 503 — the issuer being unreachable
/// decides it, whatever the refetch budget. Our own tokens are unaffected.
async fn an_outage_keeps_cached_keys_only(
    app: &TestApp,
    admin: &str,
    up: &Upstream,
    k1: &UpstreamKey,
) {
    up.break_it();
    let refreshed = app
        .post("/api/v1/admin/jwks/refresh", Some(admin), json!({}))
        .await;
    assert_eq!(
        refreshed.body["idps"]["upstream"]["refreshed"], false,
        "{}",
        refreshed.body
    );
    let reply = app.verify(&k1.token("still-works")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let reply = app.verify(&UpstreamKey::new("k4").token("x")).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "idp:upstream");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["idp:upstream"]["healthy"], false);
    let own = app.login_ok("root").await;
    assert_eq!(app.verify(&own.access).await.status, StatusCode::NO_CONTENT);
}

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
        "[[idp]]\nname = \"upstream\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://{addr}/jwks\"\naudience = \"holdfast-tests\"\njwks_ttl = \"30s\"\nmax_stale = \"2s\"\ntimeout = \"500ms\"\nmin_refetch_interval = \"1s\"\n"
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
    bad_tokens_are_refused(app, &k1).await;
    let last_good_fetch = rotation_refetches_within_budget(app, &up, &k1, &k2).await;
    an_outage_keeps_cached_keys_only(app, &admin, &up, &k1).await;

    // Past max_stale since the last good fetch: 503, never a guess. The
    // app runs on the system clock, so max_stale passes in wall time,
    // counted from that fetch; the rule at its boundary is
    // `auth::external`'s unit test.
    tokio::time::sleep_until((last_good_fetch + MAX_STALE + Duration::from_millis(200)).into())
        .await;
    app.verify(&k1.token("too-stale"))
        .await
        .expect_error(503, "SVC001");

    // Stopped entirely, then back: an admin refresh restores service.
    server.abort();
    app.verify(&k1.token("down"))
        .await
        .expect_error(503, "SVC001");
    // The port is ours again once the aborted server has closed it; 5 s is
    // far more than that takes, and a port taken by someone else fails
    // here instead of hanging the suite.
    let mut rebind = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                rebind = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = rebind.expect("the IdP's port was not free again within 5 s");
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

    // Each upstream token's result is counted by its code.
    let metrics = app.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or("");
    for outcome in [
        r#"holdfast_auth_outcomes_total{method="external",code="ok"}"#,
        r#"holdfast_auth_outcomes_total{method="external",code="SVC001"}"#,
    ] {
        assert!(text.contains(outcome), "{outcome} missing");
    }
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
    // No request at all: the refresher alone fetches at 80 % of the TTL,
    // so three fetches within 2.6 s (watched, not slept through).
    let deadline = Instant::now() + Duration::from_millis(2600);
    while up.fetches() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up.fetches() >= 3, "fetched {} times", up.fetches());
}
