//! Security issue 11, items 1 and 3, from the attacker's side:
//!
//! - a demoted admin keeps no admin right — not on the node that answered
//!   the demotion, not on another node after 2 s, not after a restart, and
//!   not through a refresh served while PostgreSQL is down;
//! - a login whose password check began before a password change, a
//!   deactivation or a logout-all yields nothing that works once the change
//!   has been answered.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Backend, PASSWORD, Stack, TestApp, Tokens};

const CONFIG: &str = r#"
[database]
timeout = "500ms"
[redis]
timeout = "200ms"
[cache]
invalidation_poll = "1s"
[rate_limit]
login_per_ip = "1000/min"
register_per_ip = "1000/min"
refresh_per_ip = "1000/min"
login_failures_per_account = "50/15min"
[passwords]
hash_workers = 1
"#;

/// Registers `name` with `roles` in-process (as `holdfast user create`).
async fn user_with_roles(app: &TestApp, name: &str, roles: &[&str]) -> String {
    let user = app
        .state
        .accounts()
        .register(
            holdfast::auth::accounts::Registration {
                email: format!("{name}@example.com"),
                username: name.into(),
                password: PASSWORD.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            },
            holdfast::auth::now(),
        )
        .await
        .expect("register");
    user.id.to_string()
}

async fn set_roles(app: &TestApp, admin: &str, user: &str, roles: &[&str]) -> support::Reply {
    app.call(
        Method::PUT,
        &format!("/api/v1/admin/users/{user}/roles"),
        Some(admin),
        Some(json!({ "roles": roles })),
    )
    .await
}

fn roles_header(reply: &support::Reply) -> String {
    reply.header("x-auth-roles").unwrap_or("<none>").to_string()
}

/// What a demoted admin's token can still do on `node`: is it refused by
/// an admin endpoint, and which roles does forward-auth answer?
async fn demoted(node: &TestApp, token: &str) -> bool {
    let admin = node.get("/api/v1/admin/users?query=x", Some(token)).await;
    let verify = node.verify(token).await;
    admin.status == StatusCode::FORBIDDEN
        && verify.status == StatusCode::NO_CONTENT
        && !roles_header(&verify).split(',').any(|r| r == "admin")
}

#[tokio::test]
async fn a_demoted_admin_keeps_no_admin_right_anywhere() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let boss = stack.app.admin_token().await;
    let mallory_id = user_with_roles(&stack.app, "mallory", &["admin"]).await;
    let mallory = stack.app.login_ok("mallory").await;
    let urls = Some((
        stack.pg.as_ref().expect("pg").url(),
        stack.redis.as_ref().expect("redis").url(),
    ));
    let other = TestApp::spawn(&stack.data.path().join("holdfast.toml"), urls).await;
    // Before: the token is an admin's on both nodes.
    for node in [&stack.app, &other] {
        assert_eq!(roles_header(&node.verify(&mallory.access).await), "admin");
    }

    set_roles(&stack.app, &boss, &mallory_id, &[])
        .await
        .status
        .is_success()
        .then_some(())
        .expect("demotion answered");

    // The node that answered: at once.
    assert!(demoted(&stack.app, &mallory.access).await);
    // The attack: give the role back to herself with the old token.
    set_roles(&stack.app, &mallory.access, &mallory_id, &["admin"])
        .await
        .expect_error(403, "AUTH005");
    // Every other node within 2 s.
    let started = Instant::now();
    while !demoted(&other, &mallory.access).await {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the other node still grants admin"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_roles(&other, &mallory.access, &mallory_id, &["admin"])
        .await
        .expect_error(403, "AUTH005");
    // Introspection answers the roles she holds now.
    let (_, introspector) = stack.app.api_key(&boss, &["introspect"]).await;
    let reply = stack
        .app
        .call_with(
            Method::POST,
            "/api/v1/auth/introspect",
            &[("x-api-key", &introspector)],
            Some(json!({ "token": mallory.access })),
        )
        .await;
    assert_eq!(reply.body["active"], json!(true), "{}", reply.body);
    assert_eq!(reply.body["roles"], json!([]), "{}", reply.body);

    // A restarted node learns the change from the database.
    stack.restart_app().await;
    assert!(
        demoted(&stack.app, &mallory.access).await,
        "after a restart"
    );

    // Refresh while PostgreSQL is down: served from Redis and the session's
    // snapshot, which still says admin; the node knows better.
    stack.pg.as_ref().expect("pg").pause();
    let reply = stack.app.refresh(&mallory.refresh).await;
    stack.pg.as_ref().expect("pg").resume();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let refreshed = Tokens::from(&reply.body);
    let claims = claims_of(&refreshed.access);
    assert_eq!(claims["roles"], json!([]), "refresh re-issued a lost role");
}

