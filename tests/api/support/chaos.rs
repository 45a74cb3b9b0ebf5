//! The chaos drill's pieces: `holdfast serve` processes that can be
//! SIGKILLed and restarted (an in-process app cannot be killed), and a
//! client that spreads requests over the nodes and tries the next node on
//! a connection error, as a load balancer in front of them would.

use super::procs::free_port;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
/// One master key for every node: each must open the signing keys the
/// others sealed.
const MASTER_KEY: &str = "aG9sZGZhc3QtY2hhb3MtZHJpbGwtbWFzdGVyLWtleSE=";

/// One `holdfast serve` process on its own port and data folder.
pub struct Node {
    pub port: u16,
    config: PathBuf,
    /// The node's log (stderr), kept for a failing drill.
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Writes the node's configuration (`extra` appended) and starts it.
    pub fn start(dir: &Path, index: usize, database: &str, redis: &str, extra: &str) -> Self {
        let port = free_port();
        let data = dir.join(format!("node{index}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.join(format!("node{index}.toml"));
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\
             [database]\nurl = \"{database}\"\ntimeout = \"500ms\"\n\
             [redis]\nurl = \"{redis}\"\ntimeout = \"200ms\"\n{extra}",
            data.display()
        );
        std::fs::write(&config, text).expect("write config");
        let mut node = Self {
            port,
            config,
            log: dir.join(format!("node{index}.log")),
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BIN);
        for (key, _) in std::env::vars() {
            if key.starts_with("HOLDFAST_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .env("HOLDFAST_LOG", "warn")
            .env("HOLDFAST_MASTER_KEY", MASTER_KEY)
            .args(["--config", self.config.to_str().expect("utf8"), "serve"])
            .stdout(Stdio::null())
            .stderr(log_file(&self.log))
            .spawn()
            .expect("spawn holdfast serve");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no graceful shutdown, nothing flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and data folder.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&mut self, within: Duration) {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            let url = format!("{}/readyz", self.url());
            if let Ok(reply) = client.get(url).send().await
                && reply.status() == StatusCode::OK
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            assert!(
                started.elapsed() < within && !exited,
                "node {} not ready in {within:?} (exited: {exited}); its log:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Appends: a restarted node's log follows the killed one's.
fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("node log")
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a request came back with: a status and body, or no answer from
/// any node.
#[derive(Debug, Clone)]
pub enum Outcome {
    Answered(StatusCode, Value),
    Unreachable,
}

impl Outcome {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Outcome::Answered(status, _) => Some(*status),
            Outcome::Unreachable => None,
        }
    }
}

/// Round-robin over the nodes; a connection error (or a timeout with no
/// answer) moves on to the next node, at most once per node.
pub struct Spread {
    urls: Vec<String>,
    /// Nodes in rotation (a node restarting is taken out until ready).
    enabled: Vec<AtomicBool>,
    next: AtomicUsize,
    client: reqwest::Client,
}

impl Spread {
    pub fn new(urls: Vec<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(8)
            .build()
            .expect("client");
        Self {
            enabled: urls.iter().map(|_| AtomicBool::new(true)).collect(),
            urls,
            next: AtomicUsize::new(0),
            client,
        }
    }

    pub fn nodes(&self) -> usize {
        self.urls.len()
    }

    /// Takes node `index` out of rotation, or puts it back.
    pub fn set_enabled(&self, index: usize, enabled: bool) {
        self.enabled[index].store(enabled, Ordering::Relaxed);
    }

    pub fn is_enabled(&self, index: usize) -> bool {
        self.enabled[index].load(Ordering::Relaxed)
    }

    /// Sends to the next node in turn, falling over on connection errors.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Outcome {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.urls.len() {
            let index = (first + i) % self.urls.len();
            if !self.is_enabled(index) {
                continue;
            }
            let url = &self.urls[index];
            if let Some(outcome) = self.try_node(url, method.clone(), path, bearer, body).await {
                return outcome;
            }
        }
        Outcome::Unreachable
    }

    /// Sends to node `index` only (a check that every node agrees); a node
    /// out of rotation is skipped (answered as `Unreachable`).
    pub async fn send_to(
        &self,
        index: usize,
        method: Method,
        path: &str,
        bearer: Option<&str>,
    ) -> Outcome {
        if !self.is_enabled(index) {
            return Outcome::Unreachable;
        }
        let url = &self.urls[index];
        self.try_node(url, method, path, bearer, None)
            .await
            .unwrap_or(Outcome::Unreachable)
    }

    async fn try_node(
        &self,
        url: &str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Option<Outcome> {
        let method_was_get = method == Method::GET;
        let mut request = self.client.request(method, format!("{url}{path}"));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = match request.send().await {
            Ok(reply) => reply,
            // Nothing was sent, or a read (GET is idempotent): another
            // node may take it.
            Err(e) if e.is_connect() || method_was_get => return None,
            // Sent, but no answer: it may have been applied.
            Err(_) => return Some(Outcome::Unreachable),
        };
        let status = reply.status();
        let body = reply.json().await.unwrap_or(Value::Null);
        Some(Outcome::Answered(status, body))
    }
}
