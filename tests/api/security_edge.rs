//! The edges of the service, from the attacker's side (security issue 11,
//! items 5, 9, 10): a client behind a trusted proxy cannot pick its own
//! rate-limit bucket; the embedded mode's files are owner-only; public
//! health names failures without hosts or URLs; and no bad input, in any
//! string field of any endpoint, is ever answered with a 500.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use support::edge::{assert_contract_answer, bad_bodies, bad_json_values};
use support::{Backend, PASSWORD, Stack, TestApp};

/// Behind a proxy at 127.0.0.1, three logins a minute per client address.
const BEHIND_PROXY: &str =
    "trusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nlogin_per_ip = \"3/min\"\n";

/// A failed login for a fresh (unknown) account, so that only the per-IP
/// limit can answer 429.
async fn login_via(app: &TestApp, n: usize, forwarded: &[&str]) -> StatusCode {
    let mut request = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"login": format!("ghost{n}"), "password": PASSWORD}));
    for value in forwarded {
        request = request.header("x-forwarded-for", *value);
    }
    request.send().await.expect("login").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_entries_do_not_leave_the_clients_bucket() {
    let stack = Stack::start_with(Backend::Embedded, BEHIND_PROXY).await;
    let app = &stack.app;
    // The proxy appends the address it saw (with its port, as some do);
    // everything left of it is the client's own invention, different each
    // time: other addresses, garbage, ports, extra header instances.
    let attempts: [&[&str]; 4] = [
        &["1.1.1.1, 203.0.113.7:50001"],
        &["bogus, 203.0.113.7:50002"],
        &["[2001:db8::66]:443", "203.0.113.7:50003"],
        &["::ffff:9.9.9.9, 203.0.113.7"],
    ];
    for (n, forwarded) in attempts[..3].iter().enumerate() {
        assert_eq!(login_via(app, n, forwarded).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_via(app, 3, attempts[3]).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the fourth login from 203.0.113.7 got through a 3/min limit"
    );
    // Another client behind the same proxy has its own bucket.
    assert_eq!(
        login_via(app, 4, &["1.1.1.1, 203.0.113.8:4711"]).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparseable_entry_ends_the_walk_at_the_proxy() {
    let stack = Stack::start_with(Backend::Embedded, BEHIND_PROXY).await;
    let app = &stack.app;
    // The client's own header reaches us unchanged (a proxy that passes it
    // through): a fresh address left of garbage must not become its bucket.
    for n in 0..3 {
        let forwarded = format!("198.51.100.{n}, not-an-address");
        assert_eq!(
            login_via(app, n, &[&forwarded]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let forwarded = "198.51.100.99, not-an-address";
    assert_eq!(
        login_via(app, 3, &[forwarded]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_addresses_of_one_64_share_a_bucket() {
    let stack = Stack::start_with(Backend::Embedded, BEHIND_PROXY).await;
    let app = &stack.app;
    for n in 1..=3 {
        let address = format!("2001:db8:1:2::{n:x}");
        assert_eq!(
            login_via(app, n, &[&address]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_via(app, 4, &["[2001:db8:1:2:ffff:ffff:ffff:ffff]:443"]).await,
        StatusCode::TOO_MANY_REQUESTS,
        "a fresh address in the same /64 got a fresh bucket"
    );
    assert_eq!(
        login_via(app, 5, &["2001:db8:1:3::1"]).await,
        StatusCode::UNAUTHORIZED,
        "the next /64 is another client"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_data_is_readable_by_its_owner_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("state/holdfast-data");
    let config = tmp.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .expect("config");
    let app = TestApp::spawn(&config, None).await;
    // Writes go through the WAL, so -wal and -shm exist now.
    app.user("alice").await;
    assert_eq!(mode(&data), 0o700, "data folder");
    assert_eq!(
        mode(&tmp.path().join("state")),
        0o700,
        "its parent, created"
    );
    for file in [
        "holdfast.db",
        "holdfast.db-wal",
        "holdfast.db-shm",
        "master.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// Public health: each component's `last_failure` names a kind, and no
/// component's text holds a URL, an address or a port.
fn assert_health_names_kinds_only(health: &Value, component: &str) {
    let text = health["components"].to_string();
    for leak in [
        "127.0.0.1",
        "postgres://",
        "http://",
        "://",
        "localhost",
        "os error",
    ] {
        assert!(!text.contains(leak), "health shows {leak:?}: {text}");
    }
    let last = health["components"][component]["last_failure"]
        .as_str()
        .unwrap_or_else(|| panic!("{component} has no last_failure: {text}"));
    let kinds = [
        "timeout",
        "refused",
        "reset",
        "tls",
        "unreachable",
        "http 5xx",
        "http status",
        "invalid response",
        "pool exhausted",
        "server unavailable",
        "queue full",
        "error",
    ];
    assert!(
        kinds.iter().any(|k| last.ends_with(&format!(": {k}"))),
        "{component}: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_a_dead_databases_failure_by_kind() {
    let mut stack = Stack::start_with(Backend::PostgresRedis, support::SHORT_BREAKERS).await;
    let admin = stack.app.admin_token().await;
    stack.pg.as_mut().expect("pg").kill();
    stack.app.fail_database_until_open().await;
    let health = stack.app.get("/api/v1/health", None).await;
    assert_health_names_kinds_only(&health.body, "database");
    // Operators still get the whole story.
    let breakers = stack
        .app
        .get("/api/v1/admin/circuit-breakers", Some(&admin))
        .await;
    assert_eq!(breakers.status, StatusCode::OK, "{}", breakers.body);
    let reason = &breakers.body["circuit_breakers"]["database"]["last_failure"]["reason"];
    assert!(
        reason.as_str().is_some_and(|r| !r.is_empty()),
        "{}",
        breakers.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_an_unreachable_idps_failure_by_kind() {
    let port = support::procs::free_port();
    let config = format!(
        "[[idp]]\nname = \"upstream\"\nissuer = \"https://idp.test/\"\njwks_url = \"http://127.0.0.1:{port}/jwks\"\naudience = \"holdfast-tests\"\ntimeout = \"500ms\"\n"
    );
    let stack = Stack::start_with(Backend::Embedded, &config).await;
    let health = stack.app.get("/api/v1/health", None).await;
    assert_health_names_kinds_only(&health.body, "idp:upstream");
    let last = health.body["components"]["idp:upstream"]["last_failure"].to_string();
    assert!(last.contains("refused"), "{last}");
}

#[path = "security_edge/input.rs"]
mod input;
