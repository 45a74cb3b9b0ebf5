//! Break-glass tokens end to end: `holdfast emergency keygen` and `issue`
//! from the real binary, then used with PostgreSQL and Redis both down.

use crate::support;

use reqwest::StatusCode;
use std::path::Path;
use std::process::Command;
use support::{Backend, Stack};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

fn holdfast(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("HOLDFAST_ISSUER", "http://holdfast.test")
        .env("HOLDFAST_AUDIENCE", "holdfast-tests")
        .env("HOLDFAST_LOG", "error")
        .output()
        .expect("run holdfast")
}

fn keygen(dir: &Path) {
    let out = holdfast(&["emergency", "keygen", "--out", dir.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn issue(dir: &Path, ttl: &str) -> std::process::Output {
    let key = dir.join("emergency.key");
    holdfast(&[
        "emergency",
        "issue",
        "--key",
        key.to_str().expect("utf8"),
        "--reason",
        "INC-7: database down",
        "--ttl",
        ttl,
        "--scope",
        "admin",
    ])
}

/// `keygen` writes an owner-only private key; `issue` refuses a TTL over
/// an hour and prints a 30-minute token.
fn keygen_and_issue(keys: &Path) -> String {
    keygen(keys);
    let mode = std::fs::metadata(keys.join("emergency.key")).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600));
    assert!(!issue(keys, "2h").status.success(), "TTL over 1h refused");
    let out = issue(keys, "30m");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_tokens_work_with_both_stores_down() {
    let keys = tempfile::tempdir().expect("tempdir");
    let token = keygen_and_issue(keys.path());

    let config = format!(
        "[emergency]\npublic_key_file = \"{}\"\n[breaker]\nopen_wait = \"1s\"\nopen_wait_max = \"2s\"\n",
        keys.path().join("emergency.pub").display()
    );
    let mut stack = Stack::start_with(Backend::PostgresRedis, &config).await;
    stack.pg.as_mut().expect("pg").kill();
    stack.redis.as_mut().expect("redis").kill();
    let app = &stack.app;

    let reply = app.verify(&token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("x-auth-method"), Some("emergency"));
    assert_eq!(reply.header("x-auth-roles"), Some("admin"));
    let breakers = app
        .get("/api/v1/admin/circuit-breakers", Some(&token))
        .await;
    assert_eq!(breakers.status, StatusCode::OK, "{}", breakers.body);
    // Not a user: the user endpoints refuse it (authenticated, not permitted).
    app.get("/api/v1/users/me", Some(&token))
        .await
        .expect_error(403, "AUTH005");

    // A token from another key pair is refused.
    let other = tempfile::tempdir().expect("tempdir");
    keygen(other.path());
    let forged = String::from_utf8_lossy(&issue(other.path(), "10m").stdout)
        .trim()
        .to_string();
    app.verify(&forged).await.expect_error(401, "AUTH003");

    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics
            .body
            .as_str()
            .is_some_and(|m| m.contains("holdfast_emergency_token_uses_total")),
        "every use is counted"
    );
    let text = metrics.body.as_str().unwrap_or("");
    for outcome in [
        r#"holdfast_auth_outcomes_total{method="emergency",code="ok"}"#,
        r#"holdfast_auth_outcomes_total{method="emergency",code="AUTH003"}"#,
    ] {
        assert!(text.contains(outcome), "{outcome} missing");
    }
    uses_reach_the_audit_log_once_postgres_is_back(&mut stack, &token).await;
}

/// Each use went to the audit log too, buffered while PostgreSQL was
/// down and written once it is back.
async fn uses_reach_the_audit_log_once_postgres_is_back(stack: &mut Stack, token: &str) {
    // Uses from now on are at or after `restarted`; only earlier ones count.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let restarted = holdfast::auth::now();
    stack.pg.as_mut().expect("pg").restart();
    let app = &stack.app;
    let before_restart = |e: &serde_json::Value| {
        e["at"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|t| t.unix_timestamp() < restarted)
    };
    let mut found = false;
    for _ in 0..100 {
        let audit = app.get("/api/v1/admin/audit", Some(token)).await;
        if audit.body["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["kind"] == "emergency_token_used" && before_restart(e))
        }) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(found, "emergency use reached the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_or_unconfigured_emergency_access_refuses_the_token() {
    let keys = tempfile::tempdir().expect("tempdir");
    keygen(keys.path());
    let token = String::from_utf8_lossy(&issue(keys.path(), "10m").stdout)
        .trim()
        .to_string();
    let disabled = format!(
        "[emergency]\npublic_key_file = \"{}\"\nenabled = false\n",
        keys.path().join("emergency.pub").display()
    );
    for config in [disabled.as_str(), ""] {
        let stack = Stack::start_with(Backend::Embedded, config).await;
        stack.app.verify(&token).await.expect_error(401, "AUTH003");
        stack
            .app
            .get("/api/v1/admin/circuit-breakers", Some(&token))
            .await
            .expect_error(401, "AUTH003");
    }
}
