//! What an operator meets: short token lifetimes, `HOLDFAST_*` variables
//! that are not configuration, the admin enable / logout-all commands,
//! `master-key rotate`, and starting while PostgreSQL is down.

use crate::support;

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

/// `POST /api/v1/admin/users/{id}/{action}` with `token`.
async fn admin_action(
    app: &support::TestApp,
    token: &str,
    id: &str,
    action: &str,
) -> support::Reply {
    app.post(
        &format!("/api/v1/admin/users/{id}/{action}"),
        Some(token),
        serde_json::json!({}),
    )
    .await
}

async fn user_id(app: &support::TestApp, access: &str) -> String {
    let me = app.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    me.body["id"].as_str().expect("id").to_string()
}

/// Polls the audit log (written in the background) for `kind` on `user`.
async fn audited(app: &support::TestApp, admin: &str, kind: &str, user: &str) -> bool {
    for _ in 0..50 {
        let log = app.get("/api/v1/admin/audit?limit=1000", Some(admin)).await;
        let found = log.body["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["kind"] == kind && e["user_id"].as_str() == Some(user))
        });
        if found {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn admins_enable_users_and_log_them_out_everywhere() {
    let stack = Stack::start(Backend::PostgresRedis).await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let alice = app.user("alice").await;
    let alice_id = user_id(app, &alice.access).await;
    let mallory = app.user("mallory").await;

    // Not an admin: refused, and nothing happens to alice.
    for action in ["enable", "logout-all"] {
        admin_action(app, &mallory.access, &alice_id, action)
            .await
            .expect_error(403, "AUTH005");
    }
    assert_eq!(
        app.verify(&alice.access).await.status,
        StatusCode::NO_CONTENT
    );
    // An unknown user is 404 for both.
    let nobody = uuid::Uuid::new_v4().to_string();
    for action in ["enable", "logout-all"] {
        admin_action(app, &admin, &nobody, action)
            .await
            .expect_error(404, "NOTFOUND");
    }

    // logout-all: every token and refresh token of alice ends; she can log
    // in again.
    let reply = admin_action(app, &admin, &alice_id, "logout-all").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.verify(&alice.access).await.expect_error(401, "AUTH004");
    assert_eq!(
        app.refresh(&alice.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(audited(app, &admin, "user_logout_all", &alice_id).await);

    // disable, then enable: new logins work, tokens from before stay dead.
    let before = app.login_ok("alice").await;
    let reply = admin_action(app, &admin, &alice_id, "disable").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    app.login("alice", support::PASSWORD)
        .await
        .expect_error(403, "AUTH006");
    let reply = admin_action(app, &admin, &alice_id, "enable").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert!(audited(app, &admin, "user_enabled", &alice_id).await);
    let after = app.login_ok("alice").await;
    assert_eq!(
        app.verify(&after.access).await.status,
        StatusCode::NO_CONTENT
    );
    let refused = app.verify(&before.access).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(
        app.refresh(&before.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A node started after the enable (revocations warmed from the
    // database) refuses them too.
    let mut stack = stack;
    stack.restart_app().await;
    let refused = stack.app.verify(&before.access).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(
        stack.app.verify(&after.access).await.status,
        StatusCode::NO_CONTENT
    );
}

/// Runs `holdfast` to its end, killing it after `limit`.
fn run_for(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // Our own child, by its id.
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("holdfast still running after {limit:?}");
        }
    }
}

/// A node's configuration on `pg`, sealed with the master key in `key`.
fn write_sealed_config(config: &Path, key: &Path, pg_url: &str) {
    std::fs::write(
        config,
        format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\n\
             listen = \"127.0.0.1:{}\"\nmaster_key_file = \"{}\"\n\
             [database]\nurl = \"{}\"\n[tokens]\njwks_max_age = \"1s\"\n",
            support::procs::free_port(),
            key.display(),
            pg_url
        ),
    )
    .expect("config");
}

/// `holdfast --config CONFIG ARGS...` in `dir`, given a minute at most.
fn cli(dir: &Path, config: &Path, args: &[&str]) -> Output {
    let mut cmd = holdfast(dir);
    cmd.arg("--config").arg(config).args(args);
    run_for(cmd, Duration::from_secs(60))
}

#[tokio::test]
async fn master_key_rotate_reseals_every_key_under_a_live_deployment() {
    let pg = tokio::task::spawn_blocking(support::procs::Postgres::start)
        .await
        .expect("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
    std::fs::write(&old, [1u8; 32]).expect("old key");
    std::fs::write(&new, [2u8; 32]).expect("new key");
    let config = dir.path().join("holdfast.toml");
    let write_config = |key: &Path| write_sealed_config(&config, key, &pg.url());
    write_config(&old);
    let cli = |args: &[&str]| cli(dir.path(), &config, args);
    // Two keys: the first signer and a rotated one.
    let out = cli(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A live node on the old key.
    let live = support::TestApp::spawn(&config, None).await;
    let early = live.user("early").await;

    let out = cli(&["master-key", "rotate", "--new", new.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-sealed 2 signing keys"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The live node keeps its keys in memory: it signs and verifies on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = live.login_ok("early").await;
    assert_eq!(
        live.verify(&during.access).await.status,
        StatusCode::NO_CONTENT
    );

    write_config(&new);
    let fresh = new_key_node_verifies_both_ways(&config, &live, &early).await;
    // Running it again changes nothing and succeeds.
    let out = cli(&["master-key", "rotate", "--new", new.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", stderr(&out));

    // With the old key a node cannot open them, and says so.
    write_config(&old);
    let out = cli(&["serve"]);
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot be opened with this master key"),
        "{text}"
    );
    drop((live, fresh));
}

/// With the new key a node opens the keys, signs with the rotated one and
/// verifies what the live node signed; the live node verifies its tokens.
async fn new_key_node_verifies_both_ways(
    config: &Path,
    live: &support::TestApp,
    early: &support::Tokens,
) -> support::TestApp {
    let fresh = support::TestApp::spawn(config, None).await;
    assert_eq!(
        fresh.verify(&early.access).await.status,
        StatusCode::NO_CONTENT
    );
    let late = fresh.login_ok("early").await;
    assert_eq!(
        fresh.verify(&late.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        live.verify(&late.access).await.status,
        StatusCode::NO_CONTENT
    );
    fresh
}

/// A break-glass key pair in `dir` and a token signed with it.
fn emergency_token(dir: &Path) -> String {
    let out = holdfast(dir)
        .args(["emergency", "keygen", "--out"])
        .arg(dir)
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = holdfast(dir)
        .env("HOLDFAST_ISSUER", "http://holdfast.test")
        .env("HOLDFAST_AUDIENCE", "holdfast-tests")
        .args([
            "emergency",
            "issue",
            "--reason",
            "INC-9: database down",
            "--key",
        ])
        .arg(dir.join("emergency.key"))
        .output()
        .expect("issue");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts a node with PostgreSQL stopped — on a database never migrated,
/// or (`existing`) on one a node already served — then brings PostgreSQL
/// back and expects the node to become ready by itself.
async fn start_during_an_outage(existing: bool) {
    let (mut pg, redis) = tokio::task::spawn_blocking(|| {
        (
            support::procs::Postgres::start(),
            support::procs::Redis::start(),
        )
    })
    .await
    .expect("servers");
    let data = tempfile::tempdir().expect("tempdir");
    let token = emergency_token(data.path());
    let config = data.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\n\
             data_dir = \"{dir}\"\n[emergency]\npublic_key_file = \"{dir}/emergency.pub\"\n\
             [database]\ntimeout = \"500ms\"\n",
            dir = data.path().display()
        ),
    )
    .expect("config");
    let urls = Some((pg.url(), redis.url()));
    let mut earlier = None;
    if existing {
        let app = support::TestApp::spawn(&config, urls.clone()).await;
        earlier = Some(app.user("alice").await);
    }
    pg.kill();

    let app = support::TestApp::spawn(&config, urls).await;
    outage_answers(&app, earlier.as_ref(), &token).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .expect("restart postgres");
    ready_once_postgres_is_back(&app).await;
    let fresh = if existing {
        let earlier = earlier.expect("earlier tokens");
        assert_eq!(
            app.verify(&earlier.access).await.status,
            StatusCode::NO_CONTENT
        );
        app.login_ok("alice").await
    } else {
        app.user("bob").await
    };
    assert_eq!(
        app.verify(&fresh.access).await.status,
        StatusCode::NO_CONTENT
    );
    drop((app, pg, redis));
}

/// Started without PostgreSQL: alive, not ready, metrics and health served;
/// logins, registrations and earlier tokens are 503; break-glass works.
async fn outage_answers(app: &support::TestApp, earlier: Option<&support::Tokens>, token: &str) {
    assert_eq!(app.get("/livez", None).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/metrics", None).await.status, StatusCode::OK);
    let health = app.get("/api/v1/health", None).await;
    assert!(
        health.body["components"]["database"].is_object(),
        "{}",
        health.body
    );
    let login = app.login("alice", support::PASSWORD).await;
    login.expect_error(503, "SVC001");
    assert_eq!(login.body["error"]["details"]["dependency"], "database");
    app.register("bob@example.com", "bob")
        .await
        .expect_error(503, "SVC001");
    if let Some(earlier) = earlier {
        app.verify(&earlier.access)
            .await
            .expect_error(503, "SVC001");
    }
    let reply = app.verify(token).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("x-auth-method"), Some("emergency"));
}

/// Ready by itself within 10 s of PostgreSQL's return.
async fn ready_once_postgres_is_back(app: &support::TestApp) {
    let back = Instant::now();
    while app.get("/readyz", None).await.status != StatusCode::OK {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "not ready {:?} after PostgreSQL came back",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_during_a_database_outage_waits_and_becomes_ready() {
    start_during_an_outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_database_outage_waits_and_becomes_ready() {
    start_during_an_outage(true).await;
}
