//! The drill's clients: workers that each own a few users and their
//! sessions, send a steady mix of requests and remember what was
//! acknowledged, so that what must hold can be checked as they go and at
//! the end.

use super::{LOGOUT_REACH, answered, login_body};
use crate::support::chaos::{Outcome, Spread};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Verify,
    Login,
    Refresh,
    Logout,
}

/// One request: when (since the drill began), what, and the answer.
#[derive(Debug, Clone)]
pub struct Record {
    pub at: Duration,
    pub op: Op,
    pub status: Option<StatusCode>,
}

impl Record {
    pub fn ok(&self) -> bool {
        let want = match self.op {
            Op::Verify | Op::Logout => StatusCode::NO_CONTENT,
            Op::Login | Op::Refresh => StatusCode::OK,
        };
        self.status == Some(want)
    }
}

/// A session as its client knows it.
struct Session {
    access: String,
    refresh: String,
    /// When the logout was acknowledged (204).
    logged_out: Option<Instant>,
    /// Whether every node was seen refusing it after the logout.
    refused_everywhere: bool,
    /// An answer was lost (the request may or may not have been applied):
    /// nothing can be expected of this session any more.
    uncertain: bool,
}

impl Session {
    fn from_login(body: &serde_json::Value) -> Option<Self> {
        Some(Self {
            access: body["access_token"].as_str()?.to_string(),
            refresh: body["refresh_token"].as_str()?.to_string(),
            logged_out: None,
            refused_everywhere: false,
            uncertain: false,
        })
    }

    fn live(&self) -> bool {
        self.logged_out.is_none() && !self.uncertain
    }
}

pub struct Drill {
    spread: Arc<Spread>,
    began: Instant,
    records: parking_lot::Mutex<Vec<Record>>,
    violations: parking_lot::Mutex<Vec<String>>,
    sessions: parking_lot::Mutex<Vec<Session>>,
}

impl Drill {
    pub fn new(spread: Arc<Spread>) -> Arc<Self> {
        Arc::new(Self {
            spread,
            began: Instant::now(),
            records: parking_lot::Mutex::new(Vec::new()),
            violations: parking_lot::Mutex::new(Vec::new()),
            sessions: parking_lot::Mutex::new(Vec::new()),
        })
    }

