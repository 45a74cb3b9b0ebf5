//! The audit log: security events stored in the database for operators
//! (`GET /admin/audit`). An event is held durably before the request that
//! made it is answered (DESIGN.md §4): by the database, or while it is away
//! by the spill log (`resilience::outbox`); when neither can take it the
//! request is answered 503, never acknowledged with its event lost. Each
//! event is also a log line, stamped by the `Clock` the log was given.

use crate::auth::clock::{self, Clock};
use crate::auth::error::AuthError;
use crate::auth::recent_events::RecentEvents;
use crate::resilience::outbox::Outbox;
use crate::store::deferred::{DeferredLog, MemoryDeferredLog};
use crate::store::{AuditEvent, AuditFilter, AuditStore, UnixTime};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Events waiting for the writer before new ones are refused.
const BUFFER: usize = 10_000;
/// The spill log's bound in the embedded mode (process memory).
const MEMORY_SPILL: usize = 100_000;
/// How long an in-process log (tests, the CLI) waits to record an event.
const IN_PROCESS_DEADLINE: Duration = Duration::from_secs(5);
/// Events deleted per statement by the retention purge.
const PURGE_BATCH: i64 = 10_000;
const PURGE_EVERY: Duration = Duration::from_secs(3600);

pub struct Audit {
    store: Arc<dyn AuditStore>,
    outbox: Outbox<AuditEvent>,
    clock: Arc<dyn Clock>,
    /// The last hour's events per kind, for the status page.
    recent: RecentEvents,
}

impl Audit {
    /// An audit log whose events wait in `spill` while the database is
    /// away.
    /// away; `deadline` bounds how long recording an event waits (the
    /// stores' timeouts, `Outbox`).
    pub fn new(
        store: Arc<dyn AuditStore>,
        spill: Arc<dyn DeferredLog<AuditEvent>>,
        deadline: Duration,
    ) -> Arc<Self> {
        Self::with_clock(store, spill, deadline, clock::system())
    }

    /// An audit log of one process (tests, the CLI): its spill log is
    /// process memory.
    pub fn in_process(store: Arc<dyn AuditStore>) -> Arc<Self> {
        Self::new(
            store,
            Arc::new(MemoryDeferredLog::new(MEMORY_SPILL)),
            IN_PROCESS_DEADLINE,
        )
    }

    /// An audit log whose events are stamped by `clock`.
    pub fn with_clock(
        store: Arc<dyn AuditStore>,
        spill: Arc<dyn DeferredLog<AuditEvent>>,
        deadline: Duration,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let writer = Arc::clone(&store);
        let outbox = Outbox::start("audit", BUFFER, deadline, spill, move |events| {
            let writer = Arc::clone(&writer);
            async move { writer.append_audit(&events).await }
        });
        Arc::new(Self {
            store,
            outbox,
            clock,
            recent: RecentEvents::default(),
        })
    }

    /// Records an event: `Ok` once it is held durably, a 503 otherwise.
    pub async fn record(
        &self,
        kind: &'static str,
        user_id: Option<Uuid>,
        detail: serde_json::Value,
    ) -> Result<(), AuthError> {
        Ok(self
            .outbox
            .push(event(&self.recent, kind, user_id, detail, self.clock.now()))
            .await?)
    }

    /// `record` for an event anybody can cause without an account (a
    /// failed login, a lock): such a request is refused (401, 429) and so
    /// acknowledges no write, so an event no store could hold is logged
    /// and counted, not turned into a 503; and while the database is away
    /// these events may not fill the spill log that authenticated writes
    /// need (`Outbox::push_anonymous`).
    pub async fn record_anonymous(
        &self,
        kind: &'static str,
        user_id: Option<Uuid>,
        detail: serde_json::Value,
    ) {
        let event = event(&self.recent, kind, user_id, detail, self.clock.now());
        if let Err(e) = self.outbox.push_anonymous(event).await {
            tracing::warn!(kind, error = %e, "audit event not stored; its log line is the record");
        }
    }

