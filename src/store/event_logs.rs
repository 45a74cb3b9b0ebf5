//! Models and traits for the append-only logs: the audit log and the
//! cross-node invalidation log. Only the SQL store implements them.

use crate::store::{StoreError, UnixTime};
use async_trait::async_trait;
use uuid::Uuid;

/// One security event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store; 0 before it is stored.
    pub id: i64,
    pub at: UnixTime,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// Events at or after `since`, oldest first, at most `limit`.
    async fn audit_since(&self, since: UnixTime, limit: i64)
    -> Result<Vec<AuditEvent>, StoreError>;
}

/// A row of the invalidation log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoggedInvalidation {
    pub seq: i64,
    pub at: UnixTime,
    pub node: String,
    /// The event, as JSON.
    pub event: String,
}

/// The version table every node polls: the durable half of the
/// invalidation bus.
#[async_trait]
pub trait InvalidationLog: Send + Sync {
    async fn append_invalidations(&self, rows: &[LoggedInvalidation]) -> Result<(), StoreError>;
    /// Rows with `seq > after`, in order, at most `limit`.
    async fn invalidations_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LoggedInvalidation>, StoreError>;
    /// The highest `seq` written, 0 when none.
    async fn last_invalidation(&self) -> Result<i64, StoreError>;
    /// Forgets rows older than `before` (nothing they invalidate can still
    /// be live).
    async fn prune_invalidations(&self, before: UnixTime) -> Result<u64, StoreError>;
}
