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
    let out = holdfast(dir.path())
        .args(["--config", config.to_str().expect("utf8"), "migrate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("databse"), "{stderr}");

    std::fs::write(&config, "[tokens]\naccess_ttl = \"soon\"\n").expect("write");
    let out = holdfast(dir.path())
        .args(["--config", config.to_str().expect("utf8"), "migrate"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("tokens.access_ttl"), "{stderr}");

    let out = holdfast(dir.path())
        .env("HOLDFAST_PASSWORDS__HASH_WORKERS", "0")
        .arg("migrate")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("passwords.hash_workers"), "{stderr}");

    // A misspelt key in a section that exists is refused, naming the valid
    // keys (DESIGN §6).
    let out = holdfast(dir.path())
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

    // A variable that names no section (a wrapper script's, or a typo of
    // a top-level key) is a warning in development, naming it...
    let out = holdfast(dir.path())
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

    // ...and refused in production, before anything is opened.
    let production = |cmd: &mut Command| {
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
    };
    let mut cmd = holdfast(dir.path());
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
    let mut cmd = holdfast(dir.path());
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

#[test]
fn embedded_migrate_user_create_serve_and_healthcheck() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let env = |cmd: &mut Command| {
        cmd.env("HOLDFAST_LISTEN", format!("127.0.0.1:{port}"));
    };

    let mut migrate = holdfast(dir.path());
    env(&mut migrate);
    let out = migrate.arg("migrate").output().expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("holdfast-data/holdfast.db").exists());

    // Serve before any user exists: the banner says how to create the admin.
    let mut serve = holdfast(dir.path());
    env(&mut serve);
    let server = Server::start(serve);
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
    let key = dir.path().join("holdfast-data/master.key");
    let mode = std::fs::metadata(&key).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o600), "master key must be owner-only");

    let mut weak = holdfast(dir.path());
    env(&mut weak);
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

    let mut create = holdfast(dir.path());
    env(&mut create);
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

    let mut serve = holdfast(dir.path());
    env(&mut serve);
    let server = Server::start(serve);
    assert!(!server.banner.join("\n").contains("No users yet"));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
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
    });

    let mut check = holdfast(dir.path());
    env(&mut check);
    assert!(
        check
            .arg("healthcheck")
            .output()
            .expect("healthcheck")
            .status
            .success()
    );

    // `keys rotate` from the CLI: the running node publishes the standby.
    let mut rotate = holdfast(dir.path());
    env(&mut rotate);
    let out = rotate
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
    drop(server);
    let mut check = holdfast(dir.path());
    env(&mut check);
    assert!(
        !check
            .arg("healthcheck")
            .output()
            .expect("healthcheck")
            .status
            .success()
    );
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
