//! API keys and introspection against private PostgreSQL and Redis:
//! minting, scopes, hashing at rest, immediate revocation, the positive
//! cache that keeps keys working while PostgreSQL is down, and RFC 7662.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backend, Stack, TestApp, Tokens};

const FAST_DB: &str =
    "[database]\ntimeout = \"500ms\"\n[breaker.database]\nminimum_calls = 2\nopen_wait = \"30s\"\n";

fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

async fn introspect(app: &TestApp, key: &str, token: &str, form: bool) -> support::Reply {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/introspect"))
        .header("authorization", format!("ApiKey {key}"));
    request = if form {
        request.form(&[("token", token)])
    } else {
        request.json(&json!({ "token": token }))
    };
    support::Reply::from(request.send().await.expect("introspect")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_minted_scoped_hashed_and_revoked_at_once() {
    let stack = Stack::start(Backend::PostgresRedis).await;
    let app = &stack.app;
    let alice = app.user("alice").await;
    let me = app.get("/api/v1/users/me", Some(&alice.access)).await;
    let alice_id = me.body["id"].as_str().expect("id").to_string();

    let (id, key) = app.api_key(&alice.access, &["users"]).await;
    assert!(key.starts_with("hf_"), "{key}");
    shown_once_and_stored_hashed(&stack, &alice, &id, &key).await;
    both_headers_work_and_name_the_owner(app, &key, &alice_id).await;
    scopes_are_enforced(app, &alice, &key).await;
    wrong_secrets_are_refused(app, &key).await;
    deletion_is_immediate_and_owner_only(app, &alice, &id, &key).await;
}

/// Shown once: the list has neither the key nor its hash; the database
/// holds its SHA-256 only.
async fn shown_once_and_stored_hashed(stack: &Stack, alice: &Tokens, id: &str, key: &str) {
    let app = &stack.app;
    let list = app.get("/api/v1/api-keys", Some(&alice.access)).await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(id));
    assert!(items[0].get("key").is_none() && items[0].get("secret_hash").is_none());
    assert!(!list.body.to_string().contains(&key[16..]));

    let pool = sqlx::PgPool::connect(&stack.pg.as_ref().expect("pg").url())
        .await
        .expect("pg");
    let stored: (String,) = sqlx::query_as("SELECT secret_hash FROM api_keys")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(stored.0, sha256_hex(key));
}

/// Both headers work; the method and owner are reported.
async fn both_headers_work_and_name_the_owner(app: &TestApp, key: &str, alice_id: &str) {
    let verified = app.verify_key(key).await;
    assert_eq!(verified.status, StatusCode::NO_CONTENT, "{}", verified.body);
    assert_eq!(verified.header("x-auth-method"), Some("api_key"));
    assert_eq!(verified.header("x-auth-user-id"), Some(alice_id));
    let auth = format!("ApiKey {key}");
    let profile = app
        .call_with(
            Method::GET,
            "/api/v1/users/me",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.body);
}

/// Scopes are enforced, and a key cannot mint keys nor get a scope beyond
/// the user's own permissions; unknown scopes are refused.
async fn scopes_are_enforced(app: &TestApp, alice: &Tokens, key: &str) {
    for path in ["/api/v1/admin/circuit-breakers", "/api/v1/admin/audit"] {
        app.call_with(Method::GET, path, &[("x-api-key", key)], None)
            .await
            .expect_error(403, "AUTH005");
    }
    app.call_with(
        Method::POST,
        "/api/v1/authz/check",
        &[("x-api-key", key)],
        Some(json!({"permission": "docs:read"})),
    )
    .await
    .expect_error(403, "AUTH005");
    app.call_with(
        Method::POST,
        "/api/v1/api-keys",
        &[("x-api-key", key)],
        Some(json!({"name": "n", "scopes": ["users"]})),
    )
    .await
    .expect_error(401, "AUTH003");

    let mint = |scopes: Value| {
        app.post(
            "/api/v1/api-keys",
            Some(&alice.access),
            json!({"name": "k", "scopes": scopes}),
        )
    };
    mint(json!(["admin"])).await.expect_error(403, "AUTH005");
    mint(json!(["introspect"]))
        .await
        .expect_error(403, "AUTH005");
    mint(json!(["root"])).await.expect_error(422, "VAL001");
    mint(json!([])).await.expect_error(422, "VAL001");
}

/// Wrong secrets, garbage and a near miss are refused, never cached.
async fn wrong_secrets_are_refused(app: &TestApp, key: &str) {
    let near_miss = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('0') { '1' } else { '0' }
    );
    for bad in [near_miss.as_str(), "hf_nothing", "garbage"] {
        app.verify_key(bad).await.expect_error(401, "AUTH003");
    }
}

