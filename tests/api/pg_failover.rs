//! PostgreSQL failover (DESIGN.md §4, issue 14 item 4): `[database] url`
//! naming a primary and its streaming standby. The primary SIGKILLed is
//! read-only mode; the standby promoted with `pg_ctl promote` takes the
//! writes without a restart, and what was acknowledged before is still
//! there. A URL whose only host is a standby (a proxy after a failover)
//! answers writes 503 SVC002, never 500, and keeps serving.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};
use support::procs::{Postgres, Redis};
use support::{TestApp, Tokens};

/// A primary, its standby and Redis, with breakers that probe again
/// within 2 s.
struct FailoverStack {
    primary: Postgres,
    standby: Postgres,
    redis: Redis,
    data: tempfile::TempDir,
}

impl FailoverStack {
    async fn start() -> Self {
        let (primary, redis) = tokio::task::spawn_blocking(|| (Postgres::start(), Redis::start()))
            .await
            .expect("servers");
        let standby = tokio::task::block_in_place(|| Postgres::start_replica(&primary));
        let data = tempfile::tempdir().expect("tempdir");
        Self {
            primary,
            standby,
            redis,
            data,
        }
    }

    /// A config whose `[database] url` is `url`; its own file, the shared
    /// data dir (one master key for every app of the test).
    async fn app(&self, name: &str, url: &str) -> TestApp {
        let path = self.data.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n\
                 [database]\nurl = \"{url}\"\ntimeout = \"500ms\"\n\
                 [redis]\nurl = \"{}\"\n\
                 [breaker]\nminimum_calls = 3\nopen_wait = \"1s\"\nopen_wait_max = \"2s\"\nhalf_open_permits = 1\n",
                self.data.path().display(),
                self.redis.url()
            ),
        )
        .expect("config");
        TestApp::spawn(&path, None).await
    }

    /// Both hosts in libpq's list form, the primary first.
    fn two_hosts(&self) -> String {
        format!(
            "postgres://holdfast@127.0.0.1:{},127.0.0.1:{}/postgres",
            self.primary.port, self.standby.port
        )
    }

    /// Waits until the standby has replayed everything the primary wrote.
    async fn await_standby(&self) {
        let mut primary = sqlx::PgConnection::connect(&self.primary.url())
            .await
            .expect("primary");
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut primary)
            .await
            .expect("lsn");
        let mut standby = sqlx::PgConnection::connect(&self.standby.url())
            .await
            .expect("standby");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let caught_up: bool =
                sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                    .bind(&lsn)
                    .fetch_one(&mut standby)
                    .await
                    .expect("replay lsn");
            if caught_up {
                return;
            }
            assert!(Instant::now() < deadline, "standby never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls health (whose pings feed the breakers) until `mode`.
async fn await_mode(app: &TestApp, mode: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = app.get("/api/v1/health", None).await;
        if health.body["mode"] == mode {
            return;
        }
        assert!(Instant::now() < deadline, "never {mode}: {}", health.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rename(app: &TestApp, access: &str, to: &str) -> support::Reply {
    app.call(
        Method::PUT,
        "/api/v1/users/me",
        Some(access),
        Some(json!({"username": to})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_takes_the_writes_without_a_restart() {
    let mut stack = FailoverStack::start().await;
    let app = stack.app("two-hosts", &stack.two_hosts()).await;
    let before = app.user("fay").await;
    let reply = app.refresh(&before.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["components"]["database"]["primary_host"], 1);
    assert_eq!(health.body["mode"], "normal", "{}", health.body);
    stack.await_standby().await;

    stack.primary.kill();
    let during = app.login_ok("fay").await;
    rename(&app, &during.access, "fay2")
        .await
        .expect_error(503, "SVC002");
    await_mode(&app, "read_only").await;

    tokio::task::block_in_place(|| stack.standby.promote());
    // The breaker probes within open_wait_max (2 s), every probe asks the
    // hosts their roles; the recovery prober ticks every 500 ms.
    let promoted = Instant::now();
    loop {
        let reply = rename(&app, &during.access, "fay2").await;
        if reply.status == StatusCode::OK {
            break;
        }
        reply.expect_error(503, "SVC002");
        assert!(
            promoted.elapsed() < Duration::from_secs(8),
            "writes never moved to the promoted standby"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.body["mode"], "normal", "{}", health.body);
    let database = &health.body["components"]["database"];
    assert_eq!(database["primary_host"], 2, "{}", health.body);
    assert_eq!(database["healthy"], true, "{}", health.body);
    assert_eq!(database["circuit_state"], "closed", "{}", health.body);

    // Acknowledged before the failover: the rotation and the user.
    let reply = app.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let me = app.get("/api/v1/users/me", Some(&during.access)).await;
    assert_eq!(me.body["username"], "fay2", "{}", me.body);
    app.register("gus@example.com", "gus").await;
    app.login_ok("gus").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_naming_only_a_standby_is_read_only_not_a_crash() {
    let stack = FailoverStack::start().await;
    let setup = stack.app("primary", &stack.primary.url()).await;
    setup.user("ivy").await;
    stack.await_standby().await;
    drop(setup);

    // As behind a proxy that still points at the old standby.
    let app = stack.app("standby", &stack.standby.url()).await;
    let session = app.login_ok("ivy").await;
    for _ in 0..3 {
        rename(&app, &session.access, "ivy2")
            .await
            .expect_error(503, "SVC002");
    }
    app.register("jon@example.com", "jon")
        .await
        .expect_error(503, "SVC002");
    let me = app.get("/api/v1/users/me", Some(&session.access)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["username"], "ivy");
    let health = app.get("/api/v1/health", None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["status"], "degraded", "{}", health.body);
    assert_eq!(health.body["components"]["database"]["healthy"], false);
    // What the operator is told: writes are refused, so read-only mode.
    assert_eq!(health.body["mode"], "read_only", "{}", health.body);
    let live = app.get("/livez", None).await;
    assert_eq!(live.status, StatusCode::OK);
    let verify = app.verify(&session.access).await;
    assert_eq!(verify.status, StatusCode::NO_CONTENT);
}
