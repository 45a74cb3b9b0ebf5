//! What an operator meets: short token lifetimes, `HOLDFAST_*` variables
//! that are not configuration, the admin enable / logout-all commands,
//! `master-key rotate`, and starting while PostgreSQL is down.

mod support;

use reqwest::StatusCode;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{Backend, Stack};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// The binary with a clean `HOLDFAST_*` environment, run in `dir`.
fn holdfast(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).env("HOLDFAST_LOG", "warn");
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_one_second_access_ttl_stops_verifying_within_seconds() {
    let stack = Stack::start_with(Backend::Embedded, "[tokens]\naccess_ttl = \"1s\"\n").await;
    let tokens = stack.app.user("brief").await;
    let issued = Instant::now();
    // Expired after 1 s plus at most 1 s of leeway (clamped from 30 s) and
    // a second of rounding; the bound leaves room for a loaded machine but
    // is far below the unclamped 31 s.
    loop {
        let reply = stack.app.verify(&tokens.access).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply.code(), "AUTH002", "{}", reply.body);
            break;
        }
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
        assert!(
            issued.elapsed() < Duration::from_secs(10),
            "a 1 s token still verifies after {:?}",
            issued.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(issued.elapsed() >= Duration::from_millis(900));
    // New logins keep working at this TTL.
    let again = stack.app.login_ok("brief").await;
    assert_eq!(
        stack.app.verify(&again.access).await.status,
        StatusCode::NO_CONTENT
    );
}

#[test]
fn access_ttl_outside_one_second_to_a_day_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("holdfast.toml");
    for ttl in ["0s", "25h", "500ms"] {
        std::fs::write(&config, format!("[tokens]\naccess_ttl = \"{ttl}\"\n")).expect("write");
        let out = holdfast(dir.path())
            .args(["--config", config.to_str().expect("utf8"), "serve"])
            .output()
            .expect("run");
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{ttl}: {text}");
        assert!(
            text.contains("tokens.access_ttl") && text.contains("between 1s and 24h"),
            "{ttl}: {text}"
        );
    }
    for ttl in ["1s", "24h"] {
        std::fs::write(
            &config,
            format!("[tokens]\naccess_ttl = \"{ttl}\"\nrefresh_ttl = \"30d\"\n"),
        )
        .expect("write");
        let out = holdfast(dir.path())
            .args(["--config", config.to_str().expect("utf8"), "migrate"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{ttl}: {}", stderr(&out));
    }
}
