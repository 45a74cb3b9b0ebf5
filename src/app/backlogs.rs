//! What waits for PostgreSQL: the deferred session writes
//! (`holdfast_deferred_writes`) and the spill logs of the audit and
//! invalidation outboxes. Kept together so the status page can show the
//! whole backlog without knowing where each part lives.

use crate::auth::audit::Audit;
use crate::cache::bus::Bus;
use crate::store::deferred::DeferredLog;
use std::sync::Arc;
use std::time::Duration;

pub struct Backlogs {
    pub(super) sessions: Arc<dyn DeferredLog>,
    pub(super) audit: Arc<Audit>,
    pub(super) bus: Arc<Bus>,
}

/// One log's backlog: `None` when the log did not answer in time (it is in
/// Redis, and Redis is away).
pub struct Backlog {
    pub name: &'static str,
    /// `"redis"` or `"memory"`: where the log is kept.
    pub backend: &'static str,
    pub waiting: Option<usize>,
}

impl Backlogs {
    /// Every log's length, asked concurrently, each bounded by `within`.
    pub async fn read(&self, within: Duration) -> Vec<Backlog> {
        let (sessions, audit, invalidations) = tokio::join!(
            bounded(within, async { self.sessions.backlog().await.ok() }),
            bounded(within, async { self.audit.backlog().await.ok() }),
            bounded(within, async { self.bus.backlog().await.ok() }),
        );
        let backend = self.sessions.backend();
        vec![
            Backlog {
                name: "session writes",
                backend,
                waiting: sessions,
            },
            Backlog {
                name: "audit events",
                backend,
                waiting: audit,
            },
            Backlog {
                name: "invalidations",
                backend,
                waiting: invalidations,
            },
        ]
    }
}

async fn bounded(within: Duration, read: impl Future<Output = Option<usize>>) -> Option<usize> {
    tokio::time::timeout(within, read).await.ok().flatten()
}
