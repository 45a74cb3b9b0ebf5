//! Scenarios of `/auth/*` and tokens.

use crate::support::{PASSWORD, Reply, Stack};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub(super) fn assert_user_shape(body: &Value, email: &str, username: &str) {
    assert_eq!(body["email"], email, "{body}");
    assert_eq!(body["username"], username, "{body}");
    assert_eq!(body["status"], "active");
    assert!(body["roles"].is_array());
    assert!(body["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(
        body["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let text = body.to_string();
    assert!(
        !text.contains("argon2") && !text.contains("password"),
        "{text}"
    );
}

pub async fn register_answers_the_user_and_refuses_conflicts(stack: &mut Stack) {
    let app = &stack.app;
    let reply = app.register("Alice@Example.com", "alice").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_user_shape(&reply.body, "alice@example.com", "alice");

    app.register("alice@example.com", "other")
        .await
        .expect_error(409, "CONFLICT001");
    let reply = app.register("other@example.com", "ALICE").await;
    reply.expect_error(409, "CONFLICT001");
    assert_eq!(reply.body["error"]["details"]["field"], "username");
}

pub async fn register_validates_input(stack: &mut Stack) {
    let app = &stack.app;
    let weak = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "bob@example.com", "username": "bob", "password": "password1234"}),
        )
        .await;
    weak.expect_error(422, "VAL001");
    assert_eq!(
        weak.body["error"]["details"]["fields"][0]["field"],
        "password"
    );
    let short = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "bob@example.com", "username": "bob", "password": "short"}),
        )
        .await;
    short.expect_error(422, "VAL001");
    let bad = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "not-an-email", "username": "b", "password": PASSWORD}),
        )
        .await;
    bad.expect_error(422, "VAL001");
    let fields: Vec<&str> = bad.body["error"]["details"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["email", "username"]);
    // Nothing half-written: the valid retry still succeeds.
    assert_eq!(
        app.register("bob@example.com", "bob").await.status,
        StatusCode::CREATED
    );
}

pub async fn malformed_requests_get_contract_errors(stack: &mut Stack) {
    let app = &stack.app;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    Reply::from(send("{not json", "application/json").await.expect("send"))
        .await
        .expect_error(400, "REQ001");
    Reply::from(
        send("{\"login\":\"x\"}", "application/json")
            .await
            .expect("send"),
    )
    .await
    .expect_error(400, "REQ001");
    Reply::from(send("login=x", "text/plain").await.expect("send"))
        .await
        .expect_error(400, "REQ001");
    let huge =
        json!({"email": "x@example.com", "username": "x", "password": "y".repeat(70 * 1024)});
    let reply = app.post("/api/v1/auth/register", None, huge).await;
    reply.expect_error(413, "REQ002");
    app.get("/api/v1/no-such-thing", None)
        .await
        .expect_error(404, "NOTFOUND");
    let reply = app
        .call(Method::DELETE, "/api/v1/auth/login", None, None)
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.code(), "REQ001");
}

