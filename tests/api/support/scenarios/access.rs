//! API keys, roles, authz and the audit log on each backend (the SQL of
//! both stores is exercised: SQLite and PostgreSQL).

use crate::support::Stack;
use reqwest::{Method, StatusCode};
use serde_json::json;

pub async fn api_keys_mint_verify_list_and_delete(stack: &mut Stack) {
    let app = &stack.app;
    let user = app.user("kim").await;
    let (id, key) = app.api_key(&user.access, &["users"]).await;
    let reply = app.verify_key(&key).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("x-auth-method"), Some("api_key"));
    let list = app.get("/api/v1/api-keys", Some(&user.access)).await;
    assert_eq!(list.body["items"][0]["id"], json!(id));
    let deleted = app
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&user.access),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.verify_key(&key).await.expect_error(401, "AUTH004");
    let list = app.get("/api/v1/api-keys", Some(&user.access)).await;
    assert_eq!(list.body["items"], json!([]));
}

async fn may_deploy(app: &crate::support::TestApp, token: &str) -> crate::support::Reply {
    app.post(
        "/api/v1/authz/check",
        Some(token),
        json!({"permission": "deploy:prod"}),
    )
    .await
}

pub async fn roles_authz_search_and_audit(stack: &mut Stack) {
    let app = &stack.app;
    let admin = app.admin_token().await;
    let user = app.user("lou").await;
    let me = app.get("/api/v1/users/me", Some(&user.access)).await;
    let id = me.body["id"].as_str().expect("id").to_string();
    let role = app
        .post(
            "/api/v1/admin/roles",
            Some(&admin),
            json!({"name": "ops", "permissions": ["deploy:*"]}),
        )
        .await;
    assert_eq!(role.status, StatusCode::OK, "{}", role.body);
    let set = app
        .call(
            Method::PUT,
            &format!("/api/v1/admin/users/{id}/roles"),
            Some(&admin),
            Some(json!({"roles": ["ops"]})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let check = may_deploy(app, &user.access).await;
    assert_eq!(
        check.body,
        json!({"allowed": true, "source": "live", "stale": false})
    );
    let found = app.get("/api/v1/admin/users?query=lou", Some(&admin)).await;
    assert_eq!(found.body["items"][0]["roles"], json!(["ops"]));
    let gone = app
        .call(
            Method::DELETE,
            "/api/v1/admin/roles/ops",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let check = may_deploy(app, &user.access).await;
    assert_eq!(check.body["allowed"], false);
    // The audit log is written in the background; wait for the role change.
    let mut kinds = Vec::new();
    for _ in 0..50 {
        let audit = app.get("/api/v1/admin/audit", Some(&admin)).await;
        kinds = audit.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_string))
            .collect();
        if kinds.iter().filter(|k| *k == "role_changed").count() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        kinds.iter().filter(|k| *k == "role_changed").count() >= 3,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "login_succeeded"), "{kinds:?}");
}
