//! Security issue 11 from the attacker's side (DESIGN.md §3 "Users", §5
//! "Rate limiting"): the password-change form is no guessing oracle, nobody
//! locks anyone else out, and the in-process limits stay bounded. Client
//! addresses are simulated with `X-Forwarded-For` behind a trusted
//! 127.0.0.1; windows are seconds long so no test sleeps for long.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{Backend, PASSWORD, Reply, Stack, TestApp};

const WRONG: &str = "not-the-password-at-all";
const VICTIM: &str = "198.51.100.7";
const ATTACKER: &str = "203.0.113.66";

fn config(rate_limit: &str) -> String {
    format!(
        "trusted_proxies = [\"127.0.0.1/32\"]\n[redis]\ntimeout = \"200ms\"\n[database]\ntimeout = \"500ms\"\n[rate_limit]\n{rate_limit}"
    )
}

async fn login_from(app: &TestApp, address: &str, login: &str, password: &str) -> Reply {
    app.call_with(
        Method::POST,
        "/api/v1/auth/login",
        &[("x-forwarded-for", address)],
        Some(json!({"login": login, "password": password})),
    )
    .await
}

async fn change_password(app: &TestApp, access: &str, current: &str) -> Reply {
    let body = json!({"current_password": current, "new_password": "a-brand-new-secret"});
    app.call(
        Method::PATCH,
        "/api/v1/users/me/password",
        Some(access),
        Some(body),
    )
    .await
}

fn retry_after(reply: &Reply) -> u64 {
    reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Audit events of `kind` since `since`, polled: they are written in the
/// background.
async fn audited(app: &TestApp, admin: &str, since: i64, kind: &str, at_least: usize) -> usize {
    let started = Instant::now();
    loop {
        let reply = app
            .get(
                &format!("/api/v1/admin/audit?since={since}&limit=1000"),
                Some(admin),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let n = reply.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count();
        if n >= at_least || started.elapsed() > Duration::from_secs(5) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stolen session guesses the current password: it is limited like a
/// login (same pair lock), audited, and once locked even the right
/// password waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_guessing_locks_and_is_audited() {
    let stack = Stack::start_with(
        Backend::PostgresRedis,
        &config("login_failures_per_account = \"3/15min\"\n"),
    )
    .await;
    let app = &stack.app;
    let since = holdfast::auth::now() - 1;
    let admin = app.admin_token().await;
    let stolen = app.user("vic").await;
    for _ in 0..3 {
        change_password(app, &stolen.access, WRONG)
            .await
            .expect_error(401, "AUTH001");
    }
    change_password(app, &stolen.access, WRONG)
        .await
        .expect_error(429, "RATE001");
    let right = change_password(app, &stolen.access, PASSWORD).await;
    right.expect_error(429, "RATE001");
    assert!(retry_after(&right) > 0, "Retry-After is set");
    // The same lock as login's, from the same address.
    app.login("vic", PASSWORD)
        .await
        .expect_error(429, "RATE001");
    assert_eq!(
        audited(app, &admin, since, "password_change_failed", 3).await,
        3
    );
    assert!(audited(app, &admin, since, "account_locked", 1).await >= 1);
}

/// Password change counts failures, so with Redis down it fails closed
/// like login (DESIGN.md §4) — never an unlimited oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_fails_closed_with_redis_down() {
    let stack = Stack::start_with(Backend::PostgresRedis, &config("")).await;
    let app = &stack.app;
    let tokens = app.user("ria").await;
    let redis = stack.redis.as_ref().expect("redis");
    redis.pause();
    for current in [WRONG, PASSWORD] {
        let reply = change_password(app, &tokens.access, current).await;
        reply.expect_error(503, "SVC001");
        assert_eq!(reply.body["error"]["details"]["dependency"], "rate_limiter");
    }
    redis.resume();
}

/// A leaked API key — even with scope `users` — can neither change the
/// password nor delete the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_cannot_change_the_password_or_delete_the_account() {
    let stack = Stack::start_with(Backend::PostgresRedis, &config("")).await;
    let app = &stack.app;
    let owner = app.user("kay").await;
    let (_, key) = app.api_key(&owner.access, &["users"]).await;
    let header = [("x-api-key", key.as_str())];
    let as_key = |method: Method, path: &'static str, body: Option<Value>| {
        app.call_with(method, path, &header, body)
    };
    let body = json!({"current_password": PASSWORD, "new_password": "a-brand-new-secret"});
    as_key(Method::PATCH, "/api/v1/users/me/password", Some(body))
        .await
        .expect_error(403, "AUTH005");
    as_key(Method::DELETE, "/api/v1/users/me", None)
        .await
        .expect_error(403, "AUTH005");
    // The key itself is good, and nothing changed.
    let me = as_key(Method::GET, "/api/v1/users/me", None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["status"], "active");
    assert_eq!(app.login("kay", PASSWORD).await.status, StatusCode::OK);
}