#[tokio::test]
async fn a_deleted_role_leaves_every_token_that_carried_it() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let boss = stack.app.admin_token().await;
    let created = stack
        .app
        .post(
            "/api/v1/admin/roles",
            Some(&boss),
            json!({"name": "auditor", "permissions": ["audit:read"]}),
        )
        .await;
    assert!(created.status.is_success(), "{}", created.body);
    user_with_roles(&stack.app, "eve", &["auditor"]).await;
    let eve = stack.app.login_ok("eve").await;
    assert_eq!(
        roles_header(&stack.app.verify(&eve.access).await),
        "auditor"
    );
    let deleted = stack
        .app
        .call(
            Method::DELETE,
            "/api/v1/admin/roles/auditor",
            Some(&boss),
            None,
        )
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert_eq!(roles_header(&stack.app.verify(&eve.access).await), "");
}

/// The payload of a JWT, unverified (the test only reads what was issued).
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("claims")
}

/// `n` logins of `name` with the current password, sent together from
/// tasks of their own; each answers (status, body).
fn racing_logins(
    app: &TestApp,
    name: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(StatusCode, Value)>> {
    (0..n)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/v1/auth/login"))
                .json(&json!({"login": name, "password": PASSWORD}));
            tokio::spawn(async move {
                let response = request.send().await.expect("login");
                let status = response.status();
                (status, response.json().await.unwrap_or(Value::Null))
            })
        })
        .collect()
}

/// Every login that answered 200 must have yielded nothing usable: its
/// access token refused, its refresh token refused. Returns how many
/// logins answered 200 (so a test can tell it raced at all).
async fn nothing_survives(
    app: &TestApp,
    logins: Vec<tokio::task::JoinHandle<(StatusCode, Value)>>,
) -> usize {
    let mut issued = 0;
    for login in logins {
        let (status, body) = login.await.expect("task");
        if status != StatusCode::OK {
            continue;
        }
        issued += 1;
        let tokens = Tokens::from(&body);
        let verify = app.verify(&tokens.access).await;
        assert_eq!(
            verify.status,
            StatusCode::UNAUTHORIZED,
            "an access token from a racing login still works"
        );
        // 401 (revoked, invalid) or 403 AUTH006 (the account is disabled).
        let refresh = app.refresh(&tokens.refresh).await;
        assert!(
            matches!(refresh.status.as_u16(), 401 | 403),
            "a refresh token from a racing login still works: {}",
            refresh.body
        );
    }
    issued
}

/// Logins sent before and while the change is made, queued behind one hash
/// worker (first in, first out): those that arrive while the change itself
/// waits for or uses the worker read the user (began their check) before
/// the change was answered and finish after it.
///
/// With `during` false only logins sent 150 ms before the change are
/// judged (eight of them, so most are still waiting for the one hash
/// worker, having read the user): after a logout-all has taken effect a
/// new login is legitimate even if the logout-all's answer is still on its
/// way.
async fn race(
    app: &TestApp,
    name: &str,
    during: bool,
    change: impl std::future::Future<Output = ()>,
) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut logins = racing_logins(app, name, if during { 4 } else { 8 });
    if !during {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let sending = async {
        let mut more = Vec::new();
        while during && !done.load(std::sync::atomic::Ordering::Acquire) && more.len() < 20 {
            more.extend(racing_logins(app, name, 1));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        more
    };
    let change = async {
        change.await;
        done.store(true, std::sync::atomic::Ordering::Release);
    };
    let (more, ()) = tokio::join!(sending, change);
    logins.extend(more);
    let sent = logins.len();
    let issued = nothing_survives(app, logins).await;
    eprintln!("{name}: {issued} of {sent} racing logins answered 200, none usable");
}

#[tokio::test]
async fn logins_cannot_race_past_a_password_change() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let victim = stack.app.user("victim").await;
    race(&stack.app, "victim", true, async {
        let reply = stack
            .app
            .call(
                Method::PATCH,
                "/api/v1/users/me/password",
                Some(&victim.access),
                Some(json!({
                    "current_password": PASSWORD,
                    "new_password": "a-completely-new-secret-phrase"
                })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    })
    .await;
    // The owner's own session survives its change.
    assert_eq!(
        stack.app.verify(&victim.access).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn logins_cannot_race_past_a_deactivation_or_a_logout_all() {
    for backend in [Backend::PostgresRedis, Backend::Embedded] {
        let stack = Stack::start_with(backend, CONFIG).await;
        let admin = stack.app.admin_token().await;
        let reply = stack.app.register("dora@example.com", "dora").await;
        let dora_id = reply.body["id"].as_str().expect("id").to_string();
        race(&stack.app, "dora", true, async {
            let reply = stack
                .app
                .post(
                    &format!("/api/v1/admin/users/{dora_id}/disable"),
                    Some(&admin),
                    json!({}),
                )
                .await;
            assert!(reply.status.is_success(), "{}", reply.body);
        })
        .await;

        let lou = stack.app.user("lou").await;
        race(&stack.app, "lou", false, async {
            let reply = stack
                .app
                .call(
                    Method::POST,
                    "/api/v1/auth/logout-all",
                    Some(&lou.access),
                    None,
                )
                .await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
        })
        .await;
        // New logins after the logout-all work.
        let after = stack.app.login_ok("lou").await;
        assert_eq!(
            stack.app.verify(&after.access).await.status,
            StatusCode::NO_CONTENT
        );
    }
}
