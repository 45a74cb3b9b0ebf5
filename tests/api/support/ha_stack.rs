//! holdfast nodes on a private PostgreSQL and on a Redis deployment the
//! test started itself (`redis_ha`: Sentinel or Cluster). `Stack` owns one
//! standalone Redis; here the Redis URL is the deployment's, and every
//! node started from the same stack shares it and the database, as
//! stateless nodes behind a load balancer do (DESIGN.md §1).
#![allow(dead_code)]

use super::TestApp;
use super::procs::Postgres;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub struct HaStack {
    pub app: TestApp,
    pub pg: Postgres,
    /// Holds the config file and data dir for the whole test.
    pub data: TempDir,
    redis_url: String,
}

impl HaStack {
    /// Starts PostgreSQL and one node on `redis_url`; `extra` is appended
    /// to the generated TOML.
    pub async fn start(redis_url: String, extra: &str) -> Self {
        let data = tempfile::Builder::new()
            .prefix("holdfast-ha-")
            .tempdir()
            .expect("tempdir");
        let pg = tokio::task::spawn_blocking(Postgres::start)
            .await
            .expect("start postgres");
        let toml = format!(
            "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n{extra}",
            data.path().display()
        );
        let config = data.path().join("holdfast.toml");
        std::fs::write(&config, toml).expect("write config");
        let app = TestApp::spawn(&config, Some((pg.url(), redis_url.clone()))).await;
        Self {
            app,
            pg,
            data,
            redis_url,
        }
    }

    /// One more node over the same stores.
    pub async fn another_node(&self) -> TestApp {
        let urls = Some((self.pg.url(), self.redis_url.clone()));
        TestApp::spawn(&self.data.path().join("holdfast.toml"), urls).await
    }
}

/// A handle on one node that load tasks can own: the answer's status
/// only, and no borrow of the `TestApp`.
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    base: String,
}

impl Caller {
    pub fn of(app: &TestApp) -> Self {
        Self {
            http: app.client.clone(),
            base: app.base.clone(),
        }
    }

    pub async fn status(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> StatusCode {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the node answers").status()
    }

    pub async fn verify(&self, access: &str) -> StatusCode {
        self.status(Method::GET, "/api/v1/auth/verify", Some(access), None)
            .await
    }

    pub async fn login(&self, login: &str) -> StatusCode {
        let body = json!({"login": login, "password": super::PASSWORD});
        self.status(Method::POST, "/api/v1/auth/login", None, Some(body))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> StatusCode {
        let body = json!({"refresh_token": refresh_token});
        self.status(Method::POST, "/api/v1/auth/refresh", None, Some(body))
            .await
    }

    pub async fn logout(&self, access: &str) -> StatusCode {
        self.status(Method::POST, "/api/v1/auth/logout", Some(access), None)
            .await
    }
}

/// Polls `done` every 100 ms until it holds; returns how long that took,
/// or panics after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// The Redis component of `/api/v1/health` answers and its breaker is
/// closed.
pub async fn redis_healthy(app: &TestApp) -> bool {
    let health = app.get("/api/v1/health", None).await;
    let redis = &health.body["components"]["redis"];
    redis["healthy"] == true && redis["circuit_state"] == "closed" && redis["backend"] == "redis"
}
