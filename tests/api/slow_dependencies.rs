//! Slow and blackholed networks, through the test TCP proxy: calls that
//! answer, but slower than `slow_call_duration`, open the breaker by the
//! slow-call rate; a blackholed connection ends at the timeout.

use crate::support;

use reqwest::StatusCode;
use std::time::{Duration, Instant};
use support::procs::{Postgres, Redis};
use support::proxy::Proxy;
use support::{PASSWORD, TestApp};

struct Proxied {
    app: TestApp,
    proxy: Proxy,
    _servers: (Postgres, Redis),
    _data: tempfile::TempDir,
}

/// holdfast → proxy → private PostgreSQL; Redis direct.
async fn proxied(extra: &str) -> Proxied {
    let (pg, redis) = tokio::task::spawn_blocking(|| (Postgres::start(), Redis::start()))
        .await
        .expect("servers");
    let proxy = Proxy::start(pg.port).await;
    let data = tempfile::tempdir().expect("tempdir");
    let path = data.path().join("holdfast.toml");
    std::fs::write(
        &path,
        format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n{extra}",
            data.path().display()
        ),
    )
    .expect("config");
    let db = format!("postgres://holdfast@127.0.0.1:{}/postgres", proxy.port);
    let app = TestApp::spawn(&path, Some((db, redis.url()))).await;
    Proxied {
        app,
        proxy,
        _servers: (pg, redis),
        _data: data,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_open_the_breaker_by_their_rate() {
    let config = r#"
[database]
timeout = "3s"
[breaker.database]
minimum_calls = 4
slow_call_duration = "150ms"
slow_call_rate_threshold = 80
open_wait = "30s"
"#;
    let p = proxied(config).await;
    p.app.user("sid").await;
    // A fresh window: the setup's fast calls would dilute the rate.
    p.app.state.guards()[0].breaker().reset();
    p.proxy.set_latency(Duration::from_millis(200));

    // Slow but successful: answered (not failed) until the rate trips.
    let mut opened = false;
    for _ in 0..12 {
        let reply = p.app.login("sid", "wrong-password-here").await;
        if reply.code() == "SVC001" {
            opened = true;
            break;
        }
        reply.expect_error(401, "AUTH001");
    }
    assert!(opened, "slow calls opened the breaker");
    let health = p.app.get("/api/v1/health", None).await;
    assert_eq!(
        health.body["components"]["database"]["circuit_state"],
        "open"
    );
    let started = Instant::now();
    p.app
        .login("sid", PASSWORD)
        .await
        .expect_error(503, "SVC001");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_database_costs_the_timeout_then_nothing() {
    let config = r#"
[database]
timeout = "400ms"
[breaker]
minimum_calls = 3
open_wait = "30s"
"#;
    let p = proxied(config).await;
    let tokens = p.app.user("tia").await;
    p.app.state.guards()[0].breaker().reset();
    p.proxy.set_blackhole(true);
    let mut took = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        p.app
            .login("tia", PASSWORD)
            .await
            .expect_error(503, "SVC001");
        took.push(started.elapsed());
    }
    assert!(
        took.iter().all(|t| *t < Duration::from_millis(400 + 700)),
        "never beyond the timeout: {took:?}"
    );
    assert!(
        took[5] < Duration::from_millis(250),
        "open by now: {took:?}"
    );
    assert_eq!(
        p.app.verify(&tokens.access).await.status,
        StatusCode::NO_CONTENT
    );
}