/// Guesses from the attacker's address lock that address only, for at
/// most `lockout_max` whatever the window; the owner logs in from theirs.
async fn attacker_cannot_lock_the_victim_out(backend: Backend) {
    let limits = "login_failures_per_account = \"3/1h\"\nlockout_max = \"30s\"\nlogin_failures_account_ceiling = \"100/30s\"\n";
    let stack = Stack::start_with(backend, &config(limits)).await;
    let app = &stack.app;
    app.register("val@example.com", "val").await;
    for login in ["val", "VAL", "val@example.com"] {
        login_from(app, ATTACKER, login, WRONG)
            .await
            .expect_error(401, "AUTH001");
    }
    let locked = login_from(app, ATTACKER, "val", PASSWORD).await;
    locked.expect_error(429, "RATE001");
    let retry = retry_after(&locked);
    assert!((1..=30).contains(&retry), "capped by lockout_max: {retry}");
    let reply = login_from(app, VICTIM, "val", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_lock_the_victim_out_from_their_address() {
    attacker_cannot_lock_the_victim_out(Backend::PostgresRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_lock_the_victim_out_embedded() {
    attacker_cannot_lock_the_victim_out(Backend::Embedded).await;
}

/// Many addresses failing on one account reach the ceiling: strangers are
/// throttled (Retry-After within lockout_max, ending when the failures age
/// out), but not an address that logged into the account before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_throttles_strangers_but_not_known_addresses() {
    let limits = "login_failures_per_account = \"2/5s\"\nlogin_failures_account_ceiling = \"4/5s\"\nlockout_max = \"5s\"\n";
    let stack = Stack::start_with(Backend::PostgresRedis, &config(limits)).await;
    let app = &stack.app;
    app.register("cal@example.com", "cal").await;
    let first = login_from(app, VICTIM, "cal", PASSWORD).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let botnet = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"];
    for ip in botnet {
        login_from(app, ip, "cal", WRONG)
            .await
            .expect_error(401, "AUTH001");
    }
    let started = Instant::now();
    let stranger = login_from(app, "192.0.2.200", "cal", PASSWORD).await;
    stranger.expect_error(429, "RATE001");
    let retry = retry_after(&stranger);
    assert!((1..=5).contains(&retry), "within lockout_max: {retry}");
    let known = login_from(app, VICTIM, "cal", PASSWORD).await;
    assert_eq!(known.status, StatusCode::OK, "{}", known.body);
    // Refused attempts do not extend it: once the failures age out, it ends.
    tokio::time::sleep(Duration::from_secs(retry + 1).saturating_sub(started.elapsed())).await;
    let later = login_from(app, "192.0.2.200", "cal", PASSWORD).await;
    assert_eq!(later.status, StatusCode::OK, "{}", later.body);
}

/// A login no account can have is refused before it becomes a limiter key:
/// it neither costs the per-IP budget nor reaches the account limiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_longer_than_254_characters_are_refused_before_any_limiter() {
    let stack = Stack::start_with(Backend::Embedded, &config("login_per_ip = \"2/min\"\n")).await;
    let app = &stack.app;
    app.register("lee@example.com", "lee").await;
    let long = "x".repeat(60_000);
    for _ in 0..5 {
        login_from(app, ATTACKER, &long, WRONG)
            .await
            .expect_error(422, "VAL001");
    }
    login_from(app, ATTACKER, &"y".repeat(255), WRONG)
        .await
        .expect_error(422, "VAL001");
    login_from(app, ATTACKER, &"y".repeat(254), WRONG)
        .await
        .expect_error(401, "AUTH001");
    let reply = login_from(app, ATTACKER, "lee", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

async fn verify_key_from(app: &TestApp, address: &str, key: &str) -> Reply {
    app.call_with(
        Method::GET,
        "/api/v1/auth/verify",
        &[("x-api-key", key), ("x-forwarded-for", address)],
        None,
    )
    .await
}

fn random_key(n: usize) -> String {
    format!("hf_{:012x}_{}", 0xdead_0000 + n, "ab".repeat(32))
}

/// Random well-formed keys cost a database query each: past the limit an
/// address is refused without one (even with PostgreSQL hung, the answer
/// is an immediate 429), while keys from other addresses keep working —
/// with Redis down too, as the limit is per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_api_key_lookups_are_limited_per_address() {
    let mut stack = Stack::start_with(
        Backend::PostgresRedis,
        &config("api_key_failures_per_ip = \"3/min\"\n"),
    )
    .await;
    let owner = stack.app.user("ada").await;
    let (_, key) = stack.app.api_key(&owner.access, &["users"]).await;
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;
    // Ten guesses at once: at most three reach the database.
    let guesses: Vec<_> = (0..10)
        .map(|n| {
            let request = app
                .client
                .get(app.url("/api/v1/auth/verify"))
                .header("x-api-key", random_key(n))
                .header("x-forwarded-for", ATTACKER);
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.expect("join").unwrap_or(0));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    // The attacker's address is refused even a real key it never used.
    let refused = verify_key_from(app, ATTACKER, &key).await;
    refused.expect_error(429, "RATE001");
    assert!(retry_after(&refused) > 0);
    // Another address: the key works (Redis is down; the limit is local).
    let ok = verify_key_from(app, VICTIM, &key).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.body);
    // Refused without a store lookup: with PostgreSQL hung a lookup would
    // answer 503 after its timeout.
    stack.pg.as_ref().expect("pg").pause();
    verify_key_from(app, ATTACKER, &random_key(99))
        .await
        .expect_error(429, "RATE001");
    stack.pg.as_ref().expect("pg").resume();
}
