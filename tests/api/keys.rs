//! Key management (DESIGN.md §2): rotation through a standby period, and
//! revoke-all ending every token and session at once.

use crate::support;

use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use support::{Backend, Stack, TestApp};

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

async fn published(app: &TestApp) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json", None).await;
    let mut kids: Vec<String> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_string))
        .collect();
    kids.sort();
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_a_standby_then_signs_with_it() {
    let stack = Stack::start_with(Backend::Embedded, "[tokens]\njwks_max_age = \"2s\"\n").await;
    let app = &stack.app;
    let root = app.admin_token().await;
    let before = app.user("una").await;
    let old_kid = kid(&before.access);

    let reply = app
        .call(Method::POST, "/api/v1/admin/keys/rotate", Some(&root), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let new_kid = reply.body["kid"].as_str().expect("kid").to_string();
    assert_ne!(new_kid, old_kid);
    let mut both = vec![old_kid.clone(), new_kid.clone()];
    both.sort();
    // Standby: published at once, not signing yet.
    assert_eq!(published(app).await, both);
    assert_eq!(kid(&app.login_ok("una").await.access), old_kid);

    // After jwks_max_age the new key signs; old tokens still verify.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = app.login_ok("una").await;
        if kid(&fresh.access) == new_kid {
            assert_eq!(
                app.verify(&fresh.access).await.status,
                StatusCode::NO_CONTENT
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never started signing"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        app.verify(&before.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        published(app).await,
        both,
        "the old key verifies until its tokens expire"
    );

    let plain = app.login_ok("una").await;
    app.call(
        Method::POST,
        "/api/v1/admin/keys/rotate",
        Some(&plain.access),
        None,
    )
    .await
    .expect_error(403, "AUTH005");
    app.call(
        Method::POST,
        "/api/v1/admin/keys/revoke-all",
        Some(&plain.access),
        None,
    )
    .await
    .expect_error(403, "AUTH005");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_ends_every_token_and_session() {
    let stack = Stack::start(Backend::PostgresRedis).await;
    let app = &stack.app;
    let root = app.admin_token().await;
    let a = app.user("vic").await;
    let b = app.user("wes").await;
    let old_kid = kid(&a.access);

    let reply = app
        .call(
            Method::POST,
            "/api/v1/admin/keys/revoke-all",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let new_kid = reply.body["kid"].as_str().expect("kid").to_string();
    assert!(
        reply.body["sessions_revoked"].as_u64() >= Some(3),
        "{}",
        reply.body
    );
    assert_ne!(new_kid, old_kid);
    assert_eq!(published(app).await, vec![new_kid.clone()]);

    for tokens in [&a, &b] {
        app.verify(&tokens.access)
            .await
            .expect_error(401, "AUTH003");
        app.refresh(&tokens.refresh)
            .await
            .expect_error(401, "AUTH004");
    }
    app.verify(&root).await.expect_error(401, "AUTH003");
    let fresh = app.login_ok("vic").await;
    assert_eq!(kid(&fresh.access), new_kid);
    assert_eq!(
        app.verify(&fresh.access).await.status,
        StatusCode::NO_CONTENT
    );
}