/// Deleted: refused at once, although the key was cached a moment ago;
/// another user cannot delete someone else's key.
async fn deletion_is_immediate_and_owner_only(app: &TestApp, alice: &Tokens, id: &str, key: &str) {
    let deleted = app
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.verify_key(key).await.expect_error(401, "AUTH004");
    app.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{id}"),
        Some(&alice.access),
        None,
    )
    .await
    .expect_error(404, "NOTFOUND");
    let (other_id, _) = app.api_key(&alice.access, &["users"]).await;
    let bob = app.user("bob").await;
    app.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{other_id}"),
        Some(&bob.access),
        None,
    )
    .await
    .expect_error(404, "NOTFOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_keep_working_while_postgres_is_down_others_get_503() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, FAST_DB).await;
    let alice = stack.app.user("alice").await;
    let (_, seen) = stack.app.api_key(&alice.access, &["users"]).await;
    let (_, unseen) = stack.app.api_key(&alice.access, &["users"]).await;
    assert_eq!(
        stack.app.verify_key(&seen).await.status,
        StatusCode::NO_CONTENT
    );

    stack.pg.as_mut().expect("pg").kill();
    let app = &stack.app;
    for _ in 0..3 {
        let reply = app.verify_key(&seen).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    }
    let reply = app.verify_key(&unseen).await;
    reply.expect_error(503, "SVC001");
    assert_eq!(reply.body["error"]["details"]["dependency"], "database");
    // A wrong key is not answered from the cache either: the store decides.
    app.verify_key(&format!("{}0", &unseen[..unseen.len() - 1]))
        .await
        .expect_error(503, "SVC001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_follows_rfc_7662() {
    let stack = Stack::start(Backend::PostgresRedis).await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let (_, introspector) = app.api_key(&admin, &["introspect"]).await;
    let carol = app.user("carol").await;
    let (_, users_only) = app.api_key(&carol.access, &["users"]).await;

    for form in [true, false] {
        let reply = introspect(app, &introspector, &carol.access, form).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["active"], true);
        assert_eq!(reply.body["sid"], json!(carol.session_id));
        assert_eq!(reply.body["token_type"], "access_token");
        for field in ["sub", "roles", "exp", "iat"] {
            assert!(reply.body.get(field).is_some(), "{field} in {}", reply.body);
        }
    }

    // Only a key with scope `introspect` may ask.
    let reply = introspect(app, &users_only, &carol.access, true).await;
    reply.expect_error(403, "AUTH005");
    let anonymous = app
        .client
        .post(app.url("/api/v1/auth/introspect"))
        .form(&[("token", carol.access.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Expired (signed by our own key two hours ago), garbage, another
    // issuer's key id, and a revoked session: all simply inactive.
    let state = &app.state;
    let sub = uuid::Uuid::parse_str(carol_id(app, &carol.access).await.as_str()).expect("uuid");
    let expired = state
        .tokens()
        .issue_for(sub, &[], uuid::Uuid::new_v4(), holdfast::auth::now() - 7200)
        .expect("issue");
    let foreign = {
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("key");
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("someone-else".into());
        jsonwebtoken::encode(
            &header,
            &json!({"iss": "https://evil.test", "sub": sub, "aud": "holdfast-tests", "exp": 4_000_000_000i64}),
            &jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
        .expect("sign")
    };
    let logout = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&carol.access),
            None,
        )
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    for token in [
        expired.as_str(),
        "garbage",
        foreign.as_str(),
        carol.access.as_str(),
    ] {
        let reply = introspect(app, &introspector, token, true).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body, json!({"active": false}), "{token}");
    }
    // An API key is a token too.
    let reply = introspect(app, &introspector, &users_only, false).await;
    assert_eq!(reply.body["active"], true);
    assert_eq!(reply.body["token_type"], "api_key");
}

async fn carol_id(app: &TestApp, access: &str) -> String {
    let me = app.get("/api/v1/users/me", Some(access)).await;
    me.body["id"].as_str().expect("id").to_string()
}
