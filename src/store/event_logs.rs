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
    /// Given when the event is made: a write repeated (a batch that timed
    /// out but committed, then moved again out of the spill stream) is
    /// stored once. `None` for rows from before it existed.
    #[serde(default)]
    pub event_id: Option<Uuid>,
    pub at: UnixTime,
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

/// Which audit events to read (`GET /admin/audit`): every filter set must
/// match. Oldest first; `after` is the cursor (the last id of the page
/// before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    pub since: UnixTime,
    /// Exclusive.
    pub until: Option<UnixTime>,
    pub kind: Option<String>,
    pub user_id: Option<Uuid>,
    pub after: Option<i64>,
    pub limit: i64,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// Events matching `filter`, oldest first, at most `filter.limit`.
    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes up to `batch` events older than `before`; how many went.
    async fn purge_audit(&self, before: UnixTime, batch: i64) -> Result<u64, StoreError>;
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
