//! RBAC against private PostgreSQL and Redis: roles with wildcards, user
//! roles, search and disable, `/authz/check` with its cache semantics
//! (fresh, invalidated on role change, stale while the database is down,
//! 503 when nothing is cached), and the audit log, including events
//! produced while the database is away.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Backend, PASSWORD, Stack, TestApp};

const CONFIG: &str = "[cache]\nauthz_ttl = \"1s\"\nauthz_max_stale = \"60s\"\n[database]\ntimeout = \"500ms\"\n[rate_limit]\nlogin_failures_per_account = \"3/1min\"\n";

async fn check(
    app: &TestApp,
    token: &str,
    permission: &str,
    user: Option<&str>,
) -> crate::support::Reply {
    let mut body = json!({ "permission": permission });
    if let Some(user) = user {
        body["user_id"] = json!(user);
    }
    app.post("/api/v1/authz/check", Some(token), body).await
}

async fn decision(app: &TestApp, token: &str, permission: &str) -> (bool, String, bool) {
    let reply = check(app, token, permission, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    (
        reply.body["allowed"].as_bool().expect("allowed"),
        reply.body["source"].as_str().expect("source").to_string(),
        reply.body["stale"].as_bool().expect("stale"),
    )
}

async fn id_of(app: &TestApp, access: &str) -> String {
    let me = app.get("/api/v1/users/me", Some(access)).await;
    me.body["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_permissions_and_cached_decisions() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let bob = app.user("bob").await;
    let bob_id = id_of(app, &bob.access).await;
    let admin_id = id_of(app, &admin).await;

    // Roles: created, listed, validated; `admin` is built in and fixed.
    let put = |body: Value| app.post("/api/v1/admin/roles", Some(&admin), body);
    let reply = put(json!({"name": "editor", "permissions": ["docs:*", "*:read"]})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    put(json!({"name": "admin", "permissions": []}))
        .await
        .expect_error(422, "VAL001");
    put(json!({"name": "x", "permissions": ["no-colon"]}))
        .await
        .expect_error(422, "VAL001");
    let roles = app.get("/api/v1/admin/roles", Some(&admin)).await;
    let names: Vec<&str> = roles.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["admin", "editor"]);
    // Only admins manage roles.
    put(json!({"name": "x", "permissions": []})).await;
    app.post(
        "/api/v1/admin/roles",
        Some(&bob.access),
        json!({"name": "x", "permissions": []}),
    )
    .await
    .expect_error(403, "AUTH005");

    // User roles: unknown roles refused, unknown users 404.
    let set_roles = |user: String, roles: Value| {
        let path = format!("/api/v1/admin/users/{user}/roles");
        let admin = admin.clone();
        async move {
            app.call(
                Method::PUT,
                &path,
                Some(&admin),
                Some(json!({"roles": roles})),
            )
            .await
        }
    };
    set_roles(bob_id.clone(), json!(["ghost"]))
        .await
        .expect_error(422, "VAL001");
    set_roles(uuid::Uuid::new_v4().to_string(), json!(["editor"]))
        .await
        .expect_error(404, "NOTFOUND");
    let reply = set_roles(bob_id.clone(), json!(["editor"])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    // Decisions: live, then cached; wildcards both ways.
    assert_eq!(
        decision(app, &bob.access, "docs:write").await,
        (true, "live".into(), false)
    );
    assert_eq!(
        decision(app, &bob.access, "docs:write").await,
        (true, "cache".into(), false)
    );
    assert!(decision(app, &bob.access, "billing:read").await.0);
    assert!(!decision(app, &bob.access, "billing:write").await.0);
    check(app, &bob.access, "nonsense", None)
        .await
        .expect_error(422, "VAL001");
    // Someone else's permissions: admins and `authz` keys only.
    check(app, &bob.access, "docs:write", Some(&admin_id))
        .await
        .expect_error(403, "AUTH005");
    let reply = check(app, &admin, "docs:write", Some(&bob_id)).await;
    assert_eq!(reply.body["allowed"], true, "{}", reply.body);
    let (_, authz_key) = app.api_key(&admin, &["authz"]).await;
    let reply = app
        .call_with(
            Method::POST,
            "/api/v1/authz/check",
            &[("x-api-key", &authz_key)],
            Some(json!({"permission": "billing:write", "user_id": bob_id})),
        )
        .await;
    assert_eq!(reply.body["allowed"], false, "{}", reply.body);

    // A role change drops cached decisions at once.
    put(json!({"name": "editor", "permissions": ["*:read"]})).await;
    assert_eq!(
        decision(app, &bob.access, "docs:write").await,
        (false, "live".into(), false)
    );
    set_roles(bob_id.clone(), json!([])).await;
    assert_eq!(
        decision(app, &bob.access, "docs:read").await,
        (false, "live".into(), false)
    );
    set_roles(bob_id.clone(), json!(["editor"])).await;
    assert_eq!(
        decision(app, &bob.access, "docs:read").await,
        (true, "live".into(), false)
    );

    // Search.
    let found = app.get("/api/v1/admin/users?query=BO", Some(&admin)).await;
    let usernames: Vec<&str> = found.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(usernames, vec!["bob"]);
    let none = app.get("/api/v1/admin/users?query=%25", Some(&admin)).await;
    assert_eq!(none.body["items"], json!([]), "LIKE wildcards are literal");

    // The database goes away: a decision past its TTL is served stale;
    // one never made is 503, never a guess.
    stack.pg.as_mut().expect("pg").kill();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let app = &stack.app;
    assert_eq!(
        decision(app, &bob.access, "docs:read").await,
        (true, "cache".into(), true)
    );
    let reply = check(app, &bob.access, "docs:delete", None).await;
    reply.expect_error(503, "SVC001");
    stack.pg.as_mut().expect("pg").restart();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_tokens_keys_and_roles() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let dave = app.user("dave").await;
    let dave_id = id_of(app, &dave.access).await;
    let (_, key) = app.api_key(&dave.access, &["users"]).await;
    assert_eq!(app.verify_key(&key).await.status, StatusCode::NO_CONTENT);

    app.post(
        &format!("/api/v1/admin/users/{dave_id}/disable"),
        Some(&dave.access),
        json!({}),
    )
    .await
    .expect_error(403, "AUTH005");
    let reply = app
        .call(
            Method::POST,
            &format!("/api/v1/admin/users/{dave_id}/disable"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.verify(&dave.access).await.expect_error(401, "AUTH004");
    app.refresh(&dave.refresh)
        .await
        .expect_error(401, "AUTH004");
    app.verify_key(&key).await.expect_error(403, "AUTH006");
    app.login("dave", PASSWORD)
        .await
        .expect_error(403, "AUTH006");
    app.call(
        Method::POST,
        &format!("/api/v1/admin/users/{}/disable", uuid::Uuid::new_v4()),
        Some(&admin),
        None,
    )
    .await
    .expect_error(404, "NOTFOUND");
}

async fn audit_kinds(app: &TestApp, admin: &str, since: i64) -> Vec<String> {
    let reply = app
        .get(
            &format!("/api/v1/admin/audit?since={since}&limit=1000"),
            Some(admin),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect()
}

/// Polls the audit log until `kind` appears (events are written in the
/// background).
async fn wait_for(app: &TestApp, admin: &str, since: i64, kind: &str, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if audit_kinds(app, admin, since)
            .await
            .iter()
            .any(|k| k == kind)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_reach_the_audit_log_even_from_an_outage() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;
    let since = holdfast::auth::now() - 1;
    let admin = app.admin_token().await;
    let erin = app.user("erin").await;
    for _ in 0..3 {
        app.login("erin", "not-the-password-at-all").await;
    }
    let (id, _) = app.api_key(&erin.access, &["users"]).await;
    app.call(
        Method::DELETE,
        &format!("/api/v1/api-keys/{id}"),
        Some(&erin.access),
        None,
    )
    .await;
    app.post(
        "/api/v1/admin/roles",
        Some(&admin),
        json!({"name": "viewer", "permissions": ["*:read"]}),
    )
    .await;
    app.post("/api/v1/admin/keys/rotate", Some(&admin), json!({}))
        .await;

    // Refresh reuse while PostgreSQL is paused: recorded without blocking
    // the request, written when the database is back.
    let pg = stack.pg.as_ref().expect("pg");
    pg.pause();
    let rotated = app.refresh(&erin.refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let started = Instant::now();
    app.refresh(&erin.refresh)
        .await
        .expect_error(401, "AUTH007");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the audit write did not block"
    );
    pg.resume();
    assert!(
        wait_for(app, &admin, since, "refresh_reuse", Duration::from_secs(15)).await,
        "{:?}",
        audit_kinds(app, &admin, since).await
    );
    let revoked = app
        .post("/api/v1/admin/keys/revoke-all", Some(&admin), json!({}))
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    // Every token died with the keys: the admin logs in again.
    let admin = admin_after_revoke(app).await;
    assert!(
        wait_for(
            app,
            &admin,
            since,
            "keys_revoked_all",
            Duration::from_secs(5)
        )
        .await
    );
    // Whose session was stolen: the reuse event names the user.
    let audit = app
        .get(
            &format!("/api/v1/admin/audit?since={since}&limit=1000"),
            Some(&admin),
        )
        .await;
    let reuse = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["kind"] == "refresh_reuse")
        .expect("refresh_reuse event");
    assert!(reuse["user_id"].is_string(), "{reuse}");
    let kinds = audit_kinds(app, &admin, since).await;
    for kind in [
        "login_succeeded",
        "login_failed",
        "account_locked",
        "api_key_created",
        "api_key_deleted",
        "role_changed",
        "key_rotated",
        "refresh_reuse",
        "keys_revoked_all",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    // Non-admins cannot read it; a bad `since` is a validation error.
    let fresh = app.user("fay").await;
    app.get("/api/v1/admin/audit", Some(&fresh.access))
        .await
        .expect_error(403, "AUTH005");
}

/// After revoke-all every token is dead; log the admin in again.
async fn admin_after_revoke(app: &TestApp) -> String {
    let token = app.login_ok("root").await.access;
    app.get("/api/v1/admin/audit?since=yesterday", Some(&token))
        .await
        .expect_error(422, "VAL001");
    token
}
