//! The `holdfast` binary as an operator runs it: configuration errors,
//! `migrate`, `user create`, `serve` and `healthcheck`.

use crate::support;

use reqwest::StatusCode;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::procs::{Postgres, Redis, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// A command with a clean HOLDFAST_* environment, run in `dir`.
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

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// A running `holdfast serve`, killed by PID on drop.
struct Server {
    child: Child,
    banner: Vec<String>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let child = cmd
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        // Owned by the guard from here on: killed and reaped even on panic.
        let mut server = Self {
            child,
            banner: Vec::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let listening = line.contains("listening");
                    server.banner.push(line);
                    if listening {
                        // Collect the lines printed right after the banner.
                        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
                            server.banner.push(line);
                        }
                        return server;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        panic!("serve exited early with {status}: {:?}", server.banner);
                    }
                }
            }
        }
        panic!("serve did not start: {:?}", server.banner);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_configuration_names_every_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\n[tokens]\naccess_ttl = \"soon\"\n[databse]\nurl = \"x\"\n",
    )
    .expect("write");
    keys_in_the_file_and_environment_are_named(dir.path(), &config);
    misspelt_keys_in_a_section_list_the_valid_ones(dir.path());
    unknown_variables_warn_in_development(dir.path());
    unknown_variables_are_refused_in_production(dir.path());
}

/// A bad file key, a bad value and a bad variable: each named (exit 2).
fn keys_in_the_file_and_environment_are_named(dir: &Path, config: &Path) {
    let out = holdfast(dir)
        .args(["--config", config.to_str().expect("utf8"), "migrate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("databse"), "{stderr}");

    std::fs::write(config, "[tokens]\naccess_ttl = \"soon\"\n").expect("write");
    let out = holdfast(dir)
        .args(["--config", config.to_str().expect("utf8"), "migrate"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("tokens.access_ttl"), "{stderr}");

    let out = holdfast(dir)
        .env("HOLDFAST_PASSWORDS__HASH_WORKERS", "0")
        .arg("migrate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("passwords.hash_workers"), "{stderr}");
}

/// A misspelt key in a section that exists is refused, naming the valid
/// keys (DESIGN §6).
fn misspelt_keys_in_a_section_list_the_valid_ones(dir: &Path) {
    let out = holdfast(dir)
        .env("HOLDFAST_DATABASE__ULR", "postgres://x@127.0.0.1:1/x")
        .arg("migrate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ulr") && stderr.contains("replica_url") && stderr.contains("pool_size"),
        "{stderr}"
    );
}

/// A variable that names no section (a wrapper script's, or a typo of a
/// top-level key) is a warning in development, naming it...
fn unknown_variables_warn_in_development(dir: &Path) {
    let out = holdfast(dir)
        .env("HOLDFAST_WRAPPER_PID", "4242")
        .env("HOLDFAST_ENVIRONMENT", "production")
        .arg("migrate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("HOLDFAST_WRAPPER_PID") && stderr.contains("HOLDFAST_ENVIRONMENT"),
        "{stderr}"
    );
}

/// A valid production configuration, all from the environment.
fn production(cmd: &mut Command) {
    cmd.env("HOLDFAST_ENV", "production")
        .env("HOLDFAST_ISSUER", "https://auth.example.com")
        .env(
            "HOLDFAST_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env(
            "HOLDFAST_DATABASE__URL",
            "postgres://holdfast@127.0.0.1:1/holdfast",
        )
        .env("HOLDFAST_REDIS__URL", "redis://127.0.0.1:1/0");
}

/// ...and refused in production, before anything is opened.
fn unknown_variables_are_refused_in_production(dir: &Path) {
    let mut cmd = holdfast(dir);
    production(&mut cmd);
    let out = cmd
        .env("HOLDFAST_WRAPPER_PID", "4242")
        .arg("migrate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HOLDFAST_WRAPPER_PID") && stderr.contains("production"),
        "{stderr}"
    );
    // Without it the same configuration passes validation (and then fails
    // to reach the database, which is not a configuration error).
    let mut cmd = holdfast(dir);
    production(&mut cmd);
    let out = cmd.arg("migrate").output().expect("run");
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn production_refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = holdfast(dir.path())
        .env("HOLDFAST_ENV", "production")
        .env("HOLDFAST_ISSUER", "https://auth.example.com")
        .env(
            "HOLDFAST_DATABASE__URL",
            "postgres://holdfast@127.0.0.1:1/holdfast",
        )
        .env("HOLDFAST_REDIS__URL", "redis://127.0.0.1:1/0")
        .arg("serve")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("master key"), "{stderr}");
    assert!(
        !dir.path().join("holdfast-data").exists(),
        "nothing written"
    );
}

/// `holdfast` in `dir`, listening on `port` (every command of one node).
fn holdfast_on(dir: &Path, port: u16) -> Command {
    let mut cmd = holdfast(dir);
    cmd.env("HOLDFAST_LISTEN", format!("127.0.0.1:{port}"));
    cmd
}

#[test]
fn embedded_migrate_user_create_serve_and_healthcheck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let out = holdfast_on(dir.path(), port)
        .arg("migrate")
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("holdfast-data/holdfast.db").exists());
    first_serve_says_how_to_create_the_admin(dir.path(), port);
    user_create_refuses_weak_passwords_and_creates_the_admin(dir.path(), port);

    let server = Server::start(holdfast_on(dir.path(), port));
    assert!(!server.banner.join("\n").contains("No users yet"));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(admin_logs_in_and_verifies(port));
    assert!(healthcheck(dir.path(), port), "healthcheck while serving");
    keys_rotate_reaches_the_running_node(dir.path(), port, &rt);
    drop(server);
    assert!(!healthcheck(dir.path(), port), "healthcheck once stopped");
}

