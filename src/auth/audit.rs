//! The audit log: security events stored in the database for operators
//! (`GET /admin/audit`). Recording never blocks a request and never fails
//! one: events go through an outbox that buffers them while the database is
//! down and writes them when it returns. Each event is also a log line,
//! stamped by the `Clock` the log was given.

use crate::auth::clock::{self, Clock};
use crate::auth::error::AuthError;
use crate::resilience::outbox::Outbox;
use crate::store::{AuditEvent, AuditStore, UnixTime};
use std::sync::Arc;
use uuid::Uuid;

/// Events buffered while the database is away before new ones are dropped.
const BUFFER: usize = 10_000;

pub struct Audit {
    store: Arc<dyn AuditStore>,
    outbox: Outbox<AuditEvent>,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<Self> {
        Self::with_clock(store, clock::system())
    }

    /// An audit log whose events are stamped by `clock`.
    pub fn with_clock(store: Arc<dyn AuditStore>, clock: Arc<dyn Clock>) -> Arc<Self> {
        let writer = Arc::clone(&store);
        let outbox = Outbox::start("audit", BUFFER, move |events| {
            let writer = Arc::clone(&writer);
            async move { writer.append_audit(&events).await }
        });
        Arc::new(Self {
            store,
            outbox,
            clock,
        })
    }

    pub fn record(&self, kind: &'static str, user_id: Option<Uuid>, detail: serde_json::Value) {
        self.outbox
            .push(event(kind, user_id, detail, self.clock.now()));
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
            .append_audit(&[event(kind, user_id, detail, self.clock.now())])
            .await?)
    }

    /// Stored events at or after `since`, oldest first.
    pub async fn since(&self, since: UnixTime, limit: i64) -> Result<Vec<AuditEvent>, AuthError> {
        Ok(self.store.audit_since(since, limit).await?)
    }
}

/// An event stamped `at`, logged and counted as it is made.
fn event(
    kind: &'static str,
    user_id: Option<Uuid>,
    detail: serde_json::Value,
    at: UnixTime,
) -> AuditEvent {
    metrics::counter!("holdfast_audit_events_total", "kind" => kind).increment(1);
    tracing::info!(
        target: "audit",
        kind,
        user_id = user_id.map(|u| u.to_string()).unwrap_or_default(),
        detail = %detail,
        "audit event"
    );
    AuditEvent {
        id: 0,
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
        async fn audit_since(&self, _: UnixTime, _: i64) -> Result<Vec<AuditEvent>, StoreError> {
            Ok(self.0.lock().clone())
        }
    }

    #[tokio::test]
    async fn events_are_stamped_by_the_clock_given() {
        let clock = ManualClock::at(1_700_000_000_999);
        let store = Arc::new(Kept::default());
        let audit = Audit::with_clock(Arc::clone(&store) as Arc<dyn AuditStore>, clock.clone());
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
}
