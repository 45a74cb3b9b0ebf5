//! The service mode of DESIGN.md §4, derived from the breakers of the
//! stores (never from the text of a health report), so that the routing of
//! SQL calls and what health says are the same decision:
//!
//! * `read_only` — the primary's breaker is not closed and the replica's
//!   is: reads go to the replica without touching the primary, writes
//!   answer 503 SVC002 at once; or the only database host answering is a
//!   standby (`[database] url` names standbys only, or a proxy points at
//!   one after a failover), which the store reports;
//! * `minimal` — no PostgreSQL host answers and Redis does not either:
//!   only what needs neither store still works;
//! * `normal` — everything else (one failing store is a `degraded` status,
//!   not a mode).
//!
//! A dependency "answers" while its breaker is closed. The breaker is the
//! one judge of "dead" with thresholds; one failed call is not an outage.

use crate::resilience::DependencyGuard;
use crate::resilience::breaker::BreakerState;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    ReadOnly,
    Minimal,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Normal, Mode::ReadOnly, Mode::Minimal];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::ReadOnly => "read_only",
            Mode::Minimal => "minimal",
        }
    }

    /// What still works, for the log line written when the mode changes.
    pub fn what_works(self) -> &'static str {
        match self {
            Mode::Normal => "everything",
            Mode::ReadOnly => {
                "reads from the replica, login, refresh, logout and token verification; writes answer 503 SVC002"
            }
            Mode::Minimal => {
                "token verification, emergency tokens, cached API keys and cached authorization decisions; logout revokes on this node only and answers 503"
            }
        }
    }

    fn code(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::ReadOnly => 1,
            Mode::Minimal => 2,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Mode::ReadOnly,
            2 => Mode::Minimal,
            _ => Mode::Normal,
        }
    }
}

/// Whether a guarded dependency counts as answering.
fn answers(guard: &DependencyGuard) -> bool {
    guard.breaker().state() == BreakerState::Closed
}

/// The read-only rule, shared by the SQL routing and `Modes`: the primary
/// does not answer and the replica does.
pub fn read_only(primary: &DependencyGuard, replica: &DependencyGuard) -> bool {
    !answers(primary) && answers(replica)
}

/// The mode of this node, from the guards of its stores.
pub struct Modes {
    primary: Arc<DependencyGuard>,
    replica: Option<Arc<DependencyGuard>>,
    /// `None` when the session cache lives in process memory: it always
    /// answers, so the node is never `minimal`.
    redis: Option<Arc<DependencyGuard>>,
    /// Whether the database's answering host is a standby (the store's
    /// host classification says so); `None` for a single plain host.
    standby_only: Option<StandbyOnly>,
    /// The mode last exported and logged.
    last: AtomicU8,
}

/// Asks the store whether only a standby answers.
pub type StandbyOnly = Box<dyn Fn() -> bool + Send + Sync>;

impl Modes {
    /// Exports `holdfast_mode` for every mode at once, so each series
    /// exists from the first scrape.
    pub fn new(
        primary: Arc<DependencyGuard>,
        replica: Option<Arc<DependencyGuard>>,
        redis: Option<Arc<DependencyGuard>>,
    ) -> Self {
        let modes = Self {
            primary,
            replica,
            redis,
            standby_only: None,
            last: AtomicU8::new(Mode::Normal.code()),
        };
        export(Mode::Normal);
        modes
    }

    /// Read-only mode also while `standby_only` says the only host
    /// answering is a standby.
    pub fn with_standby_only(mut self, standby_only: StandbyOnly) -> Self {
        self.standby_only = Some(standby_only);
        self
    }

    /// The mode now, by the rule of the module comment.
    pub fn compute(&self) -> Mode {
        let standby_only = self.standby_only.as_ref().is_some_and(|f| f());
        if answers(&self.primary) {
            return if standby_only {
                Mode::ReadOnly
            } else {
                Mode::Normal
            };
        }
        if self.replica.as_deref().is_some_and(answers) {
            return Mode::ReadOnly;
        }
        match &self.redis {
            Some(redis) if !answers(redis) => Mode::Minimal,
            _ => Mode::Normal,
        }
    }

    /// The mode now; a change since the last call is logged once (naming
    /// what still works) and exported.
    pub fn current(&self) -> Mode {
        let mode = self.compute();
        let before = Mode::from_code(self.last.swap(mode.code(), Ordering::AcqRel));
        if before != mode {
            export(mode);
            let (from, to, works) = (before.as_str(), mode.as_str(), mode.what_works());
            match mode {
                Mode::Normal => tracing::info!(from, to, "mode {to} (was {from}): {works} works"),
                _ => tracing::warn!(from, to, "mode {to} (was {from}): still working: {works}"),
            }
        }
        mode
    }
}

fn export(current: Mode) {
    for mode in Mode::ALL {
        metrics::gauge!("holdfast_mode", "mode" => mode.as_str()).set(if mode == current {
            1.0
        } else {
            0.0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::breaker::BreakerSettings;
    use crate::store::StoreError;
    use std::time::Duration;

    fn guard(name: &'static str) -> Arc<DependencyGuard> {
        let settings = BreakerSettings {
            minimum_calls: 1,
            ..BreakerSettings::default()
        };
        Arc::new(DependencyGuard::new(name, Duration::from_secs(1), settings))
    }

    async fn fail(guard: &DependencyGuard) {
        let _: Result<(), _> = guard
            .run(crate::resilience::Call::Read, async {
                Err(StoreError::Unavailable {
                    dependency: "x",
                    kind: crate::resilience::failure::FailureKind::Refused,
                    reason: "refused".into(),
                })
            })
            .await;
        assert_ne!(guard.breaker().state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn the_mode_follows_the_breakers() {
        let (primary, replica, redis) = (guard("database"), guard("replica"), guard("redis"));
        let modes = Modes::new(
            Arc::clone(&primary),
            Some(Arc::clone(&replica)),
            Some(Arc::clone(&redis)),
        );
        assert_eq!(modes.current(), Mode::Normal);
        fail(&redis).await;
        assert_eq!(modes.current(), Mode::Normal, "Redis alone: degraded");
        fail(&primary).await;
        assert_eq!(modes.current(), Mode::ReadOnly);
        assert!(read_only(&primary, &replica));
        fail(&replica).await;
        assert_eq!(modes.current(), Mode::Minimal);
        primary.breaker().reset();
        assert_eq!(modes.current(), Mode::Normal);
    }

    #[tokio::test]
    async fn a_lone_standby_is_read_only() {
        let only = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let seen = Arc::clone(&only);
        let modes = Modes::new(guard("database"), None, Some(guard("redis")))
            .with_standby_only(Box::new(move || seen.load(Ordering::SeqCst)));
        assert_eq!(modes.current(), Mode::ReadOnly);
        only.store(false, Ordering::SeqCst);
        assert_eq!(modes.current(), Mode::Normal, "promoted");
    }

    #[tokio::test]
    async fn an_in_process_session_cache_is_never_minimal() {
        let primary = guard("database");
        let modes = Modes::new(Arc::clone(&primary), None, None);
        fail(&primary).await;
        assert_eq!(modes.current(), Mode::Normal);
    }
}