/// `holdfast healthcheck` against the node on `port`: did it exit 0?
fn healthcheck(dir: &Path, port: u16) -> bool {
    holdfast_on(dir, port)
        .arg("healthcheck")
        .output()
        .expect("healthcheck")
        .status
        .success()
}

/// Serve before any user exists: the banner says how to create the admin,
/// and the generated master key is owner-only.
fn first_serve_says_how_to_create_the_admin(dir: &Path, port: u16) {
    let server = Server::start(holdfast_on(dir, port));
    let banner = server.banner.join("\n");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}")),
        "{banner}"
    );
    assert!(
        banner.contains("user create") && banner.contains("--role admin"),
        "{banner}"
    );
    drop(server);
    let key = dir.join("holdfast-data/master.key");
    let mode = std::fs::metadata(&key).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600), "master key must be owner-only");
}

/// `user create` reads the password from stdin: a weak one is refused.
fn user_create_refuses_weak_passwords_and_creates_the_admin(dir: &Path, port: u16) {
    let mut weak = holdfast_on(dir, port);
    weak.args([
        "user",
        "create",
        "--email",
        "root@example.com",
        "--username",
        "root",
    ]);
    let out = run_with_stdin(weak, "password\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));

    let mut create = holdfast_on(dir, port);
    create.args([
        "user",
        "create",
        "--email",
        "root@example.com",
        "--username",
        "root",
        "--role",
        "admin",
    ]);
    let out = run_with_stdin(create, "a-long-admin-passphrase\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user"));
}

/// The admin the CLI created logs in, and its token carries the role.
async fn admin_logs_in_and_verifies(port: u16) {
    let client = reqwest::Client::new();
    let login = client
        .post(format!("http://127.0.0.1:{port}/api/v1/auth/login"))
        .json(&json!({"login": "root", "password": "a-long-admin-passphrase"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let body: serde_json::Value = login.json().await.expect("json");
    let verify = client
        .get(format!("http://127.0.0.1:{port}/api/v1/auth/verify"))
        .bearer_auth(body["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("verify");
    assert_eq!(verify.headers()["x-auth-roles"], "admin");
}

/// `keys rotate` from the CLI: the running node publishes the standby.
fn keys_rotate_reaches_the_running_node(dir: &Path, port: u16, rt: &tokio::runtime::Runtime) {
    let out = holdfast_on(dir, port)
        .args(["keys", "rotate"])
        .output()
        .expect("keys rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.block_on(async {
        let url = format!("http://127.0.0.1:{port}/.well-known/jwks.json");
        // Nodes re-read keys every min(jwks_max_age / 4, 10 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jwks: serde_json::Value = reqwest::get(&url)
                .await
                .expect("jwks")
                .json()
                .await
                .expect("json");
            if jwks["keys"].as_array().map(Vec::len) == Some(2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node never saw the rotation: {jwks}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

#[test]
fn serve_on_postgres_and_redis_from_file_and_env() {
    let (pg, redis) = (Postgres::start(), Redis::start());
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("holdfast.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nurl = \"sqlite://ignored.db\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
    )
    .expect("write");
    // The environment overrides the file: PostgreSQL, not SQLite.
    let mut serve = holdfast(dir.path());
    serve
        .args(["--config", config.to_str().expect("utf8")])
        .env("HOLDFAST_DATABASE__URL", pg.url());
    let server = Server::start(serve);
    assert!(
        server.banner.join("\n").contains("database: postgres"),
        "{:?}",
        server.banner
    );
    assert!(!dir.path().join("ignored.db").exists());
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let health: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health"))
                .await
                .expect("health")
                .json()
                .await
                .expect("json");
        assert_eq!(
            health["components"]["database"]["backend"], "postgres",
            "{health}"
        );
        assert_eq!(
            health["components"]["redis"]["backend"], "redis",
            "{health}"
        );
        assert_eq!(health["status"], "healthy");
    });
    drop(server);
}