pub async fn login_by_email_or_username_and_same_answer_for_unknown(stack: &mut Stack) {
    let app = &stack.app;
    app.register("carol@example.com", "carol").await;
    for login in ["carol", "CAROL@example.com"] {
        let reply = app.login(login, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["token_type"], "Bearer");
        assert_eq!(reply.body["expires_in"], 900);
        assert!(
            reply.body["refresh_expires_in"]
                .as_i64()
                .expect("refresh ttl")
                > 900
        );
        assert!(reply.body["session_id"].is_string());
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let wrong = app.login("carol", "wrong-password-here").await;
    wrong.expect_error(401, "AUTH001");
    let unknown = app.login("nobody", "wrong-password-here").await;
    unknown.expect_error(401, "AUTH001");
    assert_eq!(
        wrong.body["error"]["message"],
        unknown.body["error"]["message"]
    );
}

pub async fn verify_answers_forward_auth_headers(stack: &mut Stack) {
    let app = &stack.app;
    let tokens = app.user("dave").await;
    let reply = app.verify(&tokens.access).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let me = app.get("/api/v1/users/me", Some(&tokens.access)).await;
    assert_eq!(reply.header("x-auth-user-id"), me.body["id"].as_str());
    assert_eq!(reply.header("x-auth-method"), Some("jwt"));
    assert_eq!(reply.header("x-auth-roles"), Some(""));

    let none = app.get("/api/v1/auth/verify", None).await;
    none.expect_error(401, "AUTH003");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let garbage = app.verify("not.a.token").await;
    garbage.expect_error(401, "AUTH003");
    assert_eq!(
        garbage.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
}

pub async fn expired_tokens_answer_auth002(stack: &mut Stack) {
    let app = &stack.app;
    let tokens = app.user("eve").await;
    let user = app
        .state
        .user_store()
        .by_login("eve")
        .await
        .expect("store")
        .expect("user");
    let sid = tokens.session_id.parse().expect("uuid");
    // Signed by the node's own key an hour ago: valid signature, expired.
    let now = holdfast::auth::now();
    let old = app
        .state
        .tokens()
        .issue(&user, sid, now - 3600)
        .expect("issue");
    let reply = app.verify(&old).await;
    reply.expect_error(401, "AUTH002");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    app.get("/api/v1/users/me", Some(&old))
        .await
        .expect_error(401, "AUTH002");
    // Within the 30 s leeway it is still accepted.
    let recent = app
        .state
        .tokens()
        .issue(&user, sid, now - 900 - 20)
        .expect("issue");
    assert_eq!(app.verify(&recent).await.status, StatusCode::NO_CONTENT);
}

pub async fn tokens_verify_independently_against_served_jwks(stack: &mut Stack) {
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let app = &stack.app;
    let tokens = app.user("erin").await;
    let jwks: JwkSet = serde_json::from_value(app.get("/.well-known/jwks.json", None).await.body)
        .expect("jwks parses as a JWK set");
    let header = jsonwebtoken::decode_header(&tokens.access).expect("header");
    assert_eq!(header.alg, Algorithm::EdDSA);
    let kid = header.kid.expect("kid in header");
    let jwk = jwks.find(&kid).expect("served JWKS holds the token's kid");
    let key = DecodingKey::from_jwk(jwk).expect("jwk");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["holdfast-tests"]);
    validation.set_issuer(&["http://holdfast.test"]);
    let data = jsonwebtoken::decode::<Value>(&tokens.access, &key, &validation).expect("verifies");
    let claims = data.claims;
    for claim in [
        "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "sid", "roles",
    ] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["sid"], tokens.session_id.as_str());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
}

pub async fn refresh_rotates_and_reuse_revokes_the_session(stack: &mut Stack) {
    let app = &stack.app;
    let first = app.user("frank").await;
    let reply = app.refresh(&first.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let second = crate::support::Tokens::from(&reply.body);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.session_id, first.session_id);
    assert_eq!(
        app.verify(&second.access).await.status,
        StatusCode::NO_CONTENT
    );

    // The first refresh token again: theft signal, the whole session dies.
    app.refresh(&first.refresh)
        .await
        .expect_error(401, "AUTH007");
    app.refresh(&second.refresh)
        .await
        .expect_error(401, "AUTH004");
    app.verify(&second.access)
        .await
        .expect_error(401, "AUTH004");
    app.verify(&first.access).await.expect_error(401, "AUTH004");

    app.refresh("garbage").await.expect_error(401, "AUTH003");
    let forged = format!("{}.{}", first.session_id, "A".repeat(43));
    app.refresh(&forged).await.expect_error(401, "AUTH004");
    // A random secret for a live session is invalid, and does not kill it.
    let other = app.login_ok("frank").await;
    let guess = format!("{}.{}", other.session_id, "B".repeat(43));
    app.refresh(&guess).await.expect_error(401, "AUTH003");
    assert_eq!(app.refresh(&other.refresh).await.status, StatusCode::OK);
}

pub async fn logout_revokes_this_session(stack: &mut Stack) {
    let app = &stack.app;
    let tokens = app.user("grace").await;
    let other = app.login_ok("grace").await;
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&tokens.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.verify(&tokens.access)
        .await
        .expect_error(401, "AUTH004");
    app.refresh(&tokens.refresh)
        .await
        .expect_error(401, "AUTH004");
    assert_eq!(
        app.verify(&other.access).await.status,
        StatusCode::NO_CONTENT
    );
    // Logout with the other session's refresh token in the body ends it too.
    let third = app.login_ok("grace").await;
    let reply = app
        .post(
            "/api/v1/auth/logout",
            Some(&third.access),
            json!({"refresh_token": other.refresh}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    app.verify(&other.access).await.expect_error(401, "AUTH004");
    app.call(Method::POST, "/api/v1/auth/logout", None, None)
        .await
        .expect_error(401, "AUTH003");
}

pub async fn logout_all_revokes_every_session(stack: &mut Stack) {
    let app = &stack.app;
    let a = app.user("heidi").await;
    let b = app.login_ok("heidi").await;
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout-all",
            Some(&a.access),
            None,
        )
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
    let fresh = app.login_ok("heidi").await;
    assert_eq!(
        app.verify(&fresh.access).await.status,
        StatusCode::NO_CONTENT
    );
}
