//! The audit log: security events stored in the database for operators
//! (`GET /admin/audit`). Recording never blocks a request and never fails
//! one: events go through an outbox that buffers them while the database is
//! down and writes them when it returns. Each event is also a log line.

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
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<Self> {
        let writer = Arc::clone(&store);
        let outbox = Outbox::start("audit", BUFFER, move |events| {
            let writer = Arc::clone(&writer);
            async move { writer.append_audit(&events).await }
        });
        Arc::new(Self { store, outbox })
    }

    pub fn record(&self, kind: &'static str, user_id: Option<Uuid>, detail: serde_json::Value) {
        self.outbox.push(event(kind, user_id, detail));
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
            .append_audit(&[event(kind, user_id, detail)])
            .await?)
    }

    /// Stored events at or after `since`, oldest first.
    pub async fn since(&self, since: UnixTime, limit: i64) -> Result<Vec<AuditEvent>, AuthError> {
        Ok(self.store.audit_since(since, limit).await?)
    }
}

/// An event stamped now, logged and counted as it is made.
fn event(kind: &'static str, user_id: Option<Uuid>, detail: serde_json::Value) -> AuditEvent {
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
        at: crate::auth::now(),
        kind: kind.to_string(),
        user_id,
        detail,
    }
}