    pub fn spread(&self) -> &Spread {
        &self.spread
    }

    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().clone()
    }

    fn violation(&self, what: String) {
        eprintln!("VIOLATION at {:?}: {what}", self.elapsed());
        self.violations.lock().push(what);
    }

    async fn request(
        &self,
        op: Op,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> Outcome {
        let outcome = self.spread.send(method, path, bearer, body).await;
        let at = self.elapsed();
        self.records.lock().push(Record {
            at,
            op,
            status: outcome.status(),
        });
        outcome
    }

    pub async fn register_users(&self, count: usize) -> Vec<String> {
        let mut users = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("chaos{i}");
            let body = json!({"email": format!("{name}@example.com"), "username": name,
                              "password": crate::support::PASSWORD});
            let reply = self
                .spread
                .send(Method::POST, "/api/v1/auth/register", None, Some(&body))
                .await;
            assert_eq!(reply.status(), Some(StatusCode::CREATED), "{reply:?}");
            users.push(name);
        }
        users
    }

    /// Starts `workers` clients sharing `users` out between them.
    pub fn run(
        self: &Arc<Self>,
        users: Vec<String>,
        workers: usize,
        stopped: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let workers = workers.clamp(1, users.len());
        (0..workers)
            .map(|w| {
                let mine: Vec<String> = users.iter().skip(w).step_by(workers).cloned().collect();
                let drill = Arc::clone(self);
                let stopped = stopped.clone();
                tokio::spawn(async move { drill.worker(w as u64, mine, stopped).await })
            })
            .collect()
    }

    async fn worker(
        self: Arc<Self>,
        seed: u64,
        users: Vec<String>,
        stopped: watch::Receiver<bool>,
    ) {
        let mut sessions = Vec::new();
        for user in &users {
            self.login(user, &mut sessions).await;
        }
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut tick = 0u64;
        while !*stopped.borrow() {
            tick += 1;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pick = (state >> 33) as usize;
            let live: Vec<usize> = (0..sessions.len())
                .filter(|&i| sessions[i].live())
                .collect();
            match (tick % 20, live.is_empty()) {
                (0, _) | (_, true) => self.login(&users[pick % users.len()], &mut sessions).await,
                (5 | 15, false) => self.refresh(&mut sessions[live[pick % live.len()]]).await,
                (10, false) if live.len() > 1 => {
                    self.logout(&mut sessions[live[pick % live.len()]]).await
                }
                _ => self.verify(&sessions[live[pick % live.len()]]).await,
            }
            self.check_logouts(&mut sessions).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.sessions.lock().extend(sessions);
    }

    async fn login(&self, user: &str, sessions: &mut Vec<Session>) {
        let outcome = self
            .request(
                Op::Login,
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(&login_body(user)),
            )
            .await;
        if let Some((StatusCode::OK, body)) = answered(&outcome)
            && let Some(session) = Session::from_login(body)
        {
            sessions.push(session);
        }
    }

    async fn verify(&self, session: &Session) {
        let outcome = self
            .request(
                Op::Verify,
                Method::GET,
                "/api/v1/auth/verify",
                Some(&session.access),
                None,
            )
            .await;
        if outcome.status() == Some(StatusCode::UNAUTHORIZED) {
            self.violation(format!(
                "a live session's access token was refused: {outcome:?}"
            ));
        }
    }

    async fn refresh(&self, session: &mut Session) {
        let body = json!({"refresh_token": session.refresh});
        let outcome = self
            .request(
                Op::Refresh,
                Method::POST,
                "/api/v1/auth/refresh",
                None,
                Some(&body),
            )
            .await;
        match answered(&outcome) {
            Some((StatusCode::OK, body)) => {
                if let Some(next) = Session::from_login(body) {
                    session.access = next.access;
                    session.refresh = next.refresh;
                }
            }
            Some((StatusCode::UNAUTHORIZED, body)) => {
                self.violation(format!("an acknowledged refresh token was refused: {body}"));
                session.uncertain = true;
            }
            Some(_) => {}
            None => session.uncertain = true,
        }
    }

    async fn logout(&self, session: &mut Session) {
        let outcome = self
            .request(
                Op::Logout,
                Method::POST,
                "/api/v1/auth/logout",
                Some(&session.access),
                None,
            )
            .await;
        match outcome.status() {
            Some(StatusCode::NO_CONTENT) => session.logged_out = Some(Instant::now()),
            Some(_) => {}
            None => session.uncertain = true,
        }
    }

    /// A logout acknowledged `LOGOUT_REACH` ago is refused by every node.
    async fn check_logouts(&self, sessions: &mut [Session]) {
        for session in sessions.iter_mut() {
            let due = session
                .logged_out
                .is_some_and(|t| t.elapsed() >= LOGOUT_REACH);
            if due && !session.refused_everywhere && !session.uncertain {
                self.refused_by_every_node(&session.access).await;
                session.refused_everywhere = true;
            }
        }
    }

    async fn refused_by_every_node(&self, access: &str) {
        for node in 0..self.spread.nodes() {
            let outcome = self
                .spread
                .send_to(node, Method::GET, "/api/v1/auth/verify", Some(access))
                .await;
            if outcome.status() == Some(StatusCode::NO_CONTENT) {
                self.violation(format!(
                    "node {node} still accepts a token logged out over {LOGOUT_REACH:?} ago"
                ));
            }
        }
    }

    /// After the events: every session whose every answer was seen still
    /// refreshes, and every logged-out one is refused by every node.
    pub async fn final_checks(&self, nodes: usize) {
        let mut sessions = std::mem::take(&mut *self.sessions.lock());
        tokio::time::sleep(LOGOUT_REACH).await;
        assert_eq!(nodes, self.spread.nodes());
        let mut checked = 0;
        for session in sessions.iter_mut().filter(|s| !s.uncertain) {
            if session.logged_out.is_some() {
                self.refused_by_every_node(&session.access).await;
            } else {
                self.refresh(session).await;
            }
            checked += 1;
        }
        assert!(checked > 0, "no session could be checked");
        eprintln!("final checks: {checked} sessions");
    }
}
