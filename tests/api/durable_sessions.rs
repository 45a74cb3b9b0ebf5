//! Issue 14, items 8 and 3, as an attacker and an operator meet them:
//! a Redis blip (SIGSTOP, data kept) must log nobody out and must not
//! resurrect a used refresh token; and writes acknowledged while
//! PostgreSQL is down must survive the node that took them being
//! SIGKILLed — a real `holdfast serve` process, killed by PID.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::procs::{Postgres, Redis, free_port};
use support::{Backend, PASSWORD, Reply, Stack, TestApp, Tokens};

/// Short timeouts and breakers that probe again after 1 s, so a resumed
/// store is used again within seconds.
const CONFIG: &str = support::FAST_RECOVERY;

/// Waits (bounded) until health is `healthy`: both breakers closed, so
/// the next calls reach both stores again.
async fn healthy(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = app.get("/api/v1/health", None).await;
        if health.body["status"] == "healthy" {
            return;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", health.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Redis paused, a refresh served by PostgreSQL, Redis resumed with its
/// stale copy: the client's new token still works (issue 14 item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_blip_logs_nobody_out() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;
    let tokens = app.user("amy").await;
    let redis = stack.redis.as_ref().expect("redis");
    redis.pause();
    let reply = app.refresh(&tokens.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    redis.resume();
    healthy(app).await;
    // Redis still holds the session at the hash before the blip.
    let reply = app.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let again = Tokens::from(&reply.body);
    // The cache was repaired: the next rotation is the cache's own.
    let reply = app.refresh(&again.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        app.verify(&Tokens::from(&reply.body).access).await.status,
        StatusCode::NO_CONTENT
    );
}

/// The other direction: the stale copy in Redis still holds the hash the
/// client rotated away from during the blip. Presenting it is reuse (the
/// session ends), never a fresh start; and a logout made during the blip
/// is not undone by the stale live copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_redis_copy_resurrects_nothing() {
    let stack = Stack::start_with(Backend::PostgresRedis, CONFIG).await;
    let app = &stack.app;
    let stolen = app.user("ben").await;
    let gone = app.login_ok("ben").await;
    let redis = stack.redis.as_ref().expect("redis");
    redis.pause();
    let reply = app.refresh(&stolen.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    let reply = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&gone.access),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    redis.resume();
    healthy(app).await;
    app.refresh(&gone.refresh)
        .await
        .expect_error(401, "AUTH004");
    app.refresh(&stolen.refresh)
        .await
        .expect_error(401, "AUTH007");
    // Reuse ended the whole session, the client's newest token included.
    app.refresh(&rotated.refresh)
        .await
        .expect_error(401, "AUTH004");
}

/// A `holdfast serve` process, killed with SIGKILL (no graceful shutdown)
/// on `kill` or drop.
struct Node {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Node {
    /// Starts `serve` in `dir` (its data dir, so the master key survives
    /// a restart) and waits for its listening banner.
    fn start(dir: &Path, config: &Path, port: u16) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        for (key, _) in std::env::vars() {
            if key.starts_with("HOLDFAST_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .current_dir(dir)
            .env("HOLDFAST_LOG", "warn")
            .args(["--config", config.to_str().expect("utf8"), "serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let node = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        // Drained for the process's whole life: a closed pipe would make
        // its next line an error.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("serve never said it was listening");
        node
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("request")).await
    }

    async fn login(&self, name: &str) -> Tokens {
        let body = json!({"login": name, "password": PASSWORD});
        let reply = self
            .call(Method::POST, "/api/v1/auth/login", None, body)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        Tokens::from(&reply.body)
    }

    async fn refresh(&self, refresh: &str) -> Reply {
        let body = json!({"refresh_token": refresh});
        self.call(Method::POST, "/api/v1/auth/refresh", None, body)
            .await
    }

    async fn verify(&self, access: &str) -> StatusCode {
        self.call(
            Method::GET,
            "/api/v1/auth/verify",
            Some(access),
            Value::Null,
        )
        .await
        .status
    }

    /// Waits (bounded) until the node is ready and the deferred and outbox
    /// streams in `redis` are empty: every write acknowledged during the
    /// outage has been replayed into PostgreSQL.
    async fn settled(&self, redis: &Redis) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.call(Method::GET, "/readyz", None, Value::Null).await;
            let mut backlog = String::new();
            for stream in ["hf:deferred", "hf:outbox:audit", "hf:outbox:invalidations"] {
                let len = Command::new("redis-cli")
                    .args(["-p", &redis.port.to_string(), "XLEN", stream])
                    .output()
                    .expect("redis-cli");
                backlog += String::from_utf8_lossy(&len.stdout).trim();
            }
            if ready.status == StatusCode::OK && backlog == "000" {
                return;
            }
            assert!(Instant::now() < deadline, "never settled: {backlog}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 14 item 3 as an operator tried it: PostgreSQL paused, one
/// session refreshed and another logged out, the node SIGKILLed and
/// restarted, PostgreSQL resumed. The logout holds after the restart, and
/// with Redis emptied afterwards PostgreSQL has both writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_node_killed_during_a_postgres_outage() {
    let (pg, mut redis) = tokio::task::spawn_blocking(|| (Postgres::start(), Redis::start()))
        .await
        .expect("servers");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, &pg, &redis);
    let node = Node::start(dir.path(), &config, port);
    let body = json!({"email": "cyd@example.com", "username": "cyd", "password": PASSWORD});
    let reply = node
        .call(Method::POST, "/api/v1/auth/register", None, body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let kept = node.login("cyd").await;
    let ended = node.login("cyd").await;
    let stolen = node.login("cyd").await;

    pg.pause();
    // A stolen refresh token replayed during the outage: the session ends,
    // and its audit event and invalidation row wait in Redis, not in the
    // node's memory.
    let reply = node.refresh(&stolen.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    node.refresh(&stolen.refresh)
        .await
        .expect_error(401, "AUTH007");
    let reply = node.refresh(&kept.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    let reply = node
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&ended.access),
            Value::Null,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    node.kill();
    let node = Node::start(dir.path(), &config, port);
    pg.resume();
    node.settled(&redis).await;
    assert_eq!(node.verify(&ended.access).await, StatusCode::UNAUTHORIZED);

    assert_eq!(node.verify(&stolen.access).await, StatusCode::UNAUTHORIZED);

    // Only PostgreSQL is left to know the writes.
    redis.restart();
    node.kill();
    let node = Node::start(dir.path(), &config, port);
    node.settled(&redis).await;
    assert_eq!(node.verify(&ended.access).await, StatusCode::UNAUTHORIZED);
    node.refresh(&ended.refresh)
        .await
        .expect_error(401, "AUTH004");
    let reply = node.refresh(&rotated.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    node.refresh(&kept.refresh)
        .await
        .expect_error(401, "AUTH007");
    assert_eq!(node.verify(&stolen.access).await, StatusCode::UNAUTHORIZED);
    outbox_rows_reached_postgres(&pg).await;
}

/// The outboxes' rows made it too, from the spill streams.
async fn outbox_rows_reached_postgres(pg: &Postgres) {
    let reuse = count(
        pg,
        "SELECT count(*) FROM audit_log WHERE kind = 'refresh_reuse'",
    )
    .await;
    // The stolen token's reuse during the outage and the kept session's
    // just now, each once: a write the paused server ran late and the
    // same event moved again out of Redis are stored once.
    assert_eq!(reuse, 2, "each reuse's audit event, once");
    let revoked = count(
        pg,
        "SELECT count(*) FROM invalidations WHERE event LIKE '%session_revoked%'",
    )
    .await;
    assert!(revoked >= 2, "the logout's and the reuse's rows: {revoked}");
}

/// CONFIG's tables with the private servers' URLs in them, as the node's
/// configuration file.
fn write_config(dir: &Path, port: u16, pg: &Postgres, redis: &Redis) -> std::path::PathBuf {
    let config = dir.join("holdfast.toml");
    let toml = format!("listen = \"127.0.0.1:{port}\"\n{CONFIG}")
        .replace(
            "[database]\n",
            &format!("[database]\nurl = \"{}\"\n", pg.url()),
        )
        .replace(
            "[redis]\n",
            &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        );
    std::fs::write(&config, toml).expect("config");
    config
}

/// One number from PostgreSQL, read directly.
async fn count(pg: &Postgres, query: &'static str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect");
    sqlx::query_scalar(query)
        .fetch_one(&mut conn)
        .await
        .expect("query")
}
