//! Test harness: a holdfast app on a free loopback port, on either the
//! embedded default (SQLite + process memory) or private PostgreSQL + Redis
//! processes, plus small HTTP helpers. Each test gets its own everything.

pub mod chaos;
pub mod edge;
pub mod ha_stack;
pub mod jwks;
pub mod owner;
pub mod procs;
pub mod proxy;
pub mod redis_ha;
pub mod replica;
pub mod scenarios;

use holdfast::app::AppState;
use holdfast::config::Config;
use holdfast::secret::Secret;
use procs::{Postgres, Redis};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub const PASSWORD: &str = "tangerine-orbit-lamp";

/// Database timeout 500 ms, Redis 200 ms; breakers open after 3 failed
/// calls and probe again after 1 s, so a resumed store is used again within
/// seconds.
pub const FAST_RECOVERY: &str = r#"
[database]
timeout = "500ms"
[redis]
timeout = "200ms"
[breaker]
minimum_calls = 3
open_wait = "1s"
open_wait_max = "2s"
half_open_permits = 1
"#;

/// A database timeout and breaker that open fast and stay open: for tests
/// that watch a breaker open (`TestApp::fail_database_until_open`).
pub const SHORT_BREAKERS: &str = r#"
[database]
timeout = "500ms"
[breaker]
minimum_calls = 3
open_wait = "30s"
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    PostgresRedis,
}

/// Everything one test runs against. Dropping it stops the app and kills
/// the private servers.
pub struct Stack {
    pub app: TestApp,
    pub pg: Option<Postgres>,
    pub redis: Option<Redis>,
    /// Holds the data dir (SQLite file, master key) for the whole test.
    pub data: TempDir,
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, "").await
    }

    /// `extra` is appended to the generated TOML (e.g. a `[tokens]` table).
    pub async fn start_with(backend: Backend, extra: &str) -> Self {
        let data = tempfile::Builder::new()
            .prefix("holdfast-data-")
            .tempdir()
            .expect("tempdir");
        let (pg, redis) = match backend {
            Backend::Embedded => (None, None),
            Backend::PostgresRedis => {
                let (pg, redis) =
                    tokio::task::spawn_blocking(|| (Postgres::start(), Redis::start()))
                        .await
                        .expect("start servers");
                (Some(pg), Some(redis))
            }
        };
        let mut toml = format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n",
            data.path().display()
        );
        toml.push_str(extra);
        let config_path = data.path().join("holdfast.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let urls = Self::urls(&pg, &redis);
        let app = TestApp::spawn(&config_path, urls).await;
        Self {
            app,
            pg,
            redis,
            data,
        }
    }

    /// The private servers' URLs, set on the loaded config (so a test's own
    /// `[database]` or `[redis]` table can still tune timeouts).
    fn urls(pg: &Option<Postgres>, redis: &Option<Redis>) -> Option<(String, String)> {
        Some((pg.as_ref()?.url(), redis.as_ref()?.url()))
    }

    /// A second app over the same stores, as after a node restart.
    pub async fn restart_app(&mut self) {
        self.app.server.abort();
        let urls = Self::urls(&self.pg, &self.redis);
        self.app = TestApp::spawn(&self.data.path().join("holdfast.toml"), urls).await;
    }
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApp {
    pub async fn spawn(config_path: &std::path::Path, urls: Option<(String, String)>) -> Self {
        let mut config = Config::load(Some(config_path)).expect("config");
        if let Some((database, redis)) = urls {
            config.database.url = Some(Secret::new(database));
            config.redis.url = Some(Secret::new(redis));
        }
        // Through libtest's capture: shown only for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("HOLDFAST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            ))
            .with_test_writer()
            .try_init();
        let state = AppState::build(config).await.expect("build app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = holdfast::http::router(&state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        Self {
            base: format!("http://{addr}"),
            state,
            client: reqwest::Client::new(),
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("request")).await
    }

    /// A request with arbitrary headers (an API key, say) and a JSON body.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("request")).await
    }

    /// Mints an API key for the holder of `access`; returns (id, key).
    pub async fn api_key(&self, access: &str, scopes: &[&str]) -> (String, String) {
        let reply = self
            .post(
                "/api/v1/api-keys",
                Some(access),
                json!({"name": "test key", "scopes": scopes}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        (
            reply.body["id"].as_str().expect("id").to_string(),
            reply.body["key"].as_str().expect("key").to_string(),
        )
    }

    /// `GET /auth/verify` with `X-API-Key`.
    pub async fn verify_key(&self, key: &str) -> Reply {
        self.call_with(
            Method::GET,
            "/api/v1/auth/verify",
            &[("x-api-key", key)],
            None,
        )
        .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn register(&self, email: &str, username: &str) -> Reply {
        self.post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "username": username, "password": PASSWORD}),
        )
        .await
    }

    pub async fn login(&self, login: &str, password: &str) -> Reply {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"login": login, "password": password}),
        )
        .await
    }

    /// Logins against a dead database until its breaker opens. The window
    /// also holds the setup's successful calls, so the count needed varies.
    pub async fn fail_database_until_open(&self) {
        for _ in 0..40 {
            let health = self.get("/api/v1/health", None).await;
            if health.body["components"]["database"]["circuit_state"] == "open" {
                return;
            }
            self.login("nobody", PASSWORD)
                .await
                .expect_error(503, "SVC001");
        }
        panic!("database breaker never opened");
    }

    /// A login sent from a task of its own, for attempts that must be in
    /// flight together; the task answers the status.
    pub fn spawn_login(
        &self,
        login: &str,
        password: &str,
    ) -> tokio::task::JoinHandle<reqwest::Result<StatusCode>> {
        let request = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"login": login, "password": password}));
        tokio::spawn(async move { request.send().await.map(|r| r.status()) })
    }

    /// Registers `name` and logs in; returns the login body.
    pub async fn user(&self, name: &str) -> Tokens {
        let reply = self.register(&format!("{name}@example.com"), name).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        self.login_ok(name).await
    }

    /// Creates the admin `root` in-process (as `holdfast user create --role
    /// admin` does) and returns an access token for it.
    pub async fn admin_token(&self) -> String {
        self.state
            .accounts()
            .register(
                holdfast::auth::accounts::Registration {
                    email: "root@example.com".into(),
                    username: "root".into(),
                    password: PASSWORD.into(),
                    roles: vec!["admin".into()],
                },
                holdfast::auth::now(),
            )
            .await
            .expect("admin");
        self.login_ok("root").await.access
    }

    pub async fn login_ok(&self, name: &str) -> Tokens {
        let reply = self.login(name, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        Tokens::from(&reply.body)
    }

    pub async fn verify(&self, token: &str) -> Reply {
        self.get("/api/v1/auth/verify", Some(token)).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
}

impl From<&Value> for Tokens {
    fn from(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_string(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_string(),
            session_id: body["session_id"].as_str().expect("session_id").to_string(),
        }
    }
}

/// A response read whole: status, headers, JSON body (Null when empty).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The contract's error code, e.g. `AUTH001`.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts status and error code, with the body in the failure message.
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "body: {}",
            self.body
        );
    }
}
