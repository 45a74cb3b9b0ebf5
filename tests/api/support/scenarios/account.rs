//! Scenarios of `/users/me*`, well-known documents, health, headers and
//! restarts.

use super::auth::assert_user_shape;
use crate::support::{PASSWORD, Reply, Stack, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub async fn profile_read_and_update(stack: &mut Stack) {
    let app = &stack.app;
    let tokens = app.user("ivan").await;
    app.user("judy").await;
    let me = app.get("/api/v1/users/me", Some(&tokens.access)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_user_shape(&me.body, "ivan@example.com", "ivan");

    let put = |body: Value| {
        app.call(
            Method::PUT,
            "/api/v1/users/me",
            Some(&tokens.access),
            Some(body),
        )
    };
    let reply = put(json!({"email": "Ivan2@example.com"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_user_shape(&reply.body, "ivan2@example.com", "ivan");
    let reply = put(json!({"username": "ivan_the_second"})).await;
    assert_user_shape(&reply.body, "ivan2@example.com", "ivan_the_second");
    put(json!({"username": "JUDY"}))
        .await
        .expect_error(409, "CONFLICT001");
    put(json!({"email": "judy@example.com"}))
        .await
        .expect_error(409, "CONFLICT001");
    put(json!({"email": "nope"}))
        .await
        .expect_error(422, "VAL001");
    app.get("/api/v1/users/me", None)
        .await
        .expect_error(401, "AUTH003");
    assert_eq!(
        app.login("ivan_the_second", PASSWORD).await.status,
        StatusCode::OK
    );
}

pub async fn password_change_revokes_other_sessions(stack: &mut Stack) {
    let app = &stack.app;
    let mine = app.user("kim").await;
    let other = app.login_ok("kim").await;
    let patch = |body: Value| {
        app.call(
            Method::PATCH,
            "/api/v1/users/me/password",
            Some(&mine.access),
            Some(body),
        )
    };
    patch(json!({"current_password": "wrong-password-here", "new_password": "a-brand-new-secret"}))
        .await
        .expect_error(401, "AUTH001");
    patch(json!({"current_password": PASSWORD, "new_password": "password1234"}))
        .await
        .expect_error(422, "VAL001");
    let reply =
        patch(json!({"current_password": PASSWORD, "new_password": "a-brand-new-secret"})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(
        app.verify(&mine.access).await.status,
        StatusCode::NO_CONTENT
    );
    app.verify(&other.access).await.expect_error(401, "AUTH004");
    app.refresh(&other.refresh)
        .await
        .expect_error(401, "AUTH004");
    app.login("kim", PASSWORD)
        .await
        .expect_error(401, "AUTH001");
    assert_eq!(
        app.login("kim", "a-brand-new-secret").await.status,
        StatusCode::OK
    );
}

pub async fn delete_me_disables_the_account(stack: &mut Stack) {
    let app = &stack.app;
    let a = app.user("leo").await;
    let b = app.login_ok("leo").await;
    let reply = app
        .call(Method::DELETE, "/api/v1/users/me", Some(&a.access), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    for tokens in [&a, &b] {
        app.verify(&tokens.access)
            .await
            .expect_error(401, "AUTH004");
        app.refresh(&tokens.refresh)
            .await
            .expect_error(401, "AUTH004");
    }
    app.login("leo", PASSWORD)
        .await
        .expect_error(403, "AUTH006");
    // The wrong password still gets the generic answer: status leaks to no one.
    app.login("leo", "wrong-password-here")
        .await
        .expect_error(401, "AUTH001");
    app.register("leo@example.com", "leo2")
        .await
        .expect_error(409, "CONFLICT001");
}

pub async fn sessions_list_and_delete(stack: &mut Stack) {
    let app = &stack.app;
    let first = app.user("mia").await;
    let second = app.login_ok("mia").await;
    let stranger = app.user("ned").await;
    let list = app
        .get("/api/v1/users/me/sessions", Some(&second.access))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{}", list.body);
    for item in items {
        let current = item["id"] == second.session_id.as_str();
        assert_eq!(item["current"], current);
        assert!(item["created_at"].is_string() && item["last_used_at"].is_string());
        assert_eq!(item["ip"], "127.0.0.1");
        for key in ["id", "user_agent", "current"] {
            assert!(item.get(key).is_some(), "{item}");
        }
    }
    let path = format!("/api/v1/users/me/sessions/{}", first.session_id);
    let reply = app
        .call(Method::DELETE, &path, Some(&second.access), None)
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    app.verify(&first.access).await.expect_error(401, "AUTH004");
    app.call(Method::DELETE, &path, Some(&second.access), None)
        .await
        .expect_error(404, "NOTFOUND");
    let theirs = format!("/api/v1/users/me/sessions/{}", stranger.session_id);
    app.call(Method::DELETE, &theirs, Some(&second.access), None)
        .await
        .expect_error(404, "NOTFOUND");
    assert_eq!(
        app.verify(&stranger.access).await.status,
        StatusCode::NO_CONTENT
    );
    app.call(
        Method::DELETE,
        "/api/v1/users/me/sessions/xyz",
        Some(&second.access),
        None,
    )
    .await
    .expect_error(404, "NOTFOUND");
    let list = app
        .get("/api/v1/users/me/sessions", Some(&second.access))
        .await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
}

pub async fn well_known_documents(stack: &mut Stack) {
    let app = &stack.app;
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=300"));
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(
        keys[0].get("d").is_none(),
        "private half must never be published"
    );
    let oidc = app.get("/.well-known/openid-configuration", None).await;
    assert_eq!(oidc.body["issuer"], "http://holdfast.test");
    assert_eq!(
        oidc.body["jwks_uri"],
        "http://holdfast.test/.well-known/jwks.json"
    );
    assert_eq!(
        oidc.body["introspection_endpoint"],
        "http://holdfast.test/api/v1/auth/introspect"
    );
}

pub async fn health_endpoints(stack: &mut Stack) {
    let app = &stack.app;
    assert_eq!(app.get("/livez", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "healthy", "{}", health.body);
    assert_eq!(health.body["mode"], "normal");
    assert!(health.body["version"].is_string() && health.body["timestamp"].is_string());
    let db = &health.body["components"]["database"];
    assert_eq!(db["healthy"], true);
    assert!(db["latency_ms"].is_number());
    let redis = &health.body["components"]["redis"];
    assert_eq!(redis["healthy"], true);
    let expected = if stack.pg.is_some() {
        ("postgres", "redis")
    } else {
        ("sqlite", "memory")
    };
    assert_eq!(
        (db["backend"].as_str(), redis["backend"].as_str()),
        (Some(expected.0), Some(expected.1))
    );
    let text = health.body.to_string();
    assert!(
        !text.contains("holdfast@"),
        "no connection strings in health: {text}"
    );
}

pub async fn request_ids_and_security_headers(stack: &mut Stack) {
    let app = &stack.app;
    let reply = Reply::from(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-request-id", "trace-me-123")
            .json(&json!({"login": "nobody", "password": "wrong-password-here"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-me-123"));
    assert_eq!(reply.body["error"]["correlation_id"], "trace-me-123");
    assert!(reply.body["error"]["timestamp"].is_string());
    let generated = app.get("/livez", None).await;
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 16)
    );
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(generated.header(name), Some(value), "{name}");
    }
    assert!(generated.header("content-security-policy").is_some());
    assert!(
        generated.header("strict-transport-security").is_none(),
        "no HSTS in development"
    );
}

pub async fn restart_keeps_keys_users_and_revocations(stack: &mut Stack) {
    let live = stack.app.user("olga").await;
    let revoked = stack.app.login_ok("olga").await;
    let reply = stack
        .app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&revoked.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    stack.restart_app().await;
    let app: &TestApp = &stack.app;
    assert_eq!(
        app.verify(&live.access).await.status,
        StatusCode::NO_CONTENT
    );
    app.verify(&revoked.access)
        .await
        .expect_error(401, "AUTH004");
    assert_eq!(app.refresh(&live.refresh).await.status, StatusCode::OK);
    assert_eq!(app.login("olga", PASSWORD).await.status, StatusCode::OK);
}
