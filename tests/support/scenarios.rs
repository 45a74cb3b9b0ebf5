//! The API conformance suite: every endpoint of the core and every error
//! code it can return. `conformance_suite!` stamps each scenario out as a
//! test for one backend, so embedded and PostgreSQL + Redis run the same
//! assertions.

use super::{PASSWORD, Reply, Stack, TestApp};

// `all_scenarios!` expands to paths under `support::`.
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// Test binaries that use only `procs` (cli.rs) compile this module unused.
#[allow(unused_macros)]
macro_rules! conformance_suite {
    ($backend:expr, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let mut stack = support::Stack::start($backend).await;
                support::scenarios::$name(&mut stack).await;
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use conformance_suite;

/// Every scenario below, for `conformance_suite!`.
#[macro_export]
macro_rules! all_scenarios {
    ($backend:expr) => {
        support::scenarios::conformance_suite!(
            $backend,
            register_answers_the_user_and_refuses_conflicts,
            register_validates_input,
            malformed_requests_get_contract_errors,
            login_by_email_or_username_and_same_answer_for_unknown,
            verify_answers_forward_auth_headers,
            expired_tokens_answer_auth002,
            tokens_verify_independently_against_served_jwks,
            refresh_rotates_and_reuse_revokes_the_session,
            logout_revokes_this_session,
            logout_all_revokes_every_session,
            profile_read_and_update,
            password_change_revokes_other_sessions,
            delete_me_disables_the_account,
            sessions_list_and_delete,
            well_known_documents,
            health_endpoints,
            request_ids_and_security_headers,
            restart_keeps_keys_users_and_revocations,
        );
    };
}

fn assert_user_shape(body: &Value, email: &str, username: &str) {
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
        .users
        .by_login("eve")
        .await
        .expect("store")
        .expect("user");
    let sid = tokens.session_id.parse().expect("uuid");
    // Signed by the node's own key an hour ago: valid signature, expired.
    let now = holdfast::auth::now();
    let old = app
        .state
        .tokens
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
        .tokens
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
    let second = super::Tokens::from(&reply.body);
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