    /// `record` for an event whose request must not wait for (or fail
    /// with) the stores: a break-glass use, accepted with every store down.
    /// Whether the row is stored is logged, not answered.
    pub fn record_detached(
        self: &Arc<Self>,
        kind: &'static str,
        user_id: Option<Uuid>,
        detail: serde_json::Value,
    ) {
        let audit = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = audit.record(kind, user_id, detail).await {
                tracing::warn!(kind, error = %e, "audit event not stored; its log line is the record");
            }
        });
    }

    /// `record` for a process about to exit (the CLI): stored before it
    /// returns.
    pub async fn record_and_wait(
        &self,
        kind: &'static str,
        user_id: Option<Uuid>,
        detail: serde_json::Value,
    ) -> Result<(), AuthError> {
        Ok(self
            .store
            .append_audit(&[event(&self.recent, kind, user_id, detail, self.clock.now())])
            .await?)
    }

    /// Stored events matching `filter`, oldest first.
    pub async fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, AuthError> {
        Ok(self.store.audit_query(filter).await?)
    }

    /// Deletes the events older than `retention`, in batches; how many.
    pub async fn purge(&self, retention: Duration) -> Result<u64, AuthError> {
        let before = self.clock.now() - retention.as_secs() as i64;
        let mut purged = 0;
        loop {
            let gone = self.store.purge_audit(before, PURGE_BATCH).await?;
            purged += gone;
            if gone < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Purges at start and every hour after, for as long as the log
    /// lives (`[audit] retention`). Every node does it: a delete of what
    /// another node already deleted is nothing.
    pub fn spawn_purge(self: &Arc<Self>, retention: Duration) {
        let audit = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(log) = audit.upgrade() else {
                    return;
                };
                match log.purge(retention).await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "audit events past retention deleted"),
                    Err(e) => tracing::debug!(error = %e, "audit purge failed; next hour"),
                }
                drop(log);
                tokio::time::sleep(PURGE_EVERY).await;
            }
        });
    }

    /// Events per kind made by this node in the hour before `now`.
    pub fn last_hour(&self, now: UnixTime) -> std::collections::BTreeMap<&'static str, u64> {
        self.recent.last_hour(now)
    }

    /// Events the spill log holds for the database.
    pub async fn backlog(&self) -> Result<usize, AuthError> {
        Ok(self.outbox.backlog().await?)
    }
}

/// An event stamped `at`, logged and counted as it is made.
fn event(
    recent: &RecentEvents,
    kind: &'static str,
    user_id: Option<Uuid>,
    detail: serde_json::Value,
    at: UnixTime,
) -> AuditEvent {
    metrics::counter!("holdfast_audit_events_total", "kind" => kind).increment(1);
    recent.note(kind, at);
    tracing::info!(
        target: "audit",
        kind,
        user_id = user_id.map(|u| u.to_string()).unwrap_or_default(),
        detail = %detail,
        "audit event"
    );
    AuditEvent {
        id: 0,
        event_id: Some(Uuid::new_v4()),
        at,
        kind: kind.to_string(),
        user_id,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::clock::ManualClock;
    use crate::store::StoreError;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Kept(Mutex<Vec<AuditEvent>>);

    #[async_trait::async_trait]
    impl AuditStore for Kept {
        async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
            self.0.lock().extend_from_slice(events);
            Ok(())
        }
        async fn audit_query(&self, _: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
            Ok(self.0.lock().clone())
        }
        async fn purge_audit(&self, before: UnixTime, batch: i64) -> Result<u64, StoreError> {
            let mut events = self.0.lock();
            let old = events
                .iter()
                .filter(|e| e.at < before)
                .count()
                .min(batch as usize);
            let mut left = old;
            events.retain(|e| {
                let purge = e.at < before && left > 0;
                left -= usize::from(purge);
                !purge
            });
            Ok(old as u64)
        }
    }

    /// An audit log on `Kept`, stamped by `clock`.
    fn kept(clock: &Arc<ManualClock>) -> (Arc<Kept>, Arc<Audit>) {
        let store = Arc::new(Kept::default());
        let audit = Audit::with_clock(
            Arc::clone(&store) as Arc<dyn AuditStore>,
            Arc::new(MemoryDeferredLog::new(10)),
            Duration::from_secs(5),
            clock.clone(),
        );
        (store, audit)
    }

    #[tokio::test]
    async fn events_are_stamped_by_the_clock_given() {
        let clock = ManualClock::at(1_700_000_000_999);
        let (store, audit) = kept(&clock);
        audit
            .record_and_wait("key_rotated", None, serde_json::json!({}))
            .await
            .expect("stored");
        clock.advance(std::time::Duration::from_secs(5));
        audit
            .record_and_wait("role_changed", None, serde_json::json!({}))
            .await
            .expect("stored");
        let at: Vec<UnixTime> = store.0.lock().iter().map(|e| e.at).collect();
        assert_eq!(at, [1_700_000_000, 1_700_000_005]);
    }

    #[tokio::test]
    async fn the_purge_deletes_only_what_retention_lets_go() {
        let clock = ManualClock::at(1_700_000_000_000);
        let (store, audit) = kept(&clock);
        for _ in 0..3 {
            audit
                .record_and_wait("login_failed", None, serde_json::json!({}))
                .await
                .expect("stored");
        }
        clock.advance(Duration::from_secs(3600));
        audit
            .record_and_wait("login_failed", None, serde_json::json!({}))
            .await
            .expect("stored");
        let purged = audit
            .purge(Duration::from_secs(1800))
            .await
            .expect("purged");
        assert_eq!(purged, 3);
        assert_eq!(store.0.lock().len(), 1, "the recent event stays");
    }
}
